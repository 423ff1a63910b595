// One training step — zero grad, forward, cross-entropy, backward, plain SGD update — of the models of issue 3:
//   mlp     784-100-100-100-10, sigmoid, batch 60
//   mlp_bn  the same with Linear(no bias) -> BatchNorm1d before each sigmoid
//   cnn     conv3x3 1->32 (pad 1) + BN + ReLU, conv3x3 32->64 (pad 1) + BN + ReLU, maxpool 2,
//           Linear 12544->10, batch 64 of 1x28x28 (convolutions without bias: BN's shift replaces it)
// with BatchNorm's default (fused) implementation, and the BN models once more with the composed reference.
// One thread. Built with -DXGRAD_BENCH_LIBTORCH=ON, the same models run in libtorch in the same binary and
// the ratios xgrad/libtorch are printed at the end (of the medians when run with --benchmark_repetitions).
//
//   cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DXGRAD_BENCH_LIBTORCH=ON
//   cmake --build build --target bench_training_step && build/bin/bench_training_step
//   build/bin/bench_training_step --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
//   (--default-malloc: run with glibc's default malloc policy instead of xg::keep_freed_memory)
#include <benchmark/benchmark.h>

#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <string_view>

#include "xgrad/xgrad.h"

#ifdef XGRAD_HAVE_LIBTORCH
#include <torch/torch.h>
#endif

namespace {

namespace nn = xg::nn;
constexpr float kLr = 0.01f;

// ---- xgrad models ---------------------------------------------------------------------------------------
// bn_impl: which BatchNorm implementation the BN layers use (the fused kernels are the default).
std::shared_ptr<nn::Sequential> xgrad_mlp(bool bn, nn::BatchNormImpl bn_impl = nn::BatchNormImpl::Fused) {
  auto m = std::make_shared<nn::Sequential>();
  std::size_t in = 784;
  for (int layer = 0; layer < 3; ++layer) {
    if (bn) {
      m->push_back(nn::Linear(nn::LinearOptions(in, 100).bias(false)));
      m->push_back(nn::BatchNorm1d(nn::BatchNormOptions(100).impl(bn_impl)));
    } else {
      m->push_back(nn::Linear(in, 100));
    }
    m->push_back(nn::Sigmoid());
    in = 100;
  }
  m->push_back(nn::Linear(100, 10));
  return m;
}

std::shared_ptr<nn::Sequential> xgrad_cnn(nn::BatchNormImpl bn_impl = nn::BatchNormImpl::Fused) {
  return std::make_shared<nn::Sequential>(nn::Conv2d(nn::Conv2dOptions(1, 32, 3).padding(1).bias(false)),
                                          nn::BatchNorm2d(nn::BatchNormOptions(32).impl(bn_impl)), nn::ReLU(),
                                          nn::Conv2d(nn::Conv2dOptions(32, 64, 3).padding(1).bias(false)),
                                          nn::BatchNorm2d(nn::BatchNormOptions(64).impl(bn_impl)), nn::ReLU(),
                                          nn::MaxPool2d(2), nn::Flatten(), nn::Linear(12544, 10));
}

std::vector<std::size_t> labels(std::size_t n) {
  xg::Generator g(7);
  std::vector<std::size_t> y(n);
  for (auto& v : y) v = g.randint(10);
  return y;
}

void xgrad_step(nn::Module& model, const std::vector<xg::Tensor>& params, const xg::Tensor& x,
                const std::vector<std::size_t>& y) {
  model.zero_grad();
  xg::Tensor loss = nn::functional::cross_entropy(model.forward(x), y);
  loss.backward();
  xg::NoGradGuard no_grad;
  for (const auto& p : params) {
    xg::Tensor w = p;
    w.data<float>() -= kLr * p.grad().data<float>();
  }
}

void run_xgrad(benchmark::State& state, std::shared_ptr<nn::Sequential> model, const xg::Shape& input_shape) {
  xg::manual_seed(1);
  const xg::Tensor x = xg::randn(input_shape);
  const auto y = labels(input_shape[0]);
  const auto params = model->parameters();
  xgrad_step(*model, params, x, y);  // warm-up (allocations, lazily created state)
  for (auto _ : state) xgrad_step(*model, params, x, y);
}

void BM_xgrad_mlp(benchmark::State& s) { run_xgrad(s, xgrad_mlp(false), {60, 784}); }
void BM_xgrad_mlp_bn(benchmark::State& s) { run_xgrad(s, xgrad_mlp(true), {60, 784}); }
void BM_xgrad_cnn(benchmark::State& s) { run_xgrad(s, xgrad_cnn(), {64, 1, 28, 28}); }
// The same with the composed (reference) BatchNorm, for comparison.
void BM_xgrad_mlp_bn_composed(benchmark::State& s) {
  run_xgrad(s, xgrad_mlp(true, nn::BatchNormImpl::Composed), {60, 784});
}
void BM_xgrad_cnn_composed(benchmark::State& s) {
  run_xgrad(s, xgrad_cnn(nn::BatchNormImpl::Composed), {64, 1, 28, 28});
}

// ---- libtorch models --------------------------------------------------------------------------------------
#ifdef XGRAD_HAVE_LIBTORCH
torch::nn::Sequential torch_mlp(bool bn) {
  torch::nn::Sequential m;
  int64_t in = 784;
  for (int layer = 0; layer < 3; ++layer) {
    if (bn) {
      m->push_back(torch::nn::Linear(torch::nn::LinearOptions(in, 100).bias(false)));
      m->push_back(torch::nn::BatchNorm1d(100));
    } else {
      m->push_back(torch::nn::Linear(in, 100));
    }
    m->push_back(torch::nn::Sigmoid());
    in = 100;
  }
  m->push_back(torch::nn::Linear(100, 10));
  return m;
}

torch::nn::Sequential torch_cnn() {
  namespace tn = torch::nn;
  return tn::Sequential(tn::Conv2d(tn::Conv2dOptions(1, 32, 3).padding(1).bias(false)), tn::BatchNorm2d(32), tn::ReLU(),
                        tn::Conv2d(tn::Conv2dOptions(32, 64, 3).padding(1).bias(false)), tn::BatchNorm2d(64),
                        tn::ReLU(), tn::MaxPool2d(2), tn::Flatten(), tn::Linear(12544, 10));
}

void torch_step(torch::nn::Sequential& model, const torch::Tensor& x, const torch::Tensor& y) {
  model->zero_grad();
  torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(x), y);
  loss.backward();
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.sub_(kLr * p.grad());
}

void run_torch(benchmark::State& state, torch::nn::Sequential model, std::vector<int64_t> input_shape) {
  torch::manual_seed(1);
  const torch::Tensor x = torch::randn(input_shape);
  const auto yl = labels(static_cast<std::size_t>(input_shape[0]));
  const torch::Tensor y = torch::tensor(std::vector<int64_t>(yl.begin(), yl.end()));
  torch_step(model, x, y);
  for (auto _ : state) torch_step(model, x, y);
}

void BM_torch_mlp(benchmark::State& s) { run_torch(s, torch_mlp(false), {60, 784}); }
void BM_torch_mlp_bn(benchmark::State& s) { run_torch(s, torch_mlp(true), {60, 784}); }
void BM_torch_cnn(benchmark::State& s) { run_torch(s, torch_cnn(), {64, 1, 28, 28}); }
#endif

// Prints the usual table, and remembers each benchmark's time to print xgrad/libtorch ratios at the end: the
// median when --benchmark_repetitions gives aggregates (also with --benchmark_report_aggregates_only=true),
// else the single run.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& r : runs) {
      const std::string& name = r.run_name.function_name;
      const bool median = r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
      if (median) from_median_.insert(name);
      if (median || (r.run_type == Run::RT_Iteration && !from_median_.count(name))) {
        real_[name] = r.GetAdjustedRealTime() * unit(r.time_unit);
        cpu_[name] = r.GetAdjustedCPUTime() * unit(r.time_unit);
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }
  // Real-time ratios (the headline) and CPU-time ratios (less sensitive to other load on the machine).
  void print_ratios() const {
    for (const char* model : {"mlp", "mlp_bn", "cnn", "mlp_bn_composed", "cnn_composed"}) {
      std::string base = model;
      base = base.substr(0, base.find("_composed"));
      const std::string x = std::string("step/xgrad/") + model, t = "step/libtorch/" + base;
      if (!real_.count(x) || !real_.count(t)) continue;
      std::printf("ratio xgrad/libtorch %-7s real %.3f (%.3f ms / %.3f ms)   cpu %.3f (%.3f ms / %.3f ms)\n", model,
                  real_.at(x) / real_.at(t), real_.at(x) * 1e3, real_.at(t) * 1e3, cpu_.at(x) / cpu_.at(t),
                  cpu_.at(x) * 1e3, cpu_.at(t) * 1e3);
    }
  }

 private:
  static double unit(benchmark::TimeUnit u) {
    switch (u) {
      case benchmark::kNanosecond:
        return 1e-9;
      case benchmark::kMicrosecond:
        return 1e-6;
      case benchmark::kMillisecond:
        return 1e-3;
      default:
        return 1.0;
    }
  }
  std::map<std::string, double> real_, cpu_;
  std::set<std::string> from_median_;
};

}  // namespace

int main(int argc, char** argv) {
  // Freed buffers stay in the process (xg::keep_freed_memory, process-wide: libtorch's allocations too), so a
  // step does not page-fault its tensors back in; --default-malloc keeps glibc's default policy instead.
  bool keep = true;
  int kept_argc = 0;
  for (int i = 0; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--default-malloc") keep = false;
    else argv[kept_argc++] = argv[i];
  }
  argc = kept_argc;
  const bool kept = keep && xg::keep_freed_memory();
  benchmark::AddCustomContext("cpu", xg::cpu::cpu_name());
  benchmark::AddCustomContext("xgrad_arch", xg::cpu::build_arch() + " (" + xg::cpu::simd_name() + ")");
  benchmark::AddCustomContext("openblas_core", xg::blas::core_name());
  benchmark::AddCustomContext("sgemm", xg::blas::sgemm_backend_name());
  benchmark::AddCustomContext("malloc", kept ? "freed memory kept (xg::keep_freed_memory)" : "glibc default");
  xg::set_num_threads(1);
  benchmark::RegisterBenchmark("step/xgrad/mlp", BM_xgrad_mlp)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("step/xgrad/mlp_bn", BM_xgrad_mlp_bn)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("step/xgrad/cnn", BM_xgrad_cnn)->Unit(benchmark::kMillisecond)->MinTime(2.0);
  benchmark::RegisterBenchmark("step/xgrad/mlp_bn_composed", BM_xgrad_mlp_bn_composed)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("step/xgrad/cnn_composed", BM_xgrad_cnn_composed)
      ->Unit(benchmark::kMillisecond)
      ->MinTime(2.0);
#ifdef XGRAD_HAVE_LIBTORCH
  torch::set_num_threads(1);
  benchmark::RegisterBenchmark("step/libtorch/mlp", BM_torch_mlp)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("step/libtorch/mlp_bn", BM_torch_mlp_bn)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("step/libtorch/cnn", BM_torch_cnn)->Unit(benchmark::kMillisecond)->MinTime(2.0);
#endif
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.print_ratios();
  benchmark::Shutdown();
  return 0;
}
