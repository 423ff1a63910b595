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
