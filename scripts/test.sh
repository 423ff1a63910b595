#!/usr/bin/env bash
# Sets xgrad up and runs the whole test suite, twice: a Release build, then a build with AddressSanitizer +
# UndefinedBehaviorSanitizer. Finally installs xgrad to a temporary prefix and builds a tiny consumer project
# with find_package(xgrad) against it.
#
#   bash scripts/test.sh                        # everything (what CI runs)
#   XGRAD_SKIP_SANITIZE=1 bash scripts/test.sh  # Release only, for a quick local run
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

echo "== Release build and tests"
bash scripts/setup.sh
ctest --test-dir build --output-on-failure -j"$jobs"

if [ "${XGRAD_SKIP_SANITIZE:-0}" != 1 ]; then
  echo "== AddressSanitizer + UndefinedBehaviorSanitizer build and tests"
  XGRAD_BUILD_DIR=build-asan XGRAD_BUILD_TYPE=RelWithDebInfo \
    XGRAD_CMAKE_ARGS="-DXGRAD_SANITIZE=ON -DXGRAD_BUILD_BENCH=OFF" bash scripts/setup.sh
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs"
fi

echo "== Install + find_package(xgrad) consumer"
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install build --prefix "$prefix/install" > /dev/null
cmake -S examples/consumer -B "$prefix/consumer" -DCMAKE_PREFIX_PATH="$prefix/install" -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$prefix/consumer" -j"$jobs" > /dev/null
"$prefix/consumer/consumer"
echo "test.sh: all passed"
