// bench_soak — a long-run soak, not a test: one process trains the xgrad-lab MLP (784-100-100-100-10 with
// BatchNorm and Dropout, Adam, batches of 64) for a million steps and samples its resident memory (RSS) along
// the way. A leak of even a few bytes per step (a graph node kept alive, a growing cache) shows up as a rising
// RSS; a flat curve means the memory footprint is bounded. Results: docs/benchmarks.md ("Soak").
//
//   nice build/bin/bench_soak [--steps 1000000] [--samples 40] [--data /usr/share/datasets/fashion-mnist]
//
// Prints one line per sample (step, RSS, steps/s) and a summary: RSS after warm-up (the first 1% of the
// steps), at the end, and the largest value seen.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>

#include "xgrad/xgrad.h"

namespace nn = xg::nn;

namespace {

// Resident set size in MiB (/proc/self/statm: pages).
double rss_mib() {
  std::ifstream in("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  in >> pages_total >> pages_resident;
  return static_cast<double>(pages_resident) * static_cast<double>(::sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

xg::data::Dataset load_or_make(const std::string& dir) {
  try {
    return xg::data::load_mnist_folder(dir, true);
  } catch (const std::exception& e) {
    std::printf("# %s: using 6000 random 28x28 images instead\n", e.what());
    xg::Generator g(1);
    xg::data::Dataset ds;
    ds.images = xg::rand({6000, 1, 28, 28}, xg::kFloat32, &g);
    for (std::size_t i = 0; i < 6000; ++i) ds.labels.push_back(g.randint(10));
    ds.source = "random";
    return ds;
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t steps = 1000000, samples = 40;
  std::string data = "/usr/share/datasets/fashion-mnist";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--steps") == 0) steps = std::stoull(argv[i + 1]);
    else if (std::strcmp(argv[i], "--samples") == 0) samples = std::stoull(argv[i + 1]);
    else if (std::strcmp(argv[i], "--data") == 0) data = argv[i + 1];
  }
  xg::keep_freed_memory();  // as xgrad-lab: freed tensors are kept for reuse (bounded, xgrad/memory.h)
  xg::set_num_threads(1);
  const xg::data::Dataset train = load_or_make(data);
  xg::manual_seed(1);
  auto model = std::make_shared<nn::Sequential>(
      nn::Flatten(), nn::Linear(nn::LinearOptions(784, 100).bias(false)), nn::BatchNorm1d(100), nn::ReLU(),
      nn::Linear(nn::LinearOptions(100, 100).bias(false)), nn::BatchNorm1d(100), nn::ReLU(), nn::Dropout(0.1),
      nn::Linear(nn::LinearOptions(100, 100).bias(false)), nn::BatchNorm1d(100), nn::ReLU(), nn::Linear(100, 10));
  xg::optim::Adam opt(model->parameters(), xg::optim::AdamOptions(1e-3));
  xg::data::DataLoader loader(train, xg::data::DataLoaderOptions(64).drop_last(true).seed(2));

  std::printf("# bench_soak: %zu steps of %s on %s (%zu images), batch 64, 1 thread\n", steps, "784-100-100-100-10 "
              "MLP + BN + Dropout, Adam", train.source.c_str(), train.size());
  std::printf("%10s %10s %10s %12s\n", "step", "rss_mib", "steps/s", "loss");
  const std::size_t every = std::max<std::size_t>(1, steps / samples);
  const std::size_t warmup = std::max<std::size_t>(1, steps / 100);
  double rss_warm = 0, rss_max = 0, loss_value = 0;
  auto t0 = std::chrono::steady_clock::now(), t_last = t0;
  std::size_t last_step = 0;
  std::printf("%10d %10.1f %10s %12s\n", 0, rss_mib(), "-", "-");
  for (std::size_t step = 1; step <= steps; ++step) {
    const xg::data::Batch b = loader.next();
    opt.zero_grad();
    xg::Tensor loss = nn::functional::cross_entropy(model->forward(b.images), b.labels);
    loss.backward();
    opt.step();
    if (step == warmup) rss_warm = rss_mib();
    if (step % every == 0 || step == steps) {
      loss_value = loss.item();
      const auto now = std::chrono::steady_clock::now();
      const double rate = static_cast<double>(step - last_step) / std::chrono::duration<double>(now - t_last).count();
      const double rss = rss_mib();
      rss_max = std::max(rss_max, rss);
      std::printf("%10zu %10.1f %10.0f %12.4f\n", step, rss, rate, loss_value);
      std::fflush(stdout);
      t_last = now;
      last_step = step;
    }
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double rss_end = rss_mib();
  std::printf("# RSS after warm-up (step %zu): %.1f MiB; at the end: %.1f MiB (%+.1f MiB); largest sample %.1f MiB\n",
              warmup, rss_warm, rss_end, rss_end - rss_warm, rss_max);
  std::printf("# %zu steps in %.0f s (%.0f steps/s)\n", steps, total, static_cast<double>(steps) / total);
  return 0;
}
