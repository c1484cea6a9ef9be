#!/usr/bin/env bash
# Sets up and runs every test: unit, integration (real daemon, real sockets)
# and end-to-end (a Linux guest under QEMU TCG doing verified fio on our disks).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
scripts/install-deps.sh
[ -d /opt/swift/usr/bin ] && export PATH=/opt/swift/usr/bin:$PATH
scripts/build-guest.sh "$repo/.guest"
export VHOST_BLKD_GUEST_DIR="$repo/.guest"
export VHOST_BLKD_E2E=1
scripts/fuzz.sh 15  # bounded fuzzing of the decoders, ~2 min with the build (fuzz/README.md)
swift build --build-tests
set +e
swift test --skip-build 2>&1 | tee /tmp/vhost-blkd-test.log
status=${PIPESTATUS[0]}
{ RUNTIME=1 QUICK=1 scripts/bench.sh >/tmp/vhost-blkd-bench.log 2>&1 || status=1; tail -n 15 /tmp/vhost-blkd-bench.log; }  # benchmark smoke test: every row must complete; no timing is asserted
exit $status
