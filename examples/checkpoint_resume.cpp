// checkpoint_resume — the code shown in docs/checkpoints.md: an MLP with BatchNorm and Dropout trained with Adam
// and a StepLR schedule, checkpointed every few steps with xg::Checkpoint, and resumed exactly after a kill.
//
//   build/bin/checkpoint_resume run/                  # trains 240 steps, writes run/metrics.csv
//   build/bin/checkpoint_resume run/ --resume         # continues from run/checkpoint.npz (after a kill)
//
// Options: --steps N (240), --checkpoint-every K (10). Prints "step <n> loss <l>" per step (tests/
// test_checkpoint_resume.cpp kills it with SIGKILL at a random step, resumes it and compares metrics.csv bit for
// bit with an uninterrupted run).
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "xgrad/xgrad.h"

namespace nn = xg::nn;
namespace fs = std::filesystem;

namespace {

// 512 points in 16-d from 4 Gaussian blobs, as a Dataset of [N, 1, 4, 4] "images" (the DataLoader's format).
xg::data::Dataset make_blobs() {
  xg::Generator gen(7);
  const std::size_t n = 512, d = 16, classes = 4;
  std::vector<double> centres(classes * d), x(n * d);
  for (auto& c : centres) c = 2 * gen.normal();
  xg::data::Dataset ds;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t c = gen.randint(classes);
    ds.labels.push_back(c);
    for (std::size_t j = 0; j < d; ++j) x[i * d + j] = centres[c * d + j] + gen.normal();
  }
  ds.images = xg::from_vector(x, {n, 1, 4, 4});
  ds.source = "blobs";
  return ds;
}

}  // namespace

int run(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR [--resume] [--steps N] [--checkpoint-every K]\n", argv[0]);
    return 2;
  }
  const fs::path out = argv[1];
  bool resume = false;
  std::uint64_t steps = 240, every = 10;
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--resume") == 0) resume = true;
    else if (std::strcmp(argv[i], "--steps") == 0 && i + 1 < argc) steps = std::stoull(argv[++i]);
    else if (std::strcmp(argv[i], "--checkpoint-every") == 0 && i + 1 < argc) every = std::stoull(argv[++i]);
    else {
      std::fprintf(stderr, "unknown argument '%s'\n", argv[i]);
      return 2;
    }
  }
  fs::create_directories(out);
  const xg::data::Dataset data = make_blobs();

  // [setup]
  // Everything a run depends on: the model (parameters and BN's running statistics), Adam's moments and step
  // counts, the schedule, the loader's position and shuffling stream, the stream Dropout draws from, the step
  // counter and the metrics logged so far.
  xg::manual_seed(1);  // initial weights and Dropout's masks come from the default generator
  auto model = std::make_shared<nn::Sequential>(nn::Flatten(), nn::Linear(nn::LinearOptions(16, 64).bias(false)),
                                                nn::BatchNorm1d(64), nn::ReLU(), nn::Dropout(0.2), nn::Linear(64, 4));
  xg::optim::Adam opt(model->parameters(), xg::optim::AdamOptions(3e-3));
  xg::optim::StepLR sched(opt, /*step_size=*/50, /*gamma=*/0.5);
  xg::data::DataLoader loader(data, xg::data::DataLoaderOptions(32).drop_last(true).seed(3));
  std::uint64_t step = 0;
  std::vector<double> log;  // step, loss, lr, ... (what metrics.csv shows)

  xg::Checkpoint ck;
  ck.add("model", *model)
      .add("optimizer", opt)
      .add("scheduler", sched)
      .add("loader", loader)
      .add("rng.default", xg::default_generator())
      .add("step", step)
      .add("log", log);
  const std::string ck_path = (out / "checkpoint.npz").string();
  if (resume) {
    ck.load(ck_path);  // all or nothing: on error the objects above are unchanged
    std::printf("resumed at step %llu\n", static_cast<unsigned long long>(step));
  }
  // [/setup]

  // [loop]
  while (step < steps) {
    const xg::data::Batch b = loader.next();
    opt.zero_grad();
    xg::Tensor loss = nn::functional::cross_entropy(model->forward(b.images), b.labels);
    loss.backward();
    opt.step();
    ++step;
    log.insert(log.end(), {static_cast<double>(step), loss.item(), opt.param_groups()[0].lr()});
    if (step % 25 == 0) sched.step();  // a schedule stepped every 25 steps (its "epochs")
    if (step % every == 0) ck.save(ck_path);  // atomic: a kill during the save keeps the previous checkpoint
    std::printf("step %llu loss %.6f\n", static_cast<unsigned long long>(step), loss.item());
    std::fflush(stdout);
  }
  // [/loop]

  std::string csv = "step,loss,lr\n";
  for (std::size_t i = 0; i < log.size(); i += 3) csv += fmt::format("{},{:.17g},{:.17g}\n", log[i], log[i + 1], log[i + 2]);
  xg::write_file_atomic((out / "metrics.csv").string(), csv);
  std::printf("wrote %s\n", (out / "metrics.csv").string().c_str());
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "checkpoint_resume: error: %s\n", e.what());
    return 1;
  }
}
