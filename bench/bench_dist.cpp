// xg::dist under mpirun: what an all-reduce costs, what a data-parallel training step costs, and the scaling
// efficiency against one process on the whole batch — all in the same run, so the ratios compare like with like.
//
//   mpirun --allow-run-as-root -np 2 build/bin/bench_dist            # (docs/benchmarks.md, "Data parallelism")
//
// Models (xgrad-lab's, with BatchNorm): mlp_bn 784-100-100-100-10 ReLU, global batch 128; cnn_bn conv3x3 1-8-8,
// maxpool, 8-16-16, maxpool, Linear 784->10, global batch 64. A step = zero_grad, forward, cross-entropy,
// backward, gradient averaging, SGD update. Variants:
//   one_process  rank 0 alone on the whole batch (1 thread; the other ranks wait), no communication
//   ddp_syncbn   every rank on B/P samples, DistributedDataParallel + SyncBatchNorm (1 thread per rank)
//   ddp_bn       the same with per-rank BatchNorm (2 collectives per step instead of 2 + 2 per BN layer)
//   sync_grads   DistributedDataParallel::sync_gradients alone: the gradient all-reduce of one step
// Every benchmark runs a fixed number of iterations on every rank (the collectives must match), and only rank 0
// prints. The table at the end: speed-up = one_process / ddp, efficiency = speed-up / P, communication share.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <string>

#include "xgrad/dist.h"
#include "xgrad/dist/ddp.h"
#include "xgrad/dist/sync_batchnorm.h"
#include "xgrad/xgrad.h"

namespace {

namespace nn = xg::nn;
namespace dist = xg::dist;
std::map<std::string, double> g_seconds;  // name -> seconds per iteration (rank 0's clock)

std::shared_ptr<nn::Sequential> make_model(const std::string& kind) {
  xg::manual_seed(1);
  auto m = std::make_shared<nn::Sequential>();
  if (kind == "mlp_bn") {
    m->push_back(nn::Flatten());
    std::size_t in = 784;
    for (int l = 0; l < 3; ++l) {
      m->push_back(nn::Linear(nn::LinearOptions(in, 100).bias(false)));
      m->push_back(nn::BatchNorm1d(100));
      m->push_back(nn::ReLU());
      in = 100;
    }
    m->push_back(nn::Linear(100, 10));
  } else {
    std::size_t c = 1;
    for (std::size_t w : {8, 8, 0, 16, 16, 0}) {
      if (w == 0) {
        m->push_back(nn::MaxPool2d(2));
        continue;
      }
      m->push_back(nn::Conv2d(nn::Conv2dOptions(c, w, 3).padding(1).bias(false)));
      m->push_back(nn::BatchNorm2d(w));
      m->push_back(nn::ReLU());
      c = w;
    }
    m->push_back(nn::Flatten());
    m->push_back(nn::Linear(16 * 7 * 7, 10));
  }
  return m;
}

std::size_t global_batch(const std::string& kind) { return kind == "mlp_bn" ? 128 : 64; }

void timed(benchmark::State& state, const std::string& name, const std::function<void()>& step) {
  dist::barrier();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) step();
  dist::barrier();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  g_seconds[name] = s / static_cast<double>(state.iterations());
}

void BM_all_reduce(benchmark::State& state) {
  std::vector<float> v(static_cast<std::size_t>(state.range(0)), 1.0f);
  timed(state, "all_reduce/" + std::to_string(v.size()), [&] {
    dist::all_reduce(v.data(), v.size(), dist::ReduceOp::Mean);
    benchmark::DoNotOptimize(v.data());
  });
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0) * 4);
}

void BM_step(benchmark::State& state, const std::string& kind, const std::string& variant) {
  xg::set_num_threads(1);
  const std::size_t P = static_cast<std::size_t>(dist::world_size());
  const std::size_t B = global_batch(kind), local = variant == "one_process" ? B : B / P;
  const bool active = variant != "one_process" || dist::rank() == 0;
  auto net = make_model(kind);
  std::shared_ptr<nn::Module> model = net;
  std::shared_ptr<dist::DistributedDataParallel> ddp;
  if (variant != "one_process") {
    if (variant == "ddp_syncbn") dist::convert_sync_batchnorm(net);
    ddp = std::make_shared<dist::DistributedDataParallel>(net);
    model = ddp;
  }
  xg::Generator g(7 + dist::rank());
  const xg::Tensor x = xg::uniform({local, 1, 28, 28}, 0, 1, xg::kFloat32, &g);
  std::vector<std::size_t> y(local);
  for (std::size_t i = 0; i < local; ++i) y[i] = i % 10;
  xg::optim::SGD opt(model->parameters(), xg::optim::SGDOptions(0.01));
  auto step = [&] {
    if (!active) return;
    opt.zero_grad();
    xg::Tensor loss = nn::functional::cross_entropy(model->forward(x), y);
    if (ddp) ddp->backward(loss);
    else loss.backward();
    opt.step();
  };
  if (variant == "sync_grads") {
    step();  // gradients to average
    timed(state, kind + "/sync_grads", [&] { ddp->sync_gradients(); });
    return;
  }
  timed(state, kind + "/" + variant, step);
  state.counters["samples/s"] = benchmark::Counter(double(B) * state.iterations(), benchmark::Counter::kIsRate);
}

}  // namespace

int main(int argc, char** argv) {
  dist::Session mpi(argc, argv);
  if (dist::rank() != 0) std::freopen("/dev/null", "w", stdout);
  for (int n : {1, 12050, 100010, 1 << 20})
    benchmark::RegisterBenchmark("all_reduce", BM_all_reduce)->Arg(n)->Iterations(n > 200000 ? 50 : 300)->UseRealTime();
  for (const std::string kind : {"mlp_bn", "cnn_bn"})
    for (const std::string variant : {"one_process", "ddp_syncbn", "ddp_bn", "sync_grads"})
      benchmark::RegisterBenchmark(("step/" + kind + "/" + variant).c_str(),
                                   [kind, variant](benchmark::State& s) { BM_step(s, kind, variant); })
          ->Iterations(kind == "mlp_bn" ? 300 : 40)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  if (dist::rank() == 0) {
    const double P = dist::world_size();
    std::printf("\n%d rank(s), 1 thread each. speed-up = one_process / ddp (same global batch), efficiency = "
                "speed-up / P, comm = sync_grads / ddp step\n",
                dist::world_size());
    std::printf("%-8s %-11s %12s %10s %11s %8s\n", "model", "variant", "ms/step", "speed-up", "efficiency", "comm");
    for (const std::string kind : {"mlp_bn", "cnn_bn"}) {
      const double one = g_seconds[kind + "/one_process"], sync = g_seconds[kind + "/sync_grads"];
      for (const std::string v : {"one_process", "ddp_syncbn", "ddp_bn"}) {
        const double t = g_seconds[kind + "/" + v];
        std::printf("%-8s %-11s %12.3f %10.2f %10.0f%% %7.0f%%\n", kind.c_str(), v.c_str(), t * 1e3, one / t,
                    100 * one / t / (v == "one_process" ? 1.0 : P), v == "one_process" ? 0.0 : 100 * sync / t);
      }
    }
    std::printf("all_reduce of 100010 floats (mlp_bn's gradients): %.3f ms; of 12050 (cnn_bn's): %.3f ms\n",
                g_seconds["all_reduce/100010"] * 1e3, g_seconds["all_reduce/12050"] * 1e3);
  }
  benchmark::Shutdown();
  return 0;
}
