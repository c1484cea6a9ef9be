#!/usr/bin/env bash
# Finds descriptors the test process closes twice. Swift Testing runs tests
# in parallel in one process: a test that closes a descriptor number twice
# closes, the second time, whatever another test's thread was given that
# number meanwhile (a crash of Foundation's Process.run with EBADF in
# FileHandle.synchronizeFile was this). The double close is silent when the
# number was reused; when it was not, close() fails with EBADF, which this
# catches: an LD_PRELOAD shim logs every close() of the test process with
# its backtrace, and the report shows each EBADF with the closes of that
# number before it, symbolized.
#
#   scripts/close-trace.sh                          the whole suite but IsolationTests
#   scripts/close-trace.sh --filter 'DataPathTests|HostileRPCTests'
#
# Arguments go to `swift test --skip-build` (build with `swift build
# --build-tests` first). Needs gcc and addr2line (binutils). Output: the
# test run in $OUT/test.log (OUT defaults to a new /tmp folder), the traces
# in $OUT/trace.PID, and the report on stdout. Exit status: 1 if any close
# failed with EBADF, else swift test's.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
[ -d /opt/swift/usr/bin ] && export PATH=/opt/swift/usr/bin:$PATH
out=${OUT:-$(mktemp -d /tmp/close-trace.XXXXXX)}
mkdir -p "$out"

cat >"$out/shim.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static int (*real_close)(int);
static int enabled = -1, out = -1;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
int close(int fd) {
    if (!real_close) real_close = (int (*)(int))dlsym(RTLD_NEXT, "close");
    if (enabled < 0) {  /* the test binary only, not the daemons and tools it starts */
        char exe[512];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        enabled = n > 7 && memcmp(exe + n - 7, ".xctest", 7) == 0;
    }
    if (!enabled || fd == out) return real_close(fd);
    pthread_mutex_lock(&lock);  /* the close and its log line stay in order */
    int r = real_close(fd), e = errno;
    if (out < 0) {
        char path[512];
        snprintf(path, sizeof path, "%s/trace.%d", getenv("CLOSE_TRACE_DIR"), getpid());
        out = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    }
    if (out >= 0) {
        void *frames[12];
        int n = backtrace(frames, 12);
        dprintf(out, "=== close(%d) = %d%s\n", fd, r, r < 0 && e == EBADF ? " EBADF" : "");
        backtrace_symbols_fd(frames + 1, n - 1, out);
    }
    pthread_mutex_unlock(&lock);
    errno = e;
    return r;
}
EOF
gcc -shared -fPIC -O1 -o "$out/shim.so" "$out/shim.c" -ldl -lpthread

[ $# -gt 0 ] || set -- --skip IsolationTests
set +e
CLOSE_TRACE_DIR="$out" LD_PRELOAD="$out/shim.so" swift test --skip-build "$@" >"$out/test.log" 2>&1
status=$?
set -e
echo "swift test $*: exit $status (log: $out/test.log)"

# symbolize FILE LINE: the test binary's frames of the close logged at LINE.
symbolize() {
    sed -n "$(($2 + 1)),$(($2 + 11))p" "$1" | grep -o '\.xctest(+0x[0-9a-f]*)' | grep -o '0x[0-9a-f]*' | head -n 6 \
        | xargs -r addr2line -f -C -e "$binary" | paste - - \
        | while read -r function location; do
            printf '    %s @ %s\n' "$(echo "$function" | swift-demangle --simplified | cut -c 1-140)" "${location##*/}"
        done
}
binary="$(swift build --show-bin-path)/vhost-blkdPackageTests.xctest"
found=0
for trace in "$out"/trace.*; do
    [ -f "$trace" ] || continue
    while IFS=: read -r line _; do
        found=1
        fd=$(sed -n "${line}p" "$trace" | sed 's/^=== close(\([0-9]*\)).*/\1/')
        echo "== EBADF: close($fd), with the last two closes of $fd before it ($trace)"
        for earlier in $(grep -n "^=== close($fd) " "$trace" | awk -F: -v l="$line" '$1 < l { print $1 }' | tail -n 2) "$line"; do
            echo "  $(sed -n "${earlier}p" "$trace")"
            symbolize "$trace" "$earlier"
        done
    done < <(grep -n ' EBADF$' "$trace")
done
[ "$found" = 0 ] && echo "no close() failed with EBADF"
[ "$found" = 0 ] || exit 1
exit "$status"
