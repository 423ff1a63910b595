// xg::Checkpoint (xgrad/checkpoint.h): every random stream and the data loader's position round-trip exactly; a
// model + optimizer + scheduler + loader + generators resumed from a file continues bit for bit; a failed load
// (another architecture, another optimizer, a missing or unknown entry, a corrupt file) changes nothing.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "xgrad/xgrad.h"

namespace fs = std::filesystem;
namespace nn = xg::nn;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("xgrad_test_checkpoint_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const xg::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Every value of a state dict, bit for bit (NaN-safe), keyed by name.
std::vector<std::pair<std::string, std::vector<std::uint64_t>>> bits(const xg::StateDict& sd) {
  std::vector<std::pair<std::string, std::vector<std::uint64_t>>> out;
  for (const auto& [k, t] : sd) {
    std::vector<std::uint64_t> b;
    for (double v : t.to_vector()) {
      std::uint64_t u;
      std::memcpy(&u, &v, sizeof u);
      b.push_back(u);
    }
    out.emplace_back(k, b);
  }
  return out;
}

xg::data::Dataset blobs(std::size_t n) {
  xg::Generator g(5);
  std::vector<double> x(n * 8);
  xg::data::Dataset ds;
  for (std::size_t i = 0; i < n; ++i) {
    ds.labels.push_back(g.randint(3));
    for (std::size_t j = 0; j < 8; ++j) x[i * 8 + j] = g.normal() + static_cast<double>(ds.labels.back());
  }
  ds.images = xg::from_vector(x, {n, 1, 2, 4});
  return ds;
}

// A run: an MLP with BN and Dropout, Adam, StepLR, a shuffling loader; everything bound to a Checkpoint.
struct Run {
  std::shared_ptr<nn::Sequential> model;
  std::unique_ptr<xg::optim::Adam> opt;
  std::unique_ptr<xg::optim::StepLR> sched;
  std::unique_ptr<xg::data::DataLoader> loader;
  xg::Generator dropout_gen;
  std::uint64_t step = 0;
  std::vector<double> losses;
  xg::Checkpoint ck;

  Run(const xg::data::Dataset& ds, std::uint64_t seed, std::size_t hidden = 16, double lr = 1e-2)
      : dropout_gen(seed + 100) {
    xg::manual_seed(seed);
    model = std::make_shared<nn::Sequential>(nn::Flatten(), nn::Linear(nn::LinearOptions(8, hidden).bias(false)),
                                             nn::BatchNorm1d(hidden), nn::ReLU(),
                                             nn::Dropout(nn::DropoutOptions(0.3).generator(&dropout_gen)),
                                             nn::Linear(hidden, 3));
    opt = std::make_unique<xg::optim::Adam>(model->parameters(), xg::optim::AdamOptions(lr));
    sched = std::make_unique<xg::optim::StepLR>(*opt, 3, 0.5);
    loader = std::make_unique<xg::data::DataLoader>(ds, xg::data::DataLoaderOptions(10).drop_last(true).seed(seed));
    ck.add("model", *model).add("optimizer", *opt).add("scheduler", *sched).add("loader", *loader);
    ck.add("rng.dropout", dropout_gen).add("step", step).add("losses", losses);
  }
  void train(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      const auto b = loader->next();
      opt->zero_grad();
      xg::Tensor loss = nn::functional::cross_entropy(model->forward(b.images), b.labels);
      loss.backward();
      opt->step();
      losses.push_back(loss.item());
      if (++step % 4 == 0) sched->step();
    }
  }
};

}  // namespace

TEST_CASE("a generator's state round-trips exactly, including its seed") {
  xg::Generator g(42);
  for (int i = 0; i < 1000; ++i) g.normal();
  const xg::StateDict s = xg::generator_state(g);
  std::vector<double> a;
  for (int i = 0; i < 500; ++i) a.push_back(g.normal() + g.uniform());
  xg::Generator h(7);
  xg::load_generator_state(h, s);
  std::vector<double> b;
  for (int i = 0; i < 500; ++i) b.push_back(h.normal() + h.uniform());
  CHECK(a == b);
  CHECK(h.initial_seed() == 42);
  // A forged word count is refused, and the generator is untouched.
  xg::StateDict bad;
  bad.insert("engine", xg::zeros({5, 2}, xg::kFloat64));
  bad.insert("seed", s.at("seed"));
  xg::Generator k(3);
  const double before = xg::Generator(3).uniform();
  CHECK(error_of([&] { xg::load_generator_state(k, bad); }).find("not the state of an mt19937_64") !=
        std::string::npos);
  CHECK(k.uniform() == before);
}

TEST_CASE("a DataLoader resumed mid-epoch gives the same batches, across epoch boundaries") {
  const auto ds = blobs(95);
  xg::data::DataLoader a(ds, xg::data::DataLoaderOptions(10).drop_last(true).seed(9));
  for (int i = 0; i < 13; ++i) a.next();  // epoch 2, batch 4 of 9
  const xg::StateDict s = a.state_dict();
  xg::data::DataLoader b(ds, xg::data::DataLoaderOptions(10).drop_last(true).seed(1234));
  b.load_state_dict(s);
  CHECK(b.epoch() == a.epoch());
  for (int i = 0; i < 25; ++i) CHECK(a.next().labels == b.next().labels);
  // Another batch size, another dataset size: refused.
  xg::data::DataLoader c(ds, xg::data::DataLoaderOptions(5).seed(9));
  CHECK(error_of([&] { c.load_state_dict(s); }) ==
        "DataLoader::load_state_dict: the saved loader had 10 as batch size, this one has 5: build the loader as "
        "the saved run did");
  const auto small = blobs(50);
  xg::data::DataLoader d(small, xg::data::DataLoaderOptions(10).drop_last(true).seed(9));
  CHECK(error_of([&] { d.load_state_dict(s); }).find("had 95 samples, this one has 50") != std::string::npos);
}

TEST_CASE("model + Adam + StepLR + loader + dropout stream resumed from a file continue bit for bit") {
  TempDir dir;
  const auto ds = blobs(120);
  const std::string path = (dir.path / "ck.npz").string();
  Run ref(ds, 1);
  ref.train(17);
  ref.ck.save(path);
  ref.train(23);

  Run resumed(ds, 99, 16, 0.5);  // other weights, other lr, other dropout stream: all overwritten
  resumed.ck.load(path);
  CHECK(resumed.step == 17);
  CHECK(resumed.losses.size() == 17);
  resumed.train(23);
  CHECK(resumed.losses == ref.losses);  // every loss, bit for bit
  CHECK(bits(resumed.model->state_dict()) == bits(ref.model->state_dict()));
  CHECK(bits(resumed.opt->state_dict()) == bits(ref.opt->state_dict()));
  CHECK(resumed.opt->param_groups()[0].lr() == ref.opt->param_groups()[0].lr());
}

TEST_CASE("a failed load leaves the model, the optimizer and everything else exactly as they were") {
  TempDir dir;
  const auto ds = blobs(120);
  Run other(ds, 3, /*hidden=*/24);  // another architecture
  other.train(5);
  const std::string wide = (dir.path / "wide.npz").string();
  other.ck.save(wide);

  Run run(ds, 1);
  run.train(7);
  const auto model_before = bits(run.model->state_dict());
  const auto opt_before = bits(run.opt->state_dict());
  const auto all_before = bits(run.ck.state_dict());

  auto unchanged = [&] {
    CHECK(bits(run.model->state_dict()) == model_before);
    CHECK(bits(run.opt->state_dict()) == opt_before);
    CHECK(bits(run.ck.state_dict()) == all_before);
    CHECK(run.step == 7);
  };
  SUBCASE("a checkpoint of another architecture") {
    const std::string msg = error_of([&] { run.ck.load(wide); });
    CHECK(msg.find("Checkpoint::load('" + wide + "'): 'model': ") == 0);
    CHECK(msg.find("shape") != std::string::npos);
    CHECK(msg.find("nothing was changed") != std::string::npos);
    unchanged();
  }
  SUBCASE("the model loads, the optimizer does not: the model is rolled back") {
    // The same model, but an SGD optimizer's state under "optimizer.".
    xg::StateDict sd = run.ck.state_dict();
    xg::StateDict forged;
    for (const auto& [k, t] : sd)
      if (k.rfind("optimizer.", 0) != 0) forged.insert(k, k.rfind("model.", 0) == 0 ? xg::zeros(t.shape(), t.dtype()) : t);
    xg::optim::SGD sgd(run.model->parameters(), xg::optim::SGDOptions(0.1));
    forged.merge("optimizer", sgd.state_dict());
    const std::string path = (dir.path / "forged.npz").string();
    xg::save_npz(path, forged);
    const std::string msg = error_of([&] { run.ck.load(path); });
    CHECK(msg.find("'optimizer': ") != std::string::npos);
    unchanged();  // the zeroed weights that were loaded first are undone
  }
  SUBCASE("a missing entry and an unknown key") {
    xg::StateDict sd = run.ck.state_dict();
    xg::StateDict partial;
    for (const auto& [k, t] : sd)
      if (k.rfind("scheduler.", 0) != 0) partial.insert(k, t);
    partial.insert("extra.thing", xg::ones({1}));
    CHECK(error_of([&] { run.ck.load_state_dict(partial); }) ==
          "Checkpoint: the state does not match what was added (no entries for scheduler; 1 unknown key(s): "
          "extra.thing): is it a checkpoint of another run or program?");
    unchanged();
  }
  SUBCASE("a truncated file") {
    const std::string path = (dir.path / "cut.npz").string();
    run.ck.save(path);
    fs::resize_file(path, fs::file_size(path) / 2);
    const std::string msg = error_of([&] { run.ck.load(path); });
    CHECK(msg.find("Checkpoint::load: load_npz") == 0);
    CHECK(msg.find(path) != std::string::npos);
    unchanged();
  }
}

TEST_CASE("Checkpoint names must be unique and not prefixes of each other") {
  xg::Generator g;
  std::uint64_t a = 0, b = 0;
  xg::Checkpoint ck;
  ck.add("rng", g).add("step", a);
  CHECK(error_of([&] { ck.add("step", b); }) ==
        "Checkpoint::add: 'step' clashes with 'step', added before (names and prefixes must be unique)");
  CHECK(error_of([&] { ck.add("rng.x", b); }).find("'rng.x' clashes with 'rng'") != std::string::npos);
  CHECK(ck.names() == std::vector<std::string>{"rng", "step"});
}
