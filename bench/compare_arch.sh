#!/usr/bin/env bash
# What the CPU level of a build costs (docs/benchmarks.md, "CPUs and builds"): the BatchNorm and training-step
# benchmarks of a -march=native build and of the portable default (x86-64-v3, AVX2), the latter run twice: as is,
# and with oneDNN and libtorch held to AVX2, so that an AVX-512 machine runs what an AVX2-only CPU (Zen 3) would.
# The arms run alternately in one run (rounds x arms), so the ratios compare like with like on a shared, noisy
# machine.
#
#   apt-get install -y libtorch-dev      # the peer (not part of scripts/setup.sh)
#   bash bench/compare_arch.sh [rounds]  # default 2 rounds; builds build-bench-native/ and build-bench-v3/
#
# Prints the tables (python3 bench/arch_table.py) and leaves the JSON files in arch-bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
out=arch-bench
mkdir -p "$out"
common=(-DCMAKE_BUILD_TYPE=Release -DXGRAD_BENCH_LIBTORCH=ON -DXGRAD_BENCH_ONEDNN=ON -DXGRAD_BUILD_TESTS=OFF
        -DXGRAD_BUILD_EXAMPLES=OFF)
for b in native v3; do
  if [ "$b" = native ]; then arch=(-DXGRAD_NATIVE=ON); else arch=(-DXGRAD_NATIVE=OFF -DXGRAD_ARCH=x86-64-v3); fi
  cmake -S . -B "build-bench-$b" "${common[@]}" "${arch[@]}" > /dev/null
  cmake --build "build-bench-$b" -j"$(nproc)" --target bench_batchnorm bench_training_step > /dev/null
done

# Three arms: native, v3 (the portable build on this CPU: oneDNN and libtorch free), v3avx2 (the portable build
# as an AVX2-only CPU runs it: oneDNN's and libtorch's run-time dispatch held to AVX2).
run() {
  local b=$1; shift
  if [ "$b" = v3avx2 ]; then
    ONEDNN_MAX_CPU_ISA=AVX2 DNNL_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 "$@"
  else
    "$@"
  fi
}
bn_filter='bn/(fused|composed|libtorch|onednn_nchw|onednn_nc)/.*/(64x64x32x32|128x256x8x8|256x1024|60x100)/'
for r in $(seq 1 "$rounds"); do
  for b in native v3 v3avx2; do
    dir=build-bench-${b%avx2}
    echo "round $r/$rounds: $b: BatchNorm"
    run "$b" "$dir/bin/bench_batchnorm" --benchmark_filter="$bn_filter" --benchmark_repetitions=3 \
      --benchmark_min_time=0.1 --benchmark_report_aggregates_only=true \
      --benchmark_out="$out/bn-$b-$r.json" --benchmark_out_format=json > /dev/null
    echo "round $r/$rounds: $b: training step"
    run "$b" "$dir/bin/bench_training_step" --benchmark_filter='step/(xgrad|libtorch)/(mlp|mlp_bn|cnn)(/.*)?$' \
      --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
      --benchmark_out="$out/step-$b-$r.json" --benchmark_out_format=json > /dev/null
  done
done
python3 bench/arch_table.py "$out"
