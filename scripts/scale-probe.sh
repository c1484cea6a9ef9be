#!/bin/bash
# Where two-reactor scaling goes (issue 9, target 6): RAM (malloc bdev), 4K random
# reads at QD32 per queue, 1 s warm-up, in four layouts that differ in what the two
# streams share:
#   1x1    one daemon (-m: CPU 0), one controller with 1 queue, one client (CPU 2)
#   indep  two daemons (CPU 0, CPU 1), a controller each, two client processes (CPU 2, 3)
#   2ctl   one daemon with two reactors (CPU 0, 1), two controllers (--cpumask of one
#          reactor each), two client processes (CPU 2, 3)
#   2x2    one daemon with two reactors, one controller with 2 queues (one per reactor),
#          one client process with a thread per queue (CPU 2, 3)
#   2x2far as 2x2 with the reactors on CPUs 0 and 8 and the client on 4 and 12
# `indep` is what the machine gives two streams that share nothing; `2x2` is target 6.
#
#   RUNTIME=2 REPS=3 MODES="int poll" KINDS="1x1 indep 2ctl 2x2 2x2far" BINS=.build-perf/release scripts/scale-probe.sh
#
# Needs 13 CPUs (2x2far), 4 without it. BINS: folders of vhost-blkd, vhost-blkctl and
# vhost-blk-bench, each run in turn (to compare builds). SMOKE=1 wraps CPU numbers onto
# the CPUs there are (checks the script, measures nothing). Prints one line per run:
# layout, client mode, build, total IOPS.
set -euo pipefail
runtime=${RUNTIME:-2}
warmup=${WARMUP:-1}
reps=${REPS:-3}
modes=${MODES:-int poll}
kinds=${KINDS:-1x1 indep 2ctl 2x2 2x2far}
bins=${BINS:-.build-perf/release}
smoke=${SMOKE:-0}
cpus=$(nproc)
work=$(mktemp -d /tmp/scale-probe.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

cpu() { if [ "$smoke" = 1 ]; then echo $(($1 % cpus)); else echo "$1"; fi; }
mask() { local m=0 c; for c in "$@"; do m=$((m | 1 << $(cpu "$c"))); done; printf '0x%x' "$m"; }
list() { local out="" c; for c in "$@"; do out="$out${out:+,}$(cpu "$c")"; done; echo "$out"; }
wait_socket() {
    for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done
    echo "socket $1 did not appear" >&2
    return 1
}
# daemon DIR BIN CPU...: a daemon with a reactor on each CPU, serving from DIR.
daemon() {
    local dir=$1 bin=$2; shift 2
    mkdir -p "$dir"
    taskset -c "$(list "$@")" "$bin/vhost-blkd" -r "$dir/rpc.sock" -S "$dir" -m "$(mask "$@")" \
        --log-level warning 2>>"$work/daemon.log" &
    echo $! >"$dir/pid"
    wait_socket "$dir/rpc.sock"
}
# controller DIR BIN NAME BDEV [CPU]: a 1 GiB malloc bdev and a controller on it.
controller() {
    local dir=$1 bin=$2 name=$3 bdev=$4
    "$bin/vhost-blkctl" -s "$dir/rpc.sock" bdev_malloc_create 1024 512 -b "$bdev" >/dev/null
    "$bin/vhost-blkctl" -s "$dir/rpc.sock" vhost_create_blk_controller "$name" "$bdev" \
        ${5:+--cpumask "$(mask "$5")"} >/dev/null
}
# bench SOCKET BIN MODE OUT CPU...: one client, a queue per CPU.
bench() {
    local socket=$1 bin=$2 mode=$3 out=$4; shift 4
    "$bin/vhost-blk-bench" --socket "$socket" --rw randread --bs 4096 --iodepth 32 --queues $# \
        --mode "$mode" --runtime "$runtime" --warmup "$warmup" --cpus "$(list "$@")" --json \
        >"$out" 2>>"$work/bench.log" || true
}
iops() { sed -n 's/.*"iops":\([0-9.]*\).*/\1/p' "$1" | head -n 1; }

run() {
    local kind=$1 mode=$2 bin=$3 total
    rm -rf "$work"/d* "$work"/o*
    case $kind in
    1x1)
        daemon "$work/d0" "$bin" 0; controller "$work/d0" "$bin" v0 M0
        bench "$work/d0/v0" "$bin" "$mode" "$work/o0" 2 ;;
    indep)
        daemon "$work/d0" "$bin" 0; controller "$work/d0" "$bin" v0 M0
        daemon "$work/d1" "$bin" 1; controller "$work/d1" "$bin" v0 M0
        bench "$work/d0/v0" "$bin" "$mode" "$work/o0" 2 & local p=$!
        bench "$work/d1/v0" "$bin" "$mode" "$work/o1" 3
        wait "$p" ;;
    2ctl)
        daemon "$work/d0" "$bin" 0 1
        controller "$work/d0" "$bin" v0 M0 0; controller "$work/d0" "$bin" v1 M1 1
        bench "$work/d0/v0" "$bin" "$mode" "$work/o0" 2 & local p=$!
        bench "$work/d0/v1" "$bin" "$mode" "$work/o1" 3
        wait "$p" ;;
    2x2)
        daemon "$work/d0" "$bin" 0 1; controller "$work/d0" "$bin" v0 M0
        bench "$work/d0/v0" "$bin" "$mode" "$work/o0" 2 3 ;;
    2x2far)
        daemon "$work/d0" "$bin" 0 8; controller "$work/d0" "$bin" v0 M0
        bench "$work/d0/v0" "$bin" "$mode" "$work/o0" 4 12 ;;
    *) echo "unknown layout $kind" >&2; exit 2 ;;
    esac
    total=0
    for o in "$work"/o*; do total=$(awk -v a="$total" -v b="$(iops "$o")" 'BEGIN { print a + (b == "" ? 0 : b) }'); done
    for p in "$work"/d*/pid; do kill -INT "$(cat "$p")" 2>/dev/null || true; done
    for p in "$work"/d*/pid; do wait "$(cat "$p")" 2>/dev/null || true; done
    printf '%-6s %-5s %-30s %10.0f\n' "$kind" "$mode" "$bin" "$total"
}

echo "scale-probe: RAM 4K randread QD32 per queue, ${runtime} s after ${warmup} s, $reps reps, $cpus CPUs, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
for _ in $(seq "$reps"); do
    for mode in $modes; do
        m=interrupt; [ "$mode" = poll ] && m=poll
        for bin in $bins; do
            for kind in $kinds; do run "$kind" "$m" "$bin"; done
        done
    done
done
grep -h -i -m 5 -E "error|fail" "$work/bench.log" "$work/daemon.log" 2>/dev/null >&2 || true
