# shellcheck shell=bash disable=SC2034,SC2154  # the callers' globals
# What scripts/bench.sh and scripts/bench-rbd.sh share, sourced by both after
# they cd to the repository: building the binaries, starting and stopping one
# server at a time (ours or qemu-storage-daemon, pinned to $server_cpu; only
# processes the script started, by pid), checking a vhost-blk-bench run, and
# reading figures out of its JSON lines. Sourcing it puts the Swift toolchain
# in /opt/swift on PATH when there; the rest is functions, which use the
# callers' globals (bin, work, server_cpu, server_pid, socket, result, failed).

if [ -d /opt/swift/usr/bin ]; then export PATH=/opt/swift/usr/bin:$PATH; fi

# build_config: from BUILD (release|debug) and BENCH_SCRATCH, sets scratch and
# build_args; exits 2 on any other BUILD.
build_config() {
    case "$build" in
        release) scratch=${BENCH_SCRATCH:-.build-bench}; build_args=(-c release) ;;
        debug) scratch=${BENCH_SCRATCH:-.build}; build_args=() ;;
        *) echo "BUILD must be release or debug" >&2; exit 2 ;;
    esac
}

# build_binaries: sets bin: $BIN (prebuilt binaries, e.g. another machine
# without a toolchain), else builds the three products with SwiftPM.
build_binaries() {
    if [ -n "${BIN:-}" ]; then
        bin=$BIN
    else
        for product in vhost-blkd vhost-blkctl vhost-blk-bench; do
            swift build --scratch-path "$scratch" "${build_args[@]}" --product "$product" >&2
        done
        bin="$(swift build --scratch-path "$scratch" "${build_args[@]}" --show-bin-path)"
    fi
}

# stop_pid PID: SIGTERM, up to 5 s, then SIGKILL (only processes this script started).
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
stop_server() {
    if [ -n "$server_pid" ]; then stop_pid "$server_pid"; server_pid=""; fi
}

# wait_socket PATH: waits for the socket, up to $socket_tries times 50 ms
# (default 200: 10 s).
wait_socket() {
    for _ in $(seq "${socket_tries:-200}"); do [ -S "$1" ] && return 0; sleep 0.05; done
    echo "socket $1 did not appear" >&2
    return 1
}

# ctl ARGS...: vhost-blkctl against our daemon's RPC socket.
ctl() { "$bin/vhost-blkctl" -s "$work/ours/rpc.sock" "$@"; }

# launch_ours: starts vhost-blkd (DAEMON_ARGS appended) in $work/ours, sets
# server_pid and waits for its RPC socket. The caller then creates Disk0.
launch_ours() {
    rm -rf "$work/ours"; mkdir -p "$work/ours"
    # shellcheck disable=SC2086  # DAEMON_ARGS: words on purpose
    taskset -c "$server_cpu" "$bin/vhost-blkd" -r "$work/ours/rpc.sock" -S "$work/ours" -m "0x$(printf %x $((1 << server_cpu)))" \
        --log-level warning ${DAEMON_ARGS:-} 2>>"$work/ours.log" &
    server_pid=$!
    wait_socket "$work/ours/rpc.sock" || return 1
}

# ours_controller PACKED: creates controller vhost.0 on Disk0 (with PACKED = 1,
# with packed_ring), waits for its socket and sets socket.
ours_controller() {
    local packed_arg=()
    [ "$1" = 1 ] && packed_arg=(--packed-ring)
    ctl vhost_create_blk_controller "${packed_arg[@]}" vhost.0 Disk0 >/dev/null || return 1
    wait_socket "$work/ours/vhost.0" || return 1
    socket="$work/ours/vhost.0"
}

# launch_qsd BLOCKDEV QUEUES: starts qemu-storage-daemon exporting node n0 of
# BLOCKDEV (one iothread, QUEUES queues), sets server_pid and socket.
launch_qsd() {
    rm -f "$work/qsd.sock"
    taskset -c "$server_cpu" qemu-storage-daemon \
        --blockdev "$1" \
        --object iothread,id=io0 \
        --export "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=$work/qsd.sock,writable=on,iothread=io0,num-queues=$2" \
        2>>"$work/qsd.log" &
    server_pid=$!
    wait_socket "$work/qsd.sock" || return 1
    socket="$work/qsd.sock"
}

# check_run SERVER RC WHAT ENTRY: after a run against SERVER that ended with
# status RC, stops the server; if RC is not 0 or $result counts errors, reports
# "(WHAT)", adds ENTRY to failed and clears result.
check_run() {
    stop_server
    if [ "$2" -ne 0 ] || [ "$(field "$result" errors)" != 0 ]; then
        echo "FAILED: vhost-blk-bench against $1 ($3) exited with status $2" >&2
        [ -z "$result" ] || echo "$result" >&2
        tail -n 5 "$work/bench.log" "$work/$1.log" >&2 2>/dev/null || true
        failed+=("$4")
        result=""
    fi
}

# source_commit: the short commit, "+uncommitted" if Sources/ has changes.
source_commit() {
    local c
    c=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    [ -n "$(git status --porcelain -- Sources 2>/dev/null)" ] && c="$c+uncommitted"
    echo "$c"
}

# exit_if_failed: with failed runs, says how many and exits 1.
exit_if_failed() {
    if [ ${#failed[@]} -gt 0 ]; then
        echo "${#failed[@]} run(s) failed" >&2
        exit 1
    fi
}

# --- Figures ----------------------------------------------------------------
# field JSON NAME: NAME's value in a vhost-blk-bench JSON line.
field() { sed -n "s/.*\"$2\":\\([^,}]*\\).*/\\1/p" <<<"$1"; }
# ratio A B, per A B: A/B to 2 and 3 decimals; num VALUE FORMAT. "-" for no value.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
per() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.3f", a / b }'; }
num() { awk -v a="$1" -v f="$2" 'BEGIN { if (a == "") print "-"; else printf f, a }'; }

# median_lines: the median of the numbers on stdin (nothing if none).
median_lines() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# fields FIELD JSON...: FIELD of each non-empty result, one a line.
# (It skips empty results with if, not &&: a failed last run would fail the
# pipeline under pipefail and end the script before the table.)
fields() {
    local f=$1 r; shift
    for r in "$@"; do if [ -n "$r" ]; then field "$r" "$f"; fi; done
}
# median / minimum / maximum FIELD JSON...: over the non-empty results ("" if none).
median() { fields "$@" | median_lines; }
minimum() { fields "$@" | sort -g | head -n 1; }
maximum() { fields "$@" | sort -g | tail -n 1; }
