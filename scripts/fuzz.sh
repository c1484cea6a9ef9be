#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/Targets (outside the SwiftPM graph:
# the library sources they need are compiled directly with swiftc,
# -sanitize=fuzzer,address) and runs each for a bounded time.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 20; TARGET is one of vhost-user-reader,
# descriptor-chain, packed-chain, blk-request, json-rpc (default: all). Seeds are read from
# fuzz/corpus/<target>/ (never written); new inputs and crash artifacts go
# to $FUZZ_OUT (default .build-fuzz-run/). Extra libFuzzer flags may be given
# in $FUZZ_FLAGS (e.g. FUZZ_FLAGS="-jobs=4 -workers=4").
# Exits non-zero if any target crashes, leaks, times out or fails to build.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
[ -d /opt/swift/usr/bin ] && export PATH=/opt/swift/usr/bin:$PATH

seconds="${1:-20}"
shift || true
all_targets=(vhost-user-reader descriptor-chain packed-chain blk-request json-rpc)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")
out="${FUZZ_OUT:-$repo/.build-fuzz-run}"
mods="$out/modules"
bin="$out/bin"
mkdir -p "$mods" "$bin"

swiftc_flags=(-sanitize=fuzzer,address -O -g -swift-version 6 -parse-as-library -Xcc -D_GNU_SOURCE -D _GNU_SOURCE)
jansson_cflags=$(pkg-config --cflags jansson 2>/dev/null || true)
jansson_libs=$(pkg-config --libs jansson 2>/dev/null || echo -ljansson)
quiet() { grep -v "Cannot export local symbol" || true; }

# build_module NAME SOURCES... : a static library and .swiftmodule in $mods.
build_module() {
    local name=$1; shift
    echo "== building module $name"
    swiftc "${swiftc_flags[@]}" -module-name "$name" -I "$mods" -I Sources/CJansson $jansson_cflags \
        -emit-module -emit-module-path "$mods/$name.swiftmodule" \
        -emit-library -static -o "$mods/lib$name.a" "$@" 2>&1 | quiet
    [ -f "$mods/lib$name.a" ]
}

# build_target TARGET SOURCE-FILES -- LINK-FLAGS...
build_target() {
    local target=$1; shift
    local sources=()
    while [ "$1" != "--" ]; do sources+=("$1"); shift; done
    shift
    echo "== building fuzz target $target"
    rm -f "$bin/$target"
    swiftc "${swiftc_flags[@]}" -module-name "Fuzz_${target//-/_}" -I "$mods" -I Sources/CJansson $jansson_cflags \
        -L "$mods" "${sources[@]}" "$@" -o "$bin/$target" 2>&1 | quiet
    [ -x "$bin/$target" ]
}

# build_c_module NAME SOURCE: a static library and module map for Sources/NAME/include/NAME.h.
build_c_module() {
    local name=$1 source=$2
    echo "== building module $name"
    mkdir -p "$mods/$name"
    clang -fsanitize=fuzzer-no-link,address -O1 -g -D_GNU_SOURCE -I "Sources/$name/include" \
        -c "$source" -o "$mods/$name/$name.o"
    ar rcs "$mods/lib$name.a" "$mods/$name/$name.o"
    printf 'module %s {\n    header "%s"\n    export *\n}\n' "$name" "$repo/Sources/$name/include/$name.h" \
        >"$mods/$name/module.modulemap"
}

want() { local t; for t in "${targets[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }

start_build=$(date +%s)
if want vhost-user-reader || want descriptor-chain || want packed-chain || want blk-request; then
    build_module Virtio Sources/Virtio/*.swift
fi
if want vhost-user-reader; then
    # VhostUser needs Posix, which needs the CShims and CFaultGuard C modules: build them too.
    build_c_module CShims Sources/CShims/shims.c
    build_c_module CFaultGuard Sources/CFaultGuard/fault_guard.c
    c_includes=(-I "$mods/CShims" -I "$mods/CFaultGuard")
    build_module Posix "${c_includes[@]}" Sources/Posix/*.swift
    build_module VhostUser "${c_includes[@]}" Sources/VhostUser/*.swift
    build_target vhost-user-reader "${c_includes[@]}" fuzz/Targets/VhostUserReader.swift -- \
        -lVhostUser -lPosix -lCShims -lCFaultGuard -lVirtio
fi
if want descriptor-chain; then
    build_target descriptor-chain fuzz/Targets/DescriptorChain.swift fuzz/Support/BlkRequestChecks.swift -- -lVirtio
fi
if want packed-chain; then
    build_target packed-chain fuzz/Targets/PackedChain.swift fuzz/Support/BlkRequestChecks.swift -- -lVirtio
fi
if want blk-request; then
    build_target blk-request fuzz/Targets/BlkRequest.swift fuzz/Support/BlkRequestChecks.swift -- -lVirtio
fi
if want json-rpc; then
    build_module JSONRPC Sources/JSONRPC/*.swift
    build_target json-rpc fuzz/Targets/JSONRPC.swift -- -lJSONRPC $jansson_libs
fi
echo "== built in $(( $(date +%s) - start_build )) s"

failed=()
summary=()
for target in "${targets[@]}"; do
    [ -x "$bin/$target" ] || { echo "unknown target $target"; failed+=("$target"); continue; }
    work="$out/corpus/$target"
    artifacts="$out/artifacts/$target"
    mkdir -p "$work" "$artifacts" "fuzz/corpus/$target"
    log="$out/$target.log"
    echo "== fuzzing $target for ${seconds}s"
    set +e
    # shellcheck disable=SC2086
    SWIFT_BACKTRACE=enable=no ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" \
    "$bin/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" ${FUZZ_FLAGS:-} \
        "$work" "fuzz/corpus/$target" >"$log" 2>&1
    status=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    summary+=("$(printf '%-18s %10s execs %8s exec/s  exit %d' "$target" "${execs:-?}" "${rate:-?}" "$status")")
    if [ $status -ne 0 ]; then
        failed+=("$target")
        echo "!! $target failed (exit $status); log $log, artifacts in $artifacts:"
        grep -v "Cannot export local symbol" "$log" | grep -A40 -m1 -E "ERROR|Fatal error|==[0-9]+==|deadly signal|timeout" || tail -40 "$log"
        ls "$artifacts"
    fi
done

echo "== fuzz summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "FUZZ FAILURES: ${failed[*]}"
    exit 1
fi
