#!/usr/bin/env bash
# Host-side comparison of vhost-blkd with qemu-storage-daemon (issue 9, first
# step): vhost-blk-bench plays the vhost-user front end, pinned to CPU 1,
# against each server pinned to CPU 0, for 4K random reads at QD32 and QD1,
# with interrupts and with busy-polling. Prints one table with ours/qsd ratios.
#
#   RUNTIME=5 WARMUP=1 scripts/bench.sh
#
# Ours: `vhost-blkd -m 0x1` (under `taskset -c 0`), a 1 GiB malloc bdev.
# qsd: qemu-storage-daemon (taskset -c 0), a 1 GiB null-co node (no
# read-zeroes, so it never touches the data buffer) on one iothread.
# Each case starts a fresh server, so an idle server never competes with the
# one under test, and the two servers alternate case by case.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
[ -d /opt/swift/usr/bin ] && export PATH=/opt/swift/usr/bin:$PATH
runtime=${RUNTIME:-5}
warmup=${WARMUP:-1}
server_cpu=${SERVER_CPU:-0}
bench_cpu=${BENCH_CPU:-1}
scratch=${BENCH_SCRATCH:-.build-bench}
command -v qemu-storage-daemon >/dev/null || { echo "qemu-storage-daemon is not installed" >&2; exit 1; }

for product in vhost-blkd vhost-blkctl vhost-blk-bench; do
    swift build --scratch-path "$scratch" -c release --product "$product" >&2
done
bin="$(swift build --scratch-path "$scratch" -c release --show-bin-path)"

work=$(mktemp -d /tmp/vhost-blk-bench.XXXXXX)
server_pid=""
stop_server() {
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
cleanup() { stop_server; rm -rf "$work"; }
trap cleanup EXIT

wait_socket() {
    for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.05; done
    echo "socket $1 did not appear" >&2
    return 1
}

# Starts a server; sets server_pid and prints its vhost-user socket.
start_ours() {
    rm -rf "$work/ours"; mkdir -p "$work/ours"
    taskset -c "$server_cpu" "$bin/vhost-blkd" -r "$work/ours/rpc.sock" -S "$work/ours" -m "0x$(printf %x $((1 << server_cpu)))" \
        --log-level warning 2>>"$work/ours.log" &
    server_pid=$!
    wait_socket "$work/ours/rpc.sock"
    "$bin/vhost-blkctl" -s "$work/ours/rpc.sock" bdev_malloc_create 1024 512 -b Malloc0 >/dev/null
    "$bin/vhost-blkctl" -s "$work/ours/rpc.sock" vhost_create_blk_controller vhost.0 Malloc0 >/dev/null
    wait_socket "$work/ours/vhost.0"
    socket="$work/ours/vhost.0"
}
start_qsd() {
    rm -f "$work/qsd.sock"
    taskset -c "$server_cpu" qemu-storage-daemon \
        --blockdev driver=null-co,node-name=n0,size=1073741824 \
        --object iothread,id=io0 \
        --export type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path="$work/qsd.sock",writable=on,iothread=io0,num-queues=1 \
        2>>"$work/qsd.log" &
    server_pid=$!
    wait_socket "$work/qsd.sock"
    socket="$work/qsd.sock"
}

field() { sed -n "s/.*\"$2\":\\([^,}]*\\).*/\\1/p" <<<"$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }

# run_case SERVER MODE QD: sets $result to the bench's JSON line.
run_case() {
    "start_$1"
    local rc=0
    result=$(timeout $((${runtime%.*} + ${warmup%.*} + 30)) "$bin/vhost-blk-bench" --socket "$socket" --rw randread --bs 4096 \
        --iodepth "$3" --mode "$2" --runtime "$runtime" --warmup "$warmup" --cpu "$bench_cpu" \
        --server-pid "$server_pid" --json) || rc=$?
    stop_server
    if [ $rc -ne 0 ]; then echo "vhost-blk-bench against $1 ($2, QD$3) failed with status $rc" >&2; status=1; fi
    return 0
}

status=0
echo "load before: $(uptime)"
echo "runtime ${runtime}s (+${warmup}s warm-up), server on CPU $server_cpu, bench on CPU $bench_cpu, 4 KiB randread, 1 queue"
rows=()
for mode in interrupt poll; do
    for qd in 32 1; do
        run_case ours "$mode" "$qd"; ours=$result
        run_case qsd "$mode" "$qd"; qsd=$result
        oi=$(field "$ours" iops); qi=$(field "$qsd" iops)
        o50=$(field "$ours" lat_p50_us); q50=$(field "$qsd" lat_p50_us)
        o99=$(field "$ours" lat_p99_us); q99=$(field "$qsd" lat_p99_us)
        oc=$(field "$ours" server_cpu_us_per_io); qc=$(field "$qsd" server_cpu_us_per_io)
        rows+=("$(printf '%-9s %3s | %9.0f %9.0f %5s | %7.1f %7.1f %5s | %7.1f %7.1f %5s | %6.2f %6.2f %5s' \
            "$mode" "$qd" "${oi:-0}" "${qi:-0}" "$(ratio "${oi:-0}" "${qi:-0}")" \
            "${o50:-0}" "${q50:-0}" "$(ratio "${o50:-0}" "${q50:-0}")" \
            "${o99:-0}" "${q99:-0}" "$(ratio "${o99:-0}" "${q99:-0}")" \
            "${oc:-0}" "${qc:-0}" "$(ratio "${oc:-0}" "${qc:-0}")")")
    done
done
echo
printf '%-13s | %-25s | %-21s | %-21s | %-19s\n' "" "IOPS" "p50 latency (us)" "p99 latency (us)" "server CPU us/IO"
printf '%-9s %3s | %9s %9s %5s | %7s %7s %5s | %7s %7s %5s | %6s %6s %5s\n' \
    mode QD ours qsd ratio ours qsd ratio ours qsd ratio ours qsd ratio
for r in "${rows[@]}"; do echo "$r"; done
echo
echo "ratio = ours/qsd (IOPS: higher is better; latency and CPU/IO: lower is better)"
echo "load after: $(uptime)"
exit $status
