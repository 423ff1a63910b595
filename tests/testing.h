// Helpers shared by the core test suites (test_tensor, test_ops_*, test_autograd, test_gradcheck, test_errors).
//
// The references here are deliberately naive: plain loops over multi-indices that know nothing of xgrad's
// kernels (no xtensor, no grouping of axes, no fast paths), so a test compares two independent computations.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <source_location>
#include <string>
#include <vector>

#include "xgrad/xgrad.h"

namespace xgt {

using xg::Shape;
using xg::Tensor;

/// A float64 tensor with values uniform in [lo, hi) from its own seeded generator; requires grad by default.
inline Tensor rnd(const Shape& shape, std::uint64_t seed, double lo = -1.0, double hi = 1.0, bool grad = true) {
  xg::Generator g(seed);
  Tensor t = xg::uniform(shape, lo, hi, xg::kFloat64, &g);
  t.requires_grad_(grad);
  return t;
}

/// Like rnd, but every value has magnitude in [0.2, 1.2) with a random sign: away from the kink of abs, relu,
/// and from zero for div/log of |x|.
inline Tensor rnd_away(const Shape& shape, std::uint64_t seed, bool grad = true) {
  xg::Generator g(seed);
  std::vector<double> v(xg::numel_of(shape));
  for (auto& x : v) x = (g.uniform() < 0.5 ? -1.0 : 1.0) * (0.2 + g.uniform());
  return xg::from_vector(v, shape, xg::kFloat64, grad);
}

/// Runs xg::gradcheck (float64 central differences) and reports the worst element on failure. The op name is
/// what tests/test_gradcheck.cpp's coverage test looks for: every differentiable op in ops.h must appear in a
/// `check_grad("<name>"` call somewhere in tests/.
inline void check_grad(const char* op, const xg::GradcheckFn& f, const std::vector<Tensor>& inputs,
                       xg::GradcheckOptions opts = {}, std::source_location where = std::source_location::current()) {
  opts.raise = false;
  const auto r = xg::gradcheck(f, inputs, opts);
  INFO("check_grad called from ", where.file_name(), ":", where.line());
  INFO(op, ": ", r.report);
  CHECK(r.ok);
}

/// Row-major strides of a shape.
inline std::vector<std::size_t> strides_of(const Shape& s) {
  std::vector<std::size_t> st(s.size(), 1);
  for (std::size_t i = s.size(); i-- > 1;) st[i - 1] = st[i] * s[i];
  return st;
}

/// The multi-index of flat position `flat` in shape `s`.
inline std::vector<std::size_t> unravel(std::size_t flat, const Shape& s) {
  std::vector<std::size_t> idx(s.size());
  for (std::size_t i = s.size(); i-- > 0;) {
    idx[i] = flat % s[i];
    flat /= s[i];
  }
  return idx;
}

/// numpy broadcast shape, computed independently of xg::broadcast_shapes (no error handling: tests pass valid
/// shapes).
inline Shape ref_broadcast_shape(const Shape& a, const Shape& b) {
  const std::size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t da = i + a.size() >= n ? a[i + a.size() - n] : 1;
    const std::size_t db = i + b.size() >= n ? b[i + b.size() - n] : 1;
    out[i] = std::max(da, db);
  }
  return out;
}

/// Flat offset into a tensor of shape `s` for output multi-index `idx` under broadcasting (right-aligned;
/// size-1 axes repeat).
inline std::size_t broadcast_offset(const std::vector<std::size_t>& idx, const Shape& s) {
  const auto st = strides_of(s);
  std::size_t off = 0;
  const std::size_t lead = idx.size() - s.size();
  for (std::size_t i = 0; i < s.size(); ++i) off += (s[i] == 1 ? 0 : idx[lead + i]) * st[i];
  return off;
}

/// out = f(a, b) elementwise with numpy broadcasting, as plain loops.
inline std::vector<double> ref_binary(const Tensor& a, const Tensor& b, const std::function<double(double, double)>& f,
                                      Shape* out_shape = nullptr) {
  const Shape as = a.shape(), bs = b.shape(), os = ref_broadcast_shape(as, bs);
  const auto va = a.to_vector(), vb = b.to_vector();
  std::vector<double> out(xg::numel_of(os));
  for (std::size_t k = 0; k < out.size(); ++k) {
    const auto idx = unravel(k, os);
    out[k] = f(va[broadcast_offset(idx, as)], vb[broadcast_offset(idx, bs)]);
  }
  if (out_shape) *out_shape = os;
  return out;
}

/// Reduction over `axes` (already non-negative) as loops: out[kept index] = fold(out, x) starting at init.
inline std::vector<double> ref_reduce(const Tensor& x, const std::vector<std::size_t>& axes, double init,
                                      const std::function<double(double, double)>& fold, Shape* out_shape = nullptr) {
  const Shape s = x.shape();
  Shape os;
  for (std::size_t i = 0; i < s.size(); ++i)
    if (std::find(axes.begin(), axes.end(), i) == axes.end()) os.push_back(s[i]);
  const auto ost = strides_of(os);
  std::vector<double> out(xg::numel_of(os), init);
  const auto v = x.to_vector();
  for (std::size_t k = 0; k < v.size(); ++k) {
    const auto idx = unravel(k, s);
    std::size_t o = 0, j = 0;
    for (std::size_t i = 0; i < s.size(); ++i)
      if (std::find(axes.begin(), axes.end(), i) == axes.end()) o += idx[i] * ost[j++];
    out[o] = fold(out[o], v[k]);
  }
  if (out_shape) *out_shape = os;
  return out;
}

/// Checks shape and every value (|got - want| <= tol·max(1, |want|)).
inline void check_values(const Tensor& t, const Shape& shape, const std::vector<double>& want, double tol = 1e-12,
                         std::source_location where = std::source_location::current()) {
  INFO("check_values called from ", where.file_name(), ":", where.line());
  REQUIRE(t.defined());
  CHECK(xg::shape_str(t.shape()) == xg::shape_str(shape));
  const auto got = t.to_vector();
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("element ", i, ": got ", got[i], ", want ", want[i]);
    if (std::isnan(want[i]))
      CHECK(std::isnan(got[i]));
    else
      CHECK(std::abs(got[i] - want[i]) <= tol * std::max(1.0, std::abs(want[i])));
  }
}

/// max |a - b| / max(max |b|, floor): relative to the reference tensor's largest magnitude (or to `floor`, the
/// natural scale of the quantity, when the reference itself is ~0 — e.g. dx for N = 2, which is 0 in exact
/// arithmetic, leaving only rounding noise). The shapes must match.
inline double rel_diff(const Tensor& a, const Tensor& b, double floor = 1e-30) {
  REQUIRE(a.shape() == b.shape());
  const auto va = a.to_vector(), vb = b.to_vector();
  double scale = floor, diff = 0;
  for (std::size_t i = 0; i < va.size(); ++i) {
    scale = std::max(scale, std::abs(vb[i]));
    diff = std::max(diff, std::abs(va[i] - vb[i]));
  }
  return diff / scale;
}

}  // namespace xgt
