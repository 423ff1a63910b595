// Learning-rate schedules: values over 20 epochs against the closed-form formulas (computed here in double),
// SequentialLR switching, ReduceLROnPlateau against a hand trace, checkpoints of scheduler state, errors.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <numbers>
#include <vector>

#include "xgrad/xgrad.h"

using namespace xg;
using namespace xg::optim;

namespace {

constexpr double kPi = std::numbers::pi;

// Two parameter groups with base lrs 0.1 and 0.03, so per-group scaling is checked too.
struct Fixture {
  Tensor a = ones({2}, kFloat32, true);
  Tensor b = ones({3}, kFloat32, true);
  SGD opt{std::vector<ParamGroup>{ParamGroup({a}), ParamGroup({b}, SGDOptions(0.03).momentum(0.9))}, SGDOptions(0.1)};
};

// Steps the scheduler 20 times and compares get_last_lr() and the groups' lr at epochs 0..20 with
// expected(base_lr, epoch).
void check_schedule(Fixture& f, LRScheduler& sched, const std::function<double(double, int)>& expected) {
  const double bases[2] = {0.1, 0.03};
  for (int epoch = 0; epoch <= 20; ++epoch) {
    if (epoch > 0) sched.step();
    REQUIRE(sched.last_epoch() == epoch);
    for (int g = 0; g < 2; ++g) {
      INFO("epoch ", epoch, ", group ", g);
      const double want = expected(bases[g], epoch);
      CHECK(sched.get_last_lr()[g] == doctest::Approx(want).epsilon(1e-12).scale(1e-15));
      CHECK(f.opt.param_groups()[g].lr() == sched.get_last_lr()[g]);
    }
  }
}

}  // namespace

TEST_CASE("StepLR: base_lr * gamma^floor(epoch / step_size)") {
  Fixture f;
  StepLR sched(f.opt, 3, 0.5);
  check_schedule(f, sched, [](double base, int e) { return base * std::pow(0.5, e / 3); });
}

TEST_CASE("MultiStepLR: base_lr * gamma^(milestones passed), a repeated milestone counts twice") {
  Fixture f;
  MultiStepLR sched(f.opt, {11, 2, 5, 5}, 0.1);  // unsorted on purpose
  check_schedule(f, sched, [](double base, int e) {
    const int passed = (e >= 2) + 2 * (e >= 5) + (e >= 11);
    return base * std::pow(0.1, passed);
  });
}

TEST_CASE("ExponentialLR: base_lr * gamma^epoch") {
  Fixture f;
  ExponentialLR sched(f.opt, 0.9);
  check_schedule(f, sched, [](double base, int e) { return base * std::pow(0.9, e); });
}

TEST_CASE("CosineAnnealingLR: eta_min + (base - eta_min)(1 + cos(pi e / T_max))/2, also past T_max") {
  Fixture f;
  const double eta_min = 0.001;
  CosineAnnealingLR sched(f.opt, 8, eta_min);  // 20 epochs: down to eta_min at 8, back up at 16, down again
  check_schedule(f, sched,
                 [&](double base, int e) { return eta_min + (base - eta_min) * (1 + std::cos(kPi * e / 8)) / 2; });
}

TEST_CASE("LinearLR: base * (start + (end - start) * min(e, total) / total)") {
  SUBCASE("warm-up") {
    Fixture f;
    LinearLR sched(f.opt, 0.25, 1.0, 4);
    check_schedule(f, sched, [](double base, int e) { return base * (0.25 + 0.75 * std::min(e, 4) / 4.0); });
  }
  SUBCASE("decay with the PyTorch defaults (1/3 -> 1 over 5)") {
    Fixture f;
    LinearLR sched(f.opt);
    check_schedule(f, sched,
                   [](double base, int e) { return base * (1.0 / 3 + (1 - 1.0 / 3) * std::min(e, 5) / 5.0); });
  }
  SUBCASE("linear decay to a tenth over 10 epochs") {
    Fixture f;
    LinearLR sched(f.opt, 1.0, 0.1, 10);
    check_schedule(f, sched, [](double base, int e) { return base * (1.0 - 0.9 * std::min(e, 10) / 10.0); });
  }
}

TEST_CASE("a schedule whose factor reaches 0 stays there") {
  SUBCASE("LinearLR down to 0") {
    Fixture f;
    LinearLR sched(f.opt, 1.0, 0.0, 4);
    check_schedule(f, sched, [](double base, int e) { return base * (1.0 - std::min(e, 4) / 4.0); });
    CHECK(sched.get_last_lr()[0] == 0.0);
  }
  SUBCASE("StepLR with gamma 0") {
    Fixture f;
    StepLR sched(f.opt, 3, 0.0);
    check_schedule(f, sched, [](double base, int e) { return e < 3 ? base : 0.0; });
  }
}

TEST_CASE("chainable form: an epoch where the factor does not change leaves the lr exactly as it is") {
  // As PyTorch's `return [group['lr'] ...]`: CosineAnnealingLR's epoch 0 keeps the lr bit for bit, even one below
  // eta_min, where eta_min + (lr - eta_min)·1 would round differently.
  Fixture f;
  const double lr = 7.85061375972452e-05, eta_min = 0.04854235380901507;
  REQUIRE(eta_min + (lr - eta_min) * 1.0 != lr);
  f.opt.param_groups()[0].set_lr(lr);
  CosineAnnealingLR sched(f.opt, 10, eta_min);
  CHECK(sched.get_last_lr()[0] == lr);
}

TEST_CASE("chainable form: two schedules stepped together multiply (PyTorch's chaining example)") {
  Fixture f;
  ExponentialLR decay(f.opt, 0.9);
  MultiStepLR drops(f.opt, {5, 12}, 0.1);
  for (int e = 1; e <= 20; ++e) {
    decay.step();
    drops.step();
    const int passed = (e >= 5) + (e >= 12);
    INFO("epoch ", e);
    CHECK(f.opt.param_groups()[0].lr() == doctest::Approx(0.1 * std::pow(0.9, e) * std::pow(0.1, passed)));
    CHECK(f.opt.param_groups()[1].lr() == doctest::Approx(0.03 * std::pow(0.9, e) * std::pow(0.1, passed)));
  }
}

TEST_CASE("chainable form: CosineAnnealingLR continues from a manually changed lr") {
  // PyTorch: lr_e = eta_min + (lr_{e-1} - eta_min)(1 + cos(pi e/T)) / (1 + cos(pi (e-1)/T)); at the bottom of the
  // cosine (e - 1 = T) it adds (base - eta_min)(1 - cos(pi/T))/2 to whatever the lr is.
  Fixture f;
  const double eta_min = 0.01, T = 4;
  CosineAnnealingLR sched(f.opt, 4, eta_min);
  sched.step();                         // epoch 1
  f.opt.param_groups()[0].set_lr(0.5);  // user override
  double lr = 0.5;
  for (int e = 2; e <= 6; ++e) {
    sched.step();
    if (e - 1 == 4)
      lr = lr + (0.1 - eta_min) * (1 - std::cos(kPi / T)) / 2;
    else
      lr = eta_min + (lr - eta_min) * (1 + std::cos(kPi * e / T)) / (1 + std::cos(kPi * (e - 1) / T));
    INFO("epoch ", e);
    CHECK(sched.get_last_lr()[0] == doctest::Approx(lr).epsilon(1e-12));
  }
}

TEST_CASE("SequentialLR: linear warm-up for 5 epochs, then cosine annealing from the base lr") {
  Fixture f;
  auto warmup = std::make_shared<LinearLR>(f.opt, 0.1, 1.0, 5);
  auto cosine = std::make_shared<CosineAnnealingLR>(f.opt, 15);
  SequentialLR sched(f.opt, {warmup, cosine}, {5});
  check_schedule(f, sched, [](double base, int e) {
    if (e < 5) return base * (0.1 + 0.9 * e / 5.0);
    return base * (1 + std::cos(kPi * (e - 5) / 15)) / 2;  // the cosine restarts at its own epoch 0
  });
}

TEST_CASE("SequentialLR with three schedules") {
  Fixture f;
  auto s0 = std::make_shared<ExponentialLR>(f.opt, 0.5);
  auto s1 = std::make_shared<StepLR>(f.opt, 2, 0.1);
  auto s2 = std::make_shared<LinearLR>(f.opt, 0.5, 1.0, 4);
  SequentialLR sched(f.opt, {s0, s1, s2}, {3, 9});
  check_schedule(f, sched, [](double base, int e) {
    if (e < 3) return base * std::pow(0.5, e);
    if (e < 9) return base * std::pow(0.1, (e - 3) / 2);
    return base * (0.5 + 0.5 * std::min(e - 9, 4) / 4.0);
  });
}

TEST_CASE("initial_lr: a second scheduler starts from the original lr, not the current one") {
  Fixture f;
  LinearLR warm(f.opt, 0.5, 1.0, 2);  // sets lr to 0.05 / 0.015 at construction
  CHECK(f.opt.param_groups()[0].lr() == doctest::Approx(0.05));
  REQUIRE(f.opt.param_groups()[0].initial_lr.has_value());
  CHECK(*f.opt.param_groups()[0].initial_lr == 0.1);
  StepLR step(f.opt, 3);
  CHECK(step.base_lrs() == std::vector<double>{0.1, 0.03});
}

TEST_CASE("chainable form: a manual lr change persists through the schedule") {
  Fixture f;
  StepLR sched(f.opt, 2, 0.5);
  sched.step();                         // epoch 1: 0.1
  f.opt.param_groups()[0].set_lr(1.0);  // user override
  sched.step();                         // epoch 2: decays what is there
  CHECK(sched.get_last_lr()[0] == doctest::Approx(0.5));
}

TEST_CASE("ReduceLROnPlateau matches a hand trace") {
  auto w = ones({2}, kFloat32, true);
  SGD opt({w}, SGDOptions(0.1));
  ReduceLROnPlateau sched(opt,
                          ReduceLROnPlateauOptions().factor(0.5).patience(2).threshold(0.1).cooldown(1).min_lr(0.02));
  // mode min, rel: better when metric < best * 0.9.
  //  epoch metric  better?            bad  cooldown  lr
  //  1     10      yes (best 10)      0    0         0.1
  //  2     9       no (9 < 9.0 false) 1    0         0.1
  //  3     8.5     yes (best 8.5)     0    0         0.1
  //  4     8.6     no                 1              0.1
  //  5     8.9     no                 2              0.1
  //  6     7.0     yes (best 7.0)     0              0.1
  //  7,8   6.9 6.95 no                1, 2           0.1
  //  9     7.1     no -> 3 > 2: reduce, cooldown 1   0.05
  //  10    7.2     no, in cooldown: bad reset  0     0.05
  //  11,12 7.3 7.4 no                 1, 2           0.05
  //  13    7.5     3 > 2: reduce                     0.025
  //  14    7.6     cooldown                          0.025
  //  15-17 ...     1, 2, 3: reduce to max(0.0125, min_lr 0.02)  0.02
  //  18    cooldown; 19-21: 1, 2, 3: max(0.01, 0.02) = 0.02, no change
  const std::vector<double> metrics = {10,  9,   8.5, 8.6, 8.9, 7.0, 6.9, 6.95, 7.1, 7.2, 7.3,
                                       7.4, 7.5, 7.6, 7.7, 7.8, 7.9, 8.0, 8.1,  8.2, 8.3};
  const std::vector<double> lrs = {0.1,  0.1,   0.1,   0.1,   0.1,   0.1,  0.1,  0.1,  0.05, 0.05, 0.05,
                                   0.05, 0.025, 0.025, 0.025, 0.025, 0.02, 0.02, 0.02, 0.02, 0.02};
  for (std::size_t e = 0; e < metrics.size(); ++e) {
    sched.step(metrics[e]);
    INFO("epoch ", e + 1);
    CHECK(sched.get_last_lr()[0] == doctest::Approx(lrs[e]).epsilon(1e-15));
    CHECK(opt.param_groups()[0].lr() == sched.get_last_lr()[0]);
  }
  CHECK(sched.best() == 7.0);
}

TEST_CASE("ReduceLROnPlateau, mode max with an absolute threshold and per-group min_lr") {
  auto a = ones({2}, kFloat32, true), b = ones({2}, kFloat32, true);
  Adam opt({ParamGroup({a}), ParamGroup({b}, AdamOptions(0.01))}, AdamOptions(0.1));
  ReduceLROnPlateau sched(opt, ReduceLROnPlateauOptions()
                                   .mode(PlateauMode::max)
                                   .threshold_mode(ThresholdMode::abs)
                                   .threshold(0.5)
                                   .patience(0)
                                   .factor(0.1)
                                   .min_lr(std::vector<double>{0.0, 0.005}));
  sched.step(1.0);  // better than -inf
  CHECK(sched.get_last_lr() == std::vector<double>{0.1, 0.01});
  sched.step(1.4);  // not better than 1.0 + 0.5: bad 1 > 0 -> reduce: 0.01 and max(0.001, 0.005)
  CHECK(sched.get_last_lr()[0] == doctest::Approx(0.01));
  CHECK(sched.get_last_lr()[1] == doctest::Approx(0.005));
  sched.step(1.6);  // better (1.6 > 1.5)
  CHECK(sched.best() == 1.6);
  CHECK(sched.get_last_lr()[0] == doctest::Approx(0.01));
}

// =============================================================================================================
// Scheduler state in checkpoints
// =============================================================================================================
TEST_CASE("resuming a schedule from its state continues exactly") {
  using Make = std::function<std::shared_ptr<LRScheduler>(Optimizer&)>;
  auto check = [](const Make& make) {
    Fixture f;
    auto sched = make(f.opt);
    for (int e = 0; e < 7; ++e) sched->step();
    const StateDict opt_state = f.opt.state_dict();
    const StateDict sched_state = sched->state_dict();
    std::vector<std::vector<double>> expected;
    for (int e = 0; e < 13; ++e) {
      sched->step();
      expected.push_back(sched->get_last_lr());
    }
    Fixture g;
    auto resumed = make(g.opt);
    g.opt.load_state_dict(opt_state);
    resumed->load_state_dict(sched_state);
    CHECK(resumed->last_epoch() == 7);
    for (int e = 0; e < 13; ++e) {
      resumed->step();
      CHECK(resumed->get_last_lr() == expected[e]);  // bit for bit
    }
  };
  SUBCASE("StepLR") {
    check([](Optimizer& o) { return std::make_shared<StepLR>(o, 3, 0.5); });
  }
  SUBCASE("CosineAnnealingLR") {
    check([](Optimizer& o) { return std::make_shared<CosineAnnealingLR>(o, 10, 0.001); });
  }
  SUBCASE("SequentialLR") {
    check([](Optimizer& o) {
      auto w = std::make_shared<LinearLR>(o, 0.1, 1.0, 5);
      auto c = std::make_shared<CosineAnnealingLR>(o, 15);
      return std::make_shared<SequentialLR>(o, std::vector<std::shared_ptr<LRScheduler>>{w, c},
                                            std::vector<std::int64_t>{9});
    });
  }
}

TEST_CASE("ReduceLROnPlateau state round trip") {
  auto w = ones({2}, kFloat32, true);
  SGD opt({w}, SGDOptions(0.1));
  ReduceLROnPlateau sched(opt, ReduceLROnPlateauOptions().patience(1).cooldown(2));
  for (double m : {5.0, 4.0, 4.5, 4.6}) sched.step(m);
  const StateDict s = sched.state_dict();
  CHECK(s.at("best").item() == 4.0);
  CHECK(s.at("cooldown_counter").item() == 2);

  auto w2 = ones({2}, kFloat32, true);
  SGD opt2({w2}, SGDOptions(0.1));
  opt2.load_state_dict(opt.state_dict());
  ReduceLROnPlateau sched2(opt2, ReduceLROnPlateauOptions().patience(1).cooldown(2));
  sched2.load_state_dict(s);
  for (double m : {4.7, 4.8, 4.9, 5.0, 3.0, 3.1, 3.2}) {
    sched.step(m);
    sched2.step(m);
    CHECK(sched2.get_last_lr() == sched.get_last_lr());
    CHECK(sched2.num_bad_epochs() == sched.num_bad_epochs());
  }
}

// =============================================================================================================
// Errors
// =============================================================================================================
TEST_CASE("invalid schedule arguments are rejected") {
  Fixture f;
  CHECK_THROWS_WITH_AS(StepLR(f.opt, 0), doctest::Contains("StepLR: step_size must be >= 1, got 0"), Error);
  CHECK_THROWS_WITH_AS(CosineAnnealingLR(f.opt, 0), doctest::Contains("CosineAnnealingLR: T_max must be >= 1"), Error);
  CHECK_THROWS_WITH_AS(LinearLR(f.opt, 0.0), doctest::Contains("LinearLR: start_factor must be in (0, 1], got 0"),
                       Error);
  CHECK_THROWS_WITH_AS(LinearLR(f.opt, 1.5), doctest::Contains("start_factor must be in (0, 1]"), Error);
  CHECK_THROWS_WITH_AS(LinearLR(f.opt, 0.5, 1.5), doctest::Contains("LinearLR: end_factor must be in [0, 1], got 1.5"),
                       Error);
  CHECK_THROWS_WITH_AS(LinearLR(f.opt, 0.5, 1.0, 0), doctest::Contains("LinearLR: total_iters must be >= 1"), Error);
  CHECK_THROWS_WITH_AS(MultiStepLR(f.opt, {3, -1}), doctest::Contains("MultiStepLR: milestones must be >= 0, got -1"),
                       Error);
  CHECK_THROWS_WITH_AS(ReduceLROnPlateau(f.opt, ReduceLROnPlateauOptions().factor(1.0)),
                       doctest::Contains("ReduceLROnPlateau: factor must be in [0, 1), got 1"), Error);
  CHECK_THROWS_WITH_AS(ReduceLROnPlateau(f.opt, ReduceLROnPlateauOptions().patience(-1)),
                       doctest::Contains("patience must be >= 0"), Error);
  CHECK_THROWS_WITH_AS(ReduceLROnPlateau(f.opt, ReduceLROnPlateauOptions().min_lr(std::vector<double>{0, 0, 0})),
                       doctest::Contains("min_lr has 3 values; give one, or one per parameter group (2)"), Error);
  CHECK_THROWS_WITH_AS(ReduceLROnPlateau(f.opt, ReduceLROnPlateauOptions().min_lr(-1.0)),
                       doctest::Contains("min_lr must be >= 0"), Error);
}

TEST_CASE("SequentialLR argument errors") {
  Fixture f, other;
  auto s0 = std::make_shared<ExponentialLR>(f.opt, 0.9);
  auto s1 = std::make_shared<StepLR>(f.opt, 2);
  auto foreign = std::make_shared<StepLR>(other.opt, 2);
  using Vec = std::vector<std::shared_ptr<LRScheduler>>;
  CHECK_THROWS_WITH_AS(
      SequentialLR(f.opt, Vec{s0, s1}, {}),
      doctest::Contains("expects one milestone fewer than schedulers, got 2 schedulers and 0 milestones"), Error);
  CHECK_THROWS_WITH_AS(SequentialLR(f.opt, Vec{s0, foreign}, {3}),
                       doctest::Contains("schedulers[1] (StepLR) belongs to another optimizer"), Error);
  CHECK_THROWS_WITH_AS(SequentialLR(f.opt, Vec{s0, s1, s0}, {3, 5}),
                       doctest::Contains("schedulers[2] is the same object as schedulers[0]"), Error);
  auto s2 = std::make_shared<LinearLR>(f.opt);
  CHECK_THROWS_WITH_AS(SequentialLR(f.opt, Vec{s0, s1, s2}, {5, 5}),
                       doctest::Contains("milestones must be positive and strictly increasing, got 5, 5"), Error);
  CHECK_THROWS_WITH_AS(SequentialLR(f.opt, Vec{}, {}), doctest::Contains("needs at least one scheduler"), Error);
  CHECK_THROWS_WITH_AS(SequentialLR(f.opt, Vec{s0, nullptr}, {3}), doctest::Contains("schedulers[1] is null"), Error);
}

TEST_CASE("a scheduler notices groups added after it was made") {
  Fixture f;
  StepLR sched(f.opt, 2);
  f.opt.add_param_group(ParamGroup({ones({1}, kFloat32, true)}));
  CHECK_THROWS_WITH_AS(sched.step(),
                       doctest::Contains("StepLR.step(): the optimizer has 3 parameter groups but had 2 when the "
                                         "scheduler was created"),
                       Error);
}

TEST_CASE("loading a scheduler state with missing keys is an error") {
  Fixture f;
  StepLR sched(f.opt, 2);
  StateDict partial;
  partial.insert("last_epoch", scalar(3.0, kFloat64));
  CHECK_THROWS_WITH_AS(sched.load_state_dict(partial),
                       doctest::Contains("StepLR.load_state_dict(): the state has no 'base_lrs'"), Error);
  CHECK(sched.last_epoch() == 0);  // unchanged
}

TEST_CASE("schedulers refuse non-finite or out-of-range options") {
  const double inf = std::numeric_limits<double>::infinity();
  auto w = xg::ones({1}, xg::kFloat32, true);
  xg::optim::SGD opt(std::vector<xg::Tensor>{w}, xg::optim::SGDOptions(0.1));
  using xg::optim::CosineAnnealingLR;
  using xg::optim::ExponentialLR;
  using xg::optim::MultiStepLR;
  using xg::optim::StepLR;
  CHECK_THROWS_WITH_AS(StepLR(opt, 2, inf), doctest::Contains("StepLR: gamma must be a finite number >= 0, got inf"),
                       xg::Error);
  CHECK_THROWS_WITH_AS(StepLR(opt, 2, -0.5), doctest::Contains("StepLR: gamma must be a finite number >= 0, got -0.5"),
                       xg::Error);
  CHECK_THROWS_WITH_AS(MultiStepLR(opt, {2}, std::nan("")), doctest::Contains("MultiStepLR: gamma must be"), xg::Error);
  CHECK_THROWS_WITH_AS(ExponentialLR(opt, -1.0), doctest::Contains("ExponentialLR: gamma must be a finite number >= 0"),
                       xg::Error);
  CHECK_THROWS_WITH_AS(CosineAnnealingLR(opt, 10, -1e-3), doctest::Contains("CosineAnnealingLR: eta_min must be >= 0"),
                       xg::Error);
  CHECK_THROWS_WITH_AS(CosineAnnealingLR(opt, 10, inf), doctest::Contains("eta_min must be a finite number >= 0"),
                       xg::Error);
  CHECK_THROWS_WITH_AS(xg::optim::ReduceLROnPlateau(opt, xg::optim::ReduceLROnPlateauOptions().threshold(inf)),
                       doctest::Contains("ReduceLROnPlateau: threshold must be a finite number"), xg::Error);
  CHECK_THROWS_WITH_AS(xg::optim::ReduceLROnPlateau(opt, xg::optim::ReduceLROnPlateauOptions().min_lr({inf})),
                       doctest::Contains("ReduceLROnPlateau: min_lr must be a finite number"), xg::Error);
  CHECK(opt.param_groups()[0].lr() == 0.1);  // nothing was changed by the refused schedulers
}
