#!/usr/bin/env bash
# The parsers under AddressSanitizer and UndefinedBehaviorSanitizer (cmake/TideSanitize.cmake): builds them with
# clang into build-sanitize (linking the rest from the Release build in ./build, which scripts/setup.sh makes),
# runs their unit tests, then every fuzz target under libFuzzer for TIDE_FUZZ_SECONDS seconds (default 10) from
# tests/fuzz/corpus/<target> and the target's built-in seeds. Any sanitizer report, crash or unexpected
# exception fails; libFuzzer's reproducer is kept in build-sanitize/fuzz/<target>/ (tests/fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${TIDE_FUZZ_SECONDS:-10}"
scripts/install_packages.sh clang libclang-rt-dev
[ -f build/libtide_core.a ] || { echo "fuzz.sh: build/libtide_core.a is missing: run scripts/setup.sh first" >&2; exit 1; }

mkdir -p build-sanitize
CXX=clang++ cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTIDE_SANITIZE=ON \
  -DTIDE_RELEASE_CORE="$PWD/build/libtide_core.a" ${TIDE_CMAKE_ARGS:-} > build-sanitize/configure.log \
  || { cat build-sanitize/configure.log; exit 1; }
cmake --build build-sanitize -j "$(nproc)" --target tide_libfuzz tide_sanitized_tests

# LeakSanitizer stays off: libtorch keeps allocations alive until exit that it would report.
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
echo "== parser unit tests under ASan + UBSan"
OMP_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=0 build-sanitize/tide_sanitized_tests --gtest_brief=1

targets=$( (TIDE_FUZZ_TARGET=list build-sanitize/tide_libfuzz -runs=0 2>&1 || true) | sed -n 's/^set TIDE_FUZZ_TARGET to one of://p')
[ -n "$targets" ] || { echo "fuzz.sh: tide_libfuzz lists no target" >&2; exit 1; }
failed=()
for target in $targets; do
  work="build-sanitize/fuzz/$target"
  rm -rf "$work" && mkdir -p "$work/corpus" "$work/artifacts"
  [ -d "tests/fuzz/corpus/$target" ] && cp "tests/fuzz/corpus/$target"/* "$work/corpus/" 2>/dev/null || true
  if TIDE_FUZZ_TARGET="$target" TIDE_FUZZ_SEEDS="$work/corpus" ASAN_OPTIONS=detect_leaks=0 OMP_NUM_THREADS=1 \
     build-sanitize/tide_libfuzz -max_total_time="$seconds" -timeout=30 -rss_limit_mb=6144 -max_len=65536 \
       -artifact_prefix="$work/artifacts/" -print_final_stats=1 "$work/corpus" > "$work/log.txt" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log.txt")
    echo "fuzz $target: $runs executions in ${seconds} s, corpus $(ls "$work/corpus" | wc -l) inputs, no failure"
  else
    echo "fuzz $target: FAILED (reproducer in $work/artifacts/):"
    grep -E "ERROR|runtime error|SUMMARY|terminate|what\(\)" "$work/log.txt" | head -20
    failed+=("$target")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: failures in: ${failed[*]}" >&2
  exit 1
fi
