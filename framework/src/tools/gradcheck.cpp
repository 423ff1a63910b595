// gradcheck: the Jacobian from backward (one backward per output element, or per random projection) against
// central differences (two forwards per input element).
#include "xgrad/gradcheck.h"

#include <cmath>

#include "xgrad/autograd.h"
#include "xgrad/ops.h"
#include "xgrad/random.h"

namespace xg {

GradcheckResult gradcheck(const GradcheckFn& f, const std::vector<Tensor>& inputs, const GradcheckOptions& opts) {
  // Fresh leaves with their own data, so perturbing them touches nothing of the caller's.
  std::vector<Tensor> leaves;
  std::vector<std::size_t> checked;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.defined()) fail("gradcheck: input {} is undefined", i);
    if (x.dtype() != kFloat64)
      fail("gradcheck: input {} (shape {}) is {}; finite differences need float64 — use .to(xg::kFloat64)", i,
           shape_str(x.shape()), x.dtype());
    Tensor leaf(xt::xarray<double>(x.data<double>()), x.requires_grad());
    if (x.requires_grad()) checked.push_back(i);
    leaves.push_back(leaf);
  }
  if (checked.empty()) fail("gradcheck: no input requires grad; mark the ones to check with requires_grad_()");

  Tensor y = f(leaves);
  if (!y.defined() || y.dtype() != kFloat64) fail("gradcheck: f must return a defined float64 tensor");
  if (!y.requires_grad()) fail("gradcheck: f's output does not depend on any input that requires grad");
  GradcheckResult res;
  res.op = y.grad_fn() ? y.grad_fn()->name : "(leaf)";
  const std::size_t ny = y.numel();

  // Output-side vectors: one-hot rows of the Jacobian, or three fixed random projections.
  std::vector<Tensor> probes;
  if (ny <= opts.full_jacobian_max_outputs) {
    for (std::size_t j = 0; j < ny; ++j) {
      Tensor e = zeros(y.shape(), kFloat64);
      e.data_ptr<double>()[j] = 1.0;
      probes.push_back(e);
    }
  } else {
    Generator gen(12345);
    for (int k = 0; k < 3; ++k) probes.push_back(randn(y.shape(), kFloat64, &gen));
  }

  // Analytic: one backward per probe.
  std::vector<Tensor> wrt;
  for (auto i : checked) wrt.push_back(leaves[i]);
  std::vector<std::vector<Tensor>> analytic;  // [probe][checked input]
  for (const auto& v : probes) {
    auto g = autograd::grad({y}, wrt, {v}, /*retain_graph=*/true, /*allow_unused=*/true);
    for (std::size_t c = 0; c < g.size(); ++c)
      if (!g[c].defined()) g[c] = zeros(wrt[c].shape(), kFloat64);
    analytic.push_back(g);
  }

  // Numeric: perturb each element of each checked input; the directional derivative along every probe.
  NoGradGuard no_grad;
  auto project = [](const Tensor& out, const Tensor& v) {
    double s = 0;
    const double* a = out.data_ptr<double>();
    const double* b = v.data_ptr<double>();
    for (std::size_t k = 0, n = out.numel(); k < n; ++k) s += a[k] * b[k];
    return s;
  };
  auto project_all = [&](const Tensor& out) {
    if (!out.defined() || out.dtype() != kFloat64 || out.shape() != y.shape())
      fail("gradcheck: f returned {} on a perturbed input but {} (float64) at first; f must be deterministic",
           out.defined() ? shape_str(out.shape()) : "an undefined tensor", shape_str(y.shape()));
    std::vector<double> r;
    for (const auto& v : probes) r.push_back(project(out, v));
    return r;
  };
  bool first = true;
  bool worst_bad = false;
  double worst_score = 0;
  for (std::size_t c = 0; c < checked.size(); ++c) {
    Tensor& x = leaves[checked[c]];
    double* px = x.data_ptr<double>();
    for (std::size_t e = 0, n = x.numel(); e < n; ++e) {
      // Project each output right away: f may return (a view of) its input, whose data changes next.
      const double orig = px[e];
      px[e] = orig + opts.eps;
      std::vector<double> plus = project_all(f(leaves));
      px[e] = orig - opts.eps;
      std::vector<double> minus = project_all(f(leaves));
      px[e] = orig;
      for (std::size_t p = 0; p < probes.size(); ++p) {
        const double num = (plus[p] - minus[p]) / (2 * opts.eps);
        const double ana = analytic[p][c].data_ptr<double>()[e];
        const double err = std::abs(ana - num);
        // How far past the tolerance this element is (NaN counts as infinitely far).
        const double excess = std::isnan(err) ? INFINITY : err - (opts.atol + opts.rtol * std::abs(num));
        const bool bad = excess > 0;
        if (bad) res.ok = false;
        // The worst element: the one furthest past tolerance if any fails, else the largest error.
        const double score = bad ? excess : err;
        if (first || (bad && !worst_bad) || (bad == worst_bad && score > worst_score)) {
          first = false;
          worst_bad = bad;
          worst_score = score;
          res.max_abs_error = std::isnan(err) ? INFINITY : err;
          res.max_rel_error = err / std::max(std::abs(num), 1e-12);
          res.worst_input = checked[c];
          res.worst_element = e;
          res.worst_output = p;
          res.analytic = ana;
          res.numeric = num;
        }
      }
    }
  }
  res.report = fmt::format(
      "gradcheck of '{}' {}: worst |analytic - numeric| = {:.3e} (relative {:.3e}) at input {} (shape {}) element "
      "{}, output {} {}: analytic {:.10g}, numeric {:.10g} (atol {}, rtol {}, eps {})",
      res.op, res.ok ? "passed" : "FAILED", res.max_abs_error, res.max_rel_error, res.worst_input,
      shape_str(inputs[res.worst_input].shape()), res.worst_element,
      ny <= opts.full_jacobian_max_outputs ? "element" : "projection", res.worst_output, res.analytic, res.numeric,
      opts.atol, opts.rtol, opts.eps);
  if (!res.ok && opts.raise) throw Error(res.report);
  return res;
}

}  // namespace xg
