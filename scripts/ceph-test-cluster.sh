#!/usr/bin/env bash
# A throw-away single-node Ceph 16 cluster for tests: one mon and one memstore
# OSD, no mgr, no systemd, every file under DIR (docs/OPERATIONS.md, "Ceph RBD
# volumes"). Auth is off (auth_*_required = none), so clients need no key.
#
#   scripts/ceph-test-cluster.sh start DIR   # installs the packages if missing (root), prints CEPH_CONF=... and CEPH_KEYRING=...
#   scripts/ceph-test-cluster.sh stop DIR    # stops the daemons it started, by their pid files
#   scripts/ceph-test-cluster.sh stop-osd DIR   # stops the OSD (SIGTERM by its pid file; memstore saves its data)
#   scripts/ceph-test-cluster.sh start-osd DIR  # starts it again and waits until the mon has it up
#
# Ceph's docs: https://docs.ceph.com/en/pacific/install/manual-deployment/ (the
# monmap and mkfs steps), .../rados/configuration/mon-config-ref/ (mon data
# avail warn/crit: the CI disk has under 30% free, so both are set to 1%).
set -euo pipefail

usage() { echo "usage: $0 start|stop|stop-osd|start-osd DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$(realpath -m "$2")
conf=$dir/ceph.conf
port=${CEPH_TEST_MON_PORT:-$((20000 + $$ % 20000))}

stop_daemons() {
    local pidfile pid
    for pidfile in "$dir"/run/osd.0.pid "$dir"/run/mon.a.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
}

install_packages() {
    local packages=(ceph-mon ceph-osd ceph-common librbd-dev) missing=() p
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then echo "missing packages: ${missing[*]} (run as root to install)" >&2; exit 1; fi
    echo "== installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# The OSD alone (cluster faults in tests). SIGTERM: memstore writes its
# objects to DIR/osd/0 on a clean shutdown and reads them back at start, so
# the images survive; SIGKILL would lose them.
stop_osd() {
    local pidfile=$dir/run/osd.0.pid pid
    [ -f "$pidfile" ] || { echo "no OSD pid file $pidfile" >&2; exit 1; }
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "OSD pid $pid still runs after 30 s; its log ends:" >&2
            grep -v '^[ {}\]]' "$dir/log/osd.0.log" | grep -v pg_epoch | tail -15 >&2
            exit 1
        fi
    fi
    rm -f "$pidfile"
}

start_osd() {
    [ -f "$conf" ] || { echo "no cluster in $dir" >&2; exit 1; }
    [ -f "$dir/run/osd.0.pid" ] && kill -0 "$(cat "$dir/run/osd.0.pid")" 2>/dev/null && return 0
    ceph-osd -c "$conf" -i 0 </dev/null >>"$dir/log/osd.stderr" 2>&1
    # Serving once an object can be written (its PGs active again).
    local deadline=$(($(date +%s) + 60))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        if timeout 5 rados -c "$conf" -p rbd put ready-probe "$conf" 2>/dev/null; then
            rados -c "$conf" -p rbd rm ready-probe
            return 0
        fi
        sleep 0.2
    done
    echo "OSD not serving after 60 s" >&2
    exit 1
}

case "$cmd" in
stop)
    stop_daemons
    exit 0
    ;;
stop-osd)
    stop_osd
    exit 0
    ;;
start-osd)
    start_osd
    exit 0
    ;;
start) ;;
*) usage ;;
esac

install_packages
stop_daemons  # a previous run's daemons in the same DIR
rm -rf "$dir/mon" "$dir/osd" "$dir/run" "$dir/log"
mkdir -p "$dir/mon/a" "$dir/osd/0" "$dir/run" "$dir/log"
fsid=$(cat /proc/sys/kernel/random/uuid)
cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$port]
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
keyring = /dev/null
run dir = $dir/run
log file = $dir/log/\$name.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool delete = true
mon allow pool size one = true
mon data avail warn = 1
mon data avail crit = 1
mon warn on pool no redundancy = false
ms bind ipv6 = false
[mon]
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
mon data = $dir/mon/\$name
mon cluster log file = $dir/log/cluster.log
[osd]
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
osd data = $dir/osd/\$id
osd objectstore = memstore
# A clean umount on SIGTERM (Pacific's fast shutdown skips it): memstore then
# saves its objects, and stop-osd/start-osd keep the images.
osd fast shutdown = false
memstore device bytes = ${CEPH_TEST_MEMSTORE_BYTES:-2147483648}
osd max object name len = 256
osd max object namespace len = 64
EOF

started=$(date +%s)
monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" -i a --mkfs --monmap "$dir/monmap" 2>"$dir/log/mon-mkfs.err"
ceph-mon -c "$conf" -i a </dev/null >>"$dir/log/mon.stderr" 2>&1
ceph() { command ceph -c "$conf" --connect-timeout 30 "$@"; }
osd_id=$(ceph osd create)
[ "$osd_id" = 0 ] || { echo "unexpected osd id $osd_id" >&2; exit 1; }
ceph-osd -c "$conf" -i 0 --mkfs 2>"$dir/log/osd-mkfs.err" >/dev/null
ceph osd crush add osd.0 1.0 host=localhost root=default >/dev/null 2>&1 || {
    ceph osd crush add-bucket localhost host >/dev/null
    ceph osd crush move localhost root=default >/dev/null
    ceph osd crush add osd.0 1.0 host=localhost >/dev/null
}
ceph-osd -c "$conf" -i 0 </dev/null >>"$dir/log/osd.stderr" 2>&1
ceph osd pool create rbd 8 8 >/dev/null 2>&1
ceph osd pool set rbd size 1 --yes-i-really-mean-it >/dev/null 2>&1
ceph osd pool set rbd min_size 1 >/dev/null 2>&1
rbd -c "$conf" pool init rbd
# Ready once an object can be written and read back.
for _ in $(seq 120); do
    if timeout 5 rados -c "$conf" -p rbd put ready-probe "$conf" 2>/dev/null; then break; fi
    sleep 0.5
done
timeout 5 rados -c "$conf" -p rbd stat ready-probe >/dev/null
rados -c "$conf" -p rbd rm ready-probe
echo "CEPH_CONF=$conf"
echo "CEPH_KEYRING=/dev/null"
echo "CEPH_MON=127.0.0.1:$port"
echo "started in $(($(date +%s) - started)) s" >&2
