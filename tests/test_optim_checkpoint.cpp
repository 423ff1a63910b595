// Optimizer checkpoints: the state_dict layout, resuming mid-training bit for bit (in memory and through an .npz
// file, together with the model and the LR scheduler), and load errors.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <vector>

#include "xgrad/xgrad.h"

using namespace xg;
using namespace xg::optim;

namespace {

// A linear regression model y = x W + b, 3 inputs, 2 outputs, trained on fixed data in mini-batches of 16.
struct Model {
  Tensor w, b;
  std::vector<Tensor> params() const { return {w, b}; }
};

Model make_model(std::uint64_t seed, Dtype dtype) {
  Generator gen(seed);
  return {randn({3, 2}, dtype, &gen).requires_grad_(), randn({2}, dtype, &gen).requires_grad_()};
}

struct Data {
  Tensor x, y;
};
Data make_data(Dtype dtype) {
  Generator gen(1);
  Tensor x = randn({64, 3}, dtype, &gen);
  Tensor w_true = from_vector(std::vector<double>{1.5, -2.0, 0.5, 1.0, -0.5, 2.5}, {3, 2}, dtype);
  return {x, matmul(x, w_true) + 0.1 * randn({64, 2}, dtype, &gen)};
}

// One optimisation step on batch `s`; returns the loss.
double train_step(const Model& m, Optimizer& opt, const Data& d, int s) {
  opt.zero_grad();
  const std::size_t start = std::size_t(s % 4) * 16;
  Tensor pred = matmul(d.x.narrow(0, start, 16), m.w) + m.b;
  Tensor loss = ((pred - d.y.narrow(0, start, 16)).pow(2.0)).mean();
  loss.backward();
  opt.step();
  return loss.item();
}

// A scheduler of either kind behind one interface.
struct Sched {
  std::function<void(double loss)> step;
  std::function<StateDict()> save;
  std::function<void(const StateDict&)> load;
};
template <class S>
Sched wrap(std::shared_ptr<S> s) {
  return {[s](double) { s->step(); }, [s] { return s->state_dict(); },
          [s](const StateDict& sd) { s->load_state_dict(sd); }};
}
Sched wrap_plateau(std::shared_ptr<ReduceLROnPlateau> s) {
  return {[s](double loss) { s->step(loss); }, [s] { return s->state_dict(); },
          [s](const StateDict& sd) { s->load_state_dict(sd); }};
}

struct Case {
  const char* name;
  // `lr_scale` changes the learning rate the optimizer is *constructed* with: loading must override it.
  std::function<std::unique_ptr<Optimizer>(std::vector<Tensor>, double lr_scale)> make_opt;
  std::function<Sched(Optimizer&)> make_sched;
};

std::vector<Case> cases() {
  return {
      {"SGD nesterov + weight decay, StepLR",
       [](std::vector<Tensor> p, double s) {
         return std::make_unique<SGD>(std::move(p),
                                      SGDOptions(0.05 * s).momentum(0.9).nesterov(true).weight_decay(1e-3));
       },
       [](Optimizer& o) { return wrap(std::make_shared<StepLR>(o, 3, 0.5)); }},
      {"SGD dampening, two groups, MultiStepLR",
       [](std::vector<Tensor> p, double s) {
         return std::make_unique<SGD>(
             std::vector<ParamGroup>{ParamGroup({p[0]}), ParamGroup({p[1]}, SGDOptions(0.02 * s).momentum(0.5))},
             SGDOptions(0.05 * s).momentum(0.9).dampening(0.3));
       },
       [](Optimizer& o) {
         return wrap(std::make_shared<MultiStepLR>(o, std::vector<std::int64_t>{2, 6, 8}));
       }},
      {"Adam amsgrad, warm-up then cosine",
       [](std::vector<Tensor> p, double s) {
         return std::make_unique<Adam>(std::move(p), AdamOptions(0.05 * s).amsgrad(true).weight_decay(1e-2));
       },
       [](Optimizer& o) {
         auto w = std::make_shared<LinearLR>(o, 0.2, 1.0, 4);
         auto c = std::make_shared<CosineAnnealingLR>(o, 10);
         return wrap(std::make_shared<SequentialLR>(o, std::vector<std::shared_ptr<LRScheduler>>{w, c},
                                                    std::vector<std::int64_t>{4}));
       }},
      {"AdamW, CosineAnnealingLR",
       [](std::vector<Tensor> p, double s) { return std::make_unique<AdamW>(std::move(p), AdamWOptions(0.05 * s)); },
       [](Optimizer& o) { return wrap(std::make_shared<CosineAnnealingLR>(o, 6, 1e-3)); }},
      {"RMSprop centered + momentum, ExponentialLR",
       [](std::vector<Tensor> p, double s) {
         return std::make_unique<RMSprop>(std::move(p), RMSpropOptions(0.01 * s).centered(true).momentum(0.5));
       },
       [](Optimizer& o) { return wrap(std::make_shared<ExponentialLR>(o, 0.9)); }},
      {"Adagrad lr_decay, ReduceLROnPlateau",
       [](std::vector<Tensor> p, double s) {
         return std::make_unique<Adagrad>(std::move(p),
                                          AdagradOptions(0.1 * s).lr_decay(0.01).initial_accumulator_value(0.1));
       },
       [](Optimizer& o) {
         return wrap_plateau(
             std::make_shared<ReduceLROnPlateau>(o, ReduceLROnPlateauOptions().patience(0).factor(0.5)));
       }},
  };
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.dtype() == kFloat32 ? static_cast<const void*>(a.data_ptr<float>()) : a.data_ptr<double>(),
                     b.dtype() == kFloat32 ? static_cast<const void*>(b.data_ptr<float>()) : b.data_ptr<double>(),
                     a.numel() * dtype_size(a.dtype())) == 0;
}

// Writes `src`'s values into the existing parameter `dst` (what a module's load_state_dict does).
void copy_into(Tensor& dst, const Tensor& src) {
  REQUIRE(dst.shape() == src.shape());
  dispatch(dst.dtype(), [&](auto v) {
    using T = decltype(v);
    const auto values = src.to(dst.dtype());
    std::memcpy(dst.data_ptr<T>(), values.template data_ptr<T>(), dst.numel() * sizeof(T));
  });
}

// Train k steps, checkpoint (model + optimizer + scheduler), train n more. Then a fresh model, optimizer and
// scheduler (different initial weights and lr) load the checkpoint and train the same n steps: every parameter
// must end with identical bits. `through_file` round-trips the checkpoint through an .npz file.
void check_resume(const Case& c, Dtype dtype, bool through_file) {
  const Data data = make_data(dtype);
  const int k = 5, n = 7;

  Model a = make_model(10, dtype);
  auto opt_a = c.make_opt(a.params(), 1.0);
  Sched sched_a = c.make_sched(*opt_a);
  for (int s = 0; s < k; ++s) sched_a.step(train_step(a, *opt_a, data, s));

  StateDict ckpt;
  StateDict model_state;
  model_state.insert("w", a.w.detach().clone());
  model_state.insert("b", a.b.detach().clone());
  ckpt.merge("model", model_state);
  ckpt.merge("optimizer", opt_a->state_dict());
  ckpt.merge("scheduler", sched_a.save());

  for (int s = k; s < k + n; ++s) sched_a.step(train_step(a, *opt_a, data, s));

  if (through_file) {
    const auto path = std::filesystem::temp_directory_path() / fmt::format("xgrad_test_optim_{}.npz", ::getpid());
    save_npz(path.string(), ckpt);
    ckpt = load_npz(path.string());
    std::filesystem::remove(path);
  }

  Model b = make_model(20, dtype);           // different weights: the checkpoint must overwrite them
  auto opt_b = c.make_opt(b.params(), 3.0);  // different lr: the checkpoint must overwrite it
  Sched sched_b = c.make_sched(*opt_b);
  copy_into(b.w, ckpt.at("model.w"));
  copy_into(b.b, ckpt.at("model.b"));
  opt_b->load_state_dict(ckpt.sub("optimizer"));
  sched_b.load(ckpt.sub("scheduler"));
  for (int s = k; s < k + n; ++s) sched_b.step(train_step(b, *opt_b, data, s));

  CHECK(same_bits(a.w, b.w));
  CHECK(same_bits(a.b, b.b));
  for (std::size_t g = 0; g < opt_a->param_groups().size(); ++g)
    CHECK(opt_a->param_groups()[g].lr() == opt_b->param_groups()[g].lr());
  // And the resumed run really moved: it is not trivially equal because nothing happened.
  CHECK_FALSE(same_bits(a.w, ckpt.at("model.w").to(dtype)));
}

}  // namespace

TEST_CASE("resuming mid-training continues bit for bit (model + optimizer + scheduler)") {
  for (const Case& c : cases()) {
    for (Dtype dtype : {kFloat32, kFloat64}) {
      for (bool through_file : {false, true}) {
        INFO(c.name, ", ", dtype_name(dtype), through_file ? ", through an .npz file" : ", in memory");
        check_resume(c, dtype, through_file);
      }
    }
  }
}

TEST_CASE("state_dict layout") {
  auto w = from_vector(std::vector<double>{1, 2, 3}, {3}, kFloat32, true);
  auto b = from_vector(std::vector<double>{4, 5}, {2}, kFloat32, true);
  auto c = ones({2, 2}, kFloat32, true);
  Adam opt({ParamGroup({w, b}), ParamGroup({c}, AdamOptions(0.01).betas({0.8, 0.99}))}, AdamOptions(0.1).amsgrad(true));
  w.set_grad(full({3}, 1.0));
  c.set_grad(full({2, 2}, -1.0));  // b has no gradient: no state
  opt.step();
  opt.step();
  StepLR sched(opt, 5);  // records initial_lr
  const StateDict sd = opt.state_dict();

  CHECK(sd.keys() == std::vector<std::string>{"state.0.step",
                                              "state.0.exp_avg",
                                              "state.0.exp_avg_sq",
                                              "state.0.max_exp_avg_sq",
                                              "state.2.step",
                                              "state.2.exp_avg",
                                              "state.2.exp_avg_sq",
                                              "param_groups.0.params",
                                              "param_groups.0.lr",
                                              "param_groups.0.betas.0",
                                              "param_groups.0.betas.1",
                                              "param_groups.0.eps",
                                              "param_groups.0.weight_decay",
                                              "param_groups.0.amsgrad",
                                              "param_groups.0.maximize",
                                              "param_groups.0.initial_lr",
                                              "param_groups.1.params",
                                              "param_groups.1.lr",
                                              "param_groups.1.betas.0",
                                              "param_groups.1.betas.1",
                                              "param_groups.1.eps",
                                              "param_groups.1.weight_decay",
                                              "param_groups.1.amsgrad",
                                              "param_groups.1.maximize",
                                              "param_groups.1.initial_lr"});
  CHECK(sd.at("state.0.step").dtype() == kFloat64);
  CHECK(sd.at("state.0.step").ndim() == 0);
  CHECK(sd.at("state.0.step").item() == 2);
  CHECK(sd.at("state.0.exp_avg").dtype() == kFloat32);
  // Two steps of gradient 1 with beta1 = 0.9: m = 0.1, then 0.9*0.1 + 0.1 = 0.19.
  CHECK(sd.at("state.0.exp_avg").to_vector()[0] == doctest::Approx(0.19).epsilon(1e-6));
  // Group 1 has beta2 0.99: v = 0.01, then 0.99*0.01 + 0.01 = 0.0199.
  CHECK(sd.at("state.2.exp_avg_sq").to_vector()[3] == doctest::Approx(0.0199).epsilon(1e-6));
  CHECK(sd.at("param_groups.0.params").to_vector() == std::vector<double>{0, 1});
  CHECK(sd.at("param_groups.1.params").to_vector() == std::vector<double>{2});
  CHECK(sd.at("param_groups.0.amsgrad").item() == 1);
  CHECK(sd.at("param_groups.1.amsgrad").item() == 0);  // group 1 has its own options
  CHECK(sd.at("param_groups.1.betas.0").item() == 0.8);
  CHECK(sd.at("param_groups.1.initial_lr").item() == 0.01);

  SUBCASE("the state_dict is a snapshot") {
    const double before = sd.at("state.0.exp_avg").to_vector()[0];
    opt.step();
    CHECK(sd.at("state.0.exp_avg").to_vector()[0] == before);
    CHECK(opt.state(0).buffer("exp_avg").to_vector()[0] != before);
  }
  SUBCASE("loading does not share storage with the dict") {
    auto w2 = from_vector(std::vector<double>{1, 2, 3}, {3}, kFloat32, true);
    auto b2 = from_vector(std::vector<double>{4, 5}, {2}, kFloat32, true);
    auto c2 = ones({2, 2}, kFloat32, true);
    Adam opt2({ParamGroup({w2, b2}), ParamGroup({c2})}, AdamOptions());
    opt2.load_state_dict(sd);
    CHECK(opt2.param_groups()[1].options_as<AdamOptions>().betas().first == 0.8);
    CHECK(opt2.param_groups()[0].options_as<AdamOptions>().amsgrad());
    CHECK(*opt2.param_groups()[0].initial_lr == 0.1);
    w2.set_grad(full({3}, 1.0));
    opt2.step();
    CHECK(sd.at("state.0.step").item() == 2);
    CHECK(opt2.state(0).step == 3);
    CHECK(opt2.state(1).empty());
  }
}

TEST_CASE("every optimizer saves its options under PyTorch's names, and loads them back") {
  // The group keys (after "param_groups.0.") of each optimizer, in order, and a state_dict made with options that
  // are all off their defaults must load into an optimizer built with the defaults and give the same options.
  auto group_keys = [](const Optimizer& opt) {
    std::vector<std::string> keys;
    for (const auto& key : opt.state_dict().keys())
      if (key.rfind("param_groups.0.", 0) == 0) keys.push_back(key.substr(15));
    return keys;
  };
  auto round_trip = [&](const Optimizer& saved, Optimizer& fresh) {
    REQUIRE(saved.defaults().values() != fresh.defaults().values());
    fresh.load_state_dict(saved.state_dict());
    CHECK(fresh.param_groups()[0].options().values() == saved.param_groups()[0].options().values());
  };
  auto w = ones({2}, kFloat32, true), w2 = ones({2}, kFloat32, true);
  SUBCASE("SGD") {
    SGD opt({w}, SGDOptions(0.5).momentum(0.9).dampening(0).weight_decay(0.1).nesterov(true).maximize(true));
    CHECK(group_keys(opt) ==
          std::vector<std::string>{"params", "lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"});
    CHECK(opt.state_dict().at("param_groups.0.nesterov").item() == 1);
    SGD fresh({w2}, SGDOptions(0.1));
    round_trip(opt, fresh);
    CHECK(fresh.param_groups()[0].options_as<SGDOptions>().nesterov());
  }
  SUBCASE("Adam and AdamW") {
    Adam adam({w}, AdamOptions(0.5).betas({0.8, 0.9}).eps(1e-6).weight_decay(0.1).amsgrad(true).maximize(true));
    const std::vector<std::string> keys{"params", "lr",           "betas.0", "betas.1",
                                        "eps",    "weight_decay", "amsgrad", "maximize"};
    CHECK(group_keys(adam) == keys);
    Adam fresh({w2}, AdamOptions());
    round_trip(adam, fresh);
    CHECK(fresh.param_groups()[0].options_as<AdamOptions>().betas() == Betas{0.8, 0.9});

    AdamW adamw({w}, AdamWOptions(0.5).betas({0.8, 0.9}).weight_decay(0.3).amsgrad(true));
    CHECK(group_keys(adamw) == keys);
    CHECK(AdamWOptions().weight_decay() == 1e-2);  // AdamW's default, Adam's is 0
    CHECK(AdamOptions().weight_decay() == 0);
    AdamW fresh_w({w2}, AdamWOptions());
    round_trip(adamw, fresh_w);
  }
  SUBCASE("RMSprop") {
    RMSprop opt({w},
                RMSpropOptions(0.5).alpha(0.9).eps(1e-6).weight_decay(0.1).momentum(0.5).centered(true).maximize(true));
    CHECK(group_keys(opt) ==
          std::vector<std::string>{"params", "lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"});
    RMSprop fresh({w2}, RMSpropOptions());
    round_trip(opt, fresh);
  }
  SUBCASE("Adagrad") {
    Adagrad opt(
        {w},
        AdagradOptions(0.5).lr_decay(0.1).weight_decay(0.2).initial_accumulator_value(0.3).eps(1e-6).maximize(true));
    CHECK(group_keys(opt) == std::vector<std::string>{"params", "lr", "lr_decay", "weight_decay",
                                                      "initial_accumulator_value", "eps", "maximize"});
    Adagrad fresh({w2}, AdagradOptions());
    round_trip(opt, fresh);
  }
}

TEST_CASE("optimizer state saved from float64 parameters loads into float32 ones") {
  auto w64 = from_vector(std::vector<double>{1, 2}, {2}, kFloat64, true);
  SGD opt64({w64}, SGDOptions(0.1).momentum(0.9));
  w64.set_grad(from_vector(std::vector<double>{0.5, -0.25}, {2}, kFloat64));
  opt64.step();
  auto w32 = from_vector(std::vector<double>{1, 2}, {2}, kFloat32, true);
  SGD opt32({w32}, SGDOptions(0.1).momentum(0.9));
  opt32.load_state_dict(opt64.state_dict());
  CHECK(opt32.state(0).buffer("momentum_buffer").dtype() == kFloat32);
  CHECK(opt32.state(0).buffer("momentum_buffer").to_vector() == std::vector<double>{0.5, -0.25});
}

TEST_CASE("load_state_dict errors leave the optimizer unchanged") {
  auto w = ones({3}, kFloat32, true), b = ones({2}, kFloat32, true);
  Adam opt({w, b}, AdamOptions(0.1));
  w.set_grad(full({3}, 1.0));
  opt.step();
  const StateDict good = opt.state_dict();

  auto expect_unchanged = [&] {
    CHECK(opt.param_groups()[0].lr() == 0.1);
    CHECK(opt.state(0).step == 1);
  };

  SUBCASE("another kind of optimizer") {
    auto w2 = ones({3}, kFloat32, true), b2 = ones({2}, kFloat32, true);
    SGD sgd({w2, b2}, SGDOptions(0.1));
    CHECK_THROWS_WITH_AS(
        opt.load_state_dict(sgd.state_dict()),
        doctest::Contains("Adam.load_state_dict(): the state has no 'param_groups.0.betas.0' (was it saved by another "
                          "kind of optimizer than Adam?)"),
        Error);
  }
  SUBCASE("a whole checkpoint instead of its optimizer part") {
    StateDict ckpt;
    ckpt.merge("optimizer", good);
    CHECK_THROWS_WITH_AS(opt.load_state_dict(ckpt),
                         doctest::Contains("the state has 0 parameter groups, this optimizer has 1"), Error);
  }
  SUBCASE("group sizes differ") {
    auto w2 = ones({3}, kFloat32, true);
    Adam small({w2}, AdamOptions());
    CHECK_THROWS_WITH_AS(opt.load_state_dict(small.state_dict()),
                         doctest::Contains("parameter group 0 has 1 parameters in the state but 2 in this optimizer"),
                         Error);
  }
  SUBCASE("a buffer of the wrong shape") {
    StateDict bad = good;
    bad.set("state.0.exp_avg", zeros({4}));
    CHECK_THROWS_WITH_AS(opt.load_state_dict(bad),
                         doctest::Contains("'state.0.exp_avg' has shape [4] but parameter 0 has shape [3]"), Error);
  }
  SUBCASE("an unknown key") {
    StateDict bad = good;
    bad.insert("model.w", zeros({3}));
    CHECK_THROWS_WITH_AS(opt.load_state_dict(bad), doctest::Contains("unexpected key 'model.w'"), Error);
  }
  SUBCASE("a parameter index out of range") {
    StateDict bad = good;
    bad.insert("state.7.exp_avg", zeros({3}));
    CHECK_THROWS_WITH_AS(opt.load_state_dict(bad),
                         doctest::Contains("'state.7.exp_avg' is for parameter 7, but the optimizer has 2 parameters"),
                         Error);
  }
  SUBCASE("an invalid hyper-parameter in the state") {
    StateDict bad = good;
    bad.set("param_groups.0.betas.1", scalar(1.5, kFloat64));
    bad.set("param_groups.0.lr", scalar(0.5, kFloat64));
    CHECK_THROWS_WITH_AS(opt.load_state_dict(bad), doctest::Contains("Adam: beta2 must be in [0, 1), got 1.5"), Error);
  }
  expect_unchanged();
}
