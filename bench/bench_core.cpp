// Core benchmarks (issue 2): the autograd overhead of one tiny op, and elementwise / reduction throughput at
// 1M floats against a plain C++ loop that writes into a preallocated output (same binary, same flags).
//
//   build-<you>/bin/bench_core --benchmark_min_time=0.5
//
// Targets: tiny op forward+backward <= 2 us; every xgrad kernel within 1.5x of its plain loop.
// The figures and the exact command live in docs/benchmarks.md ("Core (issue 2)").
#include <benchmark/benchmark.h>

#include <cmath>
#include <vector>

#include "xgrad/xgrad.h"

#ifdef XGRAD_HAVE_LIBTORCH
#include <torch/torch.h>
#endif

namespace {

constexpr std::size_t kN = 1'000'000;  // 1M floats
constexpr std::size_t kRows = 1000, kCols = 1000;

// ---- (a) autograd overhead of one tiny op ----------------------------------------------------------------
// One training-step-like round trip: forward add of two 1-element tensors that require grad, backward from the
// result (seeding with 1), both leaves' .grad() written, then zero_grad() (set to none, PyTorch's default).
void BM_TinyAddFwdBwd(benchmark::State& state) {
  xg::Tensor a = xg::full({1}, 1.5, xg::kFloat32, /*requires_grad=*/true);
  xg::Tensor b = xg::full({1}, 2.5, xg::kFloat32, /*requires_grad=*/true);
  for (auto _ : state) {
    xg::Tensor c = xg::add(a, b);
    c.backward();
    benchmark::DoNotOptimize(a.grad().data_ptr<float>());
    a.zero_grad();
    b.zero_grad();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TinyAddFwdBwd);

// The same without zero_grad: the gradients accumulate in place (no allocation for .grad()).
void BM_TinyAddFwdBwdAccumulate(benchmark::State& state) {
  xg::Tensor a = xg::full({1}, 1.5, xg::kFloat32, true);
  xg::Tensor b = xg::full({1}, 2.5, xg::kFloat32, true);
  for (auto _ : state) {
    xg::Tensor c = xg::add(a, b);
    c.backward();
  }
  benchmark::DoNotOptimize(a.grad().data_ptr<float>());
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TinyAddFwdBwdAccumulate);

// Forward only, nothing requires grad: the cost of the tensor machinery without the graph.
void BM_TinyAddForwardNoGrad(benchmark::State& state) {
  xg::Tensor a = xg::full({1}, 1.5);
  xg::Tensor b = xg::full({1}, 2.5);
  for (auto _ : state) {
    xg::Tensor c = xg::add(a, b);
    benchmark::DoNotOptimize(c.data_ptr<float>());
  }
}
BENCHMARK(BM_TinyAddForwardNoGrad);

#ifdef XGRAD_HAVE_LIBTORCH
void BM_Torch_TinyAddFwdBwd(benchmark::State& state) {
  torch::set_num_threads(1);
  auto a = torch::full({1}, 1.5, torch::requires_grad());
  auto b = torch::full({1}, 2.5, torch::requires_grad());
  for (auto _ : state) {
    auto c = a + b;
    c.backward();
    benchmark::DoNotOptimize(a.grad().data_ptr<float>());
    a.mutable_grad().reset();
    b.mutable_grad().reset();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Torch_TinyAddFwdBwd);
#endif

// ---- (b) throughput at 1M floats: xgrad op vs plain loop -------------------------------------------------
// Inputs are uniform in [0.5, 1.5) (so exp/log stay finite); nothing requires grad. Bytes = reads + writes.
xg::Tensor input(std::uint64_t seed, xg::Shape shape = {kN}) {
  xg::Generator g(seed);
  return xg::uniform(shape, 0.5, 1.5, xg::kFloat32, &g);
}

void set_bytes(benchmark::State& state, std::size_t reads, std::size_t writes) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * (reads + writes) * sizeof(float)));
}

template <class Op>
void xgrad_binary(benchmark::State& state, Op op) {
  xg::Tensor a = input(1), b = input(2);
  for (auto _ : state) {
    xg::Tensor c = op(a, b);
    benchmark::DoNotOptimize(c.data_ptr<float>());
  }
  set_bytes(state, 2 * kN, kN);
}
template <class Op>
void loop_binary(benchmark::State& state, Op op) {
  xg::Tensor a = input(1), b = input(2);
  const float* pa = a.data_ptr<float>();
  const float* pb = b.data_ptr<float>();
  std::vector<float> out(kN);
  for (auto _ : state) {
    float* po = out.data();
    for (std::size_t i = 0; i < kN; ++i) po[i] = op(pa[i], pb[i]);
    benchmark::DoNotOptimize(po);
    benchmark::ClobberMemory();
  }
  set_bytes(state, 2 * kN, kN);
}
template <class Op>
void xgrad_unary(benchmark::State& state, Op op) {
  xg::Tensor a = input(1);
  for (auto _ : state) {
    xg::Tensor c = op(a);
    benchmark::DoNotOptimize(c.data_ptr<float>());
  }
  set_bytes(state, kN, kN);
}
template <class Op>
void loop_unary(benchmark::State& state, Op op) {
  xg::Tensor a = input(1);
  const float* pa = a.data_ptr<float>();
  std::vector<float> out(kN);
  for (auto _ : state) {
    float* po = out.data();
    for (std::size_t i = 0; i < kN; ++i) po[i] = op(pa[i]);
    benchmark::DoNotOptimize(po);
    benchmark::ClobberMemory();
  }
  set_bytes(state, kN, kN);
}

void BM_Add_xgrad(benchmark::State& s) { xgrad_binary(s, [](const xg::Tensor& a, const xg::Tensor& b) { return xg::add(a, b); }); }
void BM_Add_loop(benchmark::State& s) { loop_binary(s, [](float a, float b) { return a + b; }); }
void BM_Mul_xgrad(benchmark::State& s) { xgrad_binary(s, [](const xg::Tensor& a, const xg::Tensor& b) { return xg::mul(a, b); }); }
void BM_Mul_loop(benchmark::State& s) { loop_binary(s, [](float a, float b) { return a * b; }); }
void BM_Exp_xgrad(benchmark::State& s) { xgrad_unary(s, [](const xg::Tensor& a) { return xg::exp(a); }); }
void BM_Exp_loop(benchmark::State& s) { loop_unary(s, [](float a) { return std::exp(a); }); }
void BM_Sigmoid_xgrad(benchmark::State& s) { xgrad_unary(s, [](const xg::Tensor& a) { return xg::sigmoid(a); }); }
void BM_Sigmoid_loop(benchmark::State& s) { loop_unary(s, [](float a) { return 1.0f / (1.0f + std::exp(-a)); }); }
BENCHMARK(BM_Add_xgrad);
BENCHMARK(BM_Add_loop);
BENCHMARK(BM_Mul_xgrad);
BENCHMARK(BM_Mul_loop);
BENCHMARK(BM_Exp_xgrad);
BENCHMARK(BM_Exp_loop);
BENCHMARK(BM_Sigmoid_xgrad);
BENCHMARK(BM_Sigmoid_loop);

// Broadcasting (informational, no target): [1000,1000] + [1000], the bias-add shape.
void BM_AddRowBroadcast_xgrad(benchmark::State& state) {
  xg::Tensor a = input(1, {kRows, kCols}), b = input(2, {kCols});
  for (auto _ : state) {
    xg::Tensor c = xg::add(a, b);
    benchmark::DoNotOptimize(c.data_ptr<float>());
  }
  set_bytes(state, kN + kCols, kN);
}
void BM_AddRowBroadcast_loop(benchmark::State& state) {
  xg::Tensor a = input(1, {kRows, kCols}), b = input(2, {kCols});
  const float* pa = a.data_ptr<float>();
  const float* pb = b.data_ptr<float>();
  std::vector<float> out(kN);
  for (auto _ : state) {
    float* po = out.data();
    for (std::size_t i = 0; i < kRows; ++i)
      for (std::size_t j = 0; j < kCols; ++j) po[i * kCols + j] = pa[i * kCols + j] + pb[j];
    benchmark::DoNotOptimize(po);
    benchmark::ClobberMemory();
  }
  set_bytes(state, kN + kCols, kN);
}
BENCHMARK(BM_AddRowBroadcast_xgrad);
BENCHMARK(BM_AddRowBroadcast_loop);

// Reductions: the whole 1M vector, and a [1000,1000] matrix over axis 0 (column sums) and over the last axis
// (row sums).
void BM_SumAll_xgrad(benchmark::State& state) {
  xg::Tensor a = input(1);
  for (auto _ : state) benchmark::DoNotOptimize(xg::sum(a).item());
  set_bytes(state, kN, 0);
}
void BM_SumAll_loop(benchmark::State& state) {
  xg::Tensor a = input(1);
  const float* p = a.data_ptr<float>();
  for (auto _ : state) {
    float s = 0;
    for (std::size_t i = 0; i < kN; ++i) s += p[i];
    benchmark::DoNotOptimize(s);
  }
  set_bytes(state, kN, 0);
}
void BM_SumAxis0_xgrad(benchmark::State& state) {
  xg::Tensor a = input(1, {kRows, kCols});
  for (auto _ : state) {
    xg::Tensor s = xg::sum(a, {0});
    benchmark::DoNotOptimize(s.data_ptr<float>());
  }
  set_bytes(state, kN, kCols);
}
void BM_SumAxis0_loop(benchmark::State& state) {
  xg::Tensor a = input(1, {kRows, kCols});
  const float* p = a.data_ptr<float>();
  std::vector<float> out(kCols);
  for (auto _ : state) {
    float* o = out.data();
    for (std::size_t j = 0; j < kCols; ++j) o[j] = 0;
    for (std::size_t i = 0; i < kRows; ++i)
      for (std::size_t j = 0; j < kCols; ++j) o[j] += p[i * kCols + j];
    benchmark::DoNotOptimize(o);
    benchmark::ClobberMemory();
  }
  set_bytes(state, kN, kCols);
}
void BM_SumLastAxis_xgrad(benchmark::State& state) {
  xg::Tensor a = input(1, {kRows, kCols});
  for (auto _ : state) {
    xg::Tensor s = xg::sum(a, {-1});
    benchmark::DoNotOptimize(s.data_ptr<float>());
  }
  set_bytes(state, kN, kRows);
}
void BM_SumLastAxis_loop(benchmark::State& state) {
  xg::Tensor a = input(1, {kRows, kCols});
  const float* p = a.data_ptr<float>();
  std::vector<float> out(kRows);
  for (auto _ : state) {
    float* o = out.data();
    for (std::size_t i = 0; i < kRows; ++i) {
      float s = 0;
      for (std::size_t j = 0; j < kCols; ++j) s += p[i * kCols + j];
      o[i] = s;
    }
    benchmark::DoNotOptimize(o);
    benchmark::ClobberMemory();
  }
  set_bytes(state, kN, kRows);
}
BENCHMARK(BM_SumAll_xgrad);
BENCHMARK(BM_SumAll_loop);
BENCHMARK(BM_SumAxis0_xgrad);
BENCHMARK(BM_SumAxis0_loop);
BENCHMARK(BM_SumLastAxis_xgrad);
BENCHMARK(BM_SumLastAxis_loop);

}  // namespace

BENCHMARK_MAIN();
