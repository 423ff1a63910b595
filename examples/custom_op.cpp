// custom_op — writing a new differentiable op: softplus(x) = log(1 + e^x), with its backward closure, then
// checking the backward against finite differences with xg::gradcheck. Two broken versions show what the
// tools say: forgetting the chain rule (gradcheck fails), and a naive derivative that overflows to NaN for
// large inputs (anomaly mode names the op).
//
//   build/bin/custom_op
//
// Read it with docs/custom-ops.md. Exits 1 if a check does not come out as expected.
#include <cmath>
#include <cstdio>
#include <vector>

#include <xtensor/xmath.hpp>

#include <xgrad/xgrad.h>

// [softplus]
// softplus(x) = log(1 + e^x), a smooth relu. Computed as max(x, 0) + log1p(e^-|x|): the same value, but e^-|x|
// never overflows (log(1 + e^x) is inf for x > 88 in float32).
// Derivative: d softplus(x)/dx = e^x / (1 + e^x) = sigmoid(x).
xg::Tensor softplus(const xg::Tensor& x) {
  // 1. Forward: compute the output on the raw arrays, for float and double alike.
  xg::Tensor out = xg::dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const xt::xarray<T>& a = x.data<T>();
    return xg::Tensor(xt::xarray<T>(xt::maximum(a, T(0)) + xt::log1p(xt::exp(-xt::abs(a)))));
  });
  // 2. Record: the op's name, its output, its inputs, and the backward closure. The closure captures what it
  //    needs, detached (capturing `out` itself would be a reference cycle); it runs under NoGradGuard, so it
  //    may use any ops. It returns one gradient per input: grad_output times the local derivative.
  return xg::record_op("softplus", out, {x},
                       [saved_x = x.detach()](const xg::Tensor& grad_output, const std::vector<bool>& needs) {
                         return std::vector<xg::Tensor>{grad_output * xg::sigmoid(saved_x)};
                       });
}
// [/softplus]

// [hypot]
// A two-input op with broadcasting: hypot(a, b) = sqrt(a² + b²), elementwise.
// Partial derivatives: d/da = a / hypot(a, b), d/db = b / hypot(a, b).
// If a was broadcast (say [3] against [2,3]), its gradient has the output's shape [2,3] and must be summed
// back to [3] — xg::sum_to does that. `needs[i]` says whether input i wants a gradient at all.
xg::Tensor hypot(const xg::Tensor& a, const xg::Tensor& b) {
  if (a.dtype() != b.dtype()) xg::fail("hypot: dtype mismatch ({} vs {})", a.dtype(), b.dtype());
  const xg::Shape shape = xg::broadcast_shapes(a.shape(), b.shape(), "hypot");  // clear error if incompatible
  xg::Tensor out = xg::dispatch(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const xt::xarray<T>& x = a.data<T>();
    const xt::xarray<T>& y = b.data<T>();
    return xg::Tensor(xt::xarray<T>(xt::sqrt(x * x + y * y)));
  });
  return xg::record_op(
      "hypot", out, {a, b},
      [sa = a.detach(), sb = b.detach(), so = out.detach()](const xg::Tensor& g, const std::vector<bool>& needs) {
        xg::Tensor da, db;  // undefined where not needed
        if (needs[0]) da = xg::sum_to(g * sa / so, sa.shape());
        if (needs[1]) db = xg::sum_to(g * sb / so, sb.shape());
        return std::vector<xg::Tensor>{da, db};
      });
}
// [/hypot]

// [softplus_bug]
// The same op with a classic bug: the closure returns the local derivative but forgets to multiply by
// grad_output (the chain rule). It is right only when the upstream gradient happens to be 1.
xg::Tensor softplus_forgot_chain_rule(const xg::Tensor& x) {
  xg::Tensor out = softplus(x.detach());  // same forward values, recorded below under a new op
  return xg::record_op("softplus_buggy", out, {x},
                       [saved_x = x.detach()](const xg::Tensor& grad_output, const std::vector<bool>& needs) {
                         return std::vector<xg::Tensor>{xg::sigmoid(saved_x)};  // BUG: no grad_output *
                       });
}
// [/softplus_bug]

// [softplus_naive]
// A version whose backward is right on paper but numerically naive: e^x / (1 + e^x) becomes inf/inf = NaN
// once e^x overflows (x > 88 in float32). gradcheck at moderate inputs cannot see it; anomaly mode can.
xg::Tensor softplus_naive_backward(const xg::Tensor& x) {
  xg::Tensor out = softplus(x.detach());
  return xg::record_op("softplus_naive", out, {x},
                       [saved_x = x.detach()](const xg::Tensor& grad_output, const std::vector<bool>& needs) {
                         xg::Tensor e = xg::exp(saved_x);
                         return std::vector<xg::Tensor>{grad_output * e / (1.0 + e)};
                       });
}
// [/softplus_naive]

int main() {
  bool ok = true;
  auto expect = [&](bool cond, const char* what) {
    std::printf("%-62s %s\n", what, cond ? "ok" : "FAILED");
    ok = ok && cond;
  };

  // [use]
  xg::Tensor x = xg::tensor({-3.0, -0.5, 0.0, 0.5, 3.0}, xg::kFloat64, /*requires_grad=*/true);
  x.set_label("x");
  xg::Tensor y = softplus(x);
  y.sum().backward();
  std::printf("x            = %s\n", xg::format_values(x).c_str());
  std::printf("softplus(x)  = %s\n", xg::format_values(y).c_str());
  std::printf("x.grad()     = %s   (= sigmoid(x))\n", xg::format_values(x.grad()).c_str());
  // [/use]

  // The values against the textbook formula, written out with std::exp/std::log.
  double worst_value = 0, worst_grad = 0;
  for (std::size_t i = 0; i < x.numel(); ++i) {
    const double xi = x.at({static_cast<std::ptrdiff_t>(i)});
    worst_value = std::max(worst_value, std::abs(y.at({static_cast<std::ptrdiff_t>(i)}) - std::log(1 + std::exp(xi))));
    worst_grad = std::max(worst_grad, std::abs(x.grad().at({static_cast<std::ptrdiff_t>(i)}) - 1 / (1 + std::exp(-xi))));
  }
  expect(worst_value < 1e-12, "forward equals log(1 + exp(x))");
  expect(worst_grad < 1e-12, "x.grad() equals sigmoid(x)");

  // Where the stable formula matters: the composed log(1 + exp(x)) overflows to inf, softplus does not.
  xg::Tensor big = xg::tensor({100.0f, 1000.0f});
  std::printf("composed log(1 + exp(x)) at x = [100, 1000] (float32): %s\n",
              xg::format_values(xg::log(1.0 + xg::exp(big))).c_str());
  std::printf("softplus(x)              at x = [100, 1000] (float32): %s\n", xg::format_values(softplus(big)).c_str());
  expect(!xg::has_nonfinite(softplus(big)), "softplus stays finite where exp overflows");

  // [gradcheck]
  // gradcheck perturbs each input element by ±eps (float64), measures how each output moves, and compares
  // that Jacobian with the one backward computes. It checks a non-scalar output, so every row of the Jacobian
  // (every upstream one-hot gradient) is exercised — which is what catches a missing grad_output.
  xg::Tensor a = xg::tensor({{-20.0, -2.0, -0.1}, {0.0, 0.7, 25.0}}, xg::kFloat64, true);
  xg::GradcheckResult good = xg::gradcheck([](const std::vector<xg::Tensor>& in) { return softplus(in[0]); }, {a});
  std::printf("\ngradcheck(softplus):      %s\n", good.report.c_str());

  xg::GradcheckOptions no_throw;
  no_throw.raise = false;  // return the report instead of throwing xg::Error
  xg::GradcheckResult bad = xg::gradcheck(
      [](const std::vector<xg::Tensor>& in) { return softplus_forgot_chain_rule(in[0]); }, {a}, no_throw);
  std::printf("gradcheck(softplus_buggy): %s\n\n", bad.report.c_str());
  // [/gradcheck]
  expect(good.ok, "gradcheck passes for softplus");
  expect(!bad.ok, "gradcheck catches the missing chain rule");

  // [hypot_check]
  // The two-input op, with b broadcast along the rows of a: both gradients checked.
  xg::Tensor ha = xg::tensor({{3.0, -1.0, 0.5}, {2.0, 4.0, -6.0}}, xg::kFloat64, true);
  xg::Tensor hb = xg::tensor({4.0, 2.0, -1.5}, xg::kFloat64, true);
  xg::GradcheckResult h = xg::gradcheck(
      [](const std::vector<xg::Tensor>& in) { return hypot(in[0], in[1]); }, {ha, hb});
  std::printf("gradcheck(hypot):         %s\n", h.report.c_str());
  // [/hypot_check]
  expect(h.ok, "gradcheck passes for hypot with broadcasting");
  expect(std::abs(hypot(ha, hb).at({0, 0}) - 5.0) < 1e-12, "hypot(3, 4) = 5");
  xg::Tensor only_b = xg::tensor({{1.0, 1.0, 1.0}}, xg::kFloat64);  // no grad: needs[0] is false
  hypot(only_b, hb).sum().backward();
  expect(hb.grad().defined() && hb.grad().shape() == xg::Shape{3}, "only the input that needs it gets a gradient");

  // A composition through the new op: gradients flow through it like through any built-in op.
  xg::Tensor w = xg::tensor({0.5, -1.0, 2.0}, xg::kFloat64, true);
  xg::GradcheckResult chain = xg::gradcheck(
      [](const std::vector<xg::Tensor>& in) { return (softplus(in[0] * in[1]) * in[1]).sum(); },
      {xg::tensor({1.0, 2.0, -3.0}, xg::kFloat64, true), w});
  expect(chain.ok, "gradcheck of sum(softplus(x*w)*w) w.r.t. x and w");

  // [anomaly]
  // Large inputs: the naive backward silently puts a NaN into z.grad() ...
  xg::Tensor z = xg::tensor({1.0f, 100.0f}, xg::kFloat32, /*requires_grad=*/true);
  z.set_label("z");
  softplus_naive_backward(z).sum().backward();
  std::printf("\nnaive backward:   z.grad() = %s\n", xg::format_values(z.grad()).c_str());
  // ... and anomaly mode stops at the op that produced it.
  z.zero_grad();
  try {
    xg::DetectAnomalyGuard anomaly;
    softplus_naive_backward(z).sum().backward();
  } catch (const xg::Error& e) {
    std::printf("with anomaly mode: xg::Error: %s\n", e.what());
  }
  // [/anomaly]
  expect(!z.grad().defined(), "anomaly mode stopped before z.grad() was written");
  softplus(z).sum().backward();
  expect(!xg::has_nonfinite(z.grad()), "the stable backward gives a finite gradient at x = 100");

  std::printf("\n%s\n", ok ? "all checks passed" : "SOME CHECKS FAILED");
  return ok ? 0 : 1;
}
