#!/bin/bash
# Instructions per request on the reactor thread (docs/PERFORMANCE.md,
# "Instruction counts"): valgrind's callgrind counts only inside Reactor.run,
# while vhost-blk-bench runs 4 KiB random reads at iodepth 8. Valgrind cannot
# run io_uring, so the daemon uses the thread-pool engine, and polling is off.
# Counts are reproducible to about 1 %, unlike timings on a shared machine.
#
# usage: scripts/callgrind-per-request.sh DAEMON [null|malloc] [RUNTIME_S]
# BIN: folder of vhost-blkctl and vhost-blk-bench (default: DAEMON's folder).
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,9p' "$0" >&2; exit 2; }
daemon=$1 backend=${2:-null} runtime=${3:-4}
bin=${BIN:-$(dirname "$daemon")}
d=$(mktemp -d /tmp/callgrind.XXXXXX)
# Valgrind 3.19 refuses the release binary's debug information: a strip -g copy keeps the names.
strip -g -o "$d/vhost-blkd" "$daemon"
valgrind --tool=callgrind --callgrind-out-file="$d/cg.out" --toggle-collect='*Reactor*run*' \
    "$d/vhost-blkd" -r "$d/rpc.sock" -S "$d" -m 0x1 --engine thread-pool --poll-max-us 0 --log-level warning \
    2>"$d/valgrind.log" &
pid=$!
trap 'kill -INT $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$d"' EXIT
for _ in $(seq 600); do [ -S "$d/rpc.sock" ] && break; sleep 0.1; done
if [ "$backend" = malloc ]; then
    "$bin/vhost-blkctl" -s "$d/rpc.sock" bdev_malloc_create 64 512 -b D0 >/dev/null
else
    "$bin/vhost-blkctl" -s "$d/rpc.sock" bdev_null_create D0 64 512 >/dev/null
fi
"$bin/vhost-blkctl" -s "$d/rpc.sock" vhost_create_blk_controller vhost.0 D0 >/dev/null
"$bin/vhost-blk-bench" --socket "$d/vhost.0" --iodepth 8 --warmup 0 --runtime "$runtime" --json >"$d/r.json"
kill -INT $pid
wait $pid || true
ios=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ios"])' "$d/r.json")
ir=$(callgrind_annotate "$d/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !seen { gsub(",", "", $1); print $1; seen = 1 }')  # reads to the end: an early exit would SIGPIPE callgrind_annotate and fail the pipe
python3 -c 'import sys; ir, ios = int(sys.argv[1]), int(sys.argv[2]); print("%s: %d instructions over %d requests = %.1f per request" % (sys.argv[3], ir, ios, ir / max(ios, 1)))' "$ir" "$ios" "$backend"
