// Reductions (sum, mean, amax, amin, var, std, sum_to) and the softmax family: values against plain loops over
// multi-indices, every axes/keepdim variant (negative, multiple, all, size-1 axes, 0-d), gradchecks in float64.
#include <cmath>
#include <limits>
#include <set>

#include "testing.h"

using namespace xgt;
using xg::Dims;
using xg::kFloat32;
using xg::kFloat64;

namespace {

struct AxesCase {
  Shape shape;
  Dims axes;
  std::vector<std::size_t> normalized;  // the same axes, non-negative (what the reference loops over)
};

// Each case: the input shape, the axes as passed (negative allowed; {} = all) and the axes it means.
const std::vector<AxesCase> kAxes = {
    {{2, 3, 4}, {}, {0, 1, 2}},    {{2, 3, 4}, {0}, {0}},         {{2, 3, 4}, {1}, {1}},
    {{2, 3, 4}, {-1}, {2}},        {{2, 3, 4}, {0, 2}, {0, 2}},   {{2, 3, 4}, {-1, -3}, {0, 2}},
    {{2, 3, 4}, {1, 2}, {1, 2}},   {{2, 3, 4}, {0, 1, 2}, {0, 1, 2}}, {{3, 1, 2}, {1}, {1}},
    {{1, 1}, {0}, {0}},            {{5}, {0}, {0}},               {{}, {}, {}},
    {{}, {0}, {}},                 {{4, 1}, {-1}, {1}},
};

Shape keep_shape(const Shape& s, const std::vector<std::size_t>& ax) {
  Shape k = s;
  for (auto a : ax) k[a] = 1;
  return k;
}

std::size_t count_of(const Shape& s, const std::vector<std::size_t>& ax) {
  std::size_t n = 1;
  for (auto a : ax) n *= s[a];
  return n;
}

}  // namespace

TEST_CASE("sum/mean/amax/amin: values for every axes and keepdim variant") {
  for (const auto& c : kAxes)
    for (bool keep : {false, true})
      for (auto dt : {kFloat64, kFloat32}) {
        CAPTURE(xg::shape_str(c.shape));
        CAPTURE(c.axes.size());
        CAPTURE(keep);
        const Tensor x = rnd(c.shape, 31, -3, 3, false).to(dt);
        const double tol = dt == kFloat32 ? 1e-5 : 1e-13;
        Shape os;
        const auto s = ref_reduce(x, c.normalized, 0.0, [](double a, double v) { return a + v; }, &os);
        const Shape want_shape = keep ? keep_shape(c.shape, c.normalized) : os;
        check_values(xg::sum(x, c.axes, keep), want_shape, s, tol);
        std::vector<double> m = s;
        for (auto& v : m) v /= double(count_of(c.shape, c.normalized));
        check_values(xg::mean(x, c.axes, keep), want_shape, m, tol);
        const double inf = std::numeric_limits<double>::infinity();
        check_values(xg::amax(x, c.axes, keep), want_shape,
                     ref_reduce(x, c.normalized, -inf, [](double a, double v) { return std::max(a, v); }), 0);
        check_values(xg::amin(x, c.axes, keep), want_shape,
                     ref_reduce(x, c.normalized, inf, [](double a, double v) { return std::min(a, v); }), 0);
        CHECK(xg::sum(x, c.axes, keep).dtype() == dt);
      }
}

TEST_CASE("sum/mean/amax/amin: gradcheck for every axes and keepdim variant") {
  for (const auto& c : kAxes)
    for (bool keep : {false, true}) {
      CAPTURE(xg::shape_str(c.shape));
      CAPTURE(c.axes.size());
      CAPTURE(keep);
      const Tensor x = rnd(c.shape, 32);  // continuous random values: no ties for amax/amin
      check_grad("sum", [&](auto& in) { return xg::sum(in[0], c.axes, keep); }, {x});
      check_grad("mean", [&](auto& in) { return xg::mean(in[0], c.axes, keep); }, {x});
      check_grad("amax", [&](auto& in) { return xg::amax(in[0], c.axes, keep); }, {x});
      check_grad("amin", [&](auto& in) { return xg::amin(in[0], c.axes, keep); }, {x});
    }
  const Tensor x = rnd({2, 3}, 33);
  check_grad("sum", [](auto& in) { return in[0].sum(); }, {x});
  check_grad("sum", [](auto& in) { return in[0].sum({1}, true); }, {x});
  check_grad("mean", [](auto& in) { return in[0].mean(); }, {x});
  check_grad("mean", [](auto& in) { return in[0].mean({0}); }, {x});
  check_grad("amax", [](auto& in) { return in[0].max(); }, {x});
  check_grad("amax", [](auto& in) { return in[0].max({-1}, true); }, {x});
  check_grad("amin", [](auto& in) { return in[0].min(); }, {x});
  check_grad("amin", [](auto& in) { return in[0].min({0}); }, {x});
}

TEST_CASE("amax/amin: ties share the gradient; the whole-tensor max of a 0-d tensor is itself") {
  Tensor x = xg::tensor({{1, 3, 3}, {2, 2, 0}}, kFloat64, true);
  xg::amax(x, {1}).sum().backward();
  check_values(x.grad(), {2, 3}, {0, 0.5, 0.5, 0.5, 0.5, 0});
  x.zero_grad();
  xg::amin(x).backward();
  check_values(x.grad(), {2, 3}, {0, 0, 0, 0, 0, 1});
  Tensor s = xg::scalar(4.0, kFloat64, true);
  const Tensor m = xg::amax(s);
  CHECK(m.shape() == Shape{});
  CHECK(m.item() == 4.0);
  m.backward();
  CHECK(s.grad().item() == 1.0);
}

TEST_CASE("var/std: values (two-pass, unbiased and biased) and gradcheck") {
  for (const auto& c : kAxes) {
    const std::size_t n = count_of(c.shape, c.normalized);
    if (n < 2) continue;  // the unbiased variance of one value is undefined (tested in test_errors)
    for (bool keep : {false, true})
      for (bool unbiased : {true, false}) {
        CAPTURE(xg::shape_str(c.shape));
        CAPTURE(c.axes.size());
        CAPTURE(keep);
        CAPTURE(unbiased);
        const Tensor x = rnd(c.shape, 34);
        Shape os;
        const auto s = ref_reduce(x.detach(), c.normalized, 0.0, [](double a, double v) { return a + v; }, &os);
        // Second pass by hand: sum of squared deviations from each slice's mean.
        const auto v = x.to_vector();
        std::vector<double> ss(s.size(), 0.0);
        const auto ost = strides_of(os);
        for (std::size_t k = 0; k < v.size(); ++k) {
          const auto idx = unravel(k, c.shape);
          std::size_t o = 0, j = 0;
          for (std::size_t i = 0; i < c.shape.size(); ++i)
            if (std::find(c.normalized.begin(), c.normalized.end(), i) == c.normalized.end()) o += idx[i] * ost[j++];
          const double d = v[k] - s[o] / double(n);
          ss[o] += d * d;
        }
        std::vector<double> var, sd;
        for (double q : ss) {
          var.push_back(q / double(unbiased ? n - 1 : n));
          sd.push_back(std::sqrt(var.back()));
        }
        const Shape want_shape = keep ? keep_shape(c.shape, c.normalized) : os;
        check_values(xg::var(x, c.axes, unbiased, keep), want_shape, var, 1e-12);
        check_values(xg::std(x, c.axes, unbiased, keep), want_shape, sd, 1e-12);
        check_grad("var", [&](auto& in) { return xg::var(in[0], c.axes, unbiased, keep); }, {x});
        check_grad("std", [&](auto& in) { return xg::std(in[0], c.axes, unbiased, keep); }, {x});
      }
  }
  const Tensor x = rnd({3, 2}, 35);
  check_grad("var", [](auto& in) { return in[0].var({0}); }, {x});
  check_grad("std", [](auto& in) { return in[0].std({-1}, false, true); }, {x});
}

TEST_CASE("var survives a large mean (two-pass, not E[x^2] - E[x]^2)") {
  // 1e9 + {1, 2, 3, 4}: the unbiased variance is 5/3 exactly; the one-pass formula loses every digit in float64.
  const Tensor x = xg::tensor({1e9 + 1, 1e9 + 2, 1e9 + 3, 1e9 + 4}, kFloat64);
  CHECK(xg::var(x).item() == doctest::Approx(5.0 / 3.0).epsilon(1e-12));
  CHECK(xg::var(x, {}, false).item() == doctest::Approx(1.25).epsilon(1e-12));
  // float32 with a mean of 1e4: still ~7 correct digits.
  const Tensor f = xg::tensor({1e4 + 1, 1e4 + 2, 1e4 + 3, 1e4 + 4}, kFloat32);
  CHECK(xg::var(f).item() == doctest::Approx(5.0 / 3.0).epsilon(1e-5));
}

// ---- accuracy: the error bound of docs/ops.md ("Accuracy of reductions"), which depends on the element count
// alone, never on the SIMD width:  |s^ - s| <= u_T |s| (float32: the final rounding) + (n-1) u_d sum|x|.
namespace {
constexpr double kUf = 0x1p-24, kUd = 0x1p-53;

struct Exact {
  long double sum = 0, abs = 0;  // exact enough: 64-bit significand, compensated below
};

// The sum of the stored values (compensated, in long double) and the sum of their magnitudes.
template <class T>
Exact exact_sum(const T* p, std::size_t n, std::size_t stride = 1) {
  Exact e;
  long double c = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const long double v = p[i * stride], t = e.sum + v;
    c += std::fabs(e.sum) >= std::fabs(v) ? (e.sum - t) + v : (v - t) + e.sum;  // Neumaier
    e.sum = t;
    e.abs += std::fabs(v);
  }
  e.sum += c;
  return e;
}

double sum_bound(const Exact& e, std::size_t n, xg::Dtype dt) {
  return (dt == kFloat32 ? kUf * double(std::fabs(e.sum)) : 0.0) + double(n - 1) * kUd * double(e.abs);
}

// Checks xg::sum over every axes variant of a 2-d tensor against the bound, element by element.
template <class T>
void check_sum_bound(const Tensor& x) {
  const Shape s = x.shape();
  const T* p = x.data_ptr<T>();
  const Exact all = exact_sum(p, x.numel());
  CHECK(std::fabs(xg::sum(x).item() - double(all.sum)) <= sum_bound(all, x.numel(), x.dtype()));
  const Tensor c = xg::sum(x, {0}), r = xg::sum(x, {1});
  for (std::size_t j = 0; j < s[1]; ++j) {
    const Exact e = exact_sum(p + j, s[0], s[1]);
    REQUIRE(std::fabs(c.at({j}) - double(e.sum)) <= sum_bound(e, s[0], x.dtype()));
  }
  for (std::size_t i = 0; i < s[0]; ++i) {
    const Exact e = exact_sum(p + i * s[1], s[1]);
    REQUIRE(std::fabs(r.at({i}) - double(e.sum)) <= sum_bound(e, s[1], x.dtype()));
  }
}
}  // namespace

TEST_CASE("sum: error within the documented bound, whichever axis and SIMD width") {
  SUBCASE("1M float32 values of 0.1f: the exact sum of what is stored, rounded once") {
    // 1e6 * 0.1f = 100000.0014901...; a float32 sum of 16 (AVX-512) or 8 (AVX2) running lanes misses by ~0.1.
    const Tensor x = xg::full({1000, 1000}, 0.1, kFloat32);
    const double want = 1e6 * double(0.1f);
    CHECK(xg::sum(x).item() == double(float(want)));
    check_sum_bound<float>(x);
    CHECK(xg::mean(x).item() == doctest::Approx(double(0.1f)).epsilon(3 * kUf));  // two roundings: sum, * 1/n
  }
  SUBCASE("cancellation: a large value, many small ones, and the large value again with the other sign") {
    // float32 accumulation loses every 1 next to 1e8 (its spacing there is 8); double keeps them all.
    for (std::size_t n : {7u, 100u, 5000u, 70000u}) {
      CAPTURE(n);
      std::vector<float> v(n, 1.0f);
      v[1] = 1e8f;
      v[n - 2] = -1e8f;
      const Tensor x = xg::from_vector(v, {1, n});
      CHECK(xg::sum(x).item() == double(n - 2));
      const Tensor t = xg::from_vector(v, {n, 1});
      CHECK(xg::sum(t, {0}).item() == double(n - 2));
    }
  }
  SUBCASE("random values with a large mean, both dtypes, sizes around the block and vector lengths") {
    for (const Shape& s : {Shape{3, 4097}, Shape{4097, 3}, Shape{33, 257}, Shape{1, 100003}, Shape{64, 1}}) {
      CAPTURE(xg::shape_str(s));
      check_sum_bound<float>(xg::add(rnd(s, 51, -1, 1, false).to(kFloat32), xg::scalar(1e4, kFloat32)));
      check_sum_bound<double>(xg::add(rnd(s, 52, -1, 1, false), xg::scalar(1e9, kFloat64)));
    }
  }
}

TEST_CASE("var: float32 with a large mean, within the documented bound") {
  // Two passes: d = x - mean is exact here (Sterbenz: x and the float mean are within a factor 2), d*d rounds
  // once, the sums are within the sum bound, and the result rounds twice more (sum, * 1/(n-1)): docs/ops.md
  // states |var^ - var| <= 4 u_f var + (the mean's error)^2 * n/(n-1) for data like this.
  const Tensor x = xg::add(rnd({10000}, 53, -3, 3, false).to(kFloat32), xg::scalar(1e4, kFloat32));
  const float* p = x.data_ptr<float>();
  long double m = 0;
  for (std::size_t i = 0; i < 10000; ++i) m += p[i];
  m /= 10000;
  long double q = 0;
  for (std::size_t i = 0; i < 10000; ++i) q += (p[i] - m) * (p[i] - m);
  const double want = double(q / 9999);
  const double mean_err = kUf * 1e4 * 2;  // the float mean: two roundings of a value near 1e4
  CHECK(std::fabs(xg::var(x).item() - want) <=
        4 * kUf * want + mean_err * mean_err * 10000.0 / 9999.0 + 10000 * kUd * want);
}

TEST_CASE("sum_to: sums broadcast axes back, gradcheck") {
  const Tensor x = rnd({2, 3, 4}, 36);
  struct C {
    Shape to;
    std::vector<std::size_t> summed;  // axes of x that are summed
  };
  for (const C& c : {C{{3, 4}, {0}}, C{{3, 1}, {0, 2}}, C{{1, 3, 1}, {0, 2}}, C{{}, {0, 1, 2}}, C{{2, 3, 4}, {}},
                     C{{4}, {0, 1}}, C{{1}, {0, 1, 2}}}) {
    CAPTURE(xg::shape_str(c.to));
    check_values(xg::sum_to(x, c.to), c.to,
                 ref_reduce(x, c.summed, 0.0, [](double a, double v) { return a + v; }), 1e-13);
    check_grad("sum_to", [&](auto& in) { return xg::sum_to(in[0], c.to); }, {x});
  }
  CHECK(xg::sum_to(x, {2, 3, 4}).impl() == x.impl());  // nothing to sum: the same tensor
}

namespace {
// Softmax family along one axis as loops over the other axes.
std::vector<double> ref_softmax(const Tensor& x, std::size_t axis, int kind /*0 softmax, 1 log_softmax*/) {
  const Shape s = x.shape();
  const auto st = strides_of(s);
  const auto v = x.to_vector();
  std::vector<double> out(v.size());
  for (std::size_t k = 0; k < v.size(); ++k) {
    const auto idx = unravel(k, s);
    const std::size_t base = k - idx[axis] * st[axis];
    double mx = -INFINITY;
    for (std::size_t j = 0; j < s[axis]; ++j) mx = std::max(mx, v[base + j * st[axis]]);
    double z = 0;
    for (std::size_t j = 0; j < s[axis]; ++j) z += std::exp(v[base + j * st[axis]] - mx);
    out[k] = kind == 0 ? std::exp(v[k] - mx) / z : v[k] - mx - std::log(z);
  }
  return out;
}
}  // namespace

TEST_CASE("softmax and log_softmax: values along each axis (negative too), stability, gradcheck") {
  const Tensor x = rnd({2, 3, 4}, 37, -3, 3);
  for (int axis : {0, 1, 2, -1, -2}) {
    CAPTURE(axis);
    const std::size_t a = static_cast<std::size_t>(axis < 0 ? axis + 3 : axis);
    check_values(xg::softmax(x, axis), {2, 3, 4}, ref_softmax(x, a, 0), 1e-13);
    check_values(xg::log_softmax(x, axis), {2, 3, 4}, ref_softmax(x, a, 1), 1e-13);
    check_grad("softmax", [&](auto& in) { return xg::softmax(in[0], axis); }, {x});
    check_grad("log_softmax", [&](auto& in) { return xg::log_softmax(in[0], axis); }, {x});
  }
  check_grad("softmax", [](auto& in) { return in[0].softmax(-1); }, {rnd({1, 1}, 38)});
  check_grad("log_softmax", [](auto& in) { return in[0].log_softmax(0); }, {rnd({3}, 39)});
  // Huge logits: subtracting the max keeps exp() finite.
  const Tensor big = xg::tensor({1000.0, 1001.0, 1002.0}, kFloat32);
  const auto p = xg::softmax(big, 0).to_vector();
  const double z = 1 + std::exp(-1.0) + std::exp(-2.0);
  CHECK(p[2] == doctest::Approx(1 / z).epsilon(1e-6));
  CHECK(p[0] == doctest::Approx(std::exp(-2.0) / z).epsilon(1e-5));
  CHECK(xg::log_softmax(big, 0).at({0}) == doctest::Approx(-2 - std::log(z)).epsilon(1e-5));
  CHECK_FALSE(xg::has_nonfinite(xg::log_softmax(xg::tensor({-1e30, 0.0, 1e30}), 0)));
}

TEST_CASE("logsumexp: values over axes with keepdim, -inf slices, gradcheck") {
  for (const auto& c : kAxes)
    for (bool keep : {false, true}) {
      CAPTURE(xg::shape_str(c.shape));
      CAPTURE(c.axes.size());
      CAPTURE(keep);
      const Tensor x = rnd(c.shape, 40, -3, 3);
      const auto sumexp = ref_reduce(x, c.normalized, 0.0, [](double a, double v) { return a + std::exp(v); });
      std::vector<double> want;
      for (double s : sumexp) want.push_back(std::log(s));
      Shape os;
      ref_reduce(x, c.normalized, 0.0, [](double a, double) { return a; }, &os);
      check_values(xg::logsumexp(x, c.axes, keep), keep ? keep_shape(c.shape, c.normalized) : os, want, 1e-13);
      check_grad("logsumexp", [&](auto& in) { return xg::logsumexp(in[0], c.axes, keep); }, {x});
    }
  // Stable for large values; an all -inf slice gives -inf (not NaN), as in PyTorch.
  CHECK(xg::logsumexp(xg::tensor({1000.0, 1000.0}, kFloat64), {0}).item() ==
        doctest::Approx(1000 + std::log(2.0)).epsilon(1e-14));
  const double inf = std::numeric_limits<double>::infinity();
  const Tensor r = xg::logsumexp(xg::from_vector({-inf, -inf, 0.0, 1.0}, {2, 2}, kFloat64), {1});
  CHECK(r.at({0}) == -inf);
  CHECK(r.at({1}) == doctest::Approx(std::log(1 + std::exp(1.0))).epsilon(1e-14));
  check_grad("logsumexp", [](auto& in) { return in[0].logsumexp({-1}, true); }, {rnd({2, 2}, 41)});
}
