// LayerNorm and GroupNorm benchmark: the fused kernels (xgrad/kernels/group_norm.h, on the BatchNorm kernels'
// normalisation driver) against the autograd-composed forms, oneDNN 2.6's layer normalization and libtorch 1.13's
// native_layer_norm / native_group_norm (when enabled). Ratios are taken within one run (bench/bn_table.py
// --norm prints the table of docs/benchmarks.md).
//
//   cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DXGRAD_BENCH_ONEDNN=ON -DXGRAD_BENCH_LIBTORCH=ON
//         -DXGRAD_BUILD_TESTS=OFF -DXGRAD_BUILD_EXAMPLES=OFF                                 (one command line)
//   cmake --build build-bench --target bench_norm -j2
//   build-bench/bin/bench_norm --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true
//         --benchmark_report_aggregates_only=true --benchmark_out=norm.json --benchmark_out_format=json   (one line)
//
// Names: <ln|gn>/<impl>/<phase>/<shape>/threads:<n>
//   impl   fused | composed (xg::nn::functional::layer_norm / group_norm, every op a graph node) | onednn (LayerNorm
//          only: oneDNN has no GroupNorm in 2.6) | libtorch
//   phase  fwd (train and eval are the same computation: no running statistics), bwd (dx, dweight, dbias from the
//          saved mean and invstd; composed: the backward of a graph built outside the timed loop)
// float32, eps 1e-5, affine on. GroupNorm shapes use 32 groups (Wu & He's default).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include <xsimd/xsimd.hpp>
#include <xtensor/xadapt.hpp>

#include "bench_common.h"
#include "xgrad/kernels/group_norm.h"
#include "xgrad/nn/normalization.h"
#include "xgrad/parallel.h"
#include "xgrad/tensor.h"

#if defined(XGRAD_HAVE_ONEDNN)
#include <dlfcn.h>

#include <oneapi/dnnl/dnnl.hpp>
#endif
#if defined(XGRAD_HAVE_LIBTORCH)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#endif

namespace {
using bench::Buf;
using bench::randn;
using bench::tensor_of;
#if defined(XGRAD_HAVE_ONEDNN)
using bench::omp_threads;
#endif

constexpr double kEps = 1e-5;
const int kThreads[] = {1, 2};

// LayerNorm: dims = [rows, D]; GroupNorm: [N, C, H, W] with G groups.
struct Case {
  bool layer;
  std::vector<std::int64_t> dims;
  std::size_t G = 1;
  std::size_t numel() const {
    std::size_t n = 1;
    for (auto d : dims) n *= std::size_t(d);
    return n;
  }
  std::size_t affine() const { return layer ? std::size_t(dims.back()) : std::size_t(dims[1]); }
  xg::kernels::GnDims gn() const {
    if (layer) return {numel() / std::size_t(dims.back()), std::size_t(dims.back()), 1, 1};
    return {std::size_t(dims[0]), std::size_t(dims[1]), numel() / std::size_t(dims[0] * dims[1]), G};
  }
  std::string name() const {
    std::string n;
    for (std::size_t i = 0; i < dims.size(); ++i) {
      if (i) n += 'x';
      n += std::to_string(dims[i]);
    }
    return layer ? n : n + "_G" + std::to_string(G);
  }
};

const std::vector<Case> kCases = {
    {true, {256, 1024}}, {true, {4096, 128}}, {true, {60, 100}},
    {false, {32, 128, 28, 28}, 32}, {false, {64, 64, 32, 32}, 32}, {false, {128, 256, 8, 8}, 32},
};

enum class Phase { Fwd, Bwd };
void bench_fused(benchmark::State& st, Case c, Phase ph, int threads) {
  xg::set_num_threads(threads);
  const auto d = c.gn();
  const auto x = randn(c.numel(), 1), dy = randn(c.numel(), 2), w = randn(c.affine(), 3, 1.f, 0.2f),
             b = randn(c.affine(), 4);
  Buf y(c.numel()), dx(c.numel()), mean(d.N * d.G), invstd(d.N * d.G), dw(c.affine()), db(c.affine());
  xg::kernels::group_norm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), invstd.data(), d, kEps);
  for (auto _ : st) {
    if (ph == Phase::Fwd)
      xg::kernels::group_norm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), invstd.data(), d, kEps);
    else
      xg::kernels::group_norm_backward(dy.data(), x.data(), w.data(), mean.data(), invstd.data(), dx.data(), dw.data(),
                                       db.data(), d);
    benchmark::ClobberMemory();
  }
}

void bench_composed(benchmark::State& st, Case c, Phase ph, int threads) {
  namespace F = xg::nn::functional;
  xg::set_num_threads(threads);
  const xg::Shape shape(c.dims.begin(), c.dims.end());
  const bool train = ph == Phase::Bwd;
  xg::Tensor x = tensor_of(randn(c.numel(), 1), shape, train);
  const xg::Tensor dy = tensor_of(randn(c.numel(), 2), shape, false);
  xg::Tensor w = tensor_of(randn(c.affine(), 3, 1.f, 0.2f), {c.affine()}, train),
             b = tensor_of(randn(c.affine(), 4), {c.affine()}, train);
  auto forward = [&] {
    return c.layer ? F::layer_norm(x, {c.affine()}, w, b, kEps) : F::group_norm(x, c.G, w, b, kEps);
  };
  if (ph == Phase::Fwd) {
    for (auto _ : st) {
      xg::Tensor y = forward();
      benchmark::DoNotOptimize(y.data_ptr<float>());
    }
    return;
  }
  const xg::Tensor y = forward();
  for (auto _ : st) {
    for (xg::Tensor* t : {&x, &w, &b}) t->zero_grad(true);
    y.backward(dy, /*retain_graph=*/true);
    benchmark::DoNotOptimize(x.grad().data_ptr<float>());
  }
}

#if defined(XGRAD_HAVE_ONEDNN)
// oneDNN's layer normalization over the last dim of a plain [rows, D] tensor, scale and shift as separate [D]
void bench_onednn(benchmark::State& st, Case c, Phase ph, int threads) {
  using namespace dnnl;
  omp_threads(threads);
  engine eng(engine::kind::cpu, 0);
  stream strm(eng);
  const memory::dims dims(c.dims.begin(), c.dims.end());
  const memory::desc md(dims, memory::data_type::f32, memory::format_tag::ab);
  const normalization_flags aff = normalization_flags::use_scale | normalization_flags::use_shift;
  layer_normalization_forward::primitive_desc fwd_pd(
      layer_normalization_forward::desc(prop_kind::forward_training, md, float(kEps), aff), eng);
  auto xv = randn(c.numel(), 1), dyv = randn(c.numel(), 2), wv = randn(c.affine(), 3, 1.f, 0.2f),
       bv = randn(c.affine(), 4);
  memory x(md, eng, xv.data()), y(md, eng), dy(md, eng, dyv.data()), dx(md, eng);
  const memory::desc cmd({memory::dim(c.affine())}, memory::data_type::f32, memory::format_tag::x);
  memory scale(cmd, eng, wv.data()), shift(cmd, eng, bv.data()), dscale(cmd, eng), dshift(cmd, eng);
  memory mean(fwd_pd.mean_desc(), eng), var(fwd_pd.variance_desc(), eng);
  layer_normalization_forward fwd(fwd_pd);
  const std::unordered_map<int, memory> fargs = {{DNNL_ARG_SRC, x},     {DNNL_ARG_DST, y},
                                                 {DNNL_ARG_MEAN, mean}, {DNNL_ARG_VARIANCE, var},
                                                 {DNNL_ARG_SCALE, scale}, {DNNL_ARG_SHIFT, shift}};
  fwd.execute(strm, fargs);
  strm.wait();
  if (ph == Phase::Fwd) {
    for (auto _ : st) {
      fwd.execute(strm, fargs);
      strm.wait();
    }
    return;
  }
  layer_normalization_backward::primitive_desc bwd_pd(
      layer_normalization_backward::desc(prop_kind::backward, md, md, float(kEps), aff), eng, fwd_pd);
  layer_normalization_backward bwd(bwd_pd);
  const std::unordered_map<int, memory> bargs = {
      {DNNL_ARG_SRC, x},       {DNNL_ARG_MEAN, mean},   {DNNL_ARG_VARIANCE, var},
      {DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_SCALE, scale}, {DNNL_ARG_SHIFT, shift},
      {DNNL_ARG_DIFF_SRC, dx}, {DNNL_ARG_DIFF_SCALE, dscale}, {DNNL_ARG_DIFF_SHIFT, dshift}};
  for (auto _ : st) {
    bwd.execute(strm, bargs);
    strm.wait();
  }
}
#endif

#if defined(XGRAD_HAVE_LIBTORCH)
void bench_libtorch(benchmark::State& st, Case c, Phase ph, int threads) {
  at::set_num_threads(threads);
  at::manual_seed(0);
  const auto opt = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor x = at::randn(at::IntArrayRef(c.dims), opt), dy = at::randn(at::IntArrayRef(c.dims), opt);
  const auto A = std::int64_t(c.affine());
  const at::Tensor w = at::randn({A}, opt) * 0.2 + 1.0, b = at::randn({A}, opt);
  const auto d = c.gn();
  const auto N = std::int64_t(d.N), C = std::int64_t(d.C), HxW = std::int64_t(d.S), G = std::int64_t(d.G);
  const std::vector<std::int64_t> ns{A};
  auto fwd = [&] {
    return c.layer ? at::native_layer_norm(x, ns, w, b, kEps) : at::native_group_norm(x, w, b, N, C, HxW, G, kEps);
  };
  if (ph == Phase::Fwd) {
    for (auto _ : st) {
      auto r = fwd();
      benchmark::DoNotOptimize(std::get<0>(r).data_ptr<float>());
    }
    return;
  }
  const auto f = fwd();
  const at::Tensor mean = std::get<1>(f), rstd = std::get<2>(f);
  for (auto _ : st) {
    auto r = c.layer ? at::native_layer_norm_backward(dy, x, ns, mean, rstd, w, b, {true, true, true})
                     : at::native_group_norm_backward(dy, x, mean, rstd, w, N, C, HxW, G, {true, true, true});
    benchmark::DoNotOptimize(std::get<0>(r).data_ptr<float>());
  }
}
#endif

void register_all() {
  for (const Case& c : kCases)
    for (Phase ph : {Phase::Fwd, Phase::Bwd})
      for (int t : kThreads) {
        const std::string tail = std::string(ph == Phase::Fwd ? "fwd" : "bwd") + "/" + c.name() + "/threads:" +
                                 std::to_string(t);
        const std::string kind = c.layer ? "ln/" : "gn/";
        auto reg = [&](const std::string& impl, std::function<void(benchmark::State&)> f) {
          benchmark::RegisterBenchmark((kind + impl + "/" + tail).c_str(), f)
              ->UseRealTime()
              ->Unit(benchmark::kMicrosecond)
              ->ComputeStatistics("min", [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); });
        };
        reg("fused", [=](benchmark::State& st) { bench_fused(st, c, ph, t); });
        reg("composed", [=](benchmark::State& st) { bench_composed(st, c, ph, t); });
#if defined(XGRAD_HAVE_ONEDNN)
        if (c.layer) reg("onednn", [=](benchmark::State& st) { bench_onednn(st, c, ph, t); });
#endif
#if defined(XGRAD_HAVE_LIBTORCH)
        reg("libtorch", [=](benchmark::State& st) { bench_libtorch(st, c, ph, t); });
#endif
      }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
