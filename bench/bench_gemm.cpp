// float32 GEMM backends (xgrad/blas.h): oneDNN's sgemm against OpenBLAS's, same binary, same run, on the
// products that dominate the training-step benchmark (bench_training_step.cpp): the three products of the
// CNN's second convolution for one image (conv3x3 32->64 on 28x28: K = 32·3·3 = 288, P = 28·28 = 784) and the
// MLP's first Linear layer (batch 60, 784 -> 100). One thread; the counter is GFLOP/s (2·m·n·k per product).
//
//   build/bin/bench_gemm --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
//
// The ratio OpenBLAS time / oneDNN time per shape, and the core OpenBLAS runs (context line openblas_core,
// set by OPENBLAS_CORETYPE when the environment pins it), are in docs/benchmarks.md ("float32 GEMM").
#include <benchmark/benchmark.h>

#include <vector>

#include "xgrad/xgrad.h"

namespace {

struct Product {
  bool ta, tb;
  std::size_t m, n, k;
};

void run(benchmark::State& state, xg::blas::SgemmBackend backend, Product p) {
  xg::blas::set_sgemm_backend(backend);
  xg::Generator g(3);
  // stored A is [m, k] ([k, m] when transposed), B is [k, n] ([n, k] when transposed)
  std::vector<float> a(p.m * p.k), b(p.k * p.n), c(p.m * p.n, 0.0f);
  for (auto& v : a) v = static_cast<float>(g.normal());
  for (auto& v : b) v = static_cast<float>(g.normal());
  const std::size_t lda = p.ta ? p.m : p.k, ldb = p.tb ? p.k : p.n;
  for (auto _ : state) {
    xg::blas::gemm(p.ta, p.tb, p.m, p.n, p.k, 1.0f, a.data(), lda, b.data(), ldb, 0.0f, c.data(), p.n);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * double(p.m * p.n * p.k) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

constexpr Product kConvForward{false, false, 64, 784, 288};  // y_n = w · col_n
constexpr Product kConvWeight{false, true, 64, 288, 784};    // dW += dy_n · col_nᵀ
constexpr Product kConvInput{true, false, 288, 784, 64};     // dcol_n = wᵀ · dy_n
constexpr Product kLinear{false, true, 60, 100, 784};        // y = x · Wᵀ

void register_all() {
  const std::pair<const char*, Product> products[] = {
      {"conv_forward", kConvForward}, {"conv_weight", kConvWeight}, {"conv_input", kConvInput}, {"linear", kLinear}};
  for (const auto& [name, p] : products) {
    if (xg::blas::have_onednn())
      benchmark::RegisterBenchmark((std::string("sgemm/onednn/") + name).c_str(),
                                   [p = p](benchmark::State& s) { run(s, xg::blas::SgemmBackend::OneDNN, p); });
    benchmark::RegisterBenchmark((std::string("sgemm/openblas/") + name).c_str(),
                                 [p = p](benchmark::State& s) { run(s, xg::blas::SgemmBackend::OpenBLAS, p); });
  }
}

}  // namespace

int main(int argc, char** argv) {
  xg::set_num_threads(1);
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("cpu", xg::cpu::cpu_name());
  benchmark::AddCustomContext("xgrad_arch", xg::cpu::build_arch() + " (" + xg::cpu::simd_name() + ")");
  benchmark::AddCustomContext("openblas_core", xg::blas::core_name());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
