#!/usr/bin/env bash
# The RBD row of the benchmark (issue 20): vhost-blkd's bdev_rbd against
# qemu-storage-daemon's rbd driver on the same Ceph image, driven by the same
# client (vhost-blk-bench) in the same run, with `rbd bench` on that image as
# the ceiling (librbd with no vhost-user in between). scripts/bench.sh's
# conventions: each server on CPU 0 (taskset; ours -m 0x1), the client on
# CPU 1, a fresh server per run, ours and qsd interleaved, server CPU per I/O
# from /proc/PID/stat over the measured window (vhost-blk-bench --server-pid:
# every thread of the process, librbd's and librados' included).
#
#   scripts/bench-rbd.sh                 rr32, rw32 and rr1, 10 s per run
#   QUICK=1 scripts/bench-rbd.sh         the same rows, 3 s per run (a smoke test)
#   RUNTIME=30 REPEAT=3 scripts/bench-rbd.sh
#
# Rows (interrupt-mode client, one queue): rr32 = 4K randread QD32, rw32 = 4K
# randwrite QD32, rr1 = 4K randread QD1 (its latency is the point). Each row:
# ours, qsd (REPEAT times, alternating who goes first), then `rbd bench` with
# --io-threads = the queue depth, pinned to the servers' CPU.
#
# Knobs: RUNTIME (measured seconds per run; default 10, QUICK=1: 3), WARMUP
# (default min(1, RUNTIME/2)), REPEAT (runs per server and row, default 1; each
# figure is then the median), SIZE (MiB of the image, default 256), ROWS (ERE
# over rr32 rw32 rr1), RBD_CACHE (librbd's rbd_cache for all three clients:
# false, the default, or true; qsd gets it as cache.direct=on/off, since QEMU
# sets rbd_cache from its cache mode over the config file), BUILD
# (release|debug), BENCH_SCRATCH, BIN (a folder of prebuilt binaries: no
# build), SERVER_CPU, BENCH_CPU, DAEMON_ARGS (more vhost-blkd options),
# OURS_RBD_PARAMS (space-separated key=value librados options for our cluster
# registration only, --config-param each: for experiments such as
# rbd_non_blocking_aio=false; qsd and rbd bench keep the shared config).
#
# Prerequisites (not run by CI; .ci/run does not call this script): the Ceph
# packages of scripts/ceph-test-cluster.sh (it installs them when run as root)
# and qemu-storage-daemon's rbd driver, Debian's qemu-block-extra (installed
# here when missing and run as root: apt-get install --no-install-recommends
# qemu-block-extra). The cluster is scripts/ceph-test-cluster.sh's throw-away
# one (one mon, one memstore OSD, auth none) in a temporary folder, stopped on
# exit. Its OSD is told memstore_page_set=true before the image is written:
# memstore's default object type copies buffer lists on every small write and
# slows down as an object fragments (4K random writes fell from about 2000 to
# 300 IOPS within minutes here), which would make the write row depend on
# its position in the run. The image is filled with random data (rbd import)
# first, so reads return real objects' data.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
. "$repo/scripts/lib/bench-common.sh"
started=$(date +%s)
quick=${QUICK:-0}
runtime=${RUNTIME:-$([ "$quick" = 1 ] && echo 3 || echo 10)}
warmup=${WARMUP:-$(awk -v r="$runtime" 'BEGIN { w = r / 2; if (w > 1) w = 1; print w }')}
size_mib=${SIZE:-256}
repeat=${REPEAT:-1}
rows_filter=${ROWS:-}
build=${BUILD:-release}
rbd_cache=${RBD_CACHE:-false}
server_cpu=${SERVER_CPU:-0}
bench_cpu=${BENCH_CPU:-$([ "$(nproc)" -ge 2 ] && echo 1 || echo 0)}
pool=rbd image=bench0
case "$size_mib" in *[!0-9]* | "" | 0) echo "SIZE must be a positive number of MiB" >&2; exit 2 ;; esac
case "$repeat" in *[!0-9]* | "" | 0) echo "REPEAT must be a positive number of runs" >&2; exit 2 ;; esac
case "$rbd_cache" in true) qsd_direct=off ;; false) qsd_direct=on ;; *) echo "RBD_CACHE must be true or false" >&2; exit 2 ;; esac
build_config

all_rows=(rr32 rw32 rr1)
rows=()
for r in "${all_rows[@]}"; do
    if [ -z "$rows_filter" ] || grep -Eq -- "$rows_filter" <<<"$r"; then rows+=("$r"); fi
done
[ ${#rows[@]} -gt 0 ] || { echo "no row matches ROWS='$rows_filter' (rows: ${all_rows[*]})" >&2; exit 2; }

# workload_args WORKLOAD: sets rw bs qd label rbd_type (as scripts/bench.sh's).
workload_args() {
    case "$1" in
        rr32) rw=randread bs=4096 qd=32 label="4K randread QD32" rbd_type=read ;;
        rw32) rw=randwrite bs=4096 qd=32 label="4K randwrite QD32" rbd_type=write ;;
        rr1) rw=randread bs=4096 qd=1 label="4K randread QD1" rbd_type=read ;;
        *) return 1 ;;
    esac
}

# --- Prerequisites ----------------------------------------------------------
command -v qemu-storage-daemon >/dev/null || { echo "qemu-storage-daemon is not installed" >&2; exit 1; }
if ! dpkg-query -W -f='${Status}' qemu-block-extra 2>/dev/null | grep -q "install ok installed"; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "qemu-storage-daemon's rbd driver is missing: apt-get install --no-install-recommends qemu-block-extra (as root)" >&2
        exit 1
    fi
    echo "== installing qemu-block-extra (qemu-storage-daemon's rbd driver)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-block-extra >&2
fi

# --- Build ------------------------------------------------------------------
build_binaries

work=$(mktemp -d /tmp/vhost-blk-rbd-bench.XXXXXX)
cluster=$work/cluster
cluster_started=0
server_pid="" rbd_pid=""
cleanup() {
    stop_server
    if [ -n "$rbd_pid" ]; then stop_pid "$rbd_pid"; rbd_pid=""; fi
    [ "$cluster_started" = 0 ] || scripts/ceph-test-cluster.sh stop "$cluster" || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # so that EXIT's cleanup runs on a signal too

# --- The cluster and the image ----------------------------------------------
echo "starting the throw-away Ceph cluster in $cluster..." >&2
cluster_started=1
scripts/ceph-test-cluster.sh start "$cluster" >"$work/cluster.log" 2>&1 || {
    tail -n 20 "$work/cluster.log" >&2; echo "the Ceph test cluster did not start" >&2; exit 1; }
# The clients' configuration: the cluster's, with the cache setting and no log files.
conf=$work/client.conf
{ cat "$cluster/ceph.conf"; printf '[client]\nrbd cache = %s\nlog file = /dev/null\n' "$rbd_cache"; } >"$conf"
ceph -c "$conf" tell osd.0 config set memstore_page_set true >/dev/null
echo "writing the ${size_mib} MiB image $pool/$image (random data)..." >&2
dd if=/dev/urandom of="$work/fill.img" bs=1M count="$size_mib" status=none
rbd -c "$conf" import --no-progress "$work/fill.img" "$pool/$image" >&2
rm -f "$work/fill.img"

# wait_socket's limit: 20 s, twice scripts/bench.sh's.
socket_tries=400

# start_ours / start_qsd: set server_pid and socket.
start_ours() {
    launch_ours || return 1
    local param params=()
    for param in ${OURS_RBD_PARAMS:-}; do params+=(--config-param "$param"); done
    ctl bdev_rbd_register_cluster c0 --config-file "$conf" "${params[@]}" >/dev/null || return 1
    ctl bdev_rbd_create "$pool" "$image" 512 -c c0 -b Disk0 >/dev/null || return 1
    ours_controller 0
}
start_qsd() {
    launch_qsd "driver=rbd,node-name=n0,pool=$pool,image=$image,conf=$conf,user=admin,cache.direct=$qsd_direct" 1
}

bench_timeout=$(awk -v r="$runtime" -v w="$warmup" 'BEGIN { printf "%d", r + w + 30.999 }')

# run_case SERVER: sets $result to the bench's JSON line ("" on failure).
run_case() {
    local rc=0
    result=""
    : >"$work/bench.log"
    if "start_$1"; then
        timeout "$bench_timeout" "$bin/vhost-blk-bench" --socket "$socket" --rw "$rw" --bs "$bs" \
            --iodepth "$qd" --queues 1 --mode interrupt --runtime "$runtime" --warmup "$warmup" \
            --cpu "$bench_cpu" --server-pid "$server_pid" --json >"$work/result.json" 2>>"$work/bench.log" || rc=$?
        result=$(cat "$work/result.json")
    else
        rc=1
        echo "$1 did not start" >&2
    fi
    check_run "$1" "$rc" "$label" "$1 $label"
    printf '  %-4s %9s IOPS %7s us/IO server CPU  p50 %7s us  p99 %7s us\n' "$1" "$(num "$(field "$result" iops)" %.0f)" \
        "$(num "$(field "$result" server_cpu_us_per_io)" %.2f)" "$(num "$(field "$result" lat_p50_us)" %.1f)" \
        "$(num "$(field "$result" lat_p99_us)" %.1f)" >&2
}

# cpu_ticks PID: utime + stime of the process (all threads), in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo ""; }

# run_rbd_bench: `rbd bench` on the image for WARMUP + RUNTIME seconds after
# it opened the image (SIGINT ends it: it prints its summary and closes the
# image). Sets rb_iops (its summary's ops/sec) and rb_cpu (CPU us per I/O of
# the whole rbd process over the same window), "" on failure.
run_rbd_bench() {
    rb_iops="" rb_cpu=""
    local out=$work/rbd-bench.out c0 c1 ops hz
    : >"$out"
    taskset -c "$server_cpu" rbd -c "$conf" bench --io-type "$rbd_type" --io-size "$bs" --io-threads "$qd" \
        --io-pattern rand --io-total 1T "$pool/$image" >"$out" 2>"$work/rbd-bench.err" &
    rbd_pid=$!
    for _ in $(seq 600); do grep -q '^ *SEC' "$out" && break; kill -0 "$rbd_pid" 2>/dev/null || break; sleep 0.05; done
    c0=$(cpu_ticks "$rbd_pid")
    sleep "$(awk -v r="$runtime" -v w="$warmup" 'BEGIN { print r + w }')"
    c1=$(cpu_ticks "$rbd_pid")
    kill -INT "$rbd_pid" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$rbd_pid" 2>/dev/null || break; sleep 0.1; done
    stop_pid "$rbd_pid"; rbd_pid=""
    rb_iops=$(sed -n 's/^elapsed:.*ops\/sec: *\([0-9.]*\).*/\1/p' "$out")
    ops=$(sed -n 's/^elapsed:.*ops: *\([0-9]*\).*/\1/p' "$out")
    hz=$(getconf CLK_TCK)
    if [ -z "$rb_iops" ]; then
        echo "FAILED: rbd bench ($label)" >&2
        tail -n 5 "$out" "$work/rbd-bench.err" >&2 || true
        failed+=("rbd-bench $label")
    elif [ -n "$c0" ] && [ -n "$c1" ]; then
        rb_cpu=$(awk -v a="$c0" -v b="$c1" -v n="$ops" -v hz="$hz" 'BEGIN { if (n > 0) printf "%.3f", (b - a) / hz * 1e6 / n }')
    fi
    printf '  %-4s %9s IOPS %7s us/IO (the whole rbd process)\n' rbd "$(num "$rb_iops" %.0f)" "$(num "$rb_cpu" %.2f)" >&2
}

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
qsd_version=$(qemu-storage-daemon --version | head -n 1)
ceph_version=$(rbd --version | head -n 1)
commit=$(source_commit)
cmd="RUNTIME=$runtime WARMUP=$warmup SIZE=$size_mib RBD_CACHE=$rbd_cache"
[ "$quick" = 1 ] && cmd="$cmd QUICK=1"
[ "$repeat" != 1 ] && cmd="$cmd REPEAT=$repeat"
[ -n "$rows_filter" ] && cmd="$cmd ROWS='$rows_filter'"
[ "$build" != release ] && cmd="$cmd BUILD=$build"
[ -n "${DAEMON_ARGS:-}" ] && cmd="$cmd DAEMON_ARGS='$DAEMON_ARGS'"
cmd="$cmd scripts/bench-rbd.sh"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

failed=()
lines=()
for row in "${rows[@]}"; do
    workload_args "$row"
    echo "[$row] $label" >&2
    ours_runs=() qsd_runs=() rb_runs=() rb_cpus=()
    for ((rep = 0; rep < repeat; rep++)); do
        if ((rep % 2 == 0)); then
            run_case ours; ours_runs+=("$result"); run_case qsd; qsd_runs+=("$result")
        else
            run_case qsd; qsd_runs+=("$result"); run_case ours; ours_runs+=("$result")
        fi
        run_rbd_bench; rb_runs+=("$rb_iops"); rb_cpus+=("$rb_cpu")
    done
    o=$(median iops "${ours_runs[@]}"); q=$(median iops "${qsd_runs[@]}")
    rb=$(printf '%s\n' "${rb_runs[@]}" | grep . | median_lines || true)
    rbc=$(printf '%s\n' "${rb_cpus[@]}" | grep . | median_lines || true)
    oc=$(median server_cpu_us_per_io "${ours_runs[@]}"); qc=$(median server_cpu_us_per_io "${qsd_runs[@]}")
    rb_lat=""
    [ "$qd" = 1 ] && [ -n "$rb" ] && rb_lat=$(awk -v i="$rb" 'BEGIN { printf "%.1f", 1e6 / i }')
    lines+=("$(printf '%-18s | %8s %8s %5s | %8s %5s %5s | %7s %7s | %9s %9s | %8s %8s %7s | %6s %6s %5s %6s' "$label" \
        "$(num "$o" %.0f)" "$(num "$q" %.0f)" "$(ratio "$o" "$q")" "$(num "$rb" %.0f)" "$(ratio "$o" "$rb")" "$(ratio "$q" "$rb")" \
        "$(num "$(median lat_p50_us "${ours_runs[@]}")" %.1f)" "$(num "$(median lat_p50_us "${qsd_runs[@]}")" %.1f)" \
        "$(num "$(median lat_p99_us "${ours_runs[@]}")" %.1f)" "$(num "$(median lat_p99_us "${qsd_runs[@]}")" %.1f)" \
        "$(num "$(median lat_mean_us "${ours_runs[@]}")" %.1f)" "$(num "$(median lat_mean_us "${qsd_runs[@]}")" %.1f)" "${rb_lat:--}" \
        "$(num "$oc" %.2f)" "$(num "$qc" %.2f)" "$(ratio "$oc" "$qc")" "$(num "$rbc" %.2f)")")
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(($(date +%s) - started))

{
    echo "RBD: vhost-blkd vs qemu-storage-daemon (rbd driver) vs rbd bench, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit"
    echo "command: $cmd   ($elapsed s in all, cluster start and builds included)"
    echo "machine: $(nproc) CPUs, $cpu_model, $(uname -sr); peer: $qsd_version; $ceph_version"
    echo "cluster: scripts/ceph-test-cluster.sh (1 mon, 1 memstore OSD, page-set objects, unpinned); image $pool/$image, ${size_mib} MiB, random data; rbd_cache=$rbd_cache for all"
    echo "servers (and rbd bench) on CPU $server_cpu (ours: -m 0x$(printf %x $((1 << server_cpu)))), vhost-blk-bench on CPU $bench_cpu, interrupt mode, 1 queue;" \
        "${runtime} s measured after ${warmup} s warm-up per run; load average before $load_before, after $load_after"
    [ "$repeat" = 1 ] || echo "each figure: the median of $repeat runs (ours and qsd alternate who goes first)"
    echo
    printf '%-18s | %-24s | %-20s | %-15s | %-19s | %-25s | %s\n' "" "IOPS" "rbd bench IOPS" "p50 lat (us)" "p99 lat (us)" "mean lat (us)" "CPU us/IO"
    printf '%-18s | %8s %8s %5s | %8s %5s %5s | %7s %7s | %9s %9s | %8s %8s %7s | %6s %6s %5s %6s\n' workload \
        ours qsd o/q rbd o/rbd q/rbd ours qsd ours qsd ours qsd rbd ours qsd o/q rbd
    printf -- '-%.0s' $(seq 156); echo
    for l in "${lines[@]}"; do echo "$l"; done
    echo
    echo "o/q = ours/qsd, o/rbd and q/rbd = against rbd bench (IOPS: higher is better; CPU/IO: lower is better); '-' = no result"
    echo "CPU us/IO: ours and qsd = the server process (all its threads, librbd's included) over the measured window;"
    echo "rbd = the whole rbd bench process (librbd plus its I/O loop, no vhost-user); rbd mean latency = 1/IOPS at QD1"
    if [ ${#failed[@]} -gt 0 ]; then for f in "${failed[@]}"; do echo "FAILED: $f"; done; fi
} >"$work/table.txt"
cat "$work/table.txt"
exit_if_failed
