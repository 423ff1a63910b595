// libFuzzer target: xg::Checkpoint::load of hostile files into a live model (Linear + BatchNorm1d + Linear), an
// Adam optimizer with state, a StepLR schedule, a DataLoader, a generator and a counter. Every input either loads
// or throws an xg::Error naming the file — and then everything must be exactly as before (checked bit for bit).
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_common.h"
#include "xgrad/xgrad.h"

namespace {

struct World {
  xg::data::Dataset ds;
  std::shared_ptr<xg::nn::Sequential> model;
  std::unique_ptr<xg::optim::Adam> opt;
  std::unique_ptr<xg::optim::StepLR> sched;
  std::unique_ptr<xg::data::DataLoader> loader;
  xg::Generator gen{5};
  std::uint64_t step = 3;
  xg::Checkpoint ck;
  World() {
    xg::Generator g(1);
    ds.images = xg::rand({12, 1, 2, 2}, xg::kFloat32, &g);
    for (std::size_t i = 0; i < 12; ++i) ds.labels.push_back(i % 3);
    model = std::make_shared<xg::nn::Sequential>(xg::nn::Flatten(), xg::nn::Linear(4, 3), xg::nn::BatchNorm1d(3),
                                                 xg::nn::Linear(3, 3));
    opt = std::make_unique<xg::optim::Adam>(model->parameters(), xg::optim::AdamOptions(1e-2));
    sched = std::make_unique<xg::optim::StepLR>(*opt, 2);
    loader = std::make_unique<xg::data::DataLoader>(ds, xg::data::DataLoaderOptions(4).seed(2));
    for (int i = 0; i < 2; ++i) {  // some optimizer state
      const auto b = loader->next();
      opt->zero_grad();
      xg::nn::functional::cross_entropy(model->forward(b.images), b.labels).backward();
      opt->step();
      sched->step();
    }
    ck.add("model", *model).add("optimizer", *opt).add("scheduler", *sched).add("loader", *loader);
    ck.add("rng", gen).add("step", step);
  }
};

std::vector<std::uint64_t> bits(const xg::StateDict& sd) {
  std::vector<std::uint64_t> out;
  for (const auto& [k, t] : sd) {
    out.push_back(std::hash<std::string>{}(k));
    for (double v : t.to_vector()) {
      std::uint64_t u;
      std::memcpy(&u, &v, sizeof u);
      out.push_back(u);
    }
  }
  return out;
}

World& world() {
  static World w;  // built once: a failed load must leave it untouched, so every input sees the same world
  return w;
}

}  // namespace

// XGRAD_FUZZ_SEED_OUT=path: writes the world's own checkpoint there (the committed seed corpus/checkpoint/valid).
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* out = std::getenv("XGRAD_FUZZ_SEED_OUT")) world().ck.save(out);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  World& w = world();
  const std::string path = xgfuzz::write_input("-ck.npz", data, size);
  const auto before = bits(w.ck.state_dict());
  try {
    w.ck.load(path);
    // Loaded: put the original world back for the next input.
    static const xg::StateDict original = [] {
      World fresh;
      return fresh.ck.state_dict();
    }();
    w.ck.load_state_dict(original);
  } catch (const xg::Error& e) {
    xgfuzz::check_error(e, path);
    if (bits(w.ck.state_dict()) != before) {
      std::fprintf(stderr, "a failed load changed the state: %s\n", e.what());
      std::abort();
    }
  }
  std::remove(path.c_str());
  return 0;
}
