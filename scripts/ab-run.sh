#!/bin/bash
# One vhost-blk-bench run against a fresh vhost-blkd (1 GiB malloc bdev, daemon on
# CPU 0, client on CPU 1), printed as one line: for A/B comparisons of two builds
# or two daemon options, run it alternately, e.g.
#
#   for i in 1 2 3 4; do
#     scripts/ab-run.sh .build-nostats/release/vhost-blkd nostats --iodepth 32 --mode poll --runtime 4
#     scripts/ab-run.sh .build-perf/release/vhost-blkd stats --iodepth 32 --mode poll --runtime 4
#   done
#   DAEMON_ARGS='--poll-max-us 32' scripts/ab-run.sh .build-perf/release/vhost-blkd p32 --iodepth 32
#
# usage: scripts/ab-run.sh DAEMON LABEL [vhost-blk-bench options...]
# BIN: folder of vhost-blkctl and vhost-blk-bench (default .build-perf/release);
# FILE: serve this file (bdev_uring_create) instead of the malloc bdev.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,15p' "$0" >&2; exit 2; }
daemon=$1 label=$2
shift 2
bin=${BIN:-.build-perf/release}
d=$(mktemp -d /tmp/ab-run.XXXXXX)
# shellcheck disable=SC2086
taskset -c 0 "$daemon" -r "$d/rpc.sock" -S "$d" -m 0x1 --log-level warning ${DAEMON_ARGS:-} &
pid=$!
trap 'kill -INT $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$d"' EXIT
for _ in $(seq 100); do [ -S "$d/rpc.sock" ] && break; sleep 0.05; done
if [ -n "${FILE:-}" ]; then
    "$bin/vhost-blkctl" -s "$d/rpc.sock" "${FILE_METHOD:-bdev_uring_create}" "$FILE" D0 >/dev/null
else
    "$bin/vhost-blkctl" -s "$d/rpc.sock" bdev_malloc_create 1024 512 -b D0 >/dev/null
fi
"$bin/vhost-blkctl" -s "$d/rpc.sock" vhost_create_blk_controller vhost.0 D0 >/dev/null
"$bin/vhost-blk-bench" --socket "$d/vhost.0" --cpu 1 --server-pid "$pid" --json "$@" >"$d/r.json"
python3 - "$label" "$d/r.json" <<'PY'
import json, sys
label, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
n = max(r["ios"], 1)
print("%-16s iops=%9d  cpu_us/io=%s  p50_us=%s  kicks/io=%.3f  wakeups/io=%.3f" % (
    label, r["iops"], r.get("server_cpu_us_per_io"), r["lat_p50_us"], r["kicks"] / n, r["wakeups"] / n))
PY
