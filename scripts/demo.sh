#!/usr/bin/env bash
# The main job, end to end: vhost-blkd serves a controller on a sparse file,
# a Linux guest under QEMU (TCG) boots against it and runs fio with crc32c
# verification on /dev/vda. Run as root on Debian 12.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
scripts/install-deps.sh
[ -d /opt/swift/usr/bin ] && export PATH=/opt/swift/usr/bin:$PATH
swift build -c release --product vhost-blkd
swift build -c release --product vhost-blkctl
bin="$(swift build -c release --show-bin-path)"
scripts/build-guest.sh "$repo/.guest"

work=$(mktemp -d /tmp/vhost-blkd-demo.XXXXXX)
rpc="$work/rpc.sock"
daemon_pid=""
cleanup() {
    [ -n "$daemon_pid" ] && kill -TERM "$daemon_pid" 2>/dev/null && wait "$daemon_pid" || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== starting vhost-blkd"
"$bin/vhost-blkd" -r "$rpc" -S "$work/sockets" -m 0x1 &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$rpc" ] && break; sleep 0.1; done
ctl() { "$bin/vhost-blkctl" -s "$rpc" "$@"; }

echo "== a 1 GiB sparse file as bdev disk0, controller vhost.0"
truncate -s 1G "$work/disk0.img"
ctl bdev_uring_create "$work/disk0.img" disk0
ctl vhost_create_blk_controller vhost.0 disk0
ctl vhost_get_controllers

cat > "$work/test.sh" <<'GUEST'
echo "guest sees /dev/vda: $(cat /sys/block/vda/size) sectors, serial $(cat /sys/block/vda/serial 2>/dev/null)"
fio --name=demo --filename=/dev/vda --direct=1 --ioengine=psync --rw=randrw --bs=4k --size=64M \
    --numjobs=1 --verify=crc32c --do_verify=1 --verify_fatal=1 --runtime=20 --time_based=0 || exit 1
GUEST
scripts/make-test-initrd.sh .guest/initramfs.cpio.gz "$work/test.sh" "$work/initrd.gz"

echo "== booting the guest (QEMU, TCG)"
qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 512M \
    -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \
    -chardev socket,id=c0,path="$work/sockets/vhost.0" -device vhost-user-blk-pci,chardev=c0,num-queues=2 \
    -kernel .guest/vmlinuz -initrd "$work/initrd.gz" -append "console=ttyS0 panic=-1 quiet" \
    -nographic -no-reboot | tee "$work/console.log"
grep -q "E2E-EXIT: 0" "$work/console.log" && echo "== demo passed: the guest verified its I/O on vhost-blkd" || { echo "== demo FAILED"; exit 1; }
