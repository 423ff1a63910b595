#!/usr/bin/env bash
# Sets xgrad up and runs the whole test suite on three builds, so that more than the developer's CPU is tested
# (docs/getting-started.md §1 says what each -march level is for):
#
#   1. build/        Release, XGRAD_ARCH=x86-64-v3 (the default and the README's build: AVX2 + FMA). The suite
#                    runs twice: with oneDNN free to use the CPU's widest kernels, and with oneDNN held to AVX2
#                    (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA), so an AVX-512 host exercises the AVX2 paths of
#                    both xgrad and oneDNN, as an AVX2-only CPU (Zen 3) runs them.
#   2. build-asan/   AddressSanitizer + UndefinedBehaviorSanitizer, XGRAD_NATIVE=ON (-march=native: AVX-512 on
#                    an AVX-512 host), oneDNN free: the widest paths, under the sanitizers.
#   3. build-x86-64/ Release, XGRAD_ARCH=x86-64 (SSE2 only, what runs on any x86-64 CPU), no benchmarks: the suite.
#   4. build-fuzz/   clang, libFuzzer + ASan + UBSan: each reader's target replays its committed corpus, then
#                    fuzzes for XGRAD_FUZZ_SECONDS (60) seconds (docs/fuzzing.md).
#
# Finally installs build 1 to a temporary prefix and builds a tiny consumer project with find_package(xgrad).
#
#   bash scripts/test.sh                        # everything (what CI runs)
#   XGRAD_SKIP_SANITIZE=1 bash scripts/test.sh  # skip build 2
#   XGRAD_SKIP_GENERIC=1 bash scripts/test.sh   # skip build 3
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
start=$SECONDS
lap() { echo "-- $1 done after $(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s"; }
avx2_only() { ONEDNN_MAX_CPU_ISA=AVX2 DNNL_MAX_CPU_ISA=AVX2 "$@"; }

echo "== 1. Release build for x86-64-v3 (AVX2 + FMA): the whole suite, oneDNN free, then oneDNN held to AVX2"
grep -m1 "model name" /proc/cpuinfo || true
echo "CPU flags: $(grep -m1 -o -w -E 'avx512f|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
XGRAD_CMAKE_ARGS="-DXGRAD_NATIVE=OFF -DXGRAD_ARCH=x86-64-v3 ${XGRAD_CMAKE_ARGS:-}" bash scripts/setup.sh
ctest --test-dir build --output-on-failure -j"$jobs"
avx2_only ctest --test-dir build --output-on-failure -j"$jobs"
lap "build 1"

if [ "${XGRAD_SKIP_SANITIZE:-0}" != 1 ]; then
  echo "== 2. AddressSanitizer + UndefinedBehaviorSanitizer build, -march=native: the whole suite"
  XGRAD_BUILD_DIR=build-asan XGRAD_BUILD_TYPE=RelWithDebInfo \
    XGRAD_CMAKE_ARGS="-DXGRAD_SANITIZE=ON -DXGRAD_NATIVE=ON -DXGRAD_BUILD_BENCH=OFF" bash scripts/setup.sh
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs"
  lap "build 2"
fi

if [ "${XGRAD_SKIP_GENERIC:-0}" != 1 ]; then
  echo "== 3. Release build for generic x86-64 (SSE2): the whole suite"
  XGRAD_BUILD_DIR=build-x86-64 \
    XGRAD_CMAKE_ARGS="-DXGRAD_NATIVE=OFF -DXGRAD_ARCH=x86-64 -DXGRAD_BUILD_BENCH=OFF" bash scripts/setup.sh
  ctest --test-dir build-x86-64 --output-on-failure -j"$jobs"
  lap "build 3"
fi

if [ "${XGRAD_SKIP_FUZZ:-0}" != 1 ]; then
  echo "== 4. libFuzzer targets (clang, ASan + UBSan): replay the corpus, then fuzz each ${XGRAD_FUZZ_SECONDS:-60} s"
  bash scripts/fuzz.sh
  lap "build 4"
fi

echo "== Install + find_package(xgrad) consumer"
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install build --prefix "$prefix/install" > /dev/null
cmake -S examples/consumer -B "$prefix/consumer" -DCMAKE_PREFIX_PATH="$prefix/install" -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$prefix/consumer" -j"$jobs" > /dev/null
"$prefix/consumer/consumer"
lap "everything"
echo "test.sh: all passed"
