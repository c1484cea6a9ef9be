#!/usr/bin/env bash
# Sets up and runs every test: unit, integration (real daemon, real sockets)
# and end-to-end (a Linux guest under QEMU TCG doing verified fio on our disks).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
scripts/install-deps.sh
[ -d /opt/swift/usr/bin ] && export PATH=/opt/swift/usr/bin:$PATH
# Every build below carries this checkout's version (--version, spdk_get_version);
# CLITests.versionsAgree checks the binaries say it.
VHOST_BLKD_VERSION="$(scripts/version.sh)"
export VHOST_BLKD_VERSION VHOST_BLKD_EXPECT_VERSION="$VHOST_BLKD_VERSION"
scripts/build-guest.sh "$repo/.guest"
export VHOST_BLKD_GUEST_DIR="$repo/.guest"
export VHOST_BLKD_E2E=1
scripts/fuzz.sh 15  # bounded fuzzing of the decoders, ~2 min with the build (fuzz/README.md)
swift build --build-tests
set +e
# This run's logs (the failure digest at the end reads them): none left from an earlier run.
rm -f /tmp/vhost-blkd-test.log /tmp/vhost-blkd-isolation.log /tmp/vhost-blkd-isolation-2.log \
    /tmp/vhost-blkd-release-test.log /tmp/vhost-blkd-package.log /tmp/vhost-blkd-migration.log
# Live migration between two daemons (file, packed rings, RBD) runs after the
# rest, one test at a time: QEMU 7.2 under TCG corrupts a migrated guest's
# memory now and then, far more often on a loaded machine (MigrationGuestTests
# retries a destination kernel crash; under the parallel suites' load all
# its attempts could crash).
migration_tests=('MigrationGuestTests/' 'PackedGuestTests/migrateUnderVerifiedLoad' 'RBDGuestTests/migrateBetweenTwoDaemons')
skip_migration=$(IFS='|'; echo "${migration_tests[*]}")
swift test --skip-build --skip IsolationTests --skip "$skip_migration" 2>&1 | tee /tmp/vhost-blkd-test.log
status=${PIPESTATUS[0]}
for test in "${migration_tests[@]}"; do
    swift test --skip-build --filter "$test" 2>&1 | tee /tmp/vhost-blkd-migration-one.log
    # A filter that matches nothing (a renamed test) passes with no test run: that fails too.
    [ "${PIPESTATUS[0]}" -eq 0 ] && grep -q 'Test run with [1-9]' /tmp/vhost-blkd-migration-one.log || status=1
    cat /tmp/vhost-blkd-migration-one.log >>/tmp/vhost-blkd-migration.log
done
# The data path again against a release daemon (and release vhost-blkctl and
# vhost-blk-bench): release builds compile it without dynamic exclusivity
# checks (Package.swift's `dataPath`) and without the thread-confinement
# assertions, which every test above runs with. They link the Swift libraries
# statically, as the Debian package ships them (scripts/build-deb.sh).
data_path='DataPathTests|DataIntegrityTests|FlowControlTests|InlineFileIOTests|ResubmitTests|DirtyLogTests|HybridPollingTests|FairnessTests|HostileFrontendTests|QoSTests'
release_started=$(date +%s)
release=(swift build -c release --static-swift-stdlib)
if "${release[@]}" --product vhost-blkd && "${release[@]}" --product vhost-blkctl \
    && "${release[@]}" --product vhost-blk-bench; then
    release_daemon="$(swift build -c release --show-bin-path)/vhost-blkd"
    # The tenant-isolation suite measures a neighbour's IOPS and p99 with and
    # without an attacker, against the daemon as shipped (a debug daemon's
    # control thread costs 2-3x the CPU, which on 2 CPUs is the neighbour's).
    # It runs alone, after the rest (on 2 CPUs the other suites' load is what
    # it would measure). A run that misses a threshold is repeated once, and
    # the second run decides: both runs' numbers are printed.
    if ! VHOST_BLKD_BIN="$release_daemon" swift test --skip-build --filter IsolationTests 2>&1 | tee /tmp/vhost-blkd-isolation.log; then
        echo "== isolation suite missed a threshold; repeating it once"
        VHOST_BLKD_BIN="$release_daemon" swift test --skip-build --filter IsolationTests 2>&1 | tee /tmp/vhost-blkd-isolation-2.log
        [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    fi
    VHOST_BLKD_BIN="$release_daemon" swift test --skip-build --filter "$data_path" \
        2>&1 | tee /tmp/vhost-blkd-release-test.log
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    echo "release data-path step: $(( $(date +%s) - release_started )) s"
    # The Debian package from those binaries, installed and run with the
    # toolchain hidden: a guest's verified fio on the installed daemon (issue 24).
    package_started=$(date +%s)
    if ! { SKIP_BUILD=1 scripts/build-deb.sh && scripts/test-deb.sh; } 2>&1 | tee /tmp/vhost-blkd-package.log; then
        status=1
    fi
    echo "package step: $(( $(date +%s) - package_started )) s"
else
    status=1
fi
{ RUNTIME=1 QUICK=1 scripts/bench.sh >/tmp/vhost-blkd-bench.log 2>&1 || status=1; tail -n 64 /tmp/vhost-blkd-bench.log; }  # benchmark smoke test: every row must complete; no timing is asserted
# What failed, last, where a CI log cut to its head and tail still shows it:
# each issue Swift Testing recorded, with the first lines of its message.
if [ "$status" -ne 0 ]; then
    echo "== failures recorded in this run's logs"
    for log in /tmp/vhost-blkd-test.log /tmp/vhost-blkd-migration.log /tmp/vhost-blkd-isolation.log /tmp/vhost-blkd-isolation-2.log \
        /tmp/vhost-blkd-release-test.log /tmp/vhost-blkd-package.log; do
        [ -f "$log" ] || continue
        grep -a -A 8 -E 'recorded an issue|^FAILED|^E2E-FAIL' "$log" | cut -c 1-300 | head -n 120 | sed "s|^|$(basename "$log"): |"
    done
fi
exit $status
