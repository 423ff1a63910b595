// LpNorm1d / LpNorm2d (Santurkar et al. 2018 §3.3): values against hand-computed numbers and a plain loop,
// p = 2 against BatchNorm, float64 gradchecks for p = 1, 2, ∞ in training and eval mode, running averages,
// and the errors.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "testing.h"
#include "xgrad/gradcheck.h"
#include "xgrad/nn.h"

namespace nn = xg::nn;
using xg::Shape;
using xg::Tensor;
using xgt::rnd_away;

namespace {
const double kInf = std::numeric_limits<double>::infinity();
}

TEST_CASE("LpNorm1d: one channel [1, 2, 3, 6] by hand for p = 1, 2, inf") {
  // mean 3; |x - mean| = 2, 1, 0, 3: s = 6/4 = 1.5 (p = 1), sqrt(14/4) (p = 2), 3 (p = inf).
  const Tensor x = xg::from_vector({1, 2, 3, 6}, {4, 1}, xg::kFloat64);
  for (double p : {1.0, 2.0, kInf}) {
    CAPTURE(p);
    nn::LpNorm1d layer(nn::LpNormOptions(1).p(p).eps(1e-12));
    layer.to(xg::kFloat64);
    const double s = p == 1.0 ? 1.5 : p == 2.0 ? std::sqrt(3.5) : 3.0;
    const Tensor y = layer.forward(x);
    const double want[4] = {-2 / s, -1 / s, 0, 3 / s};
    for (int i = 0; i < 4; ++i) CHECK(y.at({i, 0}) == doctest::Approx(want[i]).epsilon(1e-12));
    // running averages after one step with momentum 0.1: 0.9·0 + 0.1·3 and 0.9·1 + 0.1·s
    CHECK(layer.running_mean.at({0}) == doctest::Approx(0.3));
    CHECK(layer.running_scale.at({0}) == doctest::Approx(0.9 + 0.1 * s));
  }
}

TEST_CASE("LpNorm2d: values against a plain loop over N, H, W for every channel") {
  const Shape shape{3, 2, 2, 3};
  const Tensor x = rnd_away(shape, 11, false);
  for (double p : {1.0, 2.0, kInf}) {
    CAPTURE(p);
    nn::LpNorm2d layer(nn::LpNormOptions(2).p(p));
    layer.to(xg::kFloat64);
    {
      xg::NoGradGuard g;
      layer.weight.copy_(xg::from_vector({1.5, -0.5}, {2}, xg::kFloat64));
      layer.bias.copy_(xg::from_vector({0.25, 2.0}, {2}, xg::kFloat64));
    }
    const Tensor y = layer.forward(x);
    for (int c = 0; c < 2; ++c) {
      double mean = 0, s = 0;
      const int m = 3 * 2 * 3;
      for (int n = 0; n < 3; ++n)
        for (int h = 0; h < 2; ++h)
          for (int w = 0; w < 3; ++w) mean += x.at({n, c, h, w}) / m;
      for (int n = 0; n < 3; ++n)
        for (int h = 0; h < 2; ++h)
          for (int w = 0; w < 3; ++w) {
            const double d = std::abs(x.at({n, c, h, w}) - mean);
            if (p == 1.0) s += d / m;
            else if (p == 2.0) s += d * d / m;
            else s = std::max(s, d);
          }
      if (p == 2.0) s = std::sqrt(s);
      const double g = c == 0 ? 1.5 : -0.5, b = c == 0 ? 0.25 : 2.0;
      for (int n = 0; n < 3; ++n)
        for (int h = 0; h < 2; ++h)
          for (int w = 0; w < 3; ++w)
            CHECK(y.at({n, c, h, w}) == doctest::Approx(g * (x.at({n, c, h, w}) - mean) / (s + 1e-5) + b).epsilon(1e-12));
    }
  }
}

TEST_CASE("LpNorm1d with p = 2 is BatchNorm1d (eps moved out of the square root)") {
  const Tensor x = rnd_away({6, 4}, 3, false);
  nn::LpNorm1d lp(nn::LpNormOptions(4).p(2).eps(1e-12));
  nn::BatchNorm1d bn(nn::BatchNormOptions(4).eps(1e-24).impl(nn::BatchNormImpl::Composed));
  lp.to(xg::kFloat64);
  bn.to(xg::kFloat64);
  const Tensor a = lp.forward(x), b = bn.forward(x);
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 4; ++j) CHECK(a.at({i, j}) == doctest::Approx(b.at({i, j})).epsilon(1e-9));
}

TEST_CASE("gradcheck: LpNorm1d/2d for p = 1, 2, inf w.r.t. input, weight and bias, training and eval") {
  struct Case {
    Shape shape;
    bool two_d;
  };
  for (const Case& k : {Case{{5, 3}, false}, Case{{3, 2, 4}, false}, Case{{2, 3, 2, 3}, true}})
    for (double p : {1.0, 2.0, kInf}) {
      const std::string shape = xg::shape_str(k.shape);
      CAPTURE(shape);
      CAPTURE(p);
      std::shared_ptr<nn::LpNormBase> layer;
      if (k.two_d) layer = std::make_shared<nn::LpNorm2d>(nn::LpNormOptions(k.shape[1]).p(p));
      else layer = std::make_shared<nn::LpNorm1d>(nn::LpNormOptions(k.shape[1]).p(p));
      layer->to(xg::kFloat64);
      {
        xg::NoGradGuard g;
        layer->weight.copy_(rnd_away({k.shape[1]}, 5, false));
        layer->bias.copy_(rnd_away({k.shape[1]}, 6, false));
      }
      // Values away from each other (and from the mean) so that |x - mean| and the max are smooth nearby.
      Tensor x = rnd_away(k.shape, 7);
      std::vector<Tensor> in{x, layer->weight, layer->bias};
      // gradcheck evaluates the forward many times: keep the running averages out of it.
      nn::NoStatsUpdateGuard keep;
      auto f = [&](const std::vector<Tensor>&) { return layer->forward(x); };
      CHECK(xg::gradcheck(f, in).ok);
      layer->eval();
      CHECK(xg::gradcheck(f, in).ok);
    }
}

TEST_CASE("LpNorm: eval mode uses the running averages; a NoStatsUpdateGuard leaves them alone") {
  nn::LpNorm1d layer(nn::LpNormOptions(1).p(1).momentum(0.5).affine(false));
  layer.to(xg::kFloat64);
  const Tensor x = xg::from_vector({1, 2, 3, 6}, {4, 1}, xg::kFloat64);
  {
    nn::NoStatsUpdateGuard keep;
    layer.forward(x);
  }
  CHECK(layer.running_mean.at({0}) == 0.0);
  CHECK(layer.running_scale.at({0}) == 1.0);
  layer.forward(x);  // mean 3, s 1.5, momentum 0.5: running 1.5 and 1.25
  CHECK(layer.running_mean.at({0}) == doctest::Approx(1.5));
  CHECK(layer.running_scale.at({0}) == doctest::Approx(1.25));
  layer.eval();
  const Tensor y = layer.forward(xg::from_vector({4}, {1, 1}, xg::kFloat64));  // (4 - 1.5)/(1.25 + 1e-5)
  CHECK(y.at({0, 0}) == doctest::Approx(2.5 / (1.25 + 1e-5)));
}

TEST_CASE("LpNorm: bad options and inputs give clear errors") {
  CHECK_THROWS_WITH_AS(nn::LpNorm1d(nn::LpNormOptions(3).p(3)), doctest::Contains("p must be 1, 2 or infinity"),
                       xg::Error);
  CHECK_THROWS_WITH_AS(nn::LpNorm1d(nn::LpNormOptions(0)), doctest::Contains("num_features must be > 0"), xg::Error);
  CHECK_THROWS_WITH_AS(nn::LpNorm1d(nn::LpNormOptions(3).eps(0)), doctest::Contains("eps must be"), xg::Error);
  nn::LpNorm1d l1(3);
  CHECK_THROWS_WITH_AS(l1.forward(xg::zeros({4, 2})), doctest::Contains("has 2 channels"), xg::Error);
  CHECK_THROWS_WITH_AS(l1.forward(xg::zeros({1, 3})), doctest::Contains("more than one value per channel"), xg::Error);
  nn::LpNorm2d l2(3);
  CHECK_THROWS_WITH_AS(l2.forward(xg::zeros({4, 3})), doctest::Contains("expected an input of rank 4"), xg::Error);
}
