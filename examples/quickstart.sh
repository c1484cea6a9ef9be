#!/usr/bin/env bash
# Quick start, unattended: vhost-blkd serves a sparse file as a virtio-blk disk to a
# QEMU guest, which runs fio with crc32c verification on it; then the host reads the
# disk's I/O statistics. Exit status 0 when the guest verified every block it wrote.
#
#   examples/quickstart.sh
#
# Settings (environment):
#   VHOST_BLKD_BIN   folder holding vhost-blkd and vhost-blkctl (default: swift build -c release)
#   GUEST_KERNEL     guest kernel       (default: .guest/vmlinuz, built by scripts/build-guest.sh)
#   GUEST_INITRD     guest base initrd  (default: .guest/initramfs.cpio.gz; its /init runs /test.sh
#                    and prints "E2E-EXIT: <status>", see scripts/build-guest.sh)
#   DISK_SIZE        size of the disk (default 1G)      FIO_SIZE  bytes fio writes (default 64M)
#   QUEUES           virtqueues (default 2)             CPUMASK   reactor CPUs (default 0x1)
#   QEMU_TIMEOUT     seconds before the guest is killed (default 600)
#   ACCEL            tcg (default: runs anywhere) or kvm
#   KEEP=1           keep the work folder (daemon log, guest console) after the run
#
# Needs qemu-system-x86_64 and, for the default guest, what scripts/install-deps.sh
# installs (run as root on Debian 12, it is called when QEMU is missing).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
disk_size=${DISK_SIZE:-1G}
fio_size=${FIO_SIZE:-64M}
queues=${QUEUES:-2}
cpumask=${CPUMASK:-0x1}
qemu_timeout=${QEMU_TIMEOUT:-600}
say() { echo "== $*"; }

if ! command -v qemu-system-x86_64 >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "qemu-system-x86_64 is not installed (scripts/install-deps.sh, as root)" >&2; exit 1; }
    "$repo/scripts/install-deps.sh"
fi
if [ -n "${VHOST_BLKD_BIN:-}" ]; then
    bin="$VHOST_BLKD_BIN"
else
    [ -d /opt/swift/usr/bin ] && export PATH=/opt/swift/usr/bin:$PATH
    (cd "$repo" && swift build -c release --product vhost-blkd && swift build -c release --product vhost-blkctl)
    bin="$(cd "$repo" && swift build -c release --show-bin-path)"
fi
kernel=${GUEST_KERNEL:-$repo/.guest/vmlinuz}
initrd=${GUEST_INITRD:-$repo/.guest/initramfs.cpio.gz}
if [ ! -f "$kernel" ] || [ ! -f "$initrd" ]; then
    [ -z "${GUEST_KERNEL:-}${GUEST_INITRD:-}" ] || { echo "no guest at $kernel / $initrd" >&2; exit 1; }
    "$repo/scripts/build-guest.sh" "$repo/.guest"
fi

work=$(mktemp -d /tmp/vhost-blkd-quickstart.XXXXXX)
daemon_pid=""
cleanup() {
    if [ -n "$daemon_pid" ]; then kill -TERM "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
rpc="$work/rpc.sock"
ctl() { "$bin/vhost-blkctl" -s "$rpc" "$@"; }

say "1. start vhost-blkd (reactors on $cpumask, log in $work/daemon.log)"
"$bin/vhost-blkd" -r "$rpc" -S "$work/sockets" -m "$cpumask" 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 150); do ctl spdk_get_version >/dev/null 2>&1 && break; sleep 0.1; done
ctl spdk_get_version

say "2. a $disk_size sparse file as bdev disk0, served by controller vhost.0"
truncate -s "$disk_size" "$work/disk0.img"
ctl bdev_uring_create "$work/disk0.img" disk0
ctl vhost_create_blk_controller vhost.0 disk0 --cpumask "$cpumask"
ctl vhost_get_controllers -n vhost.0

say "3. boot a guest on it; fio writes $fio_size with crc32c and reads it back"
cat >"$work/test.sh" <<GUEST
echo "guest: /dev/vda has \$(cat /sys/block/vda/size) sectors and \$(ls /sys/block/vda/mq | wc -l) queues"
fio --name=quickstart --filename=/dev/vda --direct=1 --ioengine=psync --rw=randwrite --bs=4k \
    --size=$fio_size --numjobs=1 --verify=crc32c --do_verify=1 --verify_fatal=1 || exit 1
GUEST
"$repo/scripts/make-test-initrd.sh" "$initrd" "$work/test.sh" "$work/initrd.gz"
accel="-accel tcg -cpu max"
[ "${ACCEL:-tcg}" = kvm ] && accel="-accel kvm -cpu host"
# shellcheck disable=SC2086
timeout "$qemu_timeout" qemu-system-x86_64 $accel -smp 2 -m 512M \
    -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \
    -chardev socket,id=disk0,path="$work/sockets/vhost.0",reconnect=1 \
    -device vhost-user-blk-pci,chardev=disk0,num-queues="$queues" \
    -kernel "$kernel" -initrd "$work/initrd.gz" -append "console=ttyS0 panic=-1 quiet" \
    -display none -serial "file:$work/console.log" -monitor none -no-reboot || true
grep -E "^guest:|err=|WRITE:|READ:" "$work/console.log" || true

say "4. what the host saw"
if ctl rpc_get_methods | grep -q '"bdev_get_iostat"'; then
    ctl bdev_get_iostat -b disk0 | grep -E '"(name|num_read_ops|num_write_ops|bytes_read|bytes_written)"'
fi
ctl vhost_delete_controller vhost.0
ctl bdev_uring_delete disk0

if grep -q "E2E-EXIT: 0" "$work/console.log"; then
    say "quickstart passed: the guest verified its I/O on vhost-blkd"
else
    say "quickstart FAILED: guest console follows"
    cat "$work/console.log"
    exit 1
fi
