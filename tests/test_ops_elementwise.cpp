// Elementwise ops: values against plain-loop references (with numpy broadcasting), gradchecks in float64 with
// broadcast and edge shapes, the special points of the non-smooth ops, and the activations.
#include <cmath>
#include <limits>

#include "testing.h"

using namespace xgt;
using xg::kFloat32;
using xg::kFloat64;

namespace {

// Shape pairs every binary op is tested on: equal, broadcast both ways, 0-d scalar on either side, size-1 axes,
// and one side varying along one block of axes (the per-channel / row / column fast path) on either side.
const std::vector<std::pair<Shape, Shape>> kShapePairs = {
    {{2, 3}, {2, 3}},       {{3, 1, 4}, {2, 4}}, {{}, {2, 3}}, {{2, 3}, {}},    {{1, 1}, {3}},
    {{4, 1}, {1, 5}},       {{1}, {}},           {{}, {}},     {{2, 1, 3}, {1}}, {{1, 3}, {2, 1, 1}},
    {{2, 3, 2, 2}, {1, 3, 1, 1}}, {{3, 1, 1}, {2, 3, 2, 2}},  {{4, 3}, {3}},   {{3}, {4, 3}},  {{4, 3}, {4, 1}},
    {{2, 3, 4}, {3, 4}},    {{2, 3, 1}, {2, 3, 4}},           {{1, 3}, {2, 3}}, {{2, 1, 3}, {2, 4, 3}},
};

struct BinaryCase {
  const char* name;
  std::function<Tensor(const Tensor&, const Tensor&)> op;
  std::function<double(double, double)> ref;
  bool positive_a = false;  // pow needs a > 0
  bool nonzero_b = false;   // div needs b away from 0
};

const std::vector<BinaryCase> kBinary = {
    {"add", [](auto& a, auto& b) { return xg::add(a, b); }, [](double x, double y) { return x + y; }},
    {"sub", [](auto& a, auto& b) { return xg::sub(a, b); }, [](double x, double y) { return x - y; }},
    {"mul", [](auto& a, auto& b) { return xg::mul(a, b); }, [](double x, double y) { return x * y; }},
    {"div", [](auto& a, auto& b) { return xg::div(a, b); }, [](double x, double y) { return x / y; }, false, true},
    {"maximum", [](auto& a, auto& b) { return xg::maximum(a, b); },
     [](double x, double y) { return x > y ? x : y; }},
    {"minimum", [](auto& a, auto& b) { return xg::minimum(a, b); },
     [](double x, double y) { return x < y ? x : y; }},
    {"pow", [](auto& a, auto& b) { return xg::pow(a, b); }, [](double x, double y) { return std::pow(x, y); },
     true},
};

Tensor operand(const BinaryCase& c, const Shape& s, std::uint64_t seed, bool is_a) {
  if (is_a && c.positive_a) return rnd(s, seed, 0.5, 2.0);
  if (!is_a && c.nonzero_b) return rnd_away(s, seed);
  return rnd(s, seed, -2.0, 2.0);
}

}  // namespace

TEST_CASE("binary ops: values match a plain-loop broadcast reference, float64 and float32") {
  for (const auto& c : kBinary)
    for (const auto& [sa, sb] : kShapePairs) {
      CAPTURE(c.name);
      CAPTURE(xg::shape_str(sa));
      CAPTURE(xg::shape_str(sb));
      const Tensor a = operand(c, sa, 1, true), b = operand(c, sb, 2, false);
      Shape os;
      const auto want = ref_binary(a, b, c.ref, &os);
      check_values(c.op(a, b), os, want, 1e-14);
      // float32: same inputs rounded to float; reference in double on the rounded inputs.
      const Tensor af = a.detach().to(kFloat32), bf = b.detach().to(kFloat32);
      const Tensor yf = c.op(af, bf);
      CHECK(yf.dtype() == kFloat32);
      check_values(yf, os, ref_binary(af, bf, c.ref), 1e-6);
    }
}

TEST_CASE("binary ops: gradcheck with broadcast shapes, 0-d scalars and size-1 axes") {
  for (const auto& c : kBinary)
    for (const auto& [sa, sb] : kShapePairs) {
      CAPTURE(xg::shape_str(sa));
      CAPTURE(xg::shape_str(sb));
      const Tensor a = operand(c, sa, 3, true), b = operand(c, sb, 4, false);
      check_grad(c.name, [&](const std::vector<Tensor>& in) { return c.op(in[0], in[1]); }, {a, b});
    }
}

TEST_CASE("maximum, minimum and pow(tensor, tensor): gradcheck through the free functions") {
  const Tensor a = rnd({2, 3}, 24, 0.5, 2.0), b = rnd({3}, 25, -1, 1);
  check_grad("maximum", [](auto& in) { return xg::maximum(in[0], in[1]); }, {a, b});
  check_grad("minimum", [](auto& in) { return xg::minimum(in[0], in[1]); }, {a, b});
  check_grad("pow", [](auto& in) { return xg::pow(in[0], in[1]); }, {a, b});
  // Only the exponent requires grad (d a^b / db = a^b·log a), and only the base.
  check_grad("pow", [&](auto& in) { return xg::pow(a.detach(), in[0]); }, {b});
  check_grad("pow", [&](auto& in) { return xg::pow(in[0], b.detach()); }, {a});
}

TEST_CASE("binary ops: only the inputs that require grad get one") {
  Tensor a = rnd({2, 3}, 5), b = rnd({3}, 6, -1, 1, /*grad=*/false);
  xg::mul(a, b).sum().backward();
  CHECK(a.grad().defined());
  CHECK_FALSE(b.grad().defined());
  // d/da sum(a*b) = b broadcast over the rows
  std::vector<double> want;
  for (int r = 0; r < 2; ++r)
    for (int j = 0; j < 3; ++j) want.push_back(b.at({j}));
  check_values(a.grad(), {2, 3}, want);
}

TEST_CASE("operators with doubles keep the tensor's dtype and match the loop") {
  for (auto dt : {kFloat32, kFloat64}) {
    const Tensor x = rnd_away({2, 2}, 7, false).to(dt);
    const auto v = x.to_vector();
    auto expect = [&](const Tensor& y, const std::function<double(double)>& f) {
      CHECK(y.dtype() == dt);
      std::vector<double> w;
      for (double e : v) w.push_back(f(e));
      check_values(y, {2, 2}, w, dt == kFloat32 ? 1e-6 : 1e-15);
    };
    expect(x + 2.5, [](double e) { return e + 2.5; });
    expect(2.5 + x, [](double e) { return 2.5 + e; });
    expect(x - 2.5, [](double e) { return e - 2.5; });
    expect(2.5 - x, [](double e) { return 2.5 - e; });
    expect(x * 3.0, [](double e) { return e * 3.0; });
    expect(3.0 * x, [](double e) { return 3.0 * e; });
    expect(x / 4.0, [](double e) { return e / 4.0; });
    expect(4.0 / x, [](double e) { return 4.0 / e; });
    expect(-x, [](double e) { return -e; });
    expect(x + x, [](double e) { return e + e; });
    expect(x - x * x / x, [](double e) { return e - e * e / e; });
  }
}

TEST_CASE("operators with doubles: gradcheck") {
  const Tensor x = rnd_away({3}, 8);
  check_grad("add", [](auto& in) { return in[0] + 2.5; }, {x});
  check_grad("add", [](auto& in) { return 2.5 + in[0]; }, {x});
  check_grad("sub", [](auto& in) { return in[0] - 2.5; }, {x});
  check_grad("sub", [](auto& in) { return 2.5 - in[0]; }, {x});
  check_grad("mul", [](auto& in) { return in[0] * 3.0; }, {x});
  check_grad("mul", [](auto& in) { return 3.0 * in[0]; }, {x});
  check_grad("div", [](auto& in) { return in[0] / 4.0; }, {x});
  check_grad("div", [](auto& in) { return 4.0 / in[0]; }, {x});
  check_grad("neg", [](auto& in) { return -in[0]; }, {x});
}

namespace {
struct UnaryCase {
  const char* name;
  std::function<Tensor(const Tensor&)> op;
  std::function<double(double)> ref;
  double lo, hi;  // input range (away from kinks and outside the domain)
};

const std::vector<UnaryCase> kUnary = {
    {"neg", [](auto& x) { return xg::neg(x); }, [](double v) { return -v; }, -2, 2},
    {"pow", [](auto& x) { return xg::pow(x, 2.0); }, [](double v) { return v * v; }, -2, 2},
    {"pow", [](auto& x) { return xg::pow(x, 3.0); }, [](double v) { return v * v * v; }, -2, 2},
    {"pow", [](auto& x) { return xg::pow(x, 0.5); }, [](double v) { return std::sqrt(v); }, 0.2, 2},
    {"pow", [](auto& x) { return xg::pow(x, -1.5); }, [](double v) { return 1 / (v * std::sqrt(v)); }, 0.2, 2},
    {"pow", [](auto& x) { return x.pow(0.0); }, [](double) { return 1.0; }, -2, 2},
    {"exp", [](auto& x) { return xg::exp(x); }, [](double v) { return std::exp(v); }, -3, 3},
    {"log", [](auto& x) { return xg::log(x); }, [](double v) { return std::log(v); }, 0.1, 3},
    {"sqrt", [](auto& x) { return xg::sqrt(x); }, [](double v) { return std::sqrt(v); }, 0.1, 3},
    {"rsqrt", [](auto& x) { return xg::rsqrt(x); }, [](double v) { return 1 / std::sqrt(v); }, 0.1, 3},
    {"sigmoid", [](auto& x) { return xg::sigmoid(x); }, [](double v) { return 1 / (1 + std::exp(-v)); }, -4, 4},
    {"tanh", [](auto& x) { return xg::tanh(x); },
     [](double v) { return (std::exp(v) - std::exp(-v)) / (std::exp(v) + std::exp(-v)); }, -3, 3},
};
}  // namespace

TEST_CASE("unary ops: values against the C library, float64 and float32, on edge shapes") {
  for (const auto& c : kUnary)
    for (const Shape& s : {Shape{2, 3}, Shape{}, Shape{1, 1}, Shape{4, 1, 2}}) {
      CAPTURE(c.name);
      CAPTURE(xg::shape_str(s));
      const Tensor x = rnd(s, 11, c.lo, c.hi, false);
      std::vector<double> want;
      for (double v : x.to_vector()) want.push_back(c.ref(v));
      check_values(c.op(x), s, want, 1e-13);
      const Tensor xf = x.to(kFloat32);
      std::vector<double> wantf;
      for (double v : xf.to_vector()) wantf.push_back(c.ref(v));
      check_values(c.op(xf), s, wantf, 1e-5);
    }
}

TEST_CASE("unary ops: gradcheck on [2,3], 0-d and [1,1]") {
  for (const auto& c : kUnary)
    for (const Shape& s : {Shape{2, 3}, Shape{}, Shape{1, 1}}) {
      CAPTURE(xg::shape_str(s));
      check_grad(c.name, [&](auto& in) { return c.op(in[0]); }, {rnd(s, 12, c.lo, c.hi)});
    }
  // The methods forward to the same ops.
  const Tensor x = rnd({3}, 13, 0.2, 2.0);
  check_grad("exp", [](auto& in) { return in[0].exp(); }, {x});
  check_grad("log", [](auto& in) { return in[0].log(); }, {x});
  check_grad("sqrt", [](auto& in) { return in[0].sqrt(); }, {x});
  check_grad("rsqrt", [](auto& in) { return in[0].rsqrt(); }, {x});
  check_grad("sigmoid", [](auto& in) { return in[0].sigmoid(); }, {x});
  check_grad("tanh", [](auto& in) { return in[0].tanh(); }, {x});
}

TEST_CASE("abs, relu and clamp: values, gradcheck away from the kinks, PyTorch's subgradient at them") {
  const Tensor x = rnd_away({2, 4}, 14);
  std::vector<double> wabs, wrelu, wclamp, wmin, wmax;
  for (double v : x.to_vector()) {
    wabs.push_back(std::fabs(v));
    wrelu.push_back(v > 0 ? v : 0);
    wclamp.push_back(std::min(std::max(v, -0.5), 0.7));
    wmin.push_back(std::max(v, -0.5));
    wmax.push_back(std::min(v, 0.7));
  }
  check_values(xg::abs(x), {2, 4}, wabs);
  check_values(xg::relu(x), {2, 4}, wrelu);
  for (double v : xg::relu(x).to_vector()) CHECK_FALSE(std::signbit(v));  // +0 for negative inputs, not -0
  check_values(x.relu(), {2, 4}, wrelu);
  check_values(xg::clamp(x, -0.5, 0.7), {2, 4}, wclamp);
  check_values(xg::clamp(x, -0.5, std::nullopt), {2, 4}, wmin);
  check_values(x.clamp(std::nullopt, 0.7), {2, 4}, wmax);

  check_grad("abs", [](auto& in) { return xg::abs(in[0]); }, {x});
  check_grad("abs", [](auto& in) { return in[0].abs(); }, {rnd_away({}, 15)});
  check_grad("relu", [](auto& in) { return xg::relu(in[0]); }, {x});
  check_grad("relu", [](auto& in) { return xg::relu(in[0]); }, {rnd_away({1, 1}, 16)});
  // Clamp bounds chosen so that no element of x lies within 1e-6 of them.
  check_grad("clamp", [](auto& in) { return xg::clamp(in[0], -0.5, 0.7); }, {x});
  check_grad("clamp", [](auto& in) { return xg::clamp(in[0], -0.5, std::nullopt); }, {x});
  check_grad("clamp", [](auto& in) { return in[0].clamp(std::nullopt, 0.7); }, {x});

  // At the kinks: abs'(0) = 0, relu'(0) = 0, clamp passes the gradient at its (inclusive) bounds.
  Tensor k = xg::tensor({0.0, -0.5, 0.7, 2.0}, kFloat64, true);
  xg::abs(k).sum().backward();
  check_values(k.grad(), {4}, {0, -1, 1, 1});
  k.zero_grad();
  xg::relu(k).sum().backward();
  check_values(k.grad(), {4}, {0, 0, 1, 1});
  k.zero_grad();
  xg::clamp(k, -0.5, 0.7).sum().backward();
  check_values(k.grad(), {4}, {1, 1, 1, 0});
}

TEST_CASE("relu: +0 (never -0) for negative inputs and -0, gradient 0 at 0, equal to where(x > 0, x, 0)") {
  for (const auto dtype : {kFloat64, kFloat32}) {
    CAPTURE(dtype);
    Tensor k = xg::tensor({-1.0, -0.0, 0.0, 1e-30, 2.5, -std::numeric_limits<double>::infinity()}, kFloat64)
                   .to(dtype)
                   .requires_grad_(true);
    const Tensor r = xg::relu(k);
    CHECK(r.dtype() == dtype);
    const std::vector<double> v = r.to_vector();
    check_values(r, {6}, {0.0, 0.0, 0.0, dtype == kFloat64 ? 1e-30 : static_cast<double>(1e-30f), 2.5, 0.0});
    for (std::size_t i : {0, 1, 2, 5}) CHECK_FALSE(std::signbit(v[i]));  // relu(-1) = relu(-0) = +0
    (r * xg::arange(6, dtype)).sum().backward();
    check_values(k.grad(), {6}, {0, 0, 0, 3, 4, 0});  // relu'(x) = [x > 0]: 0 at ±0
  }
  // The primitive agrees with the composition docs/ops.md shows, values and gradients (rnd_away: no ties at 0).
  const Tensor x = rnd_away({3, 5}, 21);
  const Tensor w = rnd({3, 5}, 22);
  const Tensor composed = xg::where(xg::gt(x, 0.0), x, xg::scalar(0.0, kFloat64));
  check_values(xg::relu(x), {3, 5}, composed.to_vector(), 0);
  const auto g1 = xg::autograd::grad({(xg::relu(x) * w).sum()}, {x})[0];
  const auto g2 = xg::autograd::grad({(composed * w).sum()}, {x})[0];
  check_values(g1, {3, 5}, g2.to_vector(), 0);
  CHECK_THROWS_WITH_AS(xg::relu(Tensor()), doctest::Contains("relu: the input is undefined"), xg::Error);
  // NaN propagates (PyTorch: relu(nan) = nan) with gradient 0 (threshold_backward masks it).
  Tensor n = xg::tensor({std::nan(""), 1.0, -1.0}, kFloat64, true);
  const std::vector<double> nv = xg::relu(n).to_vector();
  CHECK(std::isnan(nv[0]));
  CHECK(nv[1] == 1.0);
  CHECK(nv[2] == 0.0);
  xg::relu(n).sum().backward();
  check_values(n.grad(), {3}, {0, 1, 0});
}

TEST_CASE("maximum/minimum split the gradient evenly on ties") {
  Tensor a = xg::tensor({1.0, 2.0, 3.0}, kFloat64, true);
  Tensor b = xg::tensor({1.0, 5.0, 0.0}, kFloat64, true);
  xg::maximum(a, b).sum().backward();
  check_values(a.grad(), {3}, {0.5, 0, 1});
  check_values(b.grad(), {3}, {0.5, 1, 0});
  a.zero_grad();
  b.zero_grad();
  xg::minimum(a, b).sum().backward();
  check_values(a.grad(), {3}, {0.5, 1, 0});
  check_values(b.grad(), {3}, {0.5, 0, 1});
}

TEST_CASE("maximum/minimum propagate NaN like PyTorch") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Tensor a = xg::tensor({nan, 1.0}), b = xg::tensor({0.0, nan});
  const auto mx = xg::maximum(a, b).to_vector(), mn = xg::minimum(a, b).to_vector();
  CHECK(std::isnan(mx[0]));
  CHECK(std::isnan(mx[1]));
  CHECK(std::isnan(mn[0]));
  CHECK(std::isnan(mn[1]));
}

TEST_CASE("sigmoid and tanh: stable at large |x|, and equal to their composed forms with gradients") {
  const Tensor big = xg::tensor({-1000.0, -50.0, 0.0, 50.0, 1000.0}, kFloat64, true);
  const Tensor s = xg::sigmoid(big);
  check_values(s, {5}, {0.0, 1 / (1 + std::exp(50.0)), 0.5, 1 / (1 + std::exp(-50.0)), 1.0}, 1e-15);
  s.sum().backward();
  CHECK_FALSE(xg::has_nonfinite(big.grad()));
  const Tensor t = xg::tanh(big.detach());
  check_values(t, {5}, {-1.0, -1.0, 0.0, 1.0, 1.0}, 1e-15);
  CHECK_FALSE(xg::has_nonfinite(t));

  // The closed-form primitives agree with the compositions docs/ops.md shows (values and gradients).
  const Tensor x = rnd({7}, 17, -3, 3);
  auto compare = [&](const std::function<Tensor(const Tensor&)>& fused,
                     const std::function<Tensor(const Tensor&)>& composed) {
    const auto g1 = xg::autograd::grad({(fused(x) * xg::arange(7, kFloat64)).sum()}, {x})[0];
    const auto g2 = xg::autograd::grad({(composed(x) * xg::arange(7, kFloat64)).sum()}, {x})[0];
    check_values(fused(x), {7}, composed(x).to_vector(), 1e-14);
    check_values(g1, {7}, g2.to_vector(), 1e-13);
  };
  compare([](auto& v) { return xg::sigmoid(v); }, [](auto& v) { return 1.0 / (1.0 + xg::exp(-v)); });
  compare([](auto& v) { return xg::tanh(v); }, [](auto& v) { return 2.0 * xg::sigmoid(2.0 * v) - 1.0; });
}

TEST_CASE("comparisons: 1/0 masks in the input dtype, broadcasting, never differentiable") {
  const Tensor a = xg::tensor({{1, 2, 3}, {4, 5, 6}}, kFloat64, true);
  const Tensor b = xg::tensor({3, 2, 1}, kFloat64);
  struct Cmp {
    Tensor got;
    std::function<double(double, double)> ref;
  };
  const std::vector<Cmp> cases = {
      {xg::eq(a, b), [](double x, double y) { return double(x == y); }},
      {xg::ne(a, b), [](double x, double y) { return double(x != y); }},
      {xg::lt(a, b), [](double x, double y) { return double(x < y); }},
      {xg::le(a, b), [](double x, double y) { return double(x <= y); }},
      {xg::gt(a, b), [](double x, double y) { return double(x > y); }},
      {xg::ge(a, b), [](double x, double y) { return double(x >= y); }},
  };
  for (const auto& c : cases) {
    check_values(c.got, {2, 3}, ref_binary(a, b, c.ref));
    CHECK(c.got.dtype() == xg::kBool);
    CHECK_FALSE(c.got.requires_grad());
    CHECK(c.got.is_leaf());
  }
  check_values(xg::gt(a, 2.5), {2, 3}, {0, 0, 1, 1, 1, 1});
  check_values(xg::lt(a, 2.5), {2, 3}, {1, 1, 0, 0, 0, 0});
  const Tensor f = xg::gt(a.detach().to(kFloat32), 2.5);
  CHECK(f.dtype() == xg::kBool);
}

TEST_CASE("where: values with three-way broadcasting, gradcheck in a and b") {
  const Tensor cond = xg::from_vector({1.0, 0.0}, {2, 1}, xg::kBool);
  const Tensor a = rnd({2, 3}, 18), b = rnd({3}, 19);
  const Tensor y = xg::where(cond, a, b);
  std::vector<double> want;
  for (int r = 0; r < 2; ++r)
    for (int j = 0; j < 3; ++j) want.push_back(r == 0 ? a.at({r, j}) : b.at({j}));
  check_values(y, {2, 3}, want);
  check_grad("where", [&](auto& in) { return xg::where(cond, in[0], in[1]); }, {a, b});
  check_grad("where", [&](auto& in) { return xg::where(xg::gt(in[0], 0.0), in[0], in[1]); },
             {rnd_away({2, 3}, 20), rnd({}, 21)});
  // The broadcast output is [2,3] even though a alone is [2,1]: the shape comes from all three inputs.
  const Tensor y2 = xg::where(xg::tensor({1, 0, 1}, xg::kBool), rnd({2, 1}, 22, -1, 1, false), xg::scalar(7, kFloat64));
  CHECK(y2.shape() == Shape{2, 3});
}

TEST_CASE("has_nonfinite") {
  CHECK_FALSE(xg::has_nonfinite(xg::tensor({1, 2, 3})));
  CHECK(xg::has_nonfinite(xg::tensor({1, std::numeric_limits<double>::infinity()})));
  CHECK(xg::has_nonfinite(xg::log(xg::tensor({-1.0}))));
  CHECK_FALSE(xg::has_nonfinite(xg::zeros({0})));
}

TEST_CASE("to(dtype) and clone are differentiable") {
  const Tensor x = rnd({2, 2}, 23);
  // float32 in the middle: finite differences need a larger step; the op is linear so the step is exact.
  xg::GradcheckOptions o;
  o.eps = 1e-3;
  o.atol = 1e-3;
  check_grad("to", [](auto& in) { return in[0].to(kFloat32).to(kFloat64) * 3.0; }, {x}, o);
  check_grad("clone", [](auto& in) { return in[0].clone() * in[0]; }, {x});
  const Tensor c = x.clone();
  CHECK(c.grad_fn()->name == "clone");
  CHECK(c.data_ptr<double>() != x.data_ptr<double>());
  CHECK(x.to(kFloat32).grad_fn()->name == "to");
  CHECK(x.to(kFloat64).impl() == x.impl());  // same dtype: the same tensor, nothing recorded
}
