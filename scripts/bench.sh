#!/usr/bin/env bash
# The standard benchmark of issue 9: vhost-blkd against qemu-storage-daemon in
# one run, on the same backends, driven by vhost-blk-bench (the in-repo
# vhost-user front end: memfd guest memory, split rings, EVENT_IDX), with each
# server on CPU 0 and the client on CPU 1. Prints one table with ours/qsd
# ratios and, for a full run, writes it to bench-results/.
#
#   scripts/bench.sh                        the full matrix, 5 s per row
#   RUNTIME=1 scripts/bench.sh              the full matrix in about 2 minutes
#   ROWS='^ram/rr' scripts/bench.sh         rows whose id matches an ERE (ids: ROWS=list)
#   QUICK=1 RUNTIME=1 BUILD=debug scripts/bench.sh   the CI smoke test (no timings asserted)
#
# Knobs: REPEAT (runs per server and row, default 1: with more, each figure is
# the median, and ours and qsd take turns going first), RUNTIME (measured seconds per run, default 5), WARMUP (default
# min(1, RUNTIME/2)), SIZE (MiB of each disk, default 1024), ROWS (ERE over row
# ids, or "list"), QUICK=1 (one row per backend and workload), BUILD
# (release|debug), BENCH_SCRATCH (SwiftPM scratch path), DIRECT_DIR (where the
# O_DIRECT file goes, default /var/tmp: the root filesystem), SAVE (1: write
# bench-results/latest.txt and a dated copy; default 1 only for a full release
# run), SERVER_CPU, BENCH_CPU, BIN (a folder of prebuilt binaries: no build),
# DAEMON_ARGS (more vhost-blkd options, e.g. "--tmpfs-io engine").
#
# Backends (same data for both servers):
#   ram     ours: bdev_malloc_create SIZE        qsd: null-co (no read-zeroes: reads never touch the buffer)
#   shm     a SIZE file on tmpfs /dev/shm, fully written first
#           ours: bdev_uring_create (buffered: tmpfs refuses O_DIRECT; served inline,
#           preadv/pwritev on the reactor, unless DAEMON_ARGS="--tmpfs-io engine")
#           qsd:  driver=file, aio=io_uring
#   direct  a SIZE file in DIRECT_DIR, fully written first
#           ours: bdev_uring_create (opens O_DIRECT itself)
#           qsd:  driver=file, aio=io_uring, cache.direct=on
# Servers: `vhost-blkd -m 0x1` under `taskset -c 0`; qemu-storage-daemon under
# `taskset -c 0` with one iothread and num-queues = the row's queue count.
# Each run starts a fresh server, so an idle one never competes with the one
# under test; ours and qsd alternate run by run.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
[ -d /opt/swift/usr/bin ] && export PATH=/opt/swift/usr/bin:$PATH
started=$(date +%s)
runtime=${RUNTIME:-5}
warmup=${WARMUP:-$(awk -v r="$runtime" 'BEGIN { w = r / 2; if (w > 1) w = 1; print w }')}
size_mib=${SIZE:-1024}
quick=${QUICK:-0}
repeat=${REPEAT:-1}
rows_filter=${ROWS:-}
build=${BUILD:-release}
server_cpu=${SERVER_CPU:-0}
bench_cpu=${BENCH_CPU:-$([ "$(nproc)" -ge 2 ] && echo 1 || echo 0)}
direct_dir=${DIRECT_DIR:-/var/tmp}
case "$size_mib" in *[!0-9]* | "" | 0) echo "SIZE must be a positive number of MiB" >&2; exit 2 ;; esac
case "$repeat" in *[!0-9]* | "" | 0) echo "REPEAT must be a positive number of runs" >&2; exit 2 ;; esac
case "$build" in
    release) scratch=${BENCH_SCRATCH:-.build-bench}; build_args=(-c release) ;;
    debug) scratch=${BENCH_SCRATCH:-.build}; build_args=() ;;
    *) echo "BUILD must be release or debug" >&2; exit 2 ;;
esac

# --- The matrix -------------------------------------------------------------
# Row id: backend/workload/mode. Client modes: int (sleep on the call eventfd),
# poll (busy-poll the used ring). Both modes for the RAM 4K randread rows; the
# other rows use the interrupt-driven client only, to keep the run short.
all_rows=(
    ram/rr1/int ram/rr1/poll ram/rr32/int ram/rr32/poll ram/rw32/int ram/seq64k/int ram/rr32x2/int ram/rr32x2/poll
    shm/rr1/int shm/rr32/int shm/rw32/int shm/seq64k/int shm/rr32x2/int
    direct/rr1/int direct/rr32/int direct/rw32/int direct/seq64k/int direct/rr32x2/int
)
quick_rows=(ram/rr32/poll ram/rr1/int shm/rw32/int shm/rr32x2/int direct/seq64k/int)

# workload_args WORKLOAD: sets rw bs qd queues label.
workload_args() {
    case "$1" in
        rr1) rw=randread bs=4096 qd=1 queues=1 label="4K randread QD1" ;;
        rr32) rw=randread bs=4096 qd=32 queues=1 label="4K randread QD32" ;;
        rw32) rw=randwrite bs=4096 qd=32 queues=1 label="4K randwrite QD32" ;;
        seq64k) rw=read bs=65536 qd=8 queues=1 label="64K seq read QD8" ;;
        rr32x2) rw=randread bs=4096 qd=32 queues=2 label="4K randread 2q QD32" ;;
        *) return 1 ;;
    esac
}

if [ "$rows_filter" = list ]; then printf '%s\n' "${all_rows[@]}"; exit 0; fi
if [ "$quick" = 1 ]; then candidates=("${quick_rows[@]}"); else candidates=("${all_rows[@]}"); fi
rows=()
for r in "${candidates[@]}"; do
    if [ -z "$rows_filter" ] || grep -Eq -- "$rows_filter" <<<"$r"; then rows+=("$r"); fi
done
[ ${#rows[@]} -gt 0 ] || { echo "no row matches ROWS='$rows_filter' (ROWS=list shows them)" >&2; exit 2; }
full=0
[ "$quick" != 1 ] && [ -z "$rows_filter" ] && [ "$build" = release ] && full=1
save=${SAVE:-$full}
need_shm=0 need_direct=0
for r in "${rows[@]}"; do
    case "$r" in shm/*) need_shm=1 ;; direct/*) need_direct=1 ;; esac
done

command -v qemu-storage-daemon >/dev/null || { echo "qemu-storage-daemon is not installed" >&2; exit 1; }

# --- Build ------------------------------------------------------------------
if [ -n "${BIN:-}" ]; then  # prebuilt binaries (another machine without a toolchain)
    bin=$BIN
else
    for product in vhost-blkd vhost-blkctl vhost-blk-bench; do
        swift build --scratch-path "$scratch" "${build_args[@]}" --product "$product" >&2
    done
    bin="$(swift build --scratch-path "$scratch" "${build_args[@]}" --show-bin-path)"
fi

work=$(mktemp -d /tmp/vhost-blk-bench.XXXXXX)
shm_file=/dev/shm/vhost-blk-bench.$$.img
direct_file=$direct_dir/vhost-blk-bench.$$.img
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
cleanup() { stop_server; rm -rf "$work"; rm -f "$shm_file" "$direct_file"; }
trap cleanup EXIT

# --- Backing files, fully written (random data: nothing sparse or compressible)
size_bytes=$((size_mib * 1048576))
if [ $need_shm = 1 ] || [ $need_direct = 1 ]; then
    echo "writing the ${size_mib} MiB backing file(s)..." >&2
    dd if=/dev/urandom of="$shm_file" bs=1M count="$size_mib" status=none
fi
if [ $need_direct = 1 ]; then
    dd if="$shm_file" of="$direct_file" bs=4M oflag=direct conv=fsync status=none
    [ $need_shm = 1 ] || rm -f "$shm_file"
fi

wait_socket() {
    for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done
    echo "socket $1 did not appear" >&2
    return 1
}

# start_ours BACKEND / start_qsd BACKEND QUEUES: set server_pid and socket.
start_ours() {
    rm -rf "$work/ours"; mkdir -p "$work/ours"
    local ctl=("$bin/vhost-blkctl" -s "$work/ours/rpc.sock")
    # shellcheck disable=SC2086  # DAEMON_ARGS: words on purpose
    taskset -c "$server_cpu" "$bin/vhost-blkd" -r "$work/ours/rpc.sock" -S "$work/ours" -m "0x$(printf %x $((1 << server_cpu)))" \
        --log-level warning ${DAEMON_ARGS:-} 2>>"$work/ours.log" &
    server_pid=$!
    wait_socket "$work/ours/rpc.sock" || return 1
    case "$1" in
        ram) "${ctl[@]}" bdev_malloc_create "$size_mib" 512 -b Disk0 >/dev/null ;;
        shm) "${ctl[@]}" bdev_uring_create "$shm_file" Disk0 >/dev/null ;;
        direct) "${ctl[@]}" bdev_uring_create "$direct_file" Disk0 >/dev/null ;;
    esac || return 1
    "${ctl[@]}" vhost_create_blk_controller vhost.0 Disk0 >/dev/null || return 1
    wait_socket "$work/ours/vhost.0" || return 1
    socket="$work/ours/vhost.0"
}
start_qsd() {
    rm -f "$work/qsd.sock"
    local node
    case "$1" in
        ram) node="driver=null-co,node-name=n0,size=$size_bytes" ;;
        shm) node="driver=file,node-name=n0,filename=$shm_file,aio=io_uring" ;;
        direct) node="driver=file,node-name=n0,filename=$direct_file,aio=io_uring,cache.direct=on" ;;
    esac
    taskset -c "$server_cpu" qemu-storage-daemon \
        --blockdev "$node" \
        --object iothread,id=io0 \
        --export type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path="$work/qsd.sock",writable=on,iothread=io0,num-queues="$2" \
        2>>"$work/qsd.log" &
    server_pid=$!
    wait_socket "$work/qsd.sock" || return 1
    socket="$work/qsd.sock"
}

field() { sed -n "s/.*\"$2\":\\([^,}]*\\).*/\\1/p" <<<"$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
num() { awk -v a="$1" -v f="$2" 'BEGIN { if (a == "") print "-"; else printf f, a }'; }
bench_timeout=$(awk -v r="$runtime" -v w="$warmup" 'BEGIN { printf "%d", r + w + 30.999 }')

# run_case SERVER BACKEND MODE: sets $result to the bench's JSON line ("" on failure).
run_case() {
    local rc=0 mode=interrupt
    [ "$3" = poll ] && mode=poll
    result=""
    : >"$work/bench.log"
    if "start_$1" "$2" "$queues"; then
        result=$(timeout "$bench_timeout" "$bin/vhost-blk-bench" --socket "$socket" --rw "$rw" --bs "$bs" \
            --iodepth "$qd" --queues "$queues" --mode "$mode" --runtime "$runtime" --warmup "$warmup" \
            --cpu "$bench_cpu" --server-pid "$server_pid" --json 2>>"$work/bench.log") || rc=$?
    else
        rc=1
        echo "$1 did not start for backend $2" >&2
    fi
    stop_server
    if [ $rc -ne 0 ] || [ "$(field "$result" errors)" != 0 ]; then
        echo "FAILED: vhost-blk-bench against $1 ($2, $label, $mode) exited with status $rc" >&2
        [ -z "$result" ] || echo "$result" >&2
        tail -n 5 "$work/bench.log" "$work/$1.log" >&2 2>/dev/null || true
        failed+=("$1 $2 $label $mode")
        result=""
    fi
    return 0
}

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
qsd_version=$(qemu-storage-daemon --version | head -n 1)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git status --porcelain -- Sources 2>/dev/null)" ] && commit="$commit+uncommitted"
cmd="RUNTIME=$runtime WARMUP=$warmup SIZE=$size_mib"
[ "$quick" = 1 ] && cmd="$cmd QUICK=1"
[ -n "$rows_filter" ] && cmd="$cmd ROWS='$rows_filter'"
[ "$build" != release ] && cmd="$cmd BUILD=$build"
[ "$repeat" != 1 ] && cmd="$cmd REPEAT=$repeat"
[ -n "${BIN:-}" ] && cmd="$cmd BIN=$BIN"
[ -n "${DAEMON_ARGS:-}" ] && cmd="$cmd DAEMON_ARGS='$DAEMON_ARGS'"
cmd="$cmd scripts/bench.sh"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# median FIELD JSON...: the median of FIELD over the non-empty results ("" if none).
median() {
    local f=$1; shift
    local r
    for r in "$@"; do [ -n "$r" ] && field "$r" "$f"; done |
        sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

failed=()
lines=()
for row in "${rows[@]}"; do
    IFS=/ read -r backend workload cmode <<<"$row"
    workload_args "$workload"
    echo "[$row] $label, $cmode" >&2
    ours_runs=() qsd_runs=()
    for ((rep = 0; rep < repeat; rep++)); do
        # Alternate who goes first, so a slow phase of the machine hits both.
        if ((rep % 2 == 0)); then
            run_case ours "$backend" "$cmode"; ours_runs+=("$result")
            run_case qsd "$backend" "$cmode"; qsd_runs+=("$result")
        else
            run_case qsd "$backend" "$cmode"; qsd_runs+=("$result")
            run_case ours "$backend" "$cmode"; ours_runs+=("$result")
        fi
    done
    line=$(printf '%-6s %-19s %-4s' "$backend" "$label" "$cmode")
    for f in iops mbps lat_p50_us lat_p99_us server_cpu_us_per_io; do
        o=$(median $f "${ours_runs[@]}"); q=$(median $f "${qsd_runs[@]}")
        case $f in iops) fmt='%.0f' w=9 ;; mbps) fmt='%.1f' w=7 ;; server_cpu*) fmt='%.2f' w=6 ;; *) fmt='%.1f' w=7 ;; esac
        line+=$(printf ' | %*s %*s %5s' $w "$(num "$o" "$fmt")" $w "$(num "$q" "$fmt")" "$(ratio "$o" "$q")")
    done
    lines+=("$line")
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(($(date +%s) - started))

{
    echo "vhost-blkd vs qemu-storage-daemon, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit"
    echo "command: $cmd   ($elapsed s in all, builds included)"
    echo "machine: $(nproc) CPUs, $cpu_model, $(uname -sr); peer: $qsd_version"
    echo "servers on CPU $server_cpu (ours: -m 0x$(printf %x $((1 << server_cpu))), qsd: one iothread), vhost-blk-bench on CPU $bench_cpu;" \
        "${runtime} s measured after ${warmup} s warm-up per run; ${size_mib} MiB disks; load average before $load_before, after $load_after"
    echo "backends: ram = our malloc vs qsd null-co; shm = file on tmpfs /dev/shm (ours bdev_uring_create, inline I/O; qsd file aio=io_uring);"
    echo "          direct = O_DIRECT file in $direct_dir (ours bdev_uring_create, qsd file aio=io_uring cache.direct=on)"
    echo "mode: int = client sleeps on the call eventfd, poll = client busy-polls the used ring (RAM 4K randread rows only; the rest are int)"
    [ "$repeat" = 1 ] || echo "each figure: the median of $repeat runs per server (ours and qsd alternate, the first of each pair alternating too)"
    echo
    printf '%-31s | %-25s | %-21s | %-21s | %-21s | %s\n' "" "IOPS" "MB/s" "p50 latency (us)" "p99 latency (us)" "server CPU us/IO"
    printf '%-6s %-19s %-4s | %9s %9s %5s | %7s %7s %5s | %7s %7s %5s | %7s %7s %5s | %6s %6s %5s\n' \
        disk workload mode ours qsd ratio ours qsd ratio ours qsd ratio ours qsd ratio ours qsd ratio
    printf -- '-%.0s' $(seq 153); echo
    for l in "${lines[@]}"; do echo "$l"; done
    echo
    echo "ratio = ours/qsd (IOPS, MB/s: higher is better; latency, CPU/IO: lower is better); '-' = no result"
    if [ ${#failed[@]} -gt 0 ]; then for f in "${failed[@]}"; do echo "FAILED: $f"; done; fi
} >"$work/table.txt"
cat "$work/table.txt"

if [ "$save" = 1 ]; then
    mkdir -p bench-results
    stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
    cp "$work/table.txt" "bench-results/$stamp.txt"
    cp "$work/table.txt" bench-results/latest.txt
    echo "written: bench-results/latest.txt, bench-results/$stamp.txt" >&2
fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "${#failed[@]} run(s) failed" >&2
    exit 1
fi
