// BatchNorm benchmark: the hand-fused xgrad kernels against oneDNN 2.6 and libtorch 1.13 (when enabled).
//
//   cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DXGRAD_BENCH_ONEDNN=ON -DXGRAD_BENCH_LIBTORCH=ON
//   cmake --build build-bench --target bench_batchnorm -j2
//   build-bench/bin/bench_batchnorm --benchmark_filter='bn/.*/64x64x32x32/'
//       --benchmark_repetitions=5 --benchmark_report_aggregates_only=true     (one command line)
//
// Names: bn/<impl>/<phase>/<shape>/threads:<n>
//   impl   fused | composed (autograd-composed, xg::nn::functional::batch_norm) | onednn_nchw | onednn_nChw16c |
//          onednn_nc (2-D shapes) | libtorch
//   phase  train_fwd (batch stats, normalise, running stats where the library does it)
//          bwd       (dx, dweight, dbias from saved mean/invstd)
//          eval_fwd  (running stats)
// Every implementation is timed in its own preferred layout (oneDNN's blocked nChw16c input is prepared
// outside the timed loop), float32, eps 1e-5.
//
// Counters
//   GB/s      effective bandwidth with the minimum-traffic model: bytes = passes * numel * 4, passes = 3 for
//             train_fwd (read x twice, write y) and bwd (read dy and x, write dx), 2 for eval_fwd.
//   bw_share  GB/s divided by the machine's STREAM-style triad bandwidth at the same thread count, measured
//             once at start-up (printed, and stored in the JSON context). Kernels with streaming stores, or
//             that re-read x from cache, can exceed 1: the model is a yardstick, not a bound.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include <xsimd/xsimd.hpp>

#include <xtensor/xadapt.hpp>

#include "bench_common.h"
#include "xgrad/kernels/batchnorm.h"
#include "xgrad/cpu.h"
#include "xgrad/nn/functional.h"
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
constexpr double kMomentum = 0.1;
const int kThreads[] = {1, 2};

struct Shape {
  std::vector<std::int64_t> dims;
  std::size_t N() const { return std::size_t(dims[0]); }
  std::size_t C() const { return std::size_t(dims[1]); }
  std::size_t S() const {
    std::size_t s = 1;
    for (std::size_t i = 2; i < dims.size(); ++i) s *= std::size_t(dims[i]);
    return s;
  }
  std::size_t numel() const { return N() * C() * S(); }
  std::string name() const {
    std::string n;
    for (std::size_t i = 0; i < dims.size(); ++i) {
      if (i) n += 'x';
      n += std::to_string(dims[i]);
    }
    return n;
  }
  xg::kernels::BnDims bn() const { return {N(), C(), S()}; }
};

const std::vector<Shape> kShapes = {
    {{64, 64, 32, 32}}, {{32, 128, 28, 28}}, {{128, 256, 8, 8}}, {{256, 1024}}, {{60, 100}},
};

enum class Phase { TrainFwd, Bwd, EvalFwd };
const char* phase_name(Phase p) { return p == Phase::TrainFwd ? "train_fwd" : p == Phase::Bwd ? "bwd" : "eval_fwd"; }
int phase_passes(Phase p) { return p == Phase::EvalFwd ? 2 : 3; }

// ------------------------------------------------------------------------------------------ machine bandwidth
double g_triad_gbps[3] = {0, 0, 0};  // index = threads

// STREAM triad a[i] = b[i] + s*c[i] over DRAM-sized arrays (3 x 128 MiB), best of 5; bytes = 3 arrays.
double measure_triad(int threads) {
  const std::size_t n = std::size_t(1) << 25;
  std::unique_ptr<float[]> a(new float[n]), b(new float[n]), c(new float[n]);
  xg::set_num_threads(threads);
  const std::size_t grain = n / 64;
  xg::parallel_for(0, n, grain, [&](std::size_t lo, std::size_t hi) {  // first touch by the same partition
    for (std::size_t i = lo; i < hi; ++i) {
      a[i] = 0.f;
      b[i] = 1.f;
      c[i] = 2.f;
    }
  });
  double best = 1e30;
  const float s = 3.f;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    xg::parallel_for(0, n, grain, [&](std::size_t lo, std::size_t hi) {
      float* __restrict pa = a.get();
      const float* __restrict pb = b.get();
      const float* __restrict pc = c.get();
      for (std::size_t i = lo; i < hi; ++i) pa[i] = pb[i] + s * pc[i];
    });
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, dt);
  }
  benchmark::DoNotOptimize(a[n / 2]);
  return 3.0 * double(n) * sizeof(float) / best / 1e9;
}

void set_counters(benchmark::State& st, const Shape& sh, Phase ph, int threads) {
  const double bytes = double(phase_passes(ph)) * double(sh.numel()) * sizeof(float);
  const double iters = double(st.iterations());
  st.SetBytesProcessed(std::int64_t(bytes * iters));
  st.counters["GB/s"] = benchmark::Counter(bytes * iters / 1e9, benchmark::Counter::kIsRate);
  st.counters["bw_share"] = benchmark::Counter(bytes * iters / 1e9 / g_triad_gbps[threads], benchmark::Counter::kIsRate);
}

// ------------------------------------------------------------------------------------------ fused (xgrad)
void bench_fused(benchmark::State& st, Shape sh, Phase ph, int threads) {
  xg::set_num_threads(threads);
  const auto d = sh.bn();
  const auto x = randn(sh.numel(), 1), dy = randn(sh.numel(), 2);
  const auto w = randn(d.C, 3, 1.f, 0.2f), b = randn(d.C, 4);
  Buf y(sh.numel()), dx(sh.numel()), mean(d.C), invstd(d.C), rm(d.C, 0.f), rv(d.C, 1.f), dw(d.C), db(d.C);
  xg::kernels::batch_norm_forward_train(x.data(), w.data(), b.data(), y.data(), mean.data(), invstd.data(), rm.data(),
                                        rv.data(), d, kEps, kMomentum);
  for (auto _ : st) {
    switch (ph) {
      case Phase::TrainFwd:
        xg::kernels::batch_norm_forward_train(x.data(), w.data(), b.data(), y.data(), mean.data(), invstd.data(),
                                              rm.data(), rv.data(), d, kEps, kMomentum);
        break;
      case Phase::Bwd:
        xg::kernels::batch_norm_backward(dy.data(), x.data(), w.data(), mean.data(), invstd.data(), dx.data(),
                                         dw.data(), db.data(), d);
        break;
      case Phase::EvalFwd:
        xg::kernels::batch_norm_forward_eval(x.data(), w.data(), b.data(), rm.data(), rv.data(), y.data(), d, kEps);
        break;
    }
    benchmark::ClobberMemory();
  }
  set_counters(st, sh, ph, threads);
}

// ------------------------------------------------------------------------------------------ composed (xgrad)
// The autograd-composed BatchNorm: xg::nn::functional::batch_norm, built from primitive tensor ops, every op a
// graph node. train_fwd builds the graph (x, weight, bias require grad); bwd times only the backward of one
// such graph with dy (built outside the timed loop, retain_graph, the leaves' grads reset to none before each
// pass so nothing accumulates); eval_fwd runs with the running statistics. Same data as bench_fused.
void bench_composed(benchmark::State& st, Shape sh, Phase ph, int threads) {
  namespace F = xg::nn::functional;
  xg::set_num_threads(threads);
  const auto d = sh.bn();
  const xg::Shape shape(sh.dims.begin(), sh.dims.end());
  const bool train = ph != Phase::EvalFwd;
  xg::Tensor x = tensor_of(randn(sh.numel(), 1), shape, train);
  const xg::Tensor dy = tensor_of(randn(sh.numel(), 2), shape, false);
  xg::Tensor w = tensor_of(randn(d.C, 3, 1.f, 0.2f), {d.C}, train), b = tensor_of(randn(d.C, 4), {d.C}, train);
  const xg::Tensor rm = xg::zeros({d.C}), rv = xg::ones({d.C});
  switch (ph) {
    case Phase::TrainFwd:
      for (auto _ : st) {
        xg::Tensor y = F::batch_norm(x, rm, rv, w, b, true, kMomentum, kEps);
        benchmark::DoNotOptimize(y.data_ptr<float>());
      }
      break;
    case Phase::Bwd: {
      const xg::Tensor y = F::batch_norm(x, rm, rv, w, b, true, kMomentum, kEps);
      for (auto _ : st) {
        for (xg::Tensor* t : {&x, &w, &b}) t->zero_grad(true);
        y.backward(dy, /*retain_graph=*/true);
        benchmark::DoNotOptimize(x.grad().data_ptr<float>());
      }
      break;
    }
    case Phase::EvalFwd:
      for (auto _ : st) {
        xg::Tensor y = F::batch_norm(x, rm, rv, w, b, false, kMomentum, kEps);
        benchmark::DoNotOptimize(y.data_ptr<float>());
      }
      break;
  }
  set_counters(st, sh, ph, threads);
}

// ------------------------------------------------------------------------------------------ oneDNN 2.6
#if defined(XGRAD_HAVE_ONEDNN)
void bench_onednn(benchmark::State& st, Shape sh, Phase ph, int threads, dnnl::memory::format_tag tag) {
  using namespace dnnl;
  omp_threads(threads);
  engine eng(engine::kind::cpu, 0);
  stream strm(eng);
  const memory::dims dims(sh.dims.begin(), sh.dims.end());
  const memory::desc plain_md(dims, memory::data_type::f32,
                              sh.dims.size() == 2 ? memory::format_tag::nc : memory::format_tag::nchw);
  const memory::desc md(dims, memory::data_type::f32, tag);
  const auto fill = [&](memory& m, std::uint32_t seed) {  // plain random data, reordered to `tag`
    auto v = randn(sh.numel(), seed);
    memory src(plain_md, eng, v.data());
    reorder(src, m).execute(strm, src, m);
    strm.wait();
  };
  const normalization_flags aff = normalization_flags::use_scale | normalization_flags::use_shift;
  const std::size_t C = sh.C();

  memory x(md, eng), y(md, eng), dy(md, eng), dx(md, eng);
  fill(x, 1);
  fill(dy, 2);
  const memory::desc cmd({memory::dim(C)}, memory::data_type::f32, memory::format_tag::x);
  memory scale(cmd, eng), shift(cmd, eng), dscale(cmd, eng), dshift(cmd, eng);
  {
    auto w = randn(C, 3, 1.f, 0.2f), b = randn(C, 4);
    std::copy(w.begin(), w.end(), static_cast<float*>(scale.get_data_handle()));
    std::copy(b.begin(), b.end(), static_cast<float*>(shift.get_data_handle()));
  }
  batch_normalization_forward::primitive_desc fwd_pd(
      batch_normalization_forward::desc(prop_kind::forward_training, md, float(kEps), aff), eng);
  memory mean(fwd_pd.mean_desc(), eng), var(fwd_pd.variance_desc(), eng);
  batch_normalization_forward fwd(fwd_pd);
  const std::unordered_map<int, memory> fwd_args = {{DNNL_ARG_SRC, x},     {DNNL_ARG_DST, y},
                                                    {DNNL_ARG_MEAN, mean}, {DNNL_ARG_VARIANCE, var},
                                                    {DNNL_ARG_SCALE, scale}, {DNNL_ARG_SHIFT, shift}};
  fwd.execute(strm, fwd_args);
  strm.wait();

  if (ph == Phase::TrainFwd) {
    for (auto _ : st) {
      fwd.execute(strm, fwd_args);
      strm.wait();
    }
  } else if (ph == Phase::Bwd) {
    batch_normalization_backward::primitive_desc bwd_pd(
        batch_normalization_backward::desc(prop_kind::backward, md, md, float(kEps), aff), eng, fwd_pd);
    batch_normalization_backward bwd(bwd_pd);
    const std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC, x},       {DNNL_ARG_MEAN, mean},   {DNNL_ARG_VARIANCE, var},
        {DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_SCALE, scale}, {DNNL_ARG_SHIFT, shift},  // 2.6 wants SHIFT too
        {DNNL_ARG_DIFF_SRC, dx}, {DNNL_ARG_DIFF_SCALE, dscale}, {DNNL_ARG_DIFF_SHIFT, dshift}};
    for (auto _ : st) {
      bwd.execute(strm, args);
      strm.wait();
    }
  } else {
    batch_normalization_forward::primitive_desc inf_pd(
        batch_normalization_forward::desc(prop_kind::forward_inference, md, float(kEps),
                                          aff | normalization_flags::use_global_stats),
        eng);
    batch_normalization_forward inf(inf_pd);
    const std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, x},     {DNNL_ARG_DST, y},
                                                  {DNNL_ARG_MEAN, mean}, {DNNL_ARG_VARIANCE, var},
                                                  {DNNL_ARG_SCALE, scale}, {DNNL_ARG_SHIFT, shift}};
    for (auto _ : st) {
      inf.execute(strm, args);
      strm.wait();
    }
  }
  set_counters(st, sh, ph, threads);
}
#endif

// ------------------------------------------------------------------------------------------ libtorch 1.13
#if defined(XGRAD_HAVE_LIBTORCH)
void bench_libtorch(benchmark::State& st, Shape sh, Phase ph, int threads) {
  at::set_num_threads(threads);
  at::manual_seed(0);
  const auto opt = at::TensorOptions().dtype(at::kFloat);
  const at::IntArrayRef dims(sh.dims);
  const at::Tensor x = at::randn(dims, opt), dy = at::randn(dims, opt);
  const std::int64_t C = sh.dims[1];
  const at::Tensor w = at::randn({C}, opt) * 0.2 + 1.0, b = at::randn({C}, opt);
  at::Tensor rm = at::zeros({C}, opt), rv = at::ones({C}, opt);
  auto fw = at::native_batch_norm(x, w, b, rm, rv, /*training=*/true, kMomentum, kEps);
  const at::Tensor save_mean = std::get<1>(fw), save_invstd = std::get<2>(fw);
  for (auto _ : st) {
    switch (ph) {
      case Phase::TrainFwd: {
        auto r = at::native_batch_norm(x, w, b, rm, rv, true, kMomentum, kEps);
        benchmark::DoNotOptimize(std::get<0>(r).data_ptr());
        break;
      }
      case Phase::Bwd: {
        auto r = at::native_batch_norm_backward(dy, x, w, rm, rv, save_mean, save_invstd, true, kEps,
                                                {true, true, true});
        benchmark::DoNotOptimize(std::get<0>(r).data_ptr());
        break;
      }
      case Phase::EvalFwd: {
        auto r = at::native_batch_norm(x, w, b, rm, rv, false, kMomentum, kEps);
        benchmark::DoNotOptimize(std::get<0>(r).data_ptr());
        break;
      }
    }
  }
  set_counters(st, sh, ph, threads);
}
#endif

void register_all() {
  for (const Shape& sh : kShapes)
    for (Phase ph : {Phase::TrainFwd, Phase::Bwd, Phase::EvalFwd})
      for (int t : kThreads) {
        const std::string tail = std::string("/") + phase_name(ph) + "/" + sh.name() + "/threads:" + std::to_string(t);
        auto reg = [&](const std::string& impl, std::function<void(benchmark::State&)> fn) {
          benchmark::RegisterBenchmark(("bn/" + impl + tail).c_str(), fn)
              ->UseRealTime()
              ->Unit(benchmark::kMicrosecond)
              ->ComputeStatistics("min", [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); });
        };
        reg("fused", [=](benchmark::State& st) { bench_fused(st, sh, ph, t); });
        reg("composed", [=](benchmark::State& st) { bench_composed(st, sh, ph, t); });
#if defined(XGRAD_HAVE_ONEDNN)
        if (sh.dims.size() == 2) {
          reg("onednn_nc", [=](benchmark::State& st) { bench_onednn(st, sh, ph, t, dnnl::memory::format_tag::nc); });
        } else {
          reg("onednn_nchw",
              [=](benchmark::State& st) { bench_onednn(st, sh, ph, t, dnnl::memory::format_tag::nchw); });
          reg("onednn_nChw16c",
              [=](benchmark::State& st) { bench_onednn(st, sh, ph, t, dnnl::memory::format_tag::nChw16c); });
        }
#endif
#if defined(XGRAD_HAVE_LIBTORCH)
        reg("libtorch", [=](benchmark::State& st) { bench_libtorch(st, sh, ph, t); });
#endif
      }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  for (int t : kThreads) {
    g_triad_gbps[t] = measure_triad(t);
    std::fprintf(stderr, "STREAM triad (float, 3 x 128 MiB), %d thread%s: %.1f GB/s\n", t, t > 1 ? "s" : "",
                 g_triad_gbps[t]);
    benchmark::AddCustomContext("cpu", xg::cpu::cpu_name());
    benchmark::AddCustomContext("xgrad_arch", xg::cpu::build_arch() + " (" + xg::cpu::simd_name() + ")");
    benchmark::AddCustomContext("triad_GBps_threads:" + std::to_string(t), std::to_string(g_triad_gbps[t]));
  }
#if defined(XGRAD_HAVE_ONEDNN)
  benchmark::AddCustomContext("onednn", std::to_string(dnnl::version()->major) + "." +
                                            std::to_string(dnnl::version()->minor) + "." +
                                            std::to_string(dnnl::version()->patch));
#endif
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
