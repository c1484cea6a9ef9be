#!/usr/bin/env bash
# The main job, end to end: a QEMU (TCG) guest boots its root filesystem from a
# vhost-blkd disk. The demo builds a raw ext4 image (busybox, fio; no mount,
# no loop device: scripts/make-rootfs.sh), vhost-blkd serves it as controller
# vhost.root and a 1 GiB sparse file as vhost.data, and the guest's kernel
# mounts root=/dev/vda, whose /sbin/init runs fio with crc32c verification on
# a file in the root filesystem and on /dev/vdb, prints a PASS line and powers
# off. Run as root on Debian 12.
#
# Settings (environment): VHOST_BLKD_BIN (folder holding vhost-blkd and
# vhost-blkctl; default: swift build -c release), VHOST_BLKD_GUEST_DIR (the
# guest kernel and initramfs; default .guest, built by scripts/build-guest.sh),
# QEMU_TIMEOUT (seconds, default 900), KEEP=1 (keep the work folder).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
scripts/install-deps.sh
if [ -n "${VHOST_BLKD_BIN:-}" ]; then
    bin="$VHOST_BLKD_BIN"
else
    [ -d /opt/swift/usr/bin ] && export PATH=/opt/swift/usr/bin:$PATH
    swift build -c release --product vhost-blkd
    swift build -c release --product vhost-blkctl
    bin="$(swift build -c release --show-bin-path)"
fi
guest=${VHOST_BLKD_GUEST_DIR:-$repo/.guest}
scripts/build-guest.sh "$guest"

work=$(mktemp -d /tmp/vhost-blkd-demo.XXXXXX)
rpc="$work/rpc.sock"
daemon_pid=""
cleanup() {
    if [ -n "$daemon_pid" ]; then kill -TERM "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

echo "== the guest's root filesystem: a 256 MiB raw ext4 image (busybox, fio, /sbin/init)"
cat > "$work/test.sh" <<'GUEST'
set -e
echo "guest: root is $(awk '$2 == "/" { print $1 }' /proc/mounts), /dev/vda serial $(cat /sys/block/vda/serial 2>/dev/null), /dev/vdb serial $(cat /sys/block/vdb/serial 2>/dev/null)"
fio --name=rootfs --filename=/var/demo.fio --size=16M --direct=1 --ioengine=psync --rw=randwrite --bs=4k \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --eta=never
fio --name=data --filename=/dev/vdb --size=32M --direct=1 --ioengine=psync --rw=randwrite --bs=4k \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --eta=never
echo "booted from /dev/vda" > /var/demo.stamp
rm -f /var/demo.fio
sync
echo "DEMO PASS: root filesystem on vhost-blkd (/dev/vda), fio --verify on / and on /dev/vdb"
GUEST
scripts/make-rootfs.sh "$guest/initramfs.cpio.gz" "$work/test.sh" "$work/root.img" 256M
ls -ls "$work/root.img"

echo "== starting vhost-blkd"
"$bin/vhost-blkd" -r "$rpc" -S "$work/sockets" -m 0x1 2>"$work/daemon.log" &
daemon_pid=$!
ctl() { "$bin/vhost-blkctl" -s "$rpc" "$@"; }
for _ in $(seq 150); do ctl spdk_get_version >/dev/null 2>&1 && break; sleep 0.1; done

echo "== bdev root (the image) on controller vhost.root, bdev data (a 1 GiB sparse file) on vhost.data"
truncate -s 1G "$work/data.img"
ctl bdev_uring_create "$work/root.img" root
ctl bdev_uring_create "$work/data.img" data
ctl vhost_create_blk_controller vhost.root root
ctl vhost_create_blk_controller vhost.data data
ctl vhost_get_controllers

echo "== booting the guest from vhost.root (QEMU, TCG); its console follows"
qemu=(qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 512M
    -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem
    -chardev socket,id=root,path="$work/sockets/vhost.root"
    -device vhost-user-blk-pci,chardev=root,num-queues=2,bootindex=1
    -chardev socket,id=data,path="$work/sockets/vhost.data"
    -device vhost-user-blk-pci,chardev=data,num-queues=2
    -kernel "$guest/vmlinuz" -initrd "$guest/initramfs.cpio.gz"
    -append "root=/dev/vda rootfstype=ext4 console=ttyS0 panic=-1 quiet"
    -nographic -monitor none -nic none -no-reboot)
# The command line as a shell would take it back (arguments with spaces quoted).
for arg in "${qemu[@]}"; do case "$arg" in *" "*) printf "'%s' " "$arg" ;; *) printf '%s ' "$arg" ;; esac; done
echo
timeout "${QEMU_TIMEOUT:-900}" "${qemu[@]}" </dev/null | tee "$work/console.log" || true
if grep -q "^DEMO PASS" "$work/console.log" && grep -q "E2E-EXIT: 0" "$work/console.log"; then
    echo "== demo passed: the guest booted its root filesystem from vhost-blkd and verified its I/O"
else
    echo "== demo FAILED (daemon log: $work/daemon.log)"
    KEEP=1
    exit 1
fi
