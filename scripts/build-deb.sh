#!/usr/bin/env bash
# Builds the Debian package: dist/vhost-blkd_VERSION_ARCH.deb (Debian 12 and later).
#
#   scripts/build-deb.sh            # then: dpkg -i dist/vhost-blkd_*.deb
#
# The binaries are release builds with the Swift standard library and Foundation
# linked in (--static-swift-stdlib): the package needs no Swift toolchain, only
# the C libraries its Depends names (found from the binaries' NEEDED entries, ldd and
# dpkg -S). VERSION is scripts/version.sh's (from `git describe`), compiled into
# `--version` and spdk_get_version.
#
# Contents:
#   /usr/sbin/vhost-blkd, /usr/bin/vhost-blkctl
#   /usr/share/man/man8/vhost-blkd.8.gz, /usr/share/man/man1/vhost-blkctl.1.gz
#   bash, zsh and fish completions for both (swift-argument-parser generates them)
#   /lib/systemd/system/vhost-blkd.service (examples/vhost-blkd.service; not enabled)
#   /etc/default/vhost-blkd (conffile: extra daemon options for the unit)
#   /etc/vhost-blkd/ (config.json: the unit's --config, rewritten by --persist)
#   /var/lib/vhost-blkd/ (the unit's --allowed-dir for disk images)
#   postinst makes the system user and group vhost-blkd (the unit's User=), owning both
#   /usr/share/doc/vhost-blkd/ (copyright, README.md, OPERATIONS.md)
#
# Needs dpkg-dev's dpkg-deb (scripts/install-deps.sh). SKIP_BUILD=1 packages
# what .build/release already holds (built with the same VHOST_BLKD_VERSION).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
[ -d /opt/swift/usr/bin ] && export PATH=/opt/swift/usr/bin:$PATH
VHOST_BLKD_VERSION="$(scripts/version.sh)"
export VHOST_BLKD_VERSION
deb_version="$(scripts/version.sh --deb)"
arch="$(dpkg --print-architecture)"
say() { echo "== $*" >&2; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    say "release build $VHOST_BLKD_VERSION, Swift libraries linked statically"
    swift build -c release --static-swift-stdlib --product vhost-blkd
    swift build -c release --static-swift-stdlib --product vhost-blkctl
fi
bin="$(swift build -c release --show-bin-path)"
for b in vhost-blkd vhost-blkctl; do
    [ -x "$bin/$b" ] || { echo "$0: no $bin/$b" >&2; exit 1; }
    built="$("$bin/$b" --version)"
    [ "$built" = "$VHOST_BLKD_VERSION" ] || { echo "$0: $bin/$b is version $built, not $VHOST_BLKD_VERSION (rebuild without SKIP_BUILD)" >&2; exit 1; }
    if ldd "$bin/$b" | grep -E 'libswift|libFoundation|libdispatch|libBlocksRuntime|not found'; then
        echo "$0: $bin/$b needs the libraries above at run time" >&2; exit 1
    fi
done

mkdir -p dist
root="$(mktemp -d "$repo/dist/.root.XXXXXX")"
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"
say "staging in $root"
install -d -m 0755 "$root/DEBIAN" "$root/usr/sbin" "$root/usr/bin" \
    "$root/usr/share/man/man8" "$root/usr/share/man/man1" "$root/usr/share/doc/vhost-blkd" \
    "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
    "$root/usr/share/fish/vendor_completions.d" "$root/lib/systemd/system" "$root/etc/default"
install -d -m 0750 "$root/etc/vhost-blkd" "$root/var/lib/vhost-blkd"
# Debug information out (Debian policy 10.1), symbols kept for backtraces.
install -m 0755 "$bin/vhost-blkd" "$root/usr/sbin/vhost-blkd"
install -m 0755 "$bin/vhost-blkctl" "$root/usr/bin/vhost-blkctl"
strip --strip-debug --remove-section=.comment "$root/usr/sbin/vhost-blkd" "$root/usr/bin/vhost-blkctl"

gzip -9n <docs/vhost-blkd.8 >"$root/usr/share/man/man8/vhost-blkd.8.gz"
gzip -9n <docs/vhost-blkctl.1 >"$root/usr/share/man/man1/vhost-blkctl.1.gz"
for b in vhost-blkd vhost-blkctl; do
    "$bin/$b" --generate-completion-script bash >"$root/usr/share/bash-completion/completions/$b"
    "$bin/$b" --generate-completion-script zsh >"$root/usr/share/zsh/vendor-completions/_$b"
    "$bin/$b" --generate-completion-script fish >"$root/usr/share/fish/vendor_completions.d/$b.fish"
done
install -m 0644 examples/vhost-blkd.service "$root/lib/systemd/system/vhost-blkd.service"
install -m 0644 packaging/default "$root/etc/default/vhost-blkd"
install -m 0644 packaging/copyright "$root/usr/share/doc/vhost-blkd/copyright"
gzip -9n <README.md >"$root/usr/share/doc/vhost-blkd/README.md.gz"
gzip -9n <docs/OPERATIONS.md >"$root/usr/share/doc/vhost-blkd/OPERATIONS.md.gz"
find "$root/usr/share" -type f -exec chmod 0644 {} +

# Depends: the package of every shared library the binaries link directly
# (their NEEDED entries; the Swift ones are linked in, and librbd1/librados2
# bring their own dependencies), libc6 at least as new as the newest glibc
# symbol used.
needed=$(objdump -p "$root/usr/sbin/vhost-blkd" "$root/usr/bin/vhost-blkctl" | awk '$1 == "NEEDED" { print $2 }' | sort -u)
libraries=$(ldd "$root/usr/sbin/vhost-blkd" "$root/usr/bin/vhost-blkctl" | awk -v needed="$needed" '
    BEGIN { n = split(needed, list, "\n"); for (i = 1; i <= n; i++) want[list[i]] = 1 }
    $2 == "=>" && $3 ~ /^\// && ($1 in want) { print $3 }' | sort -u)
packages=()
for library in $libraries; do
    owner=""
    for candidate in "$library" "$(readlink -f "$library")" "/usr$library" "${library#/usr}"; do
        owner=$(dpkg -S "$candidate" 2>/dev/null | head -n 1 | cut -d: -f1) && [ -n "$owner" ] && break
    done
    [ -n "$owner" ] || { echo "$0: no package owns $library" >&2; exit 1; }
    packages+=("$owner")
done
glibc=$(objdump -T "$root/usr/sbin/vhost-blkd" "$root/usr/bin/vhost-blkctl" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -Vu | tail -n 1)
depends=""
for p in $(printf '%s\n' "${packages[@]}" | sort -u); do
    if [ "$p" = libc6 ] && [ -n "$glibc" ]; then p="libc6 (>= $glibc)"; fi
    depends="${depends:+$depends, }$p"
done

installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: vhost-blkd
Version: $deb_version
Architecture: $arch
Maintainer: vhost-blkd developers <vhost-blkd@localhost>
Installed-Size: $installed_size
Depends: $depends
Section: admin
Priority: optional
Description: virtio-blk disks for QEMU guests over vhost-user
 vhost-blkd serves files, block devices and RAM as vhost-user-blk
 controllers to QEMU, managed over an SPDK-compatible JSON-RPC socket
 (vhost-blkctl or SPDK's rpc.py). I/O goes through io_uring, with a
 thread-pool fallback. Version $VHOST_BLKD_VERSION.
CONTROL
echo /etc/default/vhost-blkd >"$root/DEBIAN/conffiles"
install -m 0755 packaging/postinst packaging/prerm packaging/postrm "$root/DEBIAN/"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

deb="dist/vhost-blkd_${deb_version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
say "$deb ($(du -h "$deb" | cut -f1)): Depends: $depends"
echo "$repo/$deb"
