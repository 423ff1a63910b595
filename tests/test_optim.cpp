// Optimizers: golden trajectories against plain float64 reference implementations written here from the
// PyTorch 1.13 update rules, convergence on a convex quadratic and on logistic regression, validation errors,
// and the NaN/Inf gradient check.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <vector>

#include "xgrad/xgrad.h"

using namespace xg;
using namespace xg::optim;

namespace {

// =============================================================================================================
// Reference implementations: one parameter, plain loops, float64, written from the formulas (not from the
// library's code). Each keeps its own state; `t` counts this parameter's updates.
// =============================================================================================================
struct RefParam {
  std::vector<double> p;
  std::vector<double> buf, m, v, vmax, sq, gavg, sum;
  int t = 0;
  bool has_buf = false;
};
using RefStep = std::function<void(RefParam&, const std::vector<double>& grad)>;

struct SgdCfg {
  double lr, momentum = 0, dampening = 0, wd = 0;
  bool nesterov = false, maximize = false;
};
// g <- g + wd*p; b <- g (first) | mu*b + (1-tau)*g; g <- g + mu*b (nesterov) | b; p <- p -/+ lr*g
RefStep ref_sgd(SgdCfg c) {
  return [c](RefParam& r, const std::vector<double>& grad) {
    const std::size_t n = r.p.size();
    if (r.buf.empty()) r.buf.assign(n, 0.0);
    for (std::size_t i = 0; i < n; ++i) {
      double g = grad[i];
      if (c.wd != 0) g = g + c.wd * r.p[i];
      if (c.momentum != 0) {
        r.buf[i] = r.has_buf ? c.momentum * r.buf[i] + (1 - c.dampening) * g : g;
        g = c.nesterov ? g + c.momentum * r.buf[i] : r.buf[i];
      }
      r.p[i] = c.maximize ? r.p[i] + c.lr * g : r.p[i] - c.lr * g;
    }
    r.has_buf = true;
    r.t += 1;
  };
}

struct AdamCfg {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, wd = 0;
  bool amsgrad = false, maximize = false, decoupled = false;  // decoupled: AdamW
};
// Textbook form with bias-corrected moments: m^ = m/(1-b1^t), v^ = v/(1-b2^t), p <- p - lr*m^/(sqrt(v^)+eps),
// amsgrad on the raw second moment: v_max = max(v_max, v), v^ = v_max/(1-b2^t).
RefStep ref_adam(AdamCfg c) {
  return [c](RefParam& r, const std::vector<double>& grad) {
    const std::size_t n = r.p.size();
    if (r.m.empty()) r.m.assign(n, 0.0), r.v.assign(n, 0.0), r.vmax.assign(n, 0.0);
    r.t += 1;
    const double bc1 = 1 - std::pow(c.beta1, r.t), bc2 = 1 - std::pow(c.beta2, r.t);
    for (std::size_t i = 0; i < n; ++i) {
      double g = c.maximize ? -grad[i] : grad[i];
      if (c.decoupled)
        r.p[i] = r.p[i] * (1 - c.lr * c.wd);
      else if (c.wd != 0)
        g = g + c.wd * r.p[i];
      r.m[i] = c.beta1 * r.m[i] + (1 - c.beta1) * g;
      r.v[i] = c.beta2 * r.v[i] + (1 - c.beta2) * g * g;
      double second = r.v[i];
      if (c.amsgrad) {
        r.vmax[i] = std::max(r.vmax[i], r.v[i]);
        second = r.vmax[i];
      }
      const double m_hat = r.m[i] / bc1, v_hat = second / bc2;
      r.p[i] = r.p[i] - c.lr * m_hat / (std::sqrt(v_hat) + c.eps);
    }
  };
}

struct RmsCfg {
  double lr = 1e-2, alpha = 0.99, eps = 1e-8, wd = 0, momentum = 0;
  bool centered = false, maximize = false;
};
RefStep ref_rmsprop(RmsCfg c) {
  return [c](RefParam& r, const std::vector<double>& grad) {
    const std::size_t n = r.p.size();
    if (r.sq.empty()) r.sq.assign(n, 0.0), r.gavg.assign(n, 0.0), r.buf.assign(n, 0.0);
    for (std::size_t i = 0; i < n; ++i) {
      double g = c.maximize ? -grad[i] : grad[i];
      if (c.wd != 0) g = g + c.wd * r.p[i];
      r.sq[i] = c.alpha * r.sq[i] + (1 - c.alpha) * g * g;
      double var = r.sq[i];
      if (c.centered) {
        r.gavg[i] = c.alpha * r.gavg[i] + (1 - c.alpha) * g;
        var = var - r.gavg[i] * r.gavg[i];
      }
      const double denom = std::sqrt(var) + c.eps;
      if (c.momentum > 0) {
        r.buf[i] = c.momentum * r.buf[i] + g / denom;
        r.p[i] = r.p[i] - c.lr * r.buf[i];
      } else {
        r.p[i] = r.p[i] - c.lr * g / denom;
      }
    }
    r.t += 1;
  };
}

struct AdagradCfg {
  double lr = 1e-2, lr_decay = 0, wd = 0, init = 0, eps = 1e-10;
  bool maximize = false;
};
RefStep ref_adagrad(AdagradCfg c) {
  return [c](RefParam& r, const std::vector<double>& grad) {
    const std::size_t n = r.p.size();
    if (r.sum.empty()) r.sum.assign(n, c.init);
    r.t += 1;
    const double clr = c.lr / (1 + (r.t - 1) * c.lr_decay);
    for (std::size_t i = 0; i < n; ++i) {
      double g = c.maximize ? -grad[i] : grad[i];
      if (c.wd != 0) g = g + c.wd * r.p[i];
      r.sum[i] = r.sum[i] + g * g;
      r.p[i] = r.p[i] - clr * g / (std::sqrt(r.sum[i]) + c.eps);
    }
  };
}

// =============================================================================================================
// Golden trajectory driver
// =============================================================================================================

// The gradient both sides receive at step t for element i of parameter k: it depends on the reference's current
// value (so the trajectory is a real optimisation path) and oscillates in sign and size (so momentum, dampening,
// amsgrad's maximum and maximize all matter).
double grad_of(std::size_t k, std::size_t i, int t, double p) {
  return 0.8 * p + std::sin(1.7 * double(i) + 0.9 * double(t) + double(k)) * (1.5 + std::cos(0.5 * t)) - 0.3;
}

const std::vector<std::vector<double>> kInit = {{0.5, -1.25, 2.0, 0.1}, {-0.7, 0.3, 1.1, -2.2, 0.0, 0.9}};
const std::vector<Shape> kShapes = {{4}, {2, 3}};

using MakeOpt = std::function<std::unique_ptr<Optimizer>(std::vector<Tensor>)>;

// Runs `steps` steps of the optimizer (parameters in `dtype`) and of the reference(s) side by side and checks
// every parameter after every step: |x - ref| <= tol*max(1, |ref|). refs[k] updates parameter k. At step 3,
// parameter 1 gets no gradient: both must skip it (value and state untouched).
void check_trajectory(const MakeOpt& make, const std::vector<RefStep>& refs, Dtype dtype, int steps, double tol) {
  std::vector<Tensor> params;
  std::vector<RefParam> ref(kInit.size());
  for (std::size_t k = 0; k < kInit.size(); ++k) {
    params.push_back(from_vector(kInit[k], kShapes[k], dtype, /*requires_grad=*/true));
    ref[k].p = kInit[k];
  }
  auto opt = make(params);
  for (int t = 1; t <= steps; ++t) {
    for (std::size_t k = 0; k < params.size(); ++k) {
      const bool skip = (t == 3 && k == 1);
      if (skip) {
        params[k].set_grad(Tensor());
        continue;
      }
      std::vector<double> g(ref[k].p.size());
      for (std::size_t i = 0; i < g.size(); ++i) g[i] = grad_of(k, i, t, ref[k].p[i]);
      params[k].set_grad(from_vector(g, kShapes[k], dtype));
      refs[k](ref[k], g);
    }
    opt->step();
    for (std::size_t k = 0; k < params.size(); ++k) {
      const auto got = params[k].to_vector();
      for (std::size_t i = 0; i < got.size(); ++i) {
        INFO("step ", t, ", parameter ", k, ", element ", i, ", dtype ", dtype_name(dtype));
        CHECK(std::abs(got[i] - ref[k].p[i]) <= tol * std::max(1.0, std::abs(ref[k].p[i])));
      }
    }
  }
  // The skipped step did not count: parameter 1 has one update fewer.
  CHECK(opt->state(0).step == steps);
  CHECK(opt->state(1).step == steps - 1);
}

void check_both_dtypes(const MakeOpt& make, const RefStep& ref) {
  SUBCASE("float64") { check_trajectory(make, {ref, ref}, kFloat64, 8, 1e-12); }
  SUBCASE("float32") { check_trajectory(make, {ref, ref}, kFloat32, 8, 2e-5); }
}

// The final parameters of a reference run (used to show that an option changes the trajectory).
std::vector<double> ref_final(const RefStep& ref, int steps) {
  RefParam r;
  r.p = kInit[0];
  for (int t = 1; t <= steps; ++t) {
    std::vector<double> g(r.p.size());
    for (std::size_t i = 0; i < g.size(); ++i) g[i] = grad_of(0, i, t, r.p[i]);
    ref(r, g);
  }
  return r.p;
}

double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}

SGDOptions sgd_options(const SgdCfg& c) {
  return SGDOptions(c.lr)
      .momentum(c.momentum)
      .dampening(c.dampening)
      .weight_decay(c.wd)
      .nesterov(c.nesterov)
      .maximize(c.maximize);
}
AdamOptions adam_options(const AdamCfg& c) {
  return AdamOptions(c.lr)
      .betas({c.beta1, c.beta2})
      .eps(c.eps)
      .weight_decay(c.wd)
      .amsgrad(c.amsgrad)
      .maximize(c.maximize);
}
AdamWOptions adamw_options(const AdamCfg& c) {
  return AdamWOptions(c.lr)
      .betas({c.beta1, c.beta2})
      .eps(c.eps)
      .weight_decay(c.wd)
      .amsgrad(c.amsgrad)
      .maximize(c.maximize);
}
RMSpropOptions rmsprop_options(const RmsCfg& c) {
  return RMSpropOptions(c.lr)
      .alpha(c.alpha)
      .eps(c.eps)
      .weight_decay(c.wd)
      .momentum(c.momentum)
      .centered(c.centered)
      .maximize(c.maximize);
}
AdagradOptions adagrad_options(const AdagradCfg& c) {
  return AdagradOptions(c.lr)
      .lr_decay(c.lr_decay)
      .weight_decay(c.wd)
      .initial_accumulator_value(c.init)
      .eps(c.eps)
      .maximize(c.maximize);
}

MakeOpt make_sgd(SgdCfg c) {
  return [c](std::vector<Tensor> p) { return std::make_unique<SGD>(std::move(p), sgd_options(c)); };
}
MakeOpt make_adam(AdamCfg c) {
  return [c](std::vector<Tensor> p) -> std::unique_ptr<Optimizer> {
    if (c.decoupled) return std::make_unique<AdamW>(std::move(p), adamw_options(c));
    return std::make_unique<Adam>(std::move(p), adam_options(c));
  };
}
MakeOpt make_rmsprop(RmsCfg c) {
  return [c](std::vector<Tensor> p) { return std::make_unique<RMSprop>(std::move(p), rmsprop_options(c)); };
}
MakeOpt make_adagrad(AdagradCfg c) {
  return [c](std::vector<Tensor> p) { return std::make_unique<Adagrad>(std::move(p), adagrad_options(c)); };
}

}  // namespace

// =============================================================================================================
// Golden values: every option, float64 and float32, 8 steps each
// =============================================================================================================
TEST_CASE("SGD follows the PyTorch 1.13 update rule") {
  SUBCASE("plain") { check_both_dtypes(make_sgd({.lr = 0.1}), ref_sgd({.lr = 0.1})); }
  SUBCASE("weight decay (L2 before momentum)") {
    SgdCfg c{.lr = 0.05, .momentum = 0.9, .wd = 0.1};
    check_both_dtypes(make_sgd(c), ref_sgd(c));
  }
  SUBCASE("momentum: first step sets the buffer to the gradient, dampening only afterwards") {
    SgdCfg c{.lr = 0.05, .momentum = 0.9, .dampening = 0.5};
    check_both_dtypes(make_sgd(c), ref_sgd(c));
  }
  SUBCASE("nesterov with weight decay") {
    SgdCfg c{.lr = 0.05, .momentum = 0.8, .wd = 0.01, .nesterov = true};
    check_both_dtypes(make_sgd(c), ref_sgd(c));
  }
  SUBCASE("maximize (flips the whole step, as in 1.13)") {
    SgdCfg c{.lr = 0.05, .momentum = 0.5, .wd = 0.1, .maximize = true};
    check_both_dtypes(make_sgd(c), ref_sgd(c));
  }
}

TEST_CASE("SGD reference sanity: the options change the trajectory") {
  // If these did not differ, the golden tests above could not tell the options apart.
  const auto base = ref_final(ref_sgd({.lr = 0.05, .momentum = 0.9}), 8);
  CHECK(max_diff(base, ref_final(ref_sgd({.lr = 0.05, .momentum = 0.9, .dampening = 0.5}), 8)) > 1e-3);
  CHECK(max_diff(base, ref_final(ref_sgd({.lr = 0.05, .momentum = 0.9, .nesterov = true}), 8)) > 1e-3);
  // A dampened first step would differ from the PyTorch rule (buffer = gradient on the first step).
  RefParam r;
  r.p = kInit[0];
  std::vector<double> g(4, 1.0);
  ref_sgd({.lr = 1.0, .momentum = 0.9, .dampening = 0.5})(r, g);
  CHECK(r.buf[0] == 1.0);
}

TEST_CASE("Adam follows the PyTorch 1.13 update rule") {
  SUBCASE("defaults") { check_both_dtypes(make_adam({.lr = 0.05}), ref_adam({.lr = 0.05})); }
  SUBCASE("eps after the bias-corrected square root (large eps makes the placement visible)") {
    AdamCfg c{.lr = 0.05, .eps = 0.1};
    check_both_dtypes(make_adam(c), ref_adam(c));
  }
  SUBCASE("L2 weight decay") {
    AdamCfg c{.lr = 0.05, .beta1 = 0.8, .beta2 = 0.95, .wd = 0.1};
    check_both_dtypes(make_adam(c), ref_adam(c));
  }
  SUBCASE("amsgrad keeps the maximum of the raw second moment") {
    AdamCfg c{.lr = 0.05, .beta1 = 0.8, .beta2 = 0.7, .amsgrad = true};
    check_both_dtypes(make_adam(c), ref_adam(c));
  }
  SUBCASE("maximize with weight decay") {
    AdamCfg c{.lr = 0.05, .wd = 0.05, .maximize = true};
    check_both_dtypes(make_adam(c), ref_adam(c));
  }
}

TEST_CASE("AdamW follows the PyTorch 1.13 update rule (decoupled weight decay)") {
  SUBCASE("default weight decay 1e-2") {
    CHECK(AdamWOptions().weight_decay() == 1e-2);
    AdamCfg c{.lr = 0.05, .wd = 1e-2, .decoupled = true};
    check_both_dtypes(make_adam(c), ref_adam(c));
  }
  SUBCASE("strong decay, amsgrad, maximize") {
    AdamCfg c{.lr = 0.05,
              .beta1 = 0.8,
              .beta2 = 0.7,
              .eps = 1e-3,
              .wd = 0.5,
              .amsgrad = true,
              .maximize = true,
              .decoupled = true};
    check_both_dtypes(make_adam(c), ref_adam(c));
  }
}

TEST_CASE("Adam reference sanity: the options change the trajectory") {
  const AdamCfg base{.lr = 0.05, .beta1 = 0.8, .beta2 = 0.7, .wd = 0.5};
  const auto l2 = ref_final(ref_adam(base), 8);
  AdamCfg decoupled = base;
  decoupled.decoupled = true;
  CHECK(max_diff(l2, ref_final(ref_adam(decoupled), 8)) > 1e-3);  // L2 vs decoupled decay
  AdamCfg ams = base;
  ams.amsgrad = true;
  CHECK(max_diff(l2, ref_final(ref_adam(ams), 8)) > 1e-4);  // the maximum was taken at least once
  // eps inside vs outside the bias correction: with eps = 0.1 the two placements differ visibly.
  RefParam r;
  r.p = {0.0};
  ref_adam({.lr = 1.0, .eps = 0.1})(r, {1.0});
  // t = 1: m^ = 1, v^ = 1, step = 1/(1 + 0.1); the other placement would give (1-0.9)/(sqrt(1-0.999)+0.1).
  CHECK(r.p[0] == doctest::Approx(-1.0 / 1.1).epsilon(1e-14));
}

TEST_CASE("RMSprop follows the PyTorch 1.13 update rule") {
  SUBCASE("defaults") { check_both_dtypes(make_rmsprop({.lr = 0.01}), ref_rmsprop({.lr = 0.01})); }
  SUBCASE("centered, momentum, weight decay") {
    RmsCfg c{.lr = 0.01, .alpha = 0.9, .eps = 1e-6, .wd = 0.1, .momentum = 0.9, .centered = true};
    check_both_dtypes(make_rmsprop(c), ref_rmsprop(c));
  }
  SUBCASE("momentum, maximize") {
    RmsCfg c{.lr = 0.01, .alpha = 0.8, .momentum = 0.5, .maximize = true};
    check_both_dtypes(make_rmsprop(c), ref_rmsprop(c));
  }
  SUBCASE("centered only") {
    RmsCfg c{.lr = 0.02, .alpha = 0.7, .eps = 1e-3, .centered = true};
    check_both_dtypes(make_rmsprop(c), ref_rmsprop(c));
  }
}

TEST_CASE("Adagrad follows the PyTorch 1.13 update rule") {
  SUBCASE("defaults") { check_both_dtypes(make_adagrad({.lr = 0.1}), ref_adagrad({.lr = 0.1})); }
  SUBCASE("lr decay, weight decay, initial accumulator, maximize") {
    AdagradCfg c{.lr = 0.1, .lr_decay = 0.1, .wd = 0.05, .init = 0.5, .eps = 1e-6, .maximize = true};
    check_both_dtypes(make_adagrad(c), ref_adagrad(c));
  }
}

TEST_CASE("parameter groups: each group uses its own options") {
  // Group 0 (parameter 0): momentum SGD, lr 0.05. Group 1 (parameter 1): plain SGD with its own lr and weight
  // decay, given as a ParamGroup with options.
  const SgdCfg c0{.lr = 0.05, .momentum = 0.9, .nesterov = true};
  const SgdCfg c1{.lr = 0.2, .wd = 0.3};
  auto make = [&](std::vector<Tensor> p) {
    return std::make_unique<SGD>(std::vector<ParamGroup>{ParamGroup({p[0]}), ParamGroup({p[1]}, sgd_options(c1))},
                                 sgd_options(c0));
  };
  SUBCASE("float64") { check_trajectory(make, {ref_sgd(c0), ref_sgd(c1)}, kFloat64, 8, 1e-12); }
  SUBCASE("float32") { check_trajectory(make, {ref_sgd(c0), ref_sgd(c1)}, kFloat32, 8, 2e-5); }
  SUBCASE("Adam groups, one added with add_param_group") {
    const AdamCfg a0{.lr = 0.05, .amsgrad = true};
    const AdamCfg a1{.lr = 0.01, .beta1 = 0.5, .wd = 0.2};
    auto make_adam_groups = [&](std::vector<Tensor> p) {
      auto opt = std::make_unique<Adam>(std::vector<Tensor>{p[0]}, adam_options(a0));
      opt->add_param_group(ParamGroup({p[1]}, adam_options(a1)));
      CHECK(opt->param_groups().size() == 2);
      CHECK(opt->param_groups()[1].options_as<AdamOptions>().betas().first == 0.5);
      return opt;
    };
    check_trajectory(make_adam_groups, {ref_adam(a0), ref_adam(a1)}, kFloat64, 8, 1e-12);
  }
}

TEST_CASE("changing a group's options between steps takes effect") {
  auto w = from_vector(std::vector<double>{1.0, -2.0}, {2}, kFloat64, true);
  SGD opt({w}, SGDOptions(0.1));
  w.set_grad(from_vector(std::vector<double>{1.0, 1.0}, {2}, kFloat64));
  opt.step();  // 1 - 0.1 = 0.9, -2 - 0.1 = -2.1
  opt.param_groups()[0].set_lr(0.5);
  opt.param_groups()[0].options_as<SGDOptions>().weight_decay(1.0);
  opt.step();  // g = 1 + w: 0.9 - 0.5*1.9 = -0.05, -2.1 - 0.5*(-1.1) = -1.55
  CHECK(w.at({0}) == doctest::Approx(-0.05).epsilon(1e-14));
  CHECK(w.at({1}) == doctest::Approx(-1.55).epsilon(1e-14));
}

TEST_CASE("zero_grad sets gradients to none by default, or to zeros") {
  auto w = ones({3}, kFloat32, true);
  SGD opt({w}, SGDOptions(0.1));
  w.set_grad(full({3}, 2.0));
  opt.zero_grad(/*set_to_none=*/false);
  REQUIRE(w.grad().defined());
  CHECK(w.grad().to_vector() == std::vector<double>{0, 0, 0});
  opt.zero_grad();
  CHECK_FALSE(w.grad().defined());
  opt.step();  // no gradient: nothing changes
  CHECK(w.to_vector() == std::vector<double>{1, 1, 1});
  CHECK(opt.state(0).empty());
}

TEST_CASE("step() needs no autograd graph and records none") {
  auto w = ones({2}, kFloat32, true);
  Adam opt({w}, AdamOptions(0.1));
  (w * w).sum().backward();
  opt.step();
  CHECK(w.is_leaf());
  CHECK(w.requires_grad());
}

// =============================================================================================================
// Convergence
// =============================================================================================================
namespace {
// f(x) = 1/2 (x - x*)^T A (x - x*) with A symmetric positive definite (eigenvalues between ~0.5 and ~3).
double quadratic_run(Optimizer& opt, Tensor& x, int steps) {
  const Tensor A =
      tensor({{2.0, 0.5, 0.0, 0.2}, {0.5, 1.5, 0.3, 0.0}, {0.0, 0.3, 1.0, 0.1}, {0.2, 0.0, 0.1, 0.8}}, kFloat64);
  const Tensor target = from_vector(std::vector<double>{1.0, -2.0, 0.5, 3.0}, {4, 1}, kFloat64);
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    Tensor r = x - target;
    Tensor loss = 0.5 * (r * matmul(A, r)).sum();
    loss.backward();
    opt.step();
  }
  return max_diff(x.to_vector(), target.to_vector());
}
}  // namespace

TEST_CASE("every optimizer converges on a convex quadratic") {
  auto x = zeros({4, 1}, kFloat64, true);
  SUBCASE("SGD") {
    SGD opt({x}, SGDOptions(0.3));
    CHECK(quadratic_run(opt, x, 300) < 1e-6);
  }
  SUBCASE("SGD, Nesterov momentum") {
    SGD opt({x}, SGDOptions(0.1).momentum(0.8).nesterov(true));
    CHECK(quadratic_run(opt, x, 300) < 1e-6);
  }
  SUBCASE("Adam with a decaying lr") {
    Adam opt({x}, AdamOptions(0.2));
    ExponentialLR sched(opt, 0.99);
    double err = 0;
    for (int epoch = 0; epoch < 60; ++epoch) {
      err = quadratic_run(opt, x, 10);
      sched.step();
    }
    CHECK(err < 1e-3);
  }
  SUBCASE("AdamW without decay, amsgrad") {
    AdamW opt({x}, AdamWOptions(0.05).weight_decay(0).amsgrad(true));
    CHECK(quadratic_run(opt, x, 600) < 1e-2);
  }
  SUBCASE("RMSprop, centered with momentum") {
    RMSprop opt({x}, RMSpropOptions(0.01).centered(true).momentum(0.5));
    CHECK(quadratic_run(opt, x, 600) < 1e-2);
  }
  SUBCASE("Adagrad") {
    Adagrad opt({x}, AdagradOptions(0.5));
    CHECK(quadratic_run(opt, x, 600) < 1e-3);
  }
}

TEST_CASE("logistic regression converges to the optimum (gradient vanishes)") {
  // 200 points in 2-d, labels drawn from a logistic model (overlapping classes, so a finite optimum exists).
  Generator gen(7);
  const std::size_t n = 200;
  std::vector<double> X(n * 2), y(n);
  for (std::size_t i = 0; i < n; ++i) {
    X[2 * i] = gen.normal();
    X[2 * i + 1] = gen.normal();
    const double z = 2.0 * X[2 * i] - 1.0 * X[2 * i + 1] + 0.5;
    y[i] = gen.uniform() < 1 / (1 + std::exp(-z)) ? 1.0 : 0.0;
  }
  const Tensor Xt = from_vector(X, {n, 2}, kFloat64), yt = from_vector(y, {n, 1}, kFloat64);

  // The gradient of the mean logistic loss, by plain loops: X^T (sigmoid(Xw + b) - y) / n.
  auto grad_norm = [&](const Tensor& w, const Tensor& b) {
    double gw0 = 0, gw1 = 0, gb = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double z = X[2 * i] * w.at({0, 0}) + X[2 * i + 1] * w.at({1, 0}) + b.at({0});
      const double r = 1 / (1 + std::exp(-z)) - y[i];
      gw0 += r * X[2 * i] / n;
      gw1 += r * X[2 * i + 1] / n;
      gb += r / n;
    }
    return std::sqrt(gw0 * gw0 + gw1 * gw1 + gb * gb);
  };
  auto train = [&](Optimizer& opt, Tensor& w, Tensor& b, int steps) {
    double first = 0, last = 0;
    for (int s = 0; s < steps; ++s) {
      opt.zero_grad();
      Tensor z = matmul(Xt, w) + b;
      Tensor loss = (log(1.0 + exp(z)) - yt * z).mean();  // -log-likelihood of the logistic model
      loss.backward();
      opt.step();
      (s == 0 ? first : last) = loss.item();
    }
    CHECK(last < first);
  };

  auto w = zeros({2, 1}, kFloat64, true);
  auto b = zeros({1}, kFloat64, true);
  SUBCASE("SGD with momentum") {
    SGD opt({w, b}, SGDOptions(0.5).momentum(0.9));
    train(opt, w, b, 300);
    CHECK(grad_norm(w, b) < 1e-6);
  }
  SUBCASE("Adam") {
    Adam opt({w, b}, AdamOptions(0.05));
    train(opt, w, b, 500);
    CHECK(grad_norm(w, b) < 1e-3);
  }
  SUBCASE("float32 parameters") {
    auto w32 = zeros({2, 1}, kFloat32, true);
    auto b32 = zeros({1}, kFloat32, true);
    const Tensor X32 = Xt.to(kFloat32), y32 = yt.to(kFloat32);
    SGD opt({w32, b32}, SGDOptions(0.5).momentum(0.9));
    for (int s = 0; s < 300; ++s) {
      opt.zero_grad();
      Tensor z = matmul(X32, w32) + b32;
      (log(1.0 + exp(z)) - y32 * z).mean().backward();
      opt.step();
    }
    CHECK(grad_norm(w32, b32) < 1e-4);
  }
}

// =============================================================================================================
// Validation errors
// =============================================================================================================
TEST_CASE("invalid hyper-parameters are rejected at construction") {
  auto w = ones({2}, kFloat32, true);
  const std::vector<Tensor> p{w};
  CHECK_THROWS_WITH_AS(SGD(p, SGDOptions(-0.1)), doctest::Contains("SGD: lr must be >= 0, got -0.1"), Error);
  CHECK_THROWS_WITH_AS(SGD(p, SGDOptions(0.1).momentum(-0.5)), doctest::Contains("SGD: momentum must be >= 0"), Error);
  CHECK_THROWS_WITH_AS(SGD(p, SGDOptions(0.1).weight_decay(-1)), doctest::Contains("SGD: weight_decay must be >= 0"),
                       Error);
  CHECK_THROWS_WITH_AS(SGD(p, SGDOptions(0.1).nesterov(true)),
                       doctest::Contains("SGD: nesterov=true needs momentum > 0 and dampening = 0"), Error);
  CHECK_THROWS_WITH_AS(SGD(p, SGDOptions(0.1).nesterov(true).momentum(0.9).dampening(0.1)),
                       doctest::Contains("got momentum 0.9 and dampening 0.1"), Error);
  CHECK_THROWS_WITH_AS(SGD(p, SGDOptions(std::nan(""))), doctest::Contains("SGD: lr must be a finite number >= 0, got nan"), Error);

  CHECK_THROWS_WITH_AS(Adam(p, AdamOptions().betas({1.2, 0.999})),
                       doctest::Contains("Adam: beta1 must be in [0, 1), got 1.2"), Error);
  CHECK_THROWS_WITH_AS(Adam(p, AdamOptions().betas({0.9, 1.0})),
                       doctest::Contains("Adam: beta2 must be in [0, 1), got 1"), Error);
  CHECK_THROWS_WITH_AS(Adam(p, AdamOptions().betas({-0.1, 0.9})), doctest::Contains("Adam: beta1 must be in [0, 1)"),
                       Error);
  CHECK_THROWS_WITH_AS(Adam(p, AdamOptions().eps(-1e-8)), doctest::Contains("Adam: eps must be >= 0"), Error);
  CHECK_THROWS_WITH_AS(Adam(p, AdamOptions(-1)), doctest::Contains("Adam: lr must be >= 0"), Error);
  CHECK_THROWS_WITH_AS(Adam(p, AdamOptions().weight_decay(-0.1)), doctest::Contains("Adam: weight_decay must be >= 0"),
                       Error);
  CHECK_THROWS_WITH_AS(AdamW(p, AdamWOptions().betas({0.9, 1.5})), doctest::Contains("AdamW: beta2 must be in [0, 1)"),
                       Error);
  CHECK_THROWS_WITH_AS(AdamW(p, AdamWOptions().weight_decay(-1)), doctest::Contains("AdamW: weight_decay must be >= 0"),
                       Error);
  CHECK_THROWS_WITH_AS(RMSprop(p, RMSpropOptions().alpha(-0.1)), doctest::Contains("RMSprop: alpha must be >= 0"),
                       Error);
  CHECK_THROWS_WITH_AS(RMSprop(p, RMSpropOptions().momentum(-0.1)), doctest::Contains("RMSprop: momentum must be >= 0"),
                       Error);
  CHECK_THROWS_WITH_AS(RMSprop(p, RMSpropOptions().eps(-1)), doctest::Contains("RMSprop: eps must be >= 0"), Error);
  CHECK_THROWS_WITH_AS(Adagrad(p, AdagradOptions().lr_decay(-1)), doctest::Contains("Adagrad: lr_decay must be >= 0"),
                       Error);
  CHECK_THROWS_WITH_AS(Adagrad(p, AdagradOptions().initial_accumulator_value(-1)),
                       doctest::Contains("Adagrad: initial_accumulator_value must be >= 0"), Error);
  CHECK_THROWS_WITH_AS(Adagrad(p, AdagradOptions().eps(-1)), doctest::Contains("Adagrad: eps must be >= 0"), Error);
}

TEST_CASE("a group's own options are validated too") {
  auto a = ones({2}, kFloat32, true), b = ones({2}, kFloat32, true);
  CHECK_THROWS_WITH_AS(Adam({ParamGroup({a}), ParamGroup({b}, AdamOptions().betas({0.9, 2.0}))}, AdamOptions()),
                       doctest::Contains("Adam: beta2 must be in [0, 1), got 2"), Error);
  Adam opt({a}, AdamOptions());
  CHECK_THROWS_WITH_AS(opt.add_param_group(ParamGroup({b}, AdamOptions(-1))),
                       doctest::Contains("Adam: lr must be >= 0"), Error);
  CHECK_THROWS_WITH_AS(opt.add_param_group(ParamGroup({b}, SGDOptions(0.1))),
                       doctest::Contains("Adam: parameter group 1 has SGDOptions; a Adam optimizer needs AdamOptions"),
                       Error);
  CHECK(opt.param_groups().size() == 1);  // the failed adds changed nothing
  CHECK(opt.num_parameters() == 1);
  CHECK_THROWS_WITH_AS(opt.param_groups()[0].options_as<SGDOptions>(), doctest::Contains("AdamOptions"), Error);
}

TEST_CASE("invalid parameter lists are rejected") {
  auto a = ones({2, 3}, kFloat32, true), b = ones({4}, kFloat32, true);
  CHECK_THROWS_WITH_AS(SGD(std::vector<Tensor>{}, SGDOptions(0.1)),
                       doctest::Contains("SGD: got an empty parameter list"), Error);
  CHECK_THROWS_WITH_AS(SGD({a, b, a}, SGDOptions(0.1)),
                       doctest::Contains("a parameter (shape [2,3]) is listed twice: as parameter 0 of group 0 and as "
                                         "parameter 2 of group 0"),
                       Error);
  CHECK_THROWS_WITH_AS(SGD({ParamGroup({a}), ParamGroup({b, a})}, SGDOptions(0.1)),
                       doctest::Contains("as parameter 0 of group 0 and as parameter 1 of group 1"), Error);
  // The same data through another handle is the same parameter.
  Tensor alias = a;
  CHECK_THROWS_WITH_AS(SGD({a, alias}, SGDOptions(0.1)), doctest::Contains("listed twice"), Error);
  SGD opt({a}, SGDOptions(0.1));
  CHECK_THROWS_WITH_AS(opt.add_param_group(ParamGroup({b, a})), doctest::Contains("listed twice"), Error);

  auto frozen = ones({3}, kFloat32, false);
  CHECK_THROWS_WITH_AS(Adam({a, frozen}, AdamOptions()),
                       doctest::Contains("Adam: parameter 1 of group 0 (shape [3]) does not require grad"), Error);
  Tensor non_leaf = a * 2.0;
  CHECK_THROWS_WITH_AS(Adam({non_leaf}, AdamOptions()), doctest::Contains("is not a leaf: it was computed by 'mul'"),
                       Error);
  CHECK_THROWS_WITH_AS(Adam({a, Tensor()}, AdamOptions()),
                       doctest::Contains("Adam: parameter 1 of group 0 is an undefined Tensor"), Error);
}

// =============================================================================================================
// NaN/Inf gradients
// =============================================================================================================
TEST_CASE("check_finite: a NaN/Inf gradient is reported and no parameter is written") {
  auto a = from_vector(std::vector<double>{1, 2, 3}, {3}, kFloat32, true);
  auto b = from_vector(std::vector<double>{1, 2, 3, 4}, {2, 2}, kFloat32, true);
  b.set_label("fc1.weight");
  Adam opt({a, b}, AdamOptions(0.1));
  opt.set_check_finite(true);
  a.set_grad(full({3}, 1.0));
  b.set_grad(from_vector(std::vector<double>{0.5, std::nan(""), INFINITY, 1.0}, {2, 2}, kFloat32));
  const auto a_before = a.to_vector(), b_before = b.to_vector();
  CHECK_THROWS_WITH_AS(opt.step(),
                       doctest::Contains("Adam.step(): the gradient of parameter 1 'fc1.weight' (shape [2,2], float32) "
                                         "has 2 non-finite values (the first, at flat index 1, is nan); no parameter "
                                         "was updated"),
                       Error);
  CHECK(a.to_vector() == a_before);  // parameter 0 (finite gradient) was not updated either
  CHECK(b.to_vector() == b_before);
  CHECK(opt.state(0).empty());

  SUBCASE("names given to the optimizer win over labels") {
    opt.set_check_finite(true, {"bias", "weight"});
    CHECK_THROWS_WITH_AS(opt.step(), doctest::Contains("parameter 1 'weight'"), Error);
    CHECK_THROWS_WITH_AS(opt.set_check_finite(true, {"only one"}), doctest::Contains("got 1 names for 2 parameters"),
                         Error);
  }
  SUBCASE("without check_finite the NaN goes into the weights (PyTorch's behaviour)") {
    opt.set_check_finite(false);
    opt.step();
    CHECK(std::isnan(b.at({0, 1})));
    CHECK(a.at({0}) != a_before[0]);
  }
  SUBCASE("the free function") {
    CHECK_THROWS_WITH_AS(check_finite_grads({a, b}),
                         doctest::Contains("check_finite_grads: the gradient of parameter 1 'fc1.weight'"), Error);
    CHECK_THROWS_WITH_AS(check_finite_grads({b}, {"w"}), doctest::Contains("parameter 0 'w' (shape [2,2], float32)"),
                         Error);
    CHECK_THROWS_WITH_AS(check_finite_grads({a, b}, {"w"}), doctest::Contains("got 1 names for 2 parameters"), Error);
    b.set_grad(full({2, 2}, 1.0));
    CHECK_NOTHROW(check_finite_grads({a, b}));
    b.zero_grad();
    CHECK_NOTHROW(check_finite_grads({a, b}));  // no gradient is not an error
  }
}

TEST_CASE("every optimizer refuses an infinite or NaN learning rate or option") {
  auto w = ones({2}, kFloat32, true);
  const std::vector<Tensor> p{w};
  const double inf = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH_AS(SGD(p, SGDOptions(inf)), doctest::Contains("SGD: lr must be a finite number >= 0, got inf"),
                       Error);
  CHECK_THROWS_WITH_AS(SGD(p, SGDOptions(0.1).momentum(inf)), doctest::Contains("SGD: momentum must be a finite"),
                       Error);
  CHECK_THROWS_WITH_AS(SGD(p, SGDOptions(0.1).weight_decay(inf)), doctest::Contains("SGD: weight_decay must be a finite"),
                       Error);
  CHECK_THROWS_WITH_AS(SGD(p, SGDOptions(0.1).dampening(-inf)), doctest::Contains("SGD: dampening must be a finite"),
                       Error);
  CHECK_THROWS_WITH_AS(Adam(p, AdamOptions(inf)), doctest::Contains("Adam: lr must be a finite number >= 0, got inf"),
                       Error);
  CHECK_THROWS_WITH_AS(Adam(p, AdamOptions().eps(inf)), doctest::Contains("Adam: eps must be a finite"), Error);
  CHECK_THROWS_WITH_AS(Adam(p, AdamOptions().betas({std::nan(""), 0.9})), doctest::Contains("Adam: beta1 must be in [0, 1)"),
                       Error);
  CHECK_THROWS_WITH_AS(AdamW(p, AdamWOptions(inf)), doctest::Contains("AdamW: lr must be a finite number"), Error);
  CHECK_THROWS_WITH_AS(AdamW(p, AdamWOptions().weight_decay(inf)), doctest::Contains("AdamW: weight_decay must be a finite"),
                       Error);
  CHECK_THROWS_WITH_AS(RMSprop(p, RMSpropOptions(inf)), doctest::Contains("RMSprop: lr must be a finite number"), Error);
  CHECK_THROWS_WITH_AS(RMSprop(p, RMSpropOptions().alpha(inf)), doctest::Contains("RMSprop: alpha must be a finite"),
                       Error);
  CHECK_THROWS_WITH_AS(Adagrad(p, AdagradOptions(inf)), doctest::Contains("Adagrad: lr must be a finite number"), Error);
  CHECK_THROWS_WITH_AS(Adagrad(p, AdagradOptions().initial_accumulator_value(inf)),
                       doctest::Contains("Adagrad: initial_accumulator_value must be a finite"), Error);
  // a group added later, and a checkpoint that carries lr = inf, are checked the same way
  SGD opt(p, SGDOptions(0.1));
  auto w2 = ones({1}, kFloat32, true);
  CHECK_THROWS_WITH_AS(opt.add_param_group(ParamGroup({w2}, SGDOptions(inf))),
                       doctest::Contains("SGD: lr must be a finite number"), Error);
}
