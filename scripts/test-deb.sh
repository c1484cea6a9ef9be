#!/usr/bin/env bash
# Installs the Debian package and checks it as a host without Swift would run it
# (issue 24): run as root, after scripts/build-deb.sh and scripts/build-guest.sh.
#
#   scripts/test-deb.sh [DEB]     # default: the newest dist/vhost-blkd_*.deb
#
# 1. dpkg -i; every file in place; the system user and group vhost-blkd exist and
#    own /etc/vhost-blkd and /var/lib/vhost-blkd; `ldd` of both binaries shows no Swift library.
# 2. In a private mount namespace, with an empty tmpfs over the Swift toolchain
#    ($SWIFT_TOOLCHAIN, default /opt/swift) and an environment holding only
#    PATH=/usr/sbin:/usr/bin:/sbin:/bin (no LD_LIBRARY_PATH): both binaries'
#    --version, the installed daemon's spdk_get_version and memory map (no
#    libswift), then examples/quickstart.sh against the installed binaries: a
#    QEMU TCG guest runs fio with crc32c verification on a vhost-blkd disk.
# 3. dpkg --purge (KEEP_INSTALLED=1 keeps the package).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
deb=${1:-$(ls -t dist/vhost-blkd_*.deb 2>/dev/null | head -n 1)}
[ -f "$deb" ] || { echo "$0: no package (scripts/build-deb.sh)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "$0: run as root (dpkg -i, mount namespace)" >&2; exit 1; }
toolchain=${SWIFT_TOOLCHAIN:-/opt/swift}
[ -d "$toolchain" ] || toolchain=""
guest=${VHOST_BLKD_GUEST_DIR:-$repo/.guest}
[ -f "$guest/vmlinuz" ] || scripts/build-guest.sh "$guest"
version="$(scripts/version.sh)"
say() { echo "== test-deb: $*"; }
fail() { echo "== test-deb FAILED: $*" >&2; exit 1; }

[ "$(dpkg-deb -f "$deb" Version)" = "$(scripts/version.sh --deb)" ] \
    || fail "$deb is version $(dpkg-deb -f "$deb" Version), this checkout $(scripts/version.sh --deb)"
if dpkg-query -W -f='${Status}' vhost-blkd 2>/dev/null | grep -q "install ok installed"; then
    fail "vhost-blkd is already installed here: not replacing it"
fi
work=$(mktemp -d /tmp/vhost-blkd-test-deb.XXXXXX)
# postinst makes the system user vhost-blkd and a purge keeps it (Debian's habit): remove
# it afterwards when this run made it.
made_user=0
getent passwd vhost-blkd >/dev/null || made_user=1
cleanup() {
    if [ "${KEEP_INSTALLED:-0}" != 1 ]; then
        dpkg --purge vhost-blkd >/dev/null || true
        if [ "$made_user" = 1 ]; then
            userdel vhost-blkd 2>/dev/null || true
            groupdel vhost-blkd 2>/dev/null || true
        fi
    fi
    rm -rf "$work"
}
trap cleanup EXIT

say "1. dpkg -i $deb ($(du -h "$deb" | cut -f1))"
dpkg -i "$deb"
for f in /usr/sbin/vhost-blkd /usr/bin/vhost-blkctl /usr/share/man/man8/vhost-blkd.8.gz \
    /usr/share/man/man1/vhost-blkctl.1.gz /usr/share/bash-completion/completions/vhost-blkctl \
    /usr/share/zsh/vendor-completions/_vhost-blkctl /usr/share/fish/vendor_completions.d/vhost-blkctl.fish \
    /lib/systemd/system/vhost-blkd.service /etc/default/vhost-blkd /usr/share/doc/vhost-blkd/copyright; do
    [ -e "$f" ] || fail "$f is missing"
done
[ -d /etc/vhost-blkd ] && [ -d /var/lib/vhost-blkd ] || fail "/etc/vhost-blkd or /var/lib/vhost-blkd is missing"
# The unit's User= and Group= (docs/OPERATIONS.md, "Running unprivileged").
getent passwd vhost-blkd >/dev/null && getent group vhost-blkd >/dev/null || fail "postinst made no user or group vhost-blkd"
for d in /etc/vhost-blkd /var/lib/vhost-blkd; do
    [ "$(stat -c %U:%G "$d")" = vhost-blkd:vhost-blkd ] || fail "$d belongs to $(stat -c %U:%G "$d"), not vhost-blkd"
done
for f in /usr/share/bash-completion/completions/vhost-blkd /usr/share/bash-completion/completions/vhost-blkctl; do
    bash -n "$f" || fail "$f is not valid bash"
done
ldd /usr/sbin/vhost-blkd /usr/bin/vhost-blkctl
if ldd /usr/sbin/vhost-blkd /usr/bin/vhost-blkctl | grep -E 'libswift|libFoundation|libdispatch|libBlocksRuntime|not found'; then
    fail "a binary needs the libraries above"
fi
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify /lib/systemd/system/vhost-blkd.service 2>&1 | tee "$work/verify.log"
    ! grep -q "vhost-blkd.service" "$work/verify.log" || fail "systemd-analyze verify complains about the unit"
fi

say "2. the installed binaries with ${toolchain:-no toolchain found} hidden and a bare environment"
mkdir -p "$work/bin"
ln -s /usr/sbin/vhost-blkd "$work/bin/vhost-blkd"
ln -s /usr/bin/vhost-blkctl "$work/bin/vhost-blkctl"
cat >"$work/hidden.sh" <<'HIDDEN'
set -euo pipefail
toolchain=$1 version=$2 repo=$3 work=$4
if [ -n "$toolchain" ]; then
    mount -t tmpfs -o ro,mode=0755 tmpfs "$toolchain"
    [ -z "$(ls -A "$toolchain")" ] || { echo "$toolchain is still visible"; exit 1; }
fi
if command -v swift >/dev/null; then echo "swift is still on PATH: $(command -v swift)"; exit 1; fi
[ -z "${LD_LIBRARY_PATH:-}" ] || { echo "LD_LIBRARY_PATH is set"; exit 1; }
for b in vhost-blkd vhost-blkctl; do
    shown=$("$b" --version)
    echo "$b --version: $shown"
    [ "$shown" = "$version" ] || { echo "$b says $shown, expected $version"; exit 1; }
done
vhost-blkd -r "$work/rpc.sock" -S "$work/sockets" -m 0x1 2>"$work/daemon.log" &
pid=$!
for _ in $(seq 100); do vhost-blkctl -s "$work/rpc.sock" spdk_get_version >"$work/version.json" 2>/dev/null && break; sleep 0.1; done
cat "$work/version.json"
status=0
grep -q "\"vhost-blkd v$version\"" "$work/version.json" || { echo "spdk_get_version does not say v$version"; status=1; }
if grep -E 'libswift|libFoundation' "/proc/$pid/maps"; then echo "the daemon mapped Swift libraries"; status=1; fi
kill -TERM "$pid"
wait "$pid" || { echo "vhost-blkd exited with $?"; cat "$work/daemon.log"; status=1; }
[ "$status" = 0 ] || exit 1
VHOST_BLKD_BIN="$work/bin" "$repo/examples/quickstart.sh"
HIDDEN
unshare --mount --propagation private -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    GUEST_KERNEL="$guest/vmlinuz" GUEST_INITRD="$guest/initramfs.cpio.gz" FIO_SIZE="${FIO_SIZE:-64M}" \
    bash "$work/hidden.sh" "$toolchain" "$version" "$repo" "$work" || fail "the installed package without Swift"
say "passed: $deb installs, needs no Swift library and serves a guest's verified fio"
