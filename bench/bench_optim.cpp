// One optimizer step over 1M float32 parameters (one tensor of 2^20 elements): xgrad's SGD (momentum), Adam and
// AdamW against a plain C++ loop of the same formula over raw arrays. The ratio xgrad / plain is the cost of the
// Optimizer machinery (groups, state lookup, dtype dispatch, NoGradGuard) on top of the arithmetic.
//
//   build-optim/bin/bench_optim --benchmark_min_time=0.5
//
// This file is compiled with -fno-math-errno, like optim/src (bench/CMakeLists.txt): without it GCC keeps a
// scalar sqrt call (to set errno) and does not vectorise the plain Adam loop, which would compare a vectorised
// xgrad against a scalar baseline.
#include <benchmark/benchmark.h>

#include <cmath>
#include <vector>

#include "xgrad/xgrad.h"

namespace {

constexpr std::size_t kN = std::size_t(1) << 20;

std::vector<float> filled(std::size_t n, float scale, std::uint64_t seed) {
  xg::Generator gen(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = float(scale * gen.normal());
  return v;
}

// ---- plain loops: the same formulas as optim/src/sgd.cpp and adam.cpp, nothing else -----------------------------

// SGD with momentum (dampening 0, no weight decay, after the first step): b = μ·b + g;  p = p − lr·b.
void plain_sgd_momentum(std::size_t n, float* p, const float* g, float* b, float lr, float momentum) {
  for (std::size_t i = 0; i < n; ++i) {
    b[i] = b[i] * momentum + g[i];
    p[i] = p[i] - lr * b[i];
  }
}

// Adam / AdamW: m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²;  p = p·decay − step_size·m / (sqrt(v)/bc2_sqrt + eps).
void plain_adam(std::size_t n, float* p, const float* g, float* m, float* v, float beta1, float beta2, float eps,
                float step_size, float bc2_sqrt, float decay) {
  for (std::size_t i = 0; i < n; ++i) {
    const float pi = p[i] * decay;
    m[i] = m[i] * beta1 + (1 - beta1) * g[i];
    v[i] = v[i] * beta2 + (1 - beta2) * g[i] * g[i];
    p[i] = pi - step_size * (m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps));
  }
}

// ---- SGD with momentum ----------------------------------------------------------------------------------------
void BM_SGDMomentum_xgrad(benchmark::State& state) {
  auto p = xg::from_vector(filled(kN, 1.0f, 1), {kN}, /*requires_grad=*/true);
  p.set_grad(xg::from_vector(filled(kN, 0.01f, 2), {kN}));
  xg::optim::SGD opt({p}, xg::optim::SGDOptions(1e-3).momentum(0.9));
  opt.step();  // creates the momentum buffer
  for (auto _ : state) {
    opt.step();
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(std::int64_t(state.iterations() * kN));
}

void BM_SGDMomentum_plain(benchmark::State& state) {
  auto p = filled(kN, 1.0f, 1), g = filled(kN, 0.01f, 2), b = g;
  for (auto _ : state) {
    plain_sgd_momentum(kN, p.data(), g.data(), b.data(), 1e-3f, 0.9f);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(std::int64_t(state.iterations() * kN));
}

// ---- Adam / AdamW -----------------------------------------------------------------------------------------------
template <class Opt, class Options>
void bench_adam_xgrad(benchmark::State& state, Options options) {
  auto p = xg::from_vector(filled(kN, 1.0f, 1), {kN}, /*requires_grad=*/true);
  p.set_grad(xg::from_vector(filled(kN, 0.01f, 2), {kN}));
  Opt opt({p}, options);
  opt.step();  // creates the moments
  for (auto _ : state) {
    opt.step();
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(std::int64_t(state.iterations() * kN));
}

void bench_adam_plain(benchmark::State& state, double weight_decay) {
  auto p = filled(kN, 1.0f, 1), g = filled(kN, 0.01f, 2);
  std::vector<float> m(kN, 0.0f), v(kN, 0.0f);
  const double lr = 1e-3, beta1 = 0.9, beta2 = 0.999;
  double t = 0;
  for (auto _ : state) {
    t += 1;  // the per-step scalars, as the optimizer computes them
    const double step_size = lr / (1 - std::pow(beta1, t));
    const double bc2_sqrt = std::sqrt(1 - std::pow(beta2, t));
    plain_adam(kN, p.data(), g.data(), m.data(), v.data(), float(beta1), float(beta2), 1e-8f, float(step_size),
               float(bc2_sqrt), float(1 - lr * weight_decay));
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(std::int64_t(state.iterations() * kN));
}

void BM_Adam_xgrad(benchmark::State& state) { bench_adam_xgrad<xg::optim::Adam>(state, xg::optim::AdamOptions(1e-3)); }
void BM_Adam_plain(benchmark::State& state) { bench_adam_plain(state, 0.0); }
void BM_AdamW_xgrad(benchmark::State& state) {
  bench_adam_xgrad<xg::optim::AdamW>(state, xg::optim::AdamWOptions(1e-3));
}
void BM_AdamW_plain(benchmark::State& state) { bench_adam_plain(state, 1e-2); }

}  // namespace

BENCHMARK(BM_SGDMomentum_xgrad)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SGDMomentum_plain)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Adam_xgrad)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Adam_plain)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_AdamW_xgrad)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_AdamW_plain)->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
