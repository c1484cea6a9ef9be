#!/usr/bin/env bash
# Interrupt coalescing's effect (issue 22): vhost-blk-bench in interrupt mode
# (the client sleeps on the call eventfd) at QD32 against a RAM bdev, once per
# `vhost_controller_set_coalescing` setting, on one vhost-blkd. Per setting it
# prints the bench's line (IOPS, latency, server CPU per I/O, the client's
# interrupts per I/O) and the daemon's own counters over the middle of the run
# (interrupts_sent, interrupts_delayed and requests from vhost_get_controllers).
#
#   scripts/coalescing-bench.sh
#   SETTINGS="0:60000 80:60000 20:60000" RUNTIME=5 REPEAT=2 scripts/coalescing-bench.sh
#
# Knobs: SETTINGS (delay_base_us:iops_threshold pairs, default "0:60000
# 80:60000"), RUNTIME (measured seconds, default 5), REPEAT (rounds over all
# settings, default 1), IODEPTH (default 32), SERVER_CPU (default 0),
# BENCH_CPU (default 1), BIN (prebuilt binaries; default: build release).
# The server runs `-m` on SERVER_CPU under taskset; only the processes this
# script starts are stopped, by pid.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
[ -d /opt/swift/usr/bin ] && export PATH=/opt/swift/usr/bin:$PATH
settings=${SETTINGS:-"0:60000 80:60000"}
runtime=${RUNTIME:-5}
repeat=${REPEAT:-1}
iodepth=${IODEPTH:-32}
server_cpu=${SERVER_CPU:-0}
bench_cpu=${BENCH_CPU:-$([ "$(nproc)" -ge 2 ] && echo 1 || echo 0)}

if [ -n "${BIN:-}" ]; then
    bin=$BIN
else
    for product in vhost-blkd vhost-blkctl vhost-blk-bench; do swift build -c release --product "$product" >&2; done
    bin="$(swift build -c release --show-bin-path)"
fi

work=$(mktemp -d /tmp/vhost-blkd-coalescing.XXXXXX)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
ctl=("$bin/vhost-blkctl" -s "$work/rpc.sock")

taskset -c "$server_cpu" "$bin/vhost-blkd" -r "$work/rpc.sock" -S "$work" -m "0x$(printf %x $((1 << server_cpu)))" \
    --log-level warning 2>>"$work/daemon.log" &
server_pid=$!
for _ in $(seq 200); do [ -S "$work/rpc.sock" ] && break; sleep 0.05; done
"${ctl[@]}" bdev_malloc_create 256 512 -b Malloc0 >/dev/null
"${ctl[@]}" vhost_create_blk_controller vhost.0 Malloc0 >/dev/null

# queue0 FIELD...: the first queue's counters, space-separated.
counters() {
    "${ctl[@]}" vhost_get_controllers -n vhost.0 | python3 -c '
import json, sys
queues = json.load(sys.stdin)[0]["sessions"][0]["queues"]
print(" ".join(str(sum(q[k] for q in queues)) for k in ("requests", "interrupts_sent", "interrupts_delayed")))'
}

echo "vhost-blkd interrupt coalescing, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), randread 4K QD$iodepth, 1 queue, RAM bdev, client mode interrupt"
for round in $(seq "$repeat"); do
    for setting in $settings; do
        delay=${setting%%:*}
        iops=${setting##*:}
        "${ctl[@]}" vhost_controller_set_coalescing vhost.0 "$delay" "$iops"
        "$bin/vhost-blk-bench" --socket "$work/vhost.0" --queues 1 --iodepth "$iodepth" --rw randread --bs 4096 \
            --runtime "$runtime" --warmup 1 --mode interrupt --cpu "$bench_cpu" --server-pid "$server_pid" >"$work/bench.out" &
        bench=$!
        # The daemon's counters over the middle of the measured window.
        sleep "$(awk -v r="$runtime" 'BEGIN { print 1 + r / 4 }')"
        read -r r0 s0 d0 < <(counters)
        sleep "$(awk -v r="$runtime" 'BEGIN { print r / 2 }')"
        read -r r1 s1 d1 < <(counters)
        wait "$bench"
        printf 'round %s delay_base_us=%s iops_threshold=%s: %s\n' "$round" "$delay" "$iops" "$(cat "$work/bench.out")"
        awk -v r=$((r1 - r0)) -v s=$((s1 - s0)) -v d=$((d1 - d0)) 'BEGIN {
            printf "    daemon: %d requests, %d interrupts sent (%.3f per I/O), %d delayed\n", r, s, (r > 0 ? s / r : 0), d }'
    done
done
