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
#   ROWS='^packed/' scripts/bench.sh        packed rings against split rings, RAM QD1 and QD32
#
# Knobs: REPEAT (fresh-server runs per server and row; default 5 for a full run,
# else 1: each figure is the median, a spread table gives min, median and max of
# IOPS and CPU per I/O, and ours and qsd take turns going first), RUNTIME
# (measured seconds per run, default 5), WARMUP (default
# min(1, RUNTIME/2)), SIZE (MiB of each disk, default 1024), ROWS (ERE over row
# ids, or "list"), QUICK=1 (one row per backend and workload), BUILD
# (release|debug), BENCH_SCRATCH (SwiftPM scratch path), DIRECT_DIR (where the
# O_DIRECT file goes, default /var/tmp: the root filesystem), SAVE (1: write
# bench-results/latest.txt and a dated copy; default 1 only for a full release
# run), SERVER_CPU, BENCH_CPU, BIN (a folder of prebuilt binaries: no build),
# DAEMON_ARGS (more vhost-blkd options, e.g. "--tmpfs-io engine"), COUNTERS (1,
# the default: read our daemon's loop and queue counters at the start and near
# the end of each measured window and print them per run, see
# docs/PERFORMANCE.md "Why identical runs differ"; 0: do not), FILL (1, the
# default: write the malloc bdev before each RAM run; 0: read it unwritten, as
# the tables before issue 23 did, for comparison with them).
#
# Backends (same data for both servers):
#   ram     ours: bdev_malloc_create SIZE, written in full by the client
#           (vhost-blk-bench --fill) before each run, so reads copy real data,
#           not the kernel's zero page
#           qsd:  null-co (no read-zeroes: reads never touch the buffer; it
#           stores nothing, so there is nothing to fill)
#   null    the like-for-like RAM pair: neither server stores data or
#           touches the buffers
#           ours: bdev_null_create SIZE 512
#           qsd:  null-co, as for ram
#   shm     a SIZE file on tmpfs /dev/shm, fully written first
#           ours: bdev_uring_create (buffered: tmpfs refuses O_DIRECT; served inline,
#           preadv/pwritev on the reactor, unless DAEMON_ARGS="--tmpfs-io engine")
#           qsd:  driver=file, aio=io_uring
#   direct  a SIZE file in DIRECT_DIR, fully written first
#           ours: bdev_uring_create (opens O_DIRECT itself)
#           qsd:  driver=file, aio=io_uring, cache.direct=on
# Packed rows (packed/WORKLOAD/MODE, issue 22): RAM as above, ours only, split
# rings against packed rings (vhost-blk-bench --packed, VIRTIO_F_RING_PACKED) in
# the same run, both on a controller created with packed_ring, so only the
# ring the client negotiates differs; the ratio is packed/split. qsd offers no
# packed rings: no peer column (they print in a table of their own).
# Servers: `vhost-blkd -m 0x1` under `taskset -c 0`; qemu-storage-daemon under
# `taskset -c 0` with one iothread and num-queues = the row's queue count.
# Each run starts a fresh server, so an idle one never competes with the one
# under test; ours and qsd alternate run by run.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
. "$repo/scripts/lib/bench-common.sh"
started=$(date +%s)
runtime=${RUNTIME:-5}
warmup=${WARMUP:-$(awk -v r="$runtime" 'BEGIN { w = r / 2; if (w > 1) w = 1; print w }')}
size_mib=${SIZE:-1024}
quick=${QUICK:-0}
rows_filter=${ROWS:-}
build=${BUILD:-release}
counters=${COUNTERS:-1}
fill=${FILL:-1}
server_cpu=${SERVER_CPU:-0}
bench_cpu=${BENCH_CPU:-$([ "$(nproc)" -ge 2 ] && echo 1 || echo 0)}
direct_dir=${DIRECT_DIR:-/var/tmp}
case "$size_mib" in *[!0-9]* | "" | 0) echo "SIZE must be a positive number of MiB" >&2; exit 2 ;; esac
build_config

# --- The matrix -------------------------------------------------------------
# Row id: backend/workload/mode. Client modes: int (sleep on the call eventfd),
# poll (busy-poll the used ring). Both modes for the RAM and null 4K randread
# rows and tmpfs QD32 (issue 23's rows); the other rows use the
# interrupt-driven client only, to keep the run short.
# packed/...: the RAM backend, ours with split rings against ours with packed.
all_rows=(
    ram/rr1/int ram/rr1/poll ram/rr32/int ram/rr32/poll ram/rw32/int ram/seq64k/int ram/rr32x2/int ram/rr32x2/poll
    null/rr1/int null/rr32/int null/rr32/poll
    packed/rr1/int packed/rr1/poll packed/rr32/int packed/rr32/poll
    shm/rr1/int shm/rr32/int shm/rr32/poll shm/rw32/int shm/seq64k/int shm/rr32x2/int
    direct/rr1/int direct/rr32/int direct/rw32/int direct/seq64k/int direct/rr32x2/int
)
quick_rows=(ram/rr32/poll ram/rr1/int null/rr32/int shm/rw32/int shm/rr32x2/int direct/seq64k/int packed/rr32/int)

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
repeat=${REPEAT:-$([ $full = 1 ] && echo 5 || echo 1)}
case "$repeat" in *[!0-9]* | "" | 0) echo "REPEAT must be a positive number of runs" >&2; exit 2 ;; esac
need_shm=0 need_direct=0 need_qsd=0
for r in "${rows[@]}"; do
    case "$r" in shm/*) need_shm=1 need_qsd=1 ;; direct/*) need_direct=1 need_qsd=1 ;; packed/*) ;; *) need_qsd=1 ;; esac
done

if [ $need_qsd = 1 ]; then
    command -v qemu-storage-daemon >/dev/null || { echo "qemu-storage-daemon is not installed" >&2; exit 1; }
fi
if [ "$counters" = 1 ] && ! command -v jq >/dev/null; then
    echo "jq is not installed: per-run counters off (COUNTERS=0)" >&2
    counters=0
fi

# --- Build ------------------------------------------------------------------
build_binaries

work=$(mktemp -d /tmp/vhost-blk-bench.XXXXXX)
shm_file=/dev/shm/vhost-blk-bench.$$.img
direct_file=$direct_dir/vhost-blk-bench.$$.img
server_pid=""
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

# start_ours BACKEND / start_qsd BACKEND QUEUES: set server_pid and socket.
# In a packed row ($packed_row = 1) our controller is created with packed_ring.
start_ours() {
    launch_ours || return 1
    case "$1" in
        ram) ctl bdev_malloc_create "$size_mib" 512 -b Disk0 >/dev/null ;;
        null) ctl bdev_null_create Disk0 "$size_mib" 512 >/dev/null ;;
        shm) ctl bdev_uring_create "$shm_file" Disk0 >/dev/null ;;
        direct) ctl bdev_uring_create "$direct_file" Disk0 >/dev/null ;;
    esac || return 1
    ours_controller "$packed_row" || return 1
    if [ "$1" = ram ] && [ "$fill" = 1 ]; then
        # Write every block first: a never-written malloc bdev reads as the
        # kernel's zero page (one page, always in cache), which flatters reads.
        timeout 120 "$bin/vhost-blk-bench" --socket "$socket" --fill --bs 65536 --iodepth 8 \
            --cpu "$bench_cpu" >>"$work/bench.log" 2>&1 || { echo "filling the malloc bdev failed" >&2; return 1; }
    fi
}

# snapshot: one line of our daemon's counters, summed over reactors and queues:
# requests kicks interrupts_sent interrupts_suppressed batches busy idle poll_ns
# sleeps poll_rounds empty_poll_rounds poll_window_offs engine_submits
# engine_submitted poll_window_ns poll_window_probes ("" if unreadable).
snapshot() {
    { ctl framework_get_reactors && ctl vhost_get_controllers; } 2>/dev/null | jq -s -r '
        ([.[1][].sessions[].queues[]]) as $q | (.[0].reactors) as $r |
        [($q | map(.requests) | add // 0), ($q | map(.kicks) | add // 0), ($q | map(.interrupts_sent) | add // 0),
         ($q | map(.interrupts_suppressed) | add // 0), ($q | map(.batches) | add // 0),
         ($r | map(.busy) | add), ($r | map(.idle) | add), ($r | map(.loop.poll_ns) | add),
         ($r | map(.loop.sleeps) | add), ($r | map(.loop.poll_rounds) | add), ($r | map(.loop.empty_poll_rounds) | add),
         ($r | map(.loop.poll_window_offs) | add), ($r | map(.loop.engine_submits) | add),
         ($r | map(.loop.engine_submitted) | add), ($r | map(.loop.poll_window_ns) | max), ($r | map(.loop.poll_window_probes // 0) | add)] | map(tostring) | join(" ")' 2>/dev/null || true
}

# cpu_line: the machine's CPU times (/proc/stat's "cpu" line, in ticks).
cpu_line() { sed -n 's/^cpu  *//p' /proc/stat; }
# steal_share BEFORE AFTER: the share of the CPUs' time the hypervisor stole
# between two cpu_line readings (its 8th field), in percent; "-" if unreadable.
steal_share() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        n = split(a, x, " "); m = split(b, y, " ")
        if (n < 8 || m < 8) { print "-"; exit }
        t = 0; for (i = 1; i <= 8; i++) t += y[i] - x[i]
        printf "%.0f%%", (t > 0 ? 100 * (y[8] - x[8]) / t : 0)
    }'
}

# sleep_until T0 OFFSET: sleeps until OFFSET seconds after T0 (date +%s.%N), if still ahead.
sleep_until() {
    local left
    left=$(awk -v t="$1" -v o="$2" -v now="$(date +%s.%N)" 'BEGIN { d = t + o - now; if (d > 0) printf "%.3f", d }')
    [ -z "$left" ] || sleep "$left"
}

# per_io BEFORE AFTER: the counters between two snapshots, per I/O ("-" when
# either read failed or the session ended in between: its queue counters went).
per_io() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        n = split(a, x, " "); m = split(b, y, " ")
        if (n < 16 || x[1] == 0) { print "counters: - (no session at the first read)"; exit }
        if (m < 16 || y[1] <= x[1] || y[5] < x[5]) { print "counters: - (the session had ended at the second read)"; exit }
        for (i = 1; i <= 16; i++) d[i] = y[i] - x[i]
        io = d[1] > 0 ? d[1] : 1; t = d[6] + d[7]; if (t <= 0) t = 1
        printf "kicks/IO %.3f  irq/IO %.3f  sleeps/IO %.3f  polls/IO %.2f  empty/IO %.2f  pop-batch %.2f  submit-batch %.1f  asleep %.0f%%  polling %.0f%%  window-offs %d  probes %d  window-end %.0fus",
            d[2] / io, d[3] / io, d[9] / io, d[10] / io, d[11] / io, (d[5] > 0 ? d[1] / d[5] : 0),
            (d[13] > 0 ? d[14] / d[13] : 0), 100 * d[7] / t, 100 * d[8] / t, d[12], d[16], y[15] / 1000
    }'
}
start_qsd() {
    local node
    case "$1" in
        ram | null) node="driver=null-co,node-name=n0,size=$size_bytes" ;;
        shm) node="driver=file,node-name=n0,filename=$shm_file,aio=io_uring" ;;
        direct) node="driver=file,node-name=n0,filename=$direct_file,aio=io_uring,cache.direct=on" ;;
    esac
    launch_qsd "$node" "$2"
}

bench_timeout=$(awk -v r="$runtime" -v w="$warmup" 'BEGIN { printf "%d", r + w + 30.999 }')
# The counters' window: from 0.1 s after the warm-up to 80 % of the measured
# time (reading them takes two vhost-blkctl calls, slow on a busy machine; none
# for runs under half a second).
counter_start=$(awk -v w="$warmup" 'BEGIN { printf "%.2f", w + 0.1 }')
counter_gap=$(awk -v r="$runtime" 'BEGIN { if (r >= 0.5) printf "%.2f", r * 0.8 - 0.1 }')

# run_case SERVER BACKEND MODE [RING]: sets $result to the bench's JSON line
# ("" on failure); RING split (the default) or packed (vhost-blk-bench --packed).
run_case() {
    local rc=0 mode=interrupt ring=${4:-split} ring_arg=()
    [ "$3" = poll ] && mode=poll
    [ "$ring" = packed ] && ring_arg=(--packed)
    result=""
    : >"$work/bench.log"
    run_counters=""
    run_steal=""
    if "start_$1" "$2" "$queues"; then
        local cpu0; cpu0=$(cpu_line)
        timeout "$bench_timeout" "$bin/vhost-blk-bench" --socket "$socket" --rw "$rw" --bs "$bs" \
            --iodepth "$qd" --queues "$queues" --mode "$mode" --runtime "$runtime" --warmup "$warmup" \
            --cpu "$bench_cpu" --server-pid "$server_pid" "${ring_arg[@]}" --json >"$work/result.json" 2>>"$work/bench.log" &
        local client=$! launched
        launched=$(date +%s.%N)
        if [ "$1" = ours ] && [ "$counters" = 1 ] && [ -n "$counter_gap" ]; then
            # Inside the measured window: from just after the warm-up to just
            # before its end, while the client is still connected.
            sleep_until "$launched" "$counter_start"; local c0; c0=$(snapshot)
            sleep_until "$launched" "$(awk -v a="$counter_start" -v b="$counter_gap" 'BEGIN { print a + b }')"
            local c1; c1=$(snapshot)
            run_counters=$(per_io "$c0" "$c1")
        fi
        wait "$client" || rc=$?
        result=$(cat "$work/result.json")
        run_steal=$(steal_share "$cpu0" "$(cpu_line)")
    else
        rc=1
        echo "$1 did not start for backend $2" >&2
    fi
    check_run "$1" "$rc" "$2, $label, $mode, $ring rings" "$1 $2 $label $mode $ring"
    return 0
}

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
qsd_version="not run (packed rows only)"
[ $need_qsd = 1 ] && qsd_version=$(qemu-storage-daemon --version | head -n 1)
commit=$(source_commit)
cmd="RUNTIME=$runtime WARMUP=$warmup SIZE=$size_mib"
[ "$quick" = 1 ] && cmd="$cmd QUICK=1"
[ -n "$rows_filter" ] && cmd="$cmd ROWS='$rows_filter'"
[ "$build" != release ] && cmd="$cmd BUILD=$build"
[ "$repeat" != 1 ] && cmd="$cmd REPEAT=$repeat"
[ -n "${BIN:-}" ] && cmd="$cmd BIN=$BIN"
[ -n "${DAEMON_ARGS:-}" ] && cmd="$cmd DAEMON_ARGS='$DAEMON_ARGS'"
[ "$fill" = 1 ] || cmd="$cmd FILL=$fill"
cmd="$cmd scripts/bench.sh"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# note_run SERVER REP [WHO]: one line per run, with our counters when read;
# WHO names the run (default SERVER; packed rows: split or packed).
note_run() {
    local l
    local ios kicks wakeups
    ios=$(field "$result" ios) kicks=$(field "$result" kicks) wakeups=$(field "$result" wakeups)
    l=$(printf '%-6s %-19s %-4s %-6s %2d | %9s %6s | client kicks/IO %5s wake-ups/IO %5s' "$backend" "$label" "$cmode" "${3:-$1}" "$(($2 + 1))" \
        "$(num "$(field "$result" iops)" %.0f)" "$(num "$(field "$result" server_cpu_us_per_io)" %.2f)" \
        "$(per "$kicks" "$ios")" "$(per "$wakeups" "$ios")")
    l+=" steal ${run_steal:--}"
    [ "$1" = ours ] && [ -n "$run_counters" ] && l+=" | $run_counters"
    echo "  $l" >&2
    run_lines+=("$l")
}

failed=()
lines=()
spread_lines=()
run_lines=()
packed_lines=()
packed_spread_lines=()
packed_row=0
for row in "${rows[@]}"; do
    IFS=/ read -r backend workload cmode <<<"$row"
    workload_args "$workload"
    echo "[$row] $label, $cmode" >&2
    # ours_runs against qsd_runs; in a packed row, packed rings against split.
    ours_runs=() qsd_runs=()
    packed_row=0
    if [ "$backend" = packed ]; then
        packed_row=1 backend=ram
        for ((rep = 0; rep < repeat; rep++)); do
            if ((rep % 2 == 0)); then
                run_case ours "$backend" "$cmode" split; qsd_runs+=("$result"); note_run ours $rep split
                run_case ours "$backend" "$cmode" packed; ours_runs+=("$result"); note_run ours $rep packed
            else
                run_case ours "$backend" "$cmode" packed; ours_runs+=("$result"); note_run ours $rep packed
                run_case ours "$backend" "$cmode" split; qsd_runs+=("$result"); note_run ours $rep split
            fi
        done
    fi
    for ((rep = 0; rep < repeat && packed_row == 0; rep++)); do
        # Alternate who goes first, so a slow phase of the machine hits both.
        if ((rep % 2 == 0)); then
            run_case ours "$backend" "$cmode"; ours_runs+=("$result"); note_run ours $rep
            run_case qsd "$backend" "$cmode"; qsd_runs+=("$result"); note_run qsd $rep
        else
            run_case qsd "$backend" "$cmode"; qsd_runs+=("$result"); note_run qsd $rep
            run_case ours "$backend" "$cmode"; ours_runs+=("$result"); note_run ours $rep
        fi
    done
    sline=$(printf '%-6s %-19s %-4s' "$backend" "$label" "$cmode")
    for f in iops server_cpu_us_per_io; do
        for runs in ours qsd; do
            if [ $runs = ours ]; then set -- "${ours_runs[@]}"; else set -- "${qsd_runs[@]}"; fi
            lo=$(minimum $f "$@"); md=$(median $f "$@"); hi=$(maximum $f "$@")
            if [ $f = iops ]; then
                sline+=$(printf ' | %9s %9s %9s %5s' "$(num "$lo" %.0f)" "$(num "$md" %.0f)" "$(num "$hi" %.0f)" "$(ratio "$hi" "$lo")")
            else
                sline+=$(printf ' | %6s %6s %6s %5s' "$(num "$lo" %.2f)" "$(num "$md" %.2f)" "$(num "$hi" %.2f)" "$(ratio "$hi" "$lo")")
            fi
        done
    done
    if [ $packed_row = 1 ]; then packed_spread_lines+=("$sline"); else spread_lines+=("$sline"); fi
    line=$(printf '%-6s %-19s %-4s' "$backend" "$label" "$cmode")
    for f in iops mbps lat_p50_us lat_p99_us server_cpu_us_per_io; do
        o=$(median $f "${ours_runs[@]}"); q=$(median $f "${qsd_runs[@]}")
        case $f in iops) fmt='%.0f' w=9 ;; mbps) fmt='%.1f' w=7 ;; server_cpu*) fmt='%.2f' w=6 ;; *) fmt='%.1f' w=7 ;; esac
        line+=$(printf ' | %*s %*s %5s' $w "$(num "$o" "$fmt")" $w "$(num "$q" "$fmt")" "$(ratio "$o" "$q")")
    done
    if [ $packed_row = 1 ]; then packed_lines+=("$line"); else lines+=("$line"); fi
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(($(date +%s) - started))

# print_tables A B PER LINES SPREAD: the medians table (A against B, ratio A/B)
# with the rows of array LINES, then the spread table over the runs per PER
# and row with the rows of array SPREAD.
print_tables() {
    local a=$1 b=$2 per=$3 l
    local -n table_rows=$4 spread_rows=$5
    printf '%-31s | %-25s | %-21s | %-21s | %-21s | %s\n' "" "IOPS" "MB/s" "p50 latency (us)" "p99 latency (us)" "server CPU us/IO"
    printf '%-6s %-19s %-4s | %9s %9s %5s | %7s %7s %5s | %7s %7s %5s | %7s %7s %5s | %6s %6s %5s\n' \
        disk workload mode "$a" "$b" ratio "$a" "$b" ratio "$a" "$b" ratio "$a" "$b" ratio "$a" "$b" ratio
    printf -- '-%.0s' $(seq 153); echo
    for l in "${table_rows[@]}"; do echo "$l"; done
    echo
    echo "ratio = $a/$b (IOPS, MB/s: higher is better; latency, CPU/IO: lower is better); '-' = no result"
    echo
    echo "spread over the $repeat fresh-server run(s) per $per and row: min, median, max, and max/min"
    printf '%-31s | %-35s | %-35s | %-27s | %s\n' "" "IOPS $a" "IOPS $b" "server CPU us/IO $a" "server CPU us/IO $b"
    printf '%-6s %-19s %-4s | %9s %9s %9s %5s | %9s %9s %9s %5s | %6s %6s %6s %5s | %6s %6s %6s %5s\n' \
        disk workload mode min median max max/min min median max max/min min median max max/min min median max max/min
    printf -- '-%.0s' $(seq 161); echo
    for l in "${spread_rows[@]}"; do echo "$l"; done
}

{
    echo "vhost-blkd vs qemu-storage-daemon, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit"
    echo "command: $cmd   ($elapsed s in all, builds included)"
    echo "machine: $(nproc) CPUs, $cpu_model, $(uname -sr); peer: $qsd_version"
    echo "servers on CPU $server_cpu (ours: -m 0x$(printf %x $((1 << server_cpu))), qsd: one iothread), vhost-blk-bench on CPU $bench_cpu;" \
        "${runtime} s measured after ${warmup} s warm-up per run; ${size_mib} MiB disks; load average before $load_before, after $load_after"
    echo "backends: ram = our malloc ($([ "$fill" = 1 ] && echo "written in full before each run" || echo "never written: reads copy the zero page, FILL=0")) vs qsd null-co (stores nothing);"
    echo "          null = our null bdev vs qsd null-co (neither stores data: the like-for-like RAM pair);"
    echo "          shm = file on tmpfs /dev/shm (ours bdev_uring_create, inline I/O; qsd file aio=io_uring);"
    echo "          direct = O_DIRECT file in $direct_dir (ours bdev_uring_create, qsd file aio=io_uring cache.direct=on)"
    echo "mode: int = client sleeps on the call eventfd, poll = client busy-polls the used ring (RAM and null 4K randread rows and shm QD32 only; the rest are int)"
    [ "$repeat" = 1 ] || echo "each figure: the median of $repeat runs per server (ours and qsd alternate, the first of each pair alternating too; packed rows: split and packed)"
    if [ ${#lines[@]} -gt 0 ]; then
        echo
        print_tables ours qsd server lines spread_lines
    fi
    if [ ${#packed_lines[@]} -gt 0 ]; then
        echo
        echo "packed rings against split rings, both vhost-blkd (ram: malloc bdev; one controller created with packed_ring;"
        echo "the client negotiates VIRTIO_F_RING_PACKED or not); qsd offers no packed rings: no peer for these rows"
        print_tables packed split ring packed_lines packed_spread_lines
    fi
    echo
    echo "every run: IOPS, server CPU us/IO; for ours, the daemon's counters over the measured window"
    echo "(vhost_get_controllers, framework_get_reactors; docs/PERFORMANCE.md, \"Why identical runs differ\")"
    for l in "${run_lines[@]}"; do echo "$l"; done
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
exit_if_failed
