// Gradient clipping: clip_grad_norm_ (2, 1, p and inf norms) and clip_grad_value_, against values computed here.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "xgrad/xgrad.h"

using namespace xg;
using namespace xg::optim;

namespace {
// Two parameters with gradients {3, -4} and {{12}, {0}}, plus one without a gradient.
struct Grads {
  Tensor a, b, c;
  std::vector<Tensor> params() const { return {a, b, c}; }
  explicit Grads(Dtype d) {
    a = zeros({2}, d, true);
    b = zeros({2, 1}, d, true);
    c = zeros({3}, d, true);
    a.set_grad(from_vector(std::vector<double>{3, -4}, {2}, d));
    b.set_grad(from_vector(std::vector<double>{12, 0}, {2, 1}, d));
  }
};
}  // namespace

TEST_CASE("clip_grad_norm_ with the 2-norm") {
  for (Dtype d : {kFloat32, kFloat64}) {
    INFO(dtype_name(d));
    Grads g(d);
    const double total = clip_grad_norm_(g.params(), 6.5);
    CHECK(total == doctest::Approx(13.0).epsilon(1e-12));  // sqrt(9 + 16 + 144)
    const double coef = 6.5 / (13.0 + 1e-6);
    const double tol = d == kFloat32 ? 1e-6 : 1e-14;
    CHECK(g.a.grad().at({0}) == doctest::Approx(3 * coef).epsilon(tol));
    CHECK(g.a.grad().at({1}) == doctest::Approx(-4 * coef).epsilon(tol));
    CHECK(g.b.grad().at({0, 0}) == doctest::Approx(12 * coef).epsilon(tol));
    CHECK_FALSE(g.c.grad().defined());  // skipped, not created
  }
}

TEST_CASE("clip_grad_norm_ leaves gradients alone when the norm is below max_norm") {
  Grads g(kFloat32);
  CHECK(clip_grad_norm_(g.params(), 13.0 + 1e-3) == doctest::Approx(13.0));
  CHECK(g.a.grad().to_vector() == std::vector<double>{3, -4});
  CHECK(g.b.grad().to_vector() == std::vector<double>{12, 0});
}

TEST_CASE("clip_grad_norm_ with other norms") {
  SUBCASE("inf: the largest absolute value") {
    Grads g(kFloat64);
    CHECK(clip_grad_norm_(g.params(), 6.0, INFINITY) == 12.0);
    CHECK(g.b.grad().at({0, 0}) == doctest::Approx(12 * 6.0 / (12.0 + 1e-6)).epsilon(1e-14));
  }
  SUBCASE("1-norm") {
    Grads g(kFloat64);
    CHECK(clip_grad_norm_(g.params(), 100.0, 1.0) == 19.0);
  }
  SUBCASE("3-norm") {
    Grads g(kFloat64);
    const double want = std::cbrt(27.0 + 64.0 + 1728.0);
    CHECK(clip_grad_norm_(g.params(), 1.0, 3.0) == doctest::Approx(want).epsilon(1e-14));
    CHECK(g.a.grad().at({0}) == doctest::Approx(3.0 / (want + 1e-6)).epsilon(1e-14));
  }
  SUBCASE("no gradients at all: norm 0") {
    auto w = ones({2}, kFloat32, true);
    CHECK(clip_grad_norm_({w}, 1.0) == 0.0);
  }
}

TEST_CASE("clip_grad_norm_ with non-finite gradients") {
  SUBCASE("NaN: reported as the norm, and (as in PyTorch 1.13) every gradient becomes NaN") {
    Grads g(kFloat32);
    g.b.grad().set({1, 0}, std::nan(""));
    CHECK(std::isnan(clip_grad_norm_(g.params(), 1.0)));
    CHECK(std::isnan(g.a.grad().at({0})));
  }
  SUBCASE("Inf: coefficient 0, so finite gradients become 0") {
    Grads g(kFloat64);
    g.b.grad().set({1, 0}, INFINITY);
    CHECK(std::isinf(clip_grad_norm_(g.params(), 1.0)));
    CHECK(g.a.grad().to_vector() == std::vector<double>{0, 0});
  }
  SUBCASE("error_if_nonfinite throws and leaves the gradients untouched") {
    Grads g(kFloat32);
    g.b.grad().set({1, 0}, INFINITY);
    CHECK_THROWS_WITH_AS(clip_grad_norm_(g.params(), 1.0, 2.0, /*error_if_nonfinite=*/true),
                         doctest::Contains("clip_grad_norm_: the total norm (order 2) of the gradients is inf"), Error);
    CHECK(g.a.grad().to_vector() == std::vector<double>{3, -4});
  }
}

TEST_CASE("clip_grad_norm_ argument errors") {
  Grads g(kFloat32);
  CHECK_THROWS_WITH_AS(clip_grad_norm_(g.params(), -1.0), doctest::Contains("max_norm must be >= 0, got -1"), Error);
  CHECK_THROWS_WITH_AS(clip_grad_norm_(g.params(), 1.0, 0.0), doctest::Contains("norm_type must be > 0 or infinity"),
                       Error);
  CHECK_THROWS_WITH_AS(clip_grad_norm_({Tensor()}, 1.0), doctest::Contains("parameter 0 is an undefined Tensor"),
                       Error);
}

TEST_CASE("clip_grad_value_ clamps every element") {
  Grads g(kFloat32);
  g.b.grad().set({1, 0}, std::nan(""));
  clip_grad_value_(g.params(), 3.5);
  CHECK(g.a.grad().to_vector() == std::vector<double>{3, -3.5});
  CHECK(g.b.grad().at({0, 0}) == 3.5);
  CHECK(std::isnan(g.b.grad().at({1, 0})));  // NaN stays NaN, like torch.clamp
  CHECK_THROWS_WITH_AS(clip_grad_value_(g.params(), -1.0), doctest::Contains("clip_value must be >= 0, got -1"), Error);
}

TEST_CASE("clipping before the optimizer step") {
  auto w = from_vector(std::vector<double>{0, 0}, {2}, kFloat64, true);
  SGD opt({w}, SGDOptions(1.0));
  (w * from_vector(std::vector<double>{30, 40}, {2}, kFloat64)).sum().backward();  // gradient (30, 40), norm 50
  CHECK(clip_grad_norm_(opt.parameters(), 5.0) == doctest::Approx(50.0));
  opt.step();
  CHECK(w.at({0}) == doctest::Approx(-3.0).epsilon(1e-6));
  CHECK(w.at({1}) == doctest::Approx(-4.0).epsilon(1e-6));
}
