#!/bin/sh
# Builds the end-to-end test guest: a Debian cloud kernel and a small
# initramfs (busybox, fio and its libraries, the virtio-blk and ext4 modules).
# The same initramfs boots a root filesystem on a vhost-blkd disk: with
# root=DEV on the kernel command line its /init mounts DEV and switches to it
# (scripts/make-rootfs.sh builds such a disk image from it).
#
#   scripts/build-guest.sh [OUTDIR]
#
# OUTDIR defaults to $VHOST_BLKD_GUEST_DIR, else <repo>/.guest. Outputs:
#   OUTDIR/vmlinuz             the kernel
#   OUTDIR/initramfs.cpio.gz   the base initramfs (see its /init below)
#   OUTDIR/stamp               what the outputs were built from
# Re-running is cheap: nothing is rebuilt while the inputs (kernel package
# version, busybox, fio, this script) are unchanged.
#
# Needs: apt-get/apt-cache (network access to the Debian archive, only when
# the kernel package must be fetched), dpkg-deb, busybox-static, fio, cpio,
# gzip, ldd. No KVM, no root beyond what apt-get download needs.
# See docs/PROTOCOL-NOTES.md, "Test guests".
set -eu

say() { printf 'build-guest: %s\n' "$*"; }
die() { printf 'build-guest: error: %s\n' "$*" >&2; exit 1; }

script_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$script_dir/.." && pwd)
out=${1:-${VHOST_BLKD_GUEST_DIR:-$repo/.guest}}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Modules the guest needs, in load order (each one's dependencies are
# resolved from its .modinfo section as well, so the list may grow).
# ext4 (with crc32c for its metadata checksums) mounts a root filesystem on
# a vhost-blkd disk; a module the kernel has built in is skipped.
modules="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk crc32c_generic ext4"

for tool in apt-cache apt-get dpkg-deb cpio gzip ldd sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool"
done
busybox=$(command -v busybox) || die "missing busybox (apt-get install busybox-static)"
file_is_static() { ! ldd "$1" >/dev/null 2>&1; }
file_is_static "$busybox" || die "$busybox is dynamically linked; install busybox-static"
fio=$(command -v fio) || die "missing fio (apt-get install fio)"

# --- Inputs and the stamp ---------------------------------------------------
kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -n1)
[ -n "$kpkg" ] || die "cannot resolve linux-image-cloud-amd64 (run apt-get update?)"
kver=$(apt-cache policy "$kpkg" | sed -n 's/^ *Candidate: //p')
[ -n "$kver" ] && [ "$kver" != "(none)" ] || die "no candidate version for $kpkg"

stamp=$(printf '%s\n' \
    "kernel=$kpkg=$kver" \
    "busybox=$(sha256sum "$busybox" | cut -d' ' -f1)" \
    "fio=$(sha256sum "$fio" | cut -d' ' -f1)" \
    "script=$(sha256sum "$0" | cut -d' ' -f1)" \
    "modules=$modules")

if [ -f "$out/vmlinuz" ] && [ -f "$out/initramfs.cpio.gz" ] && [ -f "$out/stamp" ] &&
    [ "$(cat "$out/stamp")" = "$stamp" ]; then
    say "up to date: $out ($kpkg $kver)"
    exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/vhost-blkd-guest.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# --- Kernel -----------------------------------------------------------------
say "downloading $kpkg $kver"
mkdir -p "$work/deb"
# apt-get download drops privileges to _apt when run as root: let it write.
chmod 0777 "$work/deb"
(cd "$work/deb" && apt-get download -q "$kpkg=$kver" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
deb=$(ls "$work/deb"/*.deb 2>/dev/null | head -n1)
[ -n "$deb" ] || die "apt-get download $kpkg failed"
say "unpacking $(basename "$deb")"
dpkg-deb -x "$deb" "$work/kernel"
vmlinuz=$(ls "$work/kernel/boot"/vmlinuz-* | head -n1)
[ -f "$vmlinuz" ] || die "no vmlinuz in $deb"
moddir=$(ls -d "$work/kernel/lib/modules"/* | head -n1)
[ -d "$moddir" ] || die "no modules in $deb"
kernel_release=$(basename "$moddir")

# --- Root tree ----------------------------------------------------------------
root="$work/root"
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/lib/modules" \
    "$root/proc" "$root/sys" "$root/dev" "$root/tmp" "$root/etc" "$root/root" "$root/mnt"

say "adding busybox"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list-full); do
    case "$applet" in bin/busybox) continue ;; esac
    mkdir -p "$root/$(dirname "$applet")"
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done

say "adding fio and its libraries"
cp "$fio" "$root/usr/bin/fio"
ldd "$fio" | awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }' | sort -u |
    while read -r lib; do
        [ -e "$lib" ] || die "fio needs $lib, which does not exist"
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
# The loader path baked into fio (PT_INTERP) must exist as named.
[ -e "$root/lib64/ld-linux-x86-64.so.2" ] || die "dynamic loader missing from the initramfs"
# Debian has a merged /usr: /lib64 and /lib are real dirs here, which is fine.

# Module file for a module name (names use _ and - interchangeably).
find_module() {
    local name alt
    name=$1
    alt=$(printf '%s' "$name" | tr '_' '-')
    find "$moddir/kernel" \( -name "$name.ko" -o -name "$name.ko.*" -o -name "$alt.ko" -o -name "$alt.ko.*" \) | head -n1
}
# Uncompressed module bytes on stdout.
module_bytes() {
    case "$1" in
    *.ko) cat "$1" ;;
    *.ko.xz) xz -dc "$1" ;;
    *.ko.zst) zstd -dcq "$1" ;;
    *.ko.gz) gzip -dc "$1" ;;
    *) die "unknown module format: $1" ;;
    esac
}
# Dependencies from the module's .modinfo section ("depends=a,b").
module_depends() {
    module_bytes "$1" | tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' '
}

# Whether the kernel has the module built in (modules.builtin lists paths).
builtin_module() {
    local alt
    alt=$(printf '%s' "$1" | tr '_' '-')
    [ -f "$moddir/modules.builtin" ] &&
        grep -Eq "/($1|$alt)\.ko\$" "$moddir/modules.builtin"
}

say "adding modules from $kernel_release"
order="$work/modules.order"
: >"$order"
add_module() {
    local f dep
    grep -qx "$1" "$order" && return 0
    f=$(find_module "$1")
    if [ -z "$f" ]; then
        builtin_module "$1" && return 0
        die "module $1 not found in $kernel_release"
    fi
    for dep in $(module_depends "$f"); do add_module "$dep"; done
    grep -qx "$1" "$order" && return 0
    # busybox insmod loads plain ELF only: store modules decompressed.
    module_bytes "$f" >"$root/lib/modules/$1.ko"
    echo "$1" >>"$order"
}
for m in $modules; do add_module "$m"; done
cp "$order" "$root/etc/modules.order"
say "module order: $(tr '\n' ' ' <"$order")"

# --- /init --------------------------------------------------------------------
cat >"$root/init" <<'EOF'
#!/bin/sh
# vhost-blkd e2e guest init (generated by scripts/build-guest.sh).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
echo "E2E-BOOT: $(cut -d' ' -f1 /proc/uptime)"
while read -r m; do
    insmod "/lib/modules/$m.ko" || echo "E2E-INIT: insmod $m failed"
done </etc/modules.order
# root=DEV (and rootfstype=, default ext4): mount the root filesystem on DEV,
# a vhost-blkd disk, and hand over to its /sbin/init. Without root=, run the
# appended /test.sh from the initramfs itself.
root= rootfstype=ext4
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    root=*) root=${arg#root=} ;;
    rootfstype=*) rootfstype=${arg#rootfstype=} ;;
    esac
done
if [ -n "$root" ]; then
    for _ in $(seq 100); do [ -b "$root" ] && break; sleep 0.1; done
    mkdir -p /newroot
    if mount -t "$rootfstype" -o rw "$root" /newroot; then
        echo "E2E-ROOT: $root ($rootfstype) mounted, switching to its /sbin/init"
        umount /tmp /dev/pts /dev /sys /proc 2>/dev/null
        exec switch_root /newroot /sbin/init
    fi
    echo "E2E-ROOT: cannot mount $root ($rootfstype)"
    echo "E2E-EXIT: 99"
    poweroff -f
fi
if [ -f /test.sh ]; then
    cd /root
    sh /test.sh
    status=$?
    sync
    echo "E2E-EXIT: $status"
    poweroff -f
fi
echo "E2E-INIT: no /test.sh, starting a shell on ttyS0"
setsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1'
poweroff -f
EOF
chmod 0755 "$root/init"

# --- Pack -------------------------------------------------------------------------
say "packing initramfs"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -6 -n >"$work/initramfs.cpio.gz"

cp "$vmlinuz" "$out/vmlinuz.tmp" && mv "$out/vmlinuz.tmp" "$out/vmlinuz"
mv "$work/initramfs.cpio.gz" "$out/initramfs.cpio.gz"
printf '%s\n' "$stamp" >"$out/stamp"
say "done: $out/vmlinuz ($(du -h "$out/vmlinuz" | cut -f1)), $out/initramfs.cpio.gz ($(du -h "$out/initramfs.cpio.gz" | cut -f1))"
