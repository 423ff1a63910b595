#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang + ASan + UBSan, in build-fuzz/), replays the committed seed corpus
# through each, then fuzzes each for a bounded time. A crash, a sanitizer report, a leak, an input slower than
# -timeout or an allocation above -malloc_limit_mb fails the script; the input that did it is left in
# build-fuzz/findings/. docs/fuzzing.md explains the targets.
#
#   bash scripts/fuzz.sh                        # replay + 60 s per target
#   XGRAD_FUZZ_SECONDS=600 bash scripts/fuzz.sh # longer
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${XGRAD_FUZZ_SECONDS:-60}
cmake -S . -B build-fuzz -DXGRAD_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DXGRAD_BUILD_TESTS=OFF -DXGRAD_BUILD_EXAMPLES=OFF -DXGRAD_BUILD_BENCH=OFF > /dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_idx fuzz_npy fuzz_checkpoint
mkdir -p build-fuzz/findings
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
limits=(-rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 -max_len=65536)
for t in idx npy checkpoint; do
  exe=build-fuzz/bin/fuzz_$t
  echo "-- fuzz_$t: replaying fuzz/corpus/$t ($(ls fuzz/corpus/$t | wc -l) inputs)"
  "$exe" "${limits[@]}" -runs=0 fuzz/corpus/$t
  echo "-- fuzz_$t: fuzzing for $seconds s"
  work=$(mktemp -d)
  cp fuzz/corpus/$t/* "$work"/
  "$exe" "${limits[@]}" -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix=build-fuzz/findings/$t- "$work" 2>&1 | tail -n 12
  rm -rf "$work"
done
echo "fuzz.sh: no findings"
