// Shape ops: reshape/view/flatten, transpose/permute, squeeze/unsqueeze, expand, slice/narrow, index_select,
// cat/stack. Values by index arithmetic in loops, gradchecks in float64, edge shapes (0-d, size-1 axes, empty
// slices).
#include "testing.h"

using namespace xgt;
using xg::Dims;
using xg::kFloat32;
using xg::kFloat64;

TEST_CASE("reshape/view/flatten keep the row-major order; -1 is inferred") {
  const Tensor x = rnd({2, 3, 4}, 51);
  const auto v = x.to_vector();
  check_values(xg::reshape(x, {4, 6}), {4, 6}, v);
  check_values(x.reshape({-1, 2}), {12, 2}, v);
  check_values(x.view({2, -1}), {2, 12}, v);
  check_values(xg::reshape(x, {24}), {24}, v);
  check_values(xg::flatten(x), {24}, v);
  check_values(x.flatten(1), {2, 12}, v);
  check_values(x.flatten(0, 1), {6, 4}, v);
  check_values(x.flatten(-2, -1), {2, 12}, v);
  check_values(xg::flatten(xg::scalar(3.0)), {1}, {3.0});
  check_values(xg::reshape(xg::scalar(3.0), {1, 1}), {1, 1}, {3.0});
  check_values(xg::reshape(xg::tensor({5.0}), {}), {}, {5.0});
  check_values(xg::reshape(xg::zeros({0, 3}), {-1, 3}), {0, 3}, {});
  // A copy: changing the result leaves x alone (xgrad has no views; see docs/tensors.md).
  Tensor r = xg::reshape(x.detach(), {24});
  r.set({0}, 100.0);
  CHECK(x.at({0, 0, 0}) != 100.0);

  check_grad("reshape", [](auto& in) { return xg::reshape(in[0], {4, -1}); }, {x});
  check_grad("reshape", [](auto& in) { return in[0].view({24}); }, {x});
  check_grad("reshape", [](auto& in) { return xg::reshape(in[0], {}); }, {rnd({1, 1}, 52)});
  check_grad("reshape", [](auto& in) { return xg::reshape(in[0], {2, 3, 4}); }, {x});  // same shape, recorded
  check_grad("flatten", [](auto& in) { return xg::flatten(in[0], 1, 2); }, {x});
  check_grad("flatten", [](auto& in) { return in[0].flatten(); }, {rnd({}, 53)});
}

TEST_CASE("transpose and permute move elements by the index map") {
  const Tensor x = rnd({2, 3, 4}, 54);
  for (const Dims& order : {Dims{0, 1, 2}, Dims{2, 0, 1}, Dims{1, 2, 0}, Dims{-1, -3, -2}, Dims{2, 1, 0}}) {
    CAPTURE(order.size());
    std::vector<std::size_t> p;
    for (int a : order) p.push_back(static_cast<std::size_t>(a < 0 ? a + 3 : a));
    const Shape s = {2, 3, 4};
    const Shape os = {s[p[0]], s[p[1]], s[p[2]]};
    std::vector<double> want(24);
    for (std::size_t k = 0; k < 24; ++k) {
      const auto o = unravel(k, os);  // out[o] = x[i] with i[p[d]] = o[d]
      std::vector<std::size_t> i(3);
      for (std::size_t d = 0; d < 3; ++d) i[p[d]] = o[d];
      want[k] = x.at({std::ptrdiff_t(i[0]), std::ptrdiff_t(i[1]), std::ptrdiff_t(i[2])});
    }
    check_values(xg::permute(x, order), os, want);
    check_grad("permute", [&](auto& in) { return xg::permute(in[0], order); }, {x});
  }
  const Tensor m = rnd({3, 2}, 55);
  std::vector<double> mt;
  for (int j = 0; j < 2; ++j)
    for (int i = 0; i < 3; ++i) mt.push_back(m.at({i, j}));
  check_values(xg::transpose(m, 0, 1), {2, 3}, mt);
  check_values(m.transpose(-1, -2), {2, 3}, mt);
  check_grad("transpose", [](auto& in) { return xg::transpose(in[0], 0, 1); }, {m});
  check_grad("transpose", [](auto& in) { return in[0].transpose(0, 2); }, {x});
  check_grad("permute", [](auto& in) { return in[0].permute({1, 0}); }, {m});
  // A 1-d tensor transposes to itself (PyTorch too).
  const Tensor v = rnd({3}, 56);
  CHECK(xg::transpose(v, 0, -1).shape() == Shape{3});
}

TEST_CASE("squeeze/unsqueeze") {
  const Tensor x = rnd({1, 3, 1, 2}, 57);
  const auto v = x.to_vector();
  check_values(xg::squeeze(x), {3, 2}, v);
  check_values(x.squeeze(0), {3, 1, 2}, v);
  check_values(x.squeeze(-2), {1, 3, 2}, v);
  check_values(x.squeeze(1), {1, 3, 1, 2}, v);  // not size 1: unchanged, as in PyTorch
  check_values(xg::squeeze(rnd({1, 1}, 58)), {}, rnd({1, 1}, 58).to_vector());
  check_values(xg::unsqueeze(x, 0), {1, 1, 3, 1, 2}, v);
  check_values(x.unsqueeze(-1), {1, 3, 1, 2, 1}, v);
  check_values(x.unsqueeze(4), {1, 3, 1, 2, 1}, v);
  check_values(x.unsqueeze(-5), {1, 1, 3, 1, 2}, v);
  check_values(xg::unsqueeze(xg::scalar(2.0), 0), {1}, {2.0});
  check_grad("squeeze", [](auto& in) { return xg::squeeze(in[0]); }, {x});
  check_grad("squeeze", [](auto& in) { return in[0].squeeze(2); }, {x});
  check_grad("unsqueeze", [](auto& in) { return xg::unsqueeze(in[0], 1); }, {x});
  check_grad("unsqueeze", [](auto& in) { return in[0].unsqueeze(-1); }, {rnd({}, 59)});
}

TEST_CASE("expand broadcasts, and its gradient sums back") {
  const Tensor x = rnd({3, 1}, 60);
  std::vector<double> want;
  for (int b = 0; b < 2; ++b)
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 4; ++j) want.push_back(x.at({i, 0}));
  check_values(xg::expand(x, {2, 3, 4}), {2, 3, 4}, want);
  check_values(x.expand({3, 1}), {3, 1}, x.to_vector());
  check_grad("expand", [](auto& in) { return xg::expand(in[0], {2, 3, 4}); }, {x});
  check_grad("expand", [](auto& in) { return in[0].expand({2, 2}); }, {rnd({}, 61)});
  check_grad("expand", [](auto& in) { return in[0].expand({5, 1, 1}); }, {rnd({1, 1}, 62)});
  Tensor y = rnd({1, 2}, 63);
  xg::expand(y, {3, 2}).sum().backward();
  check_values(y.grad(), {1, 2}, {3, 3});
}

TEST_CASE("expand: the per-channel fast path and the general path agree with a loop") {
  const Tensor c = rnd({1, 3, 1, 1}, 64);  // varies along one block of axes: the fast path
  std::vector<double> want;
  for (int n = 0; n < 2; ++n)
    for (int ch = 0; ch < 3; ++ch)
      for (int k = 0; k < 4; ++k) want.push_back(c.at({0, ch, 0, 0}));
  check_values(xg::expand(c, {2, 3, 2, 2}), {2, 3, 2, 2}, want);
  check_grad("expand", [](auto& in) { return xg::expand(in[0], {2, 3, 2, 2}); }, {c});
  const Tensor g = rnd({2, 1, 3}, 65);  // two separate varying axes: xtensor's general broadcast
  want.clear();
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 4; ++b)
      for (int k = 0; k < 3; ++k) want.push_back(g.at({a, 0, k}));
  check_values(xg::expand(g, {2, 4, 3}), {2, 4, 3}, want);
  check_values(xg::expand(g, {0, 2, 4, 3}), {0, 2, 4, 3}, {});
}

TEST_CASE("slice and narrow") {
  const Tensor x = rnd({4, 6}, 64);
  auto ref = [&](int axis, std::vector<int> picks) {
    std::vector<double> w;
    if (axis == 0) {
      for (int i : picks)
        for (int j = 0; j < 6; ++j) w.push_back(x.at({i, j}));
    } else {
      for (int i = 0; i < 4; ++i)
        for (int j : picks) w.push_back(x.at({i, j}));
    }
    return w;
  };
  check_values(xg::slice(x, 1, 1, 5, 2), {4, 2}, ref(1, {1, 3}));
  check_values(xg::slice(x, 1, 0, 6, 4), {4, 2}, ref(1, {0, 4}));
  check_values(x.slice(0, -2, 100), {2, 6}, ref(0, {2, 3}));   // negative start, end clamped
  check_values(x.slice(-1, -100, 2), {4, 2}, ref(1, {0, 1}));  // start clamped
  check_values(x.slice(0, 3, 1), {0, 6}, {});                  // empty
  check_values(xg::narrow(x, 1, 2, 3), {4, 3}, ref(1, {2, 3, 4}));
  check_values(x.narrow(-2, 1, 1), {1, 6}, ref(0, {1}));
  check_grad("slice", [](auto& in) { return xg::slice(in[0], 1, 1, 6, 2); }, {x});
  check_grad("slice", [](auto& in) { return in[0].slice(0, -3, -1); }, {x});
  check_grad("slice", [](auto& in) { return xg::slice(in[0], 0, 0, 1); }, {rnd({1, 1}, 65)});
  check_grad("narrow", [](auto& in) { return xg::narrow(in[0], 0, 1, 2); }, {x});
  check_grad("narrow", [](auto& in) { return in[0].narrow(-1, 5, 1); }, {x});
  // The gradient lands only in the sliced positions.
  Tensor y = rnd({5}, 66);
  xg::slice(y, 0, 1, 5, 3).sum().backward();
  check_values(y.grad(), {5}, {0, 1, 0, 0, 1});
}

TEST_CASE("index_select picks entries, repeated indices add their gradients") {
  const Tensor x = rnd({3, 4}, 67);
  std::vector<double> w;
  for (int i = 0; i < 3; ++i)
    for (int j : {3, 0, 3}) w.push_back(x.at({i, j}));
  check_values(xg::index_select(x, 1, {3, 0, 3}), {3, 3}, w);
  std::vector<double> w0;
  for (int j = 0; j < 4; ++j) w0.push_back(x.at({2, j}));
  check_values(x.index_select(-2, {2}), {1, 4}, w0);
  check_values(x.index_select(0, {}), {0, 4}, {});
  check_grad("index_select", [](auto& in) { return xg::index_select(in[0], 1, {3, 0, 3}); }, {x});
  check_grad("index_select", [](auto& in) { return in[0].index_select(0, {1, 1, 2, 0}); }, {x});
  Tensor y = rnd({4}, 68);
  xg::index_select(y, 0, {1, 1, 3}).sum().backward();
  check_values(y.grad(), {4}, {0, 2, 0, 1});
}

TEST_CASE("cat and stack") {
  const Tensor a = rnd({2, 3}, 69), b = rnd({2, 1}, 70), c = rnd({1, 3}, 71);
  std::vector<double> w1;
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) w1.push_back(a.at({i, j}));
    w1.push_back(b.at({i, 0}));
  }
  check_values(xg::cat({a, b}, 1), {2, 4}, w1);
  check_values(xg::cat({a, b}, -1), {2, 4}, w1);
  auto w0 = a.to_vector();
  for (double v : c.to_vector()) w0.push_back(v);
  check_values(xg::cat({a, c}), {3, 3}, w0);
  check_values(xg::cat({a}), {2, 3}, a.to_vector());
  check_grad("cat", [](auto& in) { return xg::cat({in[0], in[1]}, 1); }, {a, b});
  check_grad("cat", [](auto& in) { return xg::cat({in[0], in[1], in[0]}, 0); }, {a, c});
  // An input that does not require grad is just data.
  const Tensor k = rnd({2, 3}, 72, -1, 1, false);
  check_grad("cat", [&](auto& in) { return xg::cat({k, in[0]}, 0); }, {a});

  const Tensor d = rnd({2, 3}, 73);
  std::vector<double> s0 = a.to_vector();
  for (double v : d.to_vector()) s0.push_back(v);
  check_values(xg::stack({a, d}), {2, 2, 3}, s0);
  std::vector<double> s2;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) {
      s2.push_back(a.at({i, j}));
      s2.push_back(d.at({i, j}));
    }
  check_values(xg::stack({a, d}, -1), {2, 3, 2}, s2);
  check_values(xg::stack({xg::scalar(1.0), xg::scalar(2.0)}), {2}, {1, 2});
  check_grad("stack", [](auto& in) { return xg::stack({in[0], in[1]}, 1); }, {a, d});
  check_grad("stack", [](auto& in) { return xg::stack({in[0], in[0]}, 0); }, {rnd({}, 74)});
}

TEST_CASE("shape ops keep the dtype") {
  const Tensor x = xg::ones({2, 3}, kFloat32);
  CHECK(xg::transpose(x, 0, 1).dtype() == kFloat32);
  CHECK(xg::cat({x, x}).dtype() == kFloat32);
  CHECK(xg::slice(x, 0, 0, 1).dtype() == kFloat32);
  CHECK(xg::expand(x, {2, 2, 3}).dtype() == kFloat32);
  CHECK(xg::index_select(x.to(kFloat64), 0, {0}).dtype() == kFloat64);
}
