#!/bin/bash
# Queue and reactor scaling (issue 9, target 6): one controller, 4K random
# reads at QD32 per queue, served by 1, 2 and 4 reactors, on a RAM bdev
# (ours malloc, qsd null-co) and on a file in /dev/shm (io_uring for both).
#
#   scripts/scale-bench.sh                      needs 8 CPUs for every row (fewer: rows that fit)
#   RUNTIME=5 WARMUP=1 MODES="int poll" BACKENDS="ram shm" QSD=qemu-storage-daemon BIN=.build-perf/release scripts/scale-bench.sh
#
# Rows: reactors x queues = 1x1, 1x2, 2x2, 4x4 (ours: `-m` of that many CPUs, the
# controller's queues spread over them); with QSD set, qemu-storage-daemon
# with one iothread and 2 queues on the same first CPU, for reference (7.2
# cannot spread a device's queues over iothreads). Servers take CPUs from 0 up;
# vhost-blk-bench runs one thread per queue, each on its own CPU after the
# servers' (`--cpus`), so the client is never the shared bottleneck.
# Prints a table; RESULTS=FILE also writes it there, JSON=FILE the raw lines.
set -euo pipefail

bin=${BIN:-.build-perf/release}
runtime=${RUNTIME:-5}
warmup=${WARMUP:-1}
modes=${MODES:-int poll}
backends=${BACKENDS:-ram shm}
shm_file=/dev/shm/scale-bench.$$.img
qsd=${QSD:-}
size_mib=${SIZE:-1024}
work=$(mktemp -d /tmp/scale-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"; rm -f "$shm_file"' EXIT
cpus=$(nproc)
smoke=${SMOKE:-0}  # 1: run every row on whatever CPUs exist (CPU numbers wrap), to check the script

for b in vhost-blkd vhost-blk-bench vhost-blkctl; do
    [ -x "$bin/$b" ] || { echo "missing $bin/$b (swift build -c release)" >&2; exit 2; }
done

wait_socket() {
    for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done
    echo "socket $1 did not appear" >&2
    return 1
}
wrap() { if [ "$smoke" = 1 ]; then echo $(($1 % cpus)); else echo "$1"; fi; }
mask() { local m=0 i; for i in $(seq 0 $(($1 - 1))); do m=$((m | 1 << $(wrap "$i"))); done; printf '0x%x' "$m"; }
list() { local i out=""; for i in $(seq "$1" $(($1 + $2 - 1))); do out="$out${out:+,}$(wrap "$i")"; done; echo "$out"; }  # list START COUNT

# run BACKEND SERVER REACTORS QUEUES MODE: prints one table line, appends the JSON.
run() {
    local backend=$1; shift
    local server=$1 reactors=$2 queues=$3 mode=$4 pid socket
    local first_client=$((reactors > 2 ? reactors : 2))
    [ "$smoke" = 1 ] || [ $((first_client + queues)) -le "$cpus" ] || { echo "skip: $server ${reactors}r ${queues}q needs $((first_client + queues)) CPUs" >&2; return 0; }
    rm -rf "$work/s"; mkdir -p "$work/s"
    if [ "$server" = ours ]; then
        taskset -c "$(list 0 "$reactors")" "$bin/vhost-blkd" -r "$work/s/rpc.sock" -S "$work/s" -m "$(mask "$reactors")" \
            --log-level warning 2>>"$work/ours.log" &
        pid=$!
        wait_socket "$work/s/rpc.sock"
        if [ "$backend" = ram ]; then
            "$bin/vhost-blkctl" -s "$work/s/rpc.sock" bdev_malloc_create "$size_mib" 512 -b Disk0 >/dev/null
        else
            "$bin/vhost-blkctl" -s "$work/s/rpc.sock" bdev_uring_create "$shm_file" Disk0 >/dev/null
        fi
        "$bin/vhost-blkctl" -s "$work/s/rpc.sock" vhost_create_blk_controller vhost.0 Disk0 >/dev/null
        socket=$work/s/vhost.0
    else
        local node="driver=null-co,node-name=n0,size=$((size_mib << 20))"
        [ "$backend" = shm ] && node="driver=file,node-name=n0,filename=$shm_file,aio=io_uring"
        taskset -c 0 "$qsd" --blockdev "$node" --object iothread,id=io0 \
            --export "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=$work/s/qsd.sock,writable=on,iothread=io0,num-queues=$queues" \
            2>>"$work/qsd.log" &
        pid=$!
        socket=$work/s/qsd.sock
    fi
    wait_socket "$socket"
    local m=interrupt; [ "$mode" = poll ] && m=poll
    local line
    line=$(timeout $((${runtime%.*} + ${warmup%.*} + 30)) "$bin/vhost-blk-bench" --socket "$socket" --rw randread --bs 4096 \
        --iodepth 32 --queues "$queues" --mode "$m" --runtime "$runtime" --warmup "$warmup" \
        --cpus "$(list "$first_client" "$queues")" --server-pid "$pid" --json 2>>"$work/bench.log") || line=""
    kill -INT "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    [ -n "${JSON:-}" ] && echo "{\"backend\":\"$backend\",\"server\":\"$server\",\"reactors\":$reactors,\"queues\":$queues,\"mode\":\"$mode\",\"result\":${line:-null}}" >>"$JSON"
    local iops cpu
    iops=$(sed -n 's/.*"iops":\([0-9.]*\).*/\1/p' <<<"$line")
    cpu=$(sed -n 's/.*"server_cpu_us_per_io":\([0-9.]*\).*/\1/p' <<<"$line")
    printf '%-4s %-5s %8s %6s %-5s | %10.0f | %7s\n' "$backend" "$server" "$reactors" "$queues" "$mode" "${iops:-0}" "${cpu:--}"
    echo "$backend-$server $reactors $queues $mode ${iops:-0}" >>"$work/rows"
}

{
    echo "vhost-blkd queue/reactor scaling, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "machine: $cpus CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), Linux $(uname -r)"
    echo "cpu0 siblings: $(cat /sys/devices/system/cpu/cpu0/topology/thread_siblings_list 2>/dev/null || echo ?)"
    echo "4K randread QD32 per queue, ${runtime} s after ${warmup} s warm-up; bench thread per queue on its own CPU"
    echo "disk server reactors queues mode  |       IOPS | CPU us/IO"
    for backend in $backends; do
        if [ "$backend" = shm ]; then
            dd if=/dev/urandom of="$shm_file" bs=1M count="$size_mib" status=none
        fi
        for mode in $modes; do
            run "$backend" ours 1 1 "$mode"
            run "$backend" ours 1 2 "$mode"
            run "$backend" ours 2 2 "$mode"
            run "$backend" ours 4 4 "$mode"
            [ -z "$qsd" ] || run "$backend" qsd 1 2 "$mode"
        done
    done
    [ -f "$work/rows" ] || exit 0
    for backend in $backends; do
        for mode in $modes; do
            awk -v m="$mode" -v b="$backend" '$1 == b "-ours" && $4 == m { iops[$2 "x" $3] = $5 }
                END { if (iops["1x2"] > 0) printf "scaling %s (%s): 2 reactors x 2 queues / 1 x 1 = %.2fx, / 1 x 2 = %.2fx; 4 x 4 / 1 x 1 = %.2fx, / 1 x 2 = %.2fx\n", b, m, iops["2x2"] / iops["1x1"], iops["2x2"] / iops["1x2"], iops["4x4"] / iops["1x1"], iops["4x4"] / iops["1x2"] }' "$work/rows"
        done
    done
} | tee ${RESULTS:+"$RESULTS"}
grep -h -i -E "error|warn" "$work/ours.log" 2>/dev/null | head -5 >&2 || true
