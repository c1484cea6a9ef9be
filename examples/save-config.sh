#!/usr/bin/env bash
# save_config / load_config / --config, end to end, unattended:
#
#   examples/save-config.sh            # builds vhost-blkd and vhost-blkctl (debug) if needed
#   VHOST_BLKD_BIN=/path/to/bin examples/save-config.sh
#
# 1. starts vhost-blkd, creates a malloc bdev, a null bdev and a controller;
# 2. `vhost-blkctl save_config > config.json` (same file as `spdk-rpc save_config`:
#    {"subsystems": [{"subsystem": "bdev", "config": [...]}, {"subsystem": "vhost_blk", ...}]});
# 3. stops the daemon (SIGTERM) and starts it again with `--config config.json`: the
#    bdevs and the controller come back before the RPC socket opens;
# 4. starts a second, empty daemon and replays the file with `vhost-blkctl load_config`
#    (or `spdk-rpc load_config`), the client-side way;
# 5. shows `--persist`: the daemon rewrites the file after every change by itself.
#
# With SPDK_RPC=/path/to/spdk-rpc set, step 2 and 4 also run SPDK's own client and
# compare its file with ours.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "${VHOST_BLKD_BIN:-}" ]; then
    bin="$VHOST_BLKD_BIN"
else
    [ -d /opt/swift/usr/bin ] && export PATH=/opt/swift/usr/bin:$PATH
    (cd "$repo" && swift build --product vhost-blkd >&2 && swift build --product vhost-blkctl >&2)
    bin="$(cd "$repo" && swift build --show-bin-path)"
fi

work=$(mktemp -d /tmp/vhost-blkd-save-config.XXXXXX)
pid=""
stop() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=""
    fi
}
trap 'stop; rm -rf "$work"' EXIT

# start SOCKET_NAME [daemon options...]: starts vhost-blkd, waits for its RPC socket.
start() {
    local name=$1
    shift
    "$bin/vhost-blkd" -r "$work/$name.sock" -S "$work/$name-ctrl" -m 0x1 --log-level warning "$@" \
        2>>"$work/daemon.log" &
    pid=$!
    for _ in $(seq 150); do
        "$bin/vhost-blkctl" -s "$work/$name.sock" spdk_get_version >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$work/daemon.log" >&2; return 1; }
        sleep 0.1
    done
    echo "vhost-blkd did not start" >&2
    return 1
}
ctl() { "$bin/vhost-blkctl" -s "$work/$sock.sock" "$@"; }
summary() { echo "bdevs: $(ctl bdev_get_bdevs | grep -c '"name"') controllers: $(ctl vhost_get_controllers | grep -c '"ctrlr"')"; }

echo "== 1. a daemon with two bdevs and a controller"
sock=first
start first
ctl bdev_malloc_create 64 512 -b Malloc0
ctl bdev_null_create Null0 128 4096
ctl vhost_create_blk_controller vhost.0 Malloc0 --cpumask 0x1
summary

echo "== 2. vhost-blkctl save_config > config.json"
ctl save_config > "$work/config.json"
cat "$work/config.json"
if [ -n "${SPDK_RPC:-}" ]; then
    "$SPDK_RPC" -s "$work/first.sock" save_config > "$work/spdk-config.json"
    python3 -c 'import json, sys; a, b = (json.load(open(f)) for f in sys.argv[1:]); sys.exit(a != b)' \
        "$work/config.json" "$work/spdk-config.json"
    echo "spdk-rpc save_config wrote the same configuration"
fi

echo "== 3. restart with --config config.json"
stop
start first --config "$work/config.json"
summary
ctl vhost_get_controllers -n vhost.0 | grep -q '"bdev": "Malloc0"' && echo "vhost.0 serves Malloc0 again"
stop

echo "== 4. vhost-blkctl load_config into an empty daemon"
sock=second
start second
ctl load_config -j "$work/config.json"
if [ -n "${SPDK_RPC:-}" ]; then
    ctl vhost_delete_controller vhost.0 && ctl bdev_malloc_delete Malloc0 && ctl bdev_null_delete Null0
    "$SPDK_RPC" -s "$work/second.sock" load_config < "$work/config.json"
fi
summary
stop

echo "== 5. --persist keeps the file current"
sock=third
start third --config "$work/persist.json" --persist
ctl bdev_malloc_create 32 4096 -b Malloc1 >/dev/null
grep -q '"Malloc1"' "$work/persist.json" && echo "persist.json lists Malloc1 after bdev_malloc_create"
stop
start third --config "$work/persist.json" --persist
summary
echo "== save-config example passed"
