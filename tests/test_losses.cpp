// Losses against references computed here in double (log-sum-exp written out), gradients against the
// closed forms, gradchecks, and every error.
#include <doctest/doctest.h>

#include <cmath>

#include "xgrad/xgrad.h"

namespace nn = xg::nn;
namespace F = xg::nn::functional;
using xg::Shape;
using xg::Tensor;
using R = xg::nn::Reduction;

namespace {

Tensor rnd(const Shape& s, xg::Dtype dt, std::uint64_t seed, double scale = 1.0) {
  xg::Generator g(seed);
  return xg::normal(s, 0.0, scale, dt, &g).requires_grad_();
}

// -log softmax(z)[t] = log Σ exp(z) - z[t], with the max shifted out, in double.
double ce_ref(const std::vector<double>& z, std::size_t t) {
  double m = z[0];
  for (double v : z) m = std::max(m, v);
  double s = 0;
  for (double v : z) s += std::exp(v - m);
  return m + std::log(s) - z[t];
}

}  // namespace

TEST_CASE("cross_entropy matches log-sum-exp per row, for every reduction, and its gradient is softmax - onehot") {
  const std::size_t N = 6, C = 5;
  const std::vector<std::size_t> target{0, 4, 2, 2, 1, 3};
  for (auto dt : {xg::kFloat32, xg::kFloat64}) {
    Tensor z = rnd({N, C}, dt, 1, 3.0);
    std::vector<double> per(N);
    std::vector<double> rows = z.to_vector();
    for (std::size_t n = 0; n < N; ++n) per[n] = ce_ref({rows.begin() + n * C, rows.begin() + (n + 1) * C}, target[n]);
    double total = 0;
    for (double v : per) total += v;
    const double tol = dt == xg::kFloat32 ? 1e-5 : 1e-12;
    CHECK(F::cross_entropy(z, target, R::Sum).item() == doctest::Approx(total).epsilon(tol));
    const auto none = F::cross_entropy(z, target, R::None);
    CHECK(none.shape() == Shape{N});
    for (std::size_t n = 0; n < N; ++n) CHECK(none.to_vector()[n] == doctest::Approx(per[n]).epsilon(tol));
    Tensor loss = F::cross_entropy(z, target);
    CHECK(loss.item() == doctest::Approx(total / N).epsilon(tol));
    loss.backward();
    // d mean_n CE / d z[n,c] = (softmax(z_n)[c] - [c == t_n]) / N
    const auto g = z.grad().to_vector();
    for (std::size_t n = 0; n < N; ++n) {
      double m = -1e300, s = 0;
      for (std::size_t c = 0; c < C; ++c) m = std::max(m, rows[n * C + c]);
      for (std::size_t c = 0; c < C; ++c) s += std::exp(rows[n * C + c] - m);
      for (std::size_t c = 0; c < C; ++c) {
        const double want = (std::exp(rows[n * C + c] - m) / s - (c == target[n] ? 1.0 : 0.0)) / double(N);
        CHECK(g[n * C + c] == doctest::Approx(want).epsilon(tol).scale(1.0));
      }
    }
  }
}

TEST_CASE("cross_entropy is stable for huge logits and accepts a Tensor of class indices") {
  Tensor z = xg::tensor({{1e4, -1e4, 0.0}, {500.0, 500.0, -3000.0}}, xg::kFloat32, true);
  Tensor loss = F::cross_entropy(z, xg::tensor({1, 0}), R::None);
  const auto v = loss.to_vector();
  CHECK(v[0] == doctest::Approx(2e4));  // log(e^1e4 + ...) - (-1e4)
  CHECK(v[1] == doctest::Approx(std::log(2.0)));
  loss.sum().backward();
  for (double g : z.grad().to_vector()) CHECK(std::isfinite(g));
  // the Tensor and the vector forms agree; the module forms too
  Tensor z2 = rnd({4, 3}, xg::kFloat32, 2);
  const double a = F::cross_entropy(z2, std::vector<std::size_t>{2, 0, 1, 1}).item();
  CHECK(F::cross_entropy(z2, xg::tensor({2, 0, 1, 1})).item() == a);
  CHECK(nn::CrossEntropyLoss().forward(z2, xg::tensor({2, 0, 1, 1})).item() == a);
  CHECK(nn::CrossEntropyLoss(nn::LossOptions().reduction(R::Sum)).forward(z2, {2, 0, 1, 1}).item() ==
        doctest::Approx(4 * a));
}

TEST_CASE("cross_entropy over extra axes [N, C, d] and a single sample [C]") {
  Tensor z = rnd({2, 3, 4}, xg::kFloat64, 3);
  Tensor t = xg::tensor({{0, 2, 1, 1}, {2, 2, 0, 1}});
  const auto zv = z.to_vector();
  double total = 0;
  for (std::size_t n = 0; n < 2; ++n)
    for (std::size_t d = 0; d < 4; ++d) {
      std::vector<double> col;
      for (std::size_t c = 0; c < 3; ++c) col.push_back(zv[(n * 3 + c) * 4 + d]);
      total += ce_ref(col, std::size_t(t.at({std::ptrdiff_t(n), std::ptrdiff_t(d)})));
    }
  CHECK(F::cross_entropy(z, t).item() == doctest::Approx(total / 8).epsilon(1e-12));
  CHECK(F::cross_entropy(z, t, R::None).shape() == Shape{2, 4});
  Tensor one = xg::tensor({0.5, -1.0, 2.0}, xg::kFloat64);
  CHECK(F::cross_entropy(one, xg::scalar(2.0)).item() == doctest::Approx(ce_ref({0.5, -1.0, 2.0}, 2)).epsilon(1e-12));
  std::vector<Tensor> in{z};
  CHECK(xg::gradcheck([&](const std::vector<Tensor>& v) { return F::cross_entropy(v[0], t, R::None); }, in).ok);
}

TEST_CASE("gradcheck: losses and their modules") {
  std::vector<Tensor> in{rnd({4, 5}, xg::kFloat64, 4)};
  const std::vector<std::size_t> t{1, 0, 4, 4};
  for (auto r : {R::Mean, R::Sum, R::None}) {
    CHECK(xg::gradcheck(
              [&](const std::vector<Tensor>& v) {
                return nn::CrossEntropyLoss(nn::LossOptions().reduction(r)).forward(v[0], t);
              },
              in)
              .ok);
    CHECK(
        xg::gradcheck(
            [&](const std::vector<Tensor>& v) { return nn::NLLLoss(nn::LossOptions().reduction(r)).forward(v[0], t); },
            in)
            .ok);
  }
  std::vector<Tensor> two{rnd({3, 4}, xg::kFloat64, 5), rnd({3, 4}, xg::kFloat64, 6)};
  for (auto r : {R::Mean, R::Sum, R::None})
    CHECK(xg::gradcheck(
              [&](const std::vector<Tensor>& v) {
                return nn::MSELoss(nn::LossOptions().reduction(r)).forward(v[0], v[1]);
              },
              two)
              .ok);
}

TEST_CASE("nll_loss picks -log_probs[i, target_i]") {
  Tensor lp = xg::tensor({{-0.1, -2.0, -3.0}, {-1.5, -0.7, -0.9}}, xg::kFloat64, true);
  CHECK(F::nll_loss(lp, {2, 1}, R::None).to_vector() == std::vector<double>{3.0, 0.7});
  Tensor loss = F::nll_loss(lp, xg::tensor({2, 1}));
  CHECK(loss.item() == doctest::Approx(1.85));
  loss.backward();
  CHECK(lp.grad().to_vector() == std::vector<double>{0, 0, -0.5, 0, -0.5, 0});
}

TEST_CASE("mse_loss is the mean/sum of squared differences") {
  Tensor a = xg::tensor({{1.0, 2.0}, {3.0, -1.0}}, xg::kFloat64, true);
  Tensor b = xg::tensor({{0.5, 2.0}, {1.0, 1.0}}, xg::kFloat64, true);
  // squares: 0.25, 0, 4, 4
  CHECK(F::mse_loss(a, b, R::Sum).item() == doctest::Approx(8.25));
  CHECK(F::mse_loss(a, b, R::None).to_vector() == std::vector<double>{0.25, 0, 4, 4});
  Tensor l = F::mse_loss(a, b);
  CHECK(l.item() == doctest::Approx(8.25 / 4));
  l.backward();
  // d/da = 2(a - b)/4
  CHECK(a.grad().to_vector() == std::vector<double>{0.25, 0.0, 1.0, -1.0});
  CHECK(b.grad().to_vector() == std::vector<double>{-0.25, 0.0, -1.0, 1.0});
}

TEST_CASE("loss errors name the target, its position and the valid range") {
  Tensor z = xg::zeros({3, 4});
  CHECK_THROWS_WITH_AS(
      F::cross_entropy(z, std::vector<std::size_t>{0, 4, 1}),
      doctest::Contains("target 4 at position 1 is out of range for 4 classes (valid class indices are 0..3)"),
      xg::Error);
  CHECK_THROWS_WITH_AS(F::cross_entropy(z, xg::tensor({0, 1, 7})),
                       doctest::Contains("target 7 at position 2 is not a class index in 0..3"), xg::Error);
  CHECK_THROWS_WITH_AS(F::cross_entropy(z, xg::tensor({0, 1.5, 2})),
                       doctest::Contains("target 1.5 at position 1 is not a class index"), xg::Error);
  CHECK_THROWS_WITH_AS(F::cross_entropy(z, xg::tensor({0, -1, 2})), doctest::Contains("target -1 at position 1"),
                       xg::Error);
  CHECK_THROWS_WITH_AS(
      F::cross_entropy(z, xg::tensor({0, 1})),
      doctest::Contains("target of shape [2] does not match the input: expected class indices of shape [3]"),
      xg::Error);
  CHECK_THROWS_WITH_AS(F::cross_entropy(z, std::vector<std::size_t>{0, 1}),
                       doctest::Contains("2 targets given for an input of shape [3,4] (expected 3)"), xg::Error);
  CHECK_THROWS_WITH_AS(F::nll_loss(z, std::vector<std::size_t>{9, 0, 0}),
                       doctest::Contains("nll_loss: target 9 at position 0"), xg::Error);
  CHECK_THROWS_WITH_AS(F::cross_entropy(xg::scalar(1.0), std::vector<std::size_t>{0}),
                       doctest::Contains("got a 0-d tensor"), xg::Error);
  CHECK_THROWS_WITH_AS(F::cross_entropy(xg::zeros({0, 4}), std::vector<std::size_t>{}),
                       doctest::Contains("mean over an empty batch"), xg::Error);
  CHECK_THROWS_WITH_AS(F::mse_loss(xg::zeros({3, 1}), xg::zeros({3})),
                       doctest::Contains("input [3,1] and target [3] must have the same shape"), xg::Error);
}
