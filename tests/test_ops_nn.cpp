// The neural-network ops of xgrad/ops.h called directly: gradchecks in float64 against central finite
// differences, the node each records, and the errors of the ops themselves. Their values against direct loops
// are in test_layers.cpp, test_losses.cpp and test_bn_fused.cpp, through xg::nn::functional, which calls these.
#include <vector>

#include "testing.h"

using namespace xgt;
using xg::kFloat64;
using xg::Reduction;

namespace {
std::string node_name(const Tensor& t) { return t.grad_fn() ? t.grad_fn()->name : std::string("(leaf)"); }
}  // namespace

TEST_CASE("conv2d: gradcheck w.r.t. input, weight and bias; one node named conv2d") {
  struct Case {
    Shape x, w;
    xg::Size2 stride, padding;
  };
  const std::vector<Case> cases{
      {{2, 2, 5, 4}, {3, 2, 3, 3}, 2, 1},       // strided and padded
      {{1, 2, 4, 5}, {2, 2, 3, 3}, 1, 1},       // "same" size (the shifted-plane path)
      {{2, 3, 3, 3}, {2, 3, 1, 1}, 1, 0},       // 1x1 (the pointwise path)
      {{1, 1, 5, 6}, {2, 1, 3, 2}, {2, 1}, {0, 1}},  // rectangular kernel, mixed strides and paddings
  };
  for (const auto& c : cases) {
    INFO("x ", xg::shape_str(c.x), " w ", xg::shape_str(c.w));
    const Tensor x = rnd(c.x, 1), w = rnd(c.w, 2), b = rnd({c.w[0]}, 3);
    const xg::Size2 s = c.stride, p = c.padding;
    check_grad("conv2d", [s, p](auto& in) { return xg::conv2d(in[0], in[1], in[2], s, p); }, {x, w, b});
    check_grad("conv2d", [s, p](auto& in) { return xg::conv2d(in[0], in[1], Tensor(), s, p); }, {x, w});
  }
  const Tensor x = rnd({1, 2, 4, 4}, 4), w = rnd({3, 2, 3, 3}, 5);
  const Tensor y = xg::conv2d(x, w, Tensor(), 1, 1);
  CHECK(y.shape() == Shape{1, 3, 4, 4});
  CHECK(node_name(y) == "conv2d");
  CHECK(y.grad_fn()->next.size() == 2);  // x and w: no bias input when there is no bias
}

TEST_CASE("max_pool2d and avg_pool2d: gradcheck, one node each") {
  struct Case {
    Shape x;
    xg::Size2 kernel;
    std::optional<xg::Size2> stride;
    xg::Size2 padding;
  };
  const std::vector<Case> cases{
      {{2, 2, 4, 4}, 2, std::nullopt, 0},  // 2x2 windows tiling the plane (the fast path)
      {{1, 2, 5, 5}, 2, std::nullopt, 0},  // 2x2 on odd sizes: the last row and column belong to no window
      {{2, 1, 5, 5}, 3, xg::Size2(2), 1},  // overlapping, padded windows
      {{1, 2, 4, 6}, {2, 3}, xg::Size2(1, 2), {1, 1}},  // rectangular
  };
  for (const auto& c : cases) {
    INFO("x ", xg::shape_str(c.x));
    // Distinct values in every window (random), so the arg-max does not move under the ±eps of the differences.
    const Tensor x = rnd(c.x, 11);
    const auto k = c.kernel;
    const auto s = c.stride;
    const auto p = c.padding;
    check_grad("max_pool2d", [=](auto& in) { return xg::max_pool2d(in[0], k, s, p); }, {x});
    check_grad("avg_pool2d", [=](auto& in) { return xg::avg_pool2d(in[0], k, s, p); }, {x});
    check_grad("avg_pool2d", [=](auto& in) { return xg::avg_pool2d(in[0], k, s, p, false); }, {x});
  }
  const Tensor x = rnd({1, 1, 4, 4}, 12);
  CHECK(node_name(xg::max_pool2d(x, 2)) == "max_pool2d");
  CHECK(node_name(xg::avg_pool2d(x, 2)) == "avg_pool2d");
  CHECK(xg::max_pool2d(x, 3, 1, 1).shape() == Shape{1, 1, 4, 4});
}

TEST_CASE("nll_loss: gradcheck for every reduction, Tensor and index targets, extra axes and one sample") {
  for (const Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
    INFO("reduction ", xg::to_string(r));
    const Tensor lp = rnd({4, 3}, 21);
    const std::vector<std::size_t> idx{2, 0, 1, 2};
    const Tensor target = xg::tensor({2.0, 0.0, 1.0, 2.0}, kFloat64);
    check_grad("nll_loss", [&](auto& in) { return xg::nll_loss(in[0], idx, r); }, {lp});
    check_grad("nll_loss", [&](auto& in) { return xg::nll_loss(in[0], target, r); }, {lp});
    // [N, C, d] with targets [N, d], and a single sample [C]
    const Tensor lp3 = rnd({2, 3, 2}, 22);
    const Tensor t3 = xg::tensor({{0.0, 2.0}, {1.0, 1.0}}, kFloat64);
    check_grad("nll_loss", [&](auto& in) { return xg::nll_loss(in[0], t3, r); }, {lp3});
    check_grad("nll_loss", [&](auto& in) { return xg::nll_loss(in[0], std::vector<std::size_t>{1}, r); },
               {rnd({3}, 23)});
  }
  // The loss picks -input at the target: 2 + 0.5 + ... over two samples, mean.
  const Tensor lp = xg::tensor({{-1.0, -2.0}, {-0.5, -3.0}}, kFloat64, true);
  const Tensor loss = xg::nll_loss(lp, std::vector<std::size_t>{1, 0});
  CHECK(loss.item() == doctest::Approx((2.0 + 0.5) / 2));
  CHECK(node_name(loss) == "nll_loss");
}

TEST_CASE("cross_entropy_loss: gradcheck; it is nll_loss of log_softmax") {
  for (const Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
    INFO("reduction ", xg::to_string(r));
    const Tensor z = rnd({3, 4}, 31, -3.0, 3.0);
    const std::vector<std::size_t> idx{3, 0, 1};
    check_grad("cross_entropy_loss", [&](auto& in) { return xg::cross_entropy_loss(in[0], idx, r); }, {z});
    const Tensor t = xg::tensor({3.0, 0.0, 1.0}, kFloat64);
    check_grad("cross_entropy_loss", [&](auto& in) { return xg::cross_entropy_loss(in[0], t, r); }, {z});
    const auto want = xg::nll_loss(xg::log_softmax(z, 1), idx, r).to_vector();
    const auto got = xg::cross_entropy_loss(z, idx, r).to_vector();
    REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-14));
  }
}

TEST_CASE("native_batch_norm: gradcheck in training and eval, with and without affine; one node") {
  for (const Shape& s : {Shape{5, 3}, Shape{3, 2, 4}, Shape{2, 3, 2, 3}}) {
    INFO("shape ", xg::shape_str(s));
    const std::size_t C = s[1];
    const Tensor x = rnd(s, 41), w = rnd({C}, 42, 0.5, 1.5), b = rnd({C}, 43);
    // The output is multiplied by a fixed random tensor: a plain sum of a normalised channel has gradient 0.
    const Tensor dy = rnd(s, 44, -1.0, 1.0, false);
    const auto train = [&](auto& in) {
      return xg::native_batch_norm(in[0], in[1], in[2], Tensor(), Tensor(), true, 0.1, 1e-5) * dy;
    };
    check_grad("native_batch_norm", train, {x, w, b});
    check_grad("native_batch_norm", [&](auto& in) {
      return xg::native_batch_norm(in[0], Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5) * dy;
    }, {x});
    // eval: the running statistics are constants
    const Tensor rm = rnd({C}, 45, -1.0, 1.0, false), rv = rnd({C}, 46, 0.5, 2.0, false);
    check_grad("native_batch_norm", [&](auto& in) {
      return xg::native_batch_norm(in[0], in[1], in[2], rm, rv, false, 0.1, 1e-5) * dy;
    }, {x, w, b});
    check_grad("native_batch_norm", [&](auto& in) {
      return xg::native_batch_norm(in[0], Tensor(), Tensor(), rm, rv, false, 0.1, 1e-5) * dy;
    }, {x});
  }
  const Tensor x = rnd({4, 2}, 47), w = rnd({2}, 48), b = rnd({2}, 49);
  const Tensor y = xg::native_batch_norm(x, w, b, Tensor(), Tensor(), true, 0.1, 1e-5);
  CHECK(node_name(y) == "native_batch_norm");
  CHECK(y.grad_fn()->next.size() == 3);  // x, weight, bias: one node for the whole normalisation
}

TEST_CASE("native_batch_norm updates the running statistics with exp_avg_factor (unbiased variance)") {
  // channel 0: 1, 3, 5 (mean 3, unbiased variance 8/2 = 4); channel 1: 10, 10, 16 (mean 12, variance 24/2 = 12)
  const Tensor x = xg::tensor({{1.0, 10.0}, {3.0, 10.0}, {5.0, 16.0}}, kFloat64);
  Tensor rm = xg::zeros({2}, kFloat64), rv = xg::ones({2}, kFloat64);
  xg::native_batch_norm(x, Tensor(), Tensor(), rm, rv, true, 0.25, 1e-5);
  const auto m = rm.to_vector(), v = rv.to_vector();
  CHECK(m[0] == doctest::Approx(0.25 * 3));
  CHECK(m[1] == doctest::Approx(0.25 * 12));
  CHECK(v[0] == doctest::Approx(0.75 + 0.25 * 4));
  CHECK(v[1] == doctest::Approx(0.75 + 0.25 * 12));
}

TEST_CASE("the nn ops check their own arguments") {
  CHECK_THROWS_WITH_AS(xg::conv2d(xg::zeros({2, 3, 5, 5}), xg::zeros({4, 2, 3, 3})),
                       doctest::Contains("conv2d: input has 3 channels"), xg::Error);
  CHECK_THROWS_WITH_AS(xg::max_pool2d(xg::zeros({2, 5, 5}), 2),
                       doctest::Contains("max_pool2d: input must be [N, C, H, W]"), xg::Error);
  CHECK_THROWS_WITH_AS(xg::avg_pool2d(xg::zeros({1, 1, 4, 4}), 2, std::nullopt, 2),
                       doctest::Contains("avg_pool2d: padding (2, 2) must be at most half the kernel size"), xg::Error);
  CHECK_THROWS_WITH_AS(xg::nll_loss(xg::zeros({3, 4}), std::vector<std::size_t>{0, 4, 1}),
                       doctest::Contains("nll_loss: target 4 at position 1 is out of range for 4 classes"), xg::Error);
  CHECK_THROWS_WITH_AS(xg::cross_entropy_loss(xg::zeros({3, 4}), std::vector<std::size_t>{0, 1}),
                       doctest::Contains("cross_entropy_loss: 2 targets given for an input of shape [3,4]"), xg::Error);
  // native_batch_norm(input, weight, bias, running_mean, running_var, training, ...) with one argument wrong
  const auto bn = [](const Tensor& x, const Tensor& w, const Tensor& rm, bool training) {
    return xg::native_batch_norm(x, w, Tensor(), rm, Tensor(), training, 0.1, 1e-5);
  };
  const Tensor x = xg::zeros({4, 3});
  CHECK_THROWS_WITH_AS(bn(x, xg::ones({2}), Tensor(), true),
                       doctest::Contains("native_batch_norm: weight must be [3] of dtype float32"), xg::Error);
  CHECK_THROWS_WITH_AS(bn(x, Tensor(), xg::zeros({3}, kFloat64), true),
                       doctest::Contains("running_mean must be [3] of dtype float32"), xg::Error);
  CHECK_THROWS_WITH_AS(bn(x, Tensor(), xg::zeros({3}), false), doctest::Contains("needs running_mean and running_var"),
                       xg::Error);
  CHECK_THROWS_WITH_AS(bn(xg::zeros({1, 3}), Tensor(), Tensor(), true),
                       doctest::Contains("more than 1 value per channel"), xg::Error);
  CHECK_THROWS_WITH_AS(bn(xg::zeros({4}), Tensor(), Tensor(), true), doctest::Contains("at least 2 dimensions"),
                       xg::Error);
}

TEST_CASE("channel_view and non_channel_axes: the per-channel shape helpers") {
  CHECK(xg::channel_view(5, 2) == std::vector<std::ptrdiff_t>{1, 5});
  CHECK(xg::channel_view(5, 4) == std::vector<std::ptrdiff_t>{1, 5, 1, 1});
  CHECK(xg::non_channel_axes(2) == xg::Dims{0});
  CHECK(xg::non_channel_axes(4) == xg::Dims{0, 2, 3});
}
