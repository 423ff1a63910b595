// The autograd engine: leaves and non-leaves, accumulation, explicit gradients, retain_graph, NoGradGuard,
// detach, zero_grad, hooks, retain_grad, autograd::grad, diamonds, a 100,000-op chain, and node names.
// Expected gradients are derived by hand in the comments.
#include <stdexcept>

#include "testing.h"

using namespace xgt;
using xg::kFloat32;
using xg::kFloat64;

TEST_CASE("leaves and non-leaves") {
  Tensor x = xg::tensor({1.0, 2.0});
  CHECK(x.is_leaf());
  CHECK_FALSE(x.requires_grad());
  CHECK(x.grad_fn() == nullptr);
  Tensor c = x * 2.0;  // nothing requires grad: no graph
  CHECK(c.is_leaf());
  CHECK_FALSE(c.requires_grad());

  x.requires_grad_();
  CHECK(x.requires_grad());
  CHECK(x.is_leaf());
  Tensor y = x * 2.0;
  CHECK_FALSE(y.is_leaf());
  CHECK(y.requires_grad());
  REQUIRE(y.grad_fn() != nullptr);
  CHECK(y.grad_fn()->name == "mul");
  CHECK(y.grad_fn()->next.size() == 2);
  CHECK(y.grad_fn()->next[0].leaf == x.impl());
  CHECK_FALSE(y.grad_fn()->next[1].active());  // the constant 2
  CHECK(y.grad_fn()->input_shapes == std::vector<Shape>{{2}, {}});
  CHECK(y.grad_fn()->shape == Shape{2});
  Tensor z = y + y;
  CHECK(z.grad_fn()->next[0].node == y.grad_fn());
  x.requires_grad_(false);
  CHECK_FALSE(x.requires_grad());
}

TEST_CASE("backward on a scalar; gradients accumulate over two backwards") {
  Tensor x = xg::tensor({1.0, -2.0, 3.0}, kFloat64, true);
  // L = sum(x²) => dL/dx = 2x
  (x * x).sum().backward();
  check_values(x.grad(), {3}, {2, -4, 6});
  (x * x).sum().backward();  // a new graph; the gradient adds up
  check_values(x.grad(), {3}, {4, -8, 12});
  CHECK(x.grad().dtype() == kFloat64);
  CHECK_FALSE(x.grad().requires_grad());
  // A 0-d and a [1,1] output count as scalars too.
  Tensor s = xg::scalar(3.0, kFloat64, true);
  (s * s).backward();
  CHECK(s.grad().item() == 6.0);
  Tensor m = xg::full({1, 1}, 2.0, kFloat32, true);
  (m * m * m).backward();
  check_values(m.grad(), {1, 1}, {12});
  CHECK(m.grad().dtype() == kFloat32);
}

TEST_CASE("backward with an explicit gradient for a non-scalar output") {
  Tensor x = xg::tensor({{1, 2}, {3, 4}}, kFloat64, true);
  Tensor y = x * x * 3.0;  // dy/dx = 6x, so x.grad = v · 6x
  const Tensor v = xg::tensor({{1, 0}, {0.5, 2}}, kFloat64);
  y.backward(v);
  check_values(x.grad(), {2, 2}, {6, 0, 9, 48});
  // backward on a leaf itself: its gradient is the seed.
  Tensor l = xg::zeros({2}, kFloat64, true);
  l.backward(xg::tensor({7, 8}, kFloat64));
  check_values(l.grad(), {2}, {7, 8});
}

TEST_CASE("retain_graph allows a second backward; without it the second one is a clear error") {
  Tensor x = xg::tensor({2.0}, kFloat64, true);
  Tensor y = (x * x).sum();
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward();  // frees the graph this time
  check_values(x.grad(), {1}, {8});  // 2·(2x)
  CHECK(y.grad_fn()->released);
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("backward through the graph a second time"), xg::Error);
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("retain_graph=true"), xg::Error);
  // A node deeper in the graph is freed too: a new graph that reuses it fails the same way.
  Tensor a = xg::tensor({1.0}, kFloat64, true);
  Tensor b = a * 3.0;
  (b * 2.0).sum().backward();
  CHECK_THROWS_WITH_AS((b * 5.0).sum().backward(), doctest::Contains("node 'mul'"), xg::Error);
}

TEST_CASE("NoGradGuard records nothing and restores the previous mode") {
  Tensor x = xg::tensor({1.0}, kFloat64, true);
  CHECK(xg::is_grad_enabled());
  {
    xg::NoGradGuard g;
    CHECK_FALSE(xg::is_grad_enabled());
    Tensor y = x * 2.0;
    CHECK_FALSE(y.requires_grad());
    CHECK(y.grad_fn() == nullptr);
    {
      xg::NoGradGuard inner;
      CHECK_FALSE(xg::is_grad_enabled());
    }
    CHECK_FALSE(xg::is_grad_enabled());  // the inner guard restores "off", not "on"
  }
  CHECK(xg::is_grad_enabled());
  xg::set_grad_enabled(false);
  CHECK_FALSE((x * 2.0).requires_grad());
  xg::set_grad_enabled(true);
  CHECK((x * 2.0).requires_grad());
}

TEST_CASE("detach shares storage, cuts the graph") {
  Tensor x = xg::tensor({1.0, 2.0}, kFloat64, true);
  Tensor y = x * 3.0;
  Tensor d = y.detach();
  CHECK(d.is_leaf());
  CHECK_FALSE(d.requires_grad());
  CHECK(d.data_ptr<double>() == y.data_ptr<double>());  // the same buffer
  d.set({0}, 10.0);
  CHECK(y.at({0}) == 10.0);  // and writes show through, as in PyTorch
  // No gradient flows through the detached branch: L = sum(x·detach(3x)) => dL/dx = 3x (the detached value).
  Tensor x2 = xg::tensor({1.0, 2.0}, kFloat64, true);
  (x2 * (x2 * 3.0).detach()).sum().backward();
  check_values(x2.grad(), {2}, {3, 6});
}

TEST_CASE("zero_grad: to none (default) or to zeros in place") {
  Tensor x = xg::tensor({1.0, 2.0}, kFloat64, true);
  (x * x).sum().backward();
  const double* buf = x.grad().data_ptr<double>();
  x.zero_grad(/*set_to_none=*/false);
  check_values(x.grad(), {2}, {0, 0});
  CHECK(x.grad().data_ptr<double>() == buf);
  (x * x).sum().backward();
  check_values(x.grad(), {2}, {2, 4});
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
  // set_grad replaces it.
  x.set_grad(xg::tensor({5, 6}, kFloat64));
  check_values(x.grad(), {2}, {5, 6});
}

TEST_CASE("hooks on leaves and non-leaves observe and replace the gradient") {
  SUBCASE("leaf hook sees the gradient; returning a tensor replaces it; hooks chain in order") {
    Tensor x = xg::tensor({1.0, 2.0}, kFloat64, true);
    std::vector<double> seen;
    x.register_hook([&](const Tensor& g) {
      seen = g.to_vector();
      return Tensor();  // keep
    });
    x.register_hook([](const Tensor& g) { return g * 10.0; });
    x.register_hook([](const Tensor& g) { return g + 1.0; });
    (x * x).sum().backward();  // raw gradient 2x = {2, 4}
    CHECK(seen == std::vector<double>{2, 4});
    check_values(x.grad(), {2}, {21, 41});
  }
  SUBCASE("non-leaf hook changes what flows upstream") {
    Tensor x = xg::tensor({1.0, 2.0}, kFloat64, true);
    Tensor y = x * 3.0;
    y.register_hook([](const Tensor& g) { return g * 0.5; });
    (y * y).sum().backward();  // dL/dy = 2y = 6x, halved = 3x; dL/dx = 3·3x = 9x
    check_values(x.grad(), {2}, {9, 18});
  }
  SUBCASE("autograd::grad runs leaf hooks too and returns what they return") {
    Tensor x = xg::tensor({1.0, 2.0}, kFloat64, true);
    int calls = 0;
    x.register_hook([&](const Tensor& g) {
      ++calls;
      return g * 2.0;
    });
    const auto g = xg::autograd::grad({(x * x).sum()}, {x, x});
    CHECK(calls == 1);
    check_values(g[0], {2}, {4, 8});
    check_values(g[1], {2}, {4, 8});
    CHECK_FALSE(x.grad().defined());
  }
  SUBCASE("a leaf used twice: its hook runs once, with the sum") {
    Tensor x = xg::tensor({3.0}, kFloat64, true);
    std::vector<double> seen;
    x.register_hook([&](const Tensor& g) {
      seen.push_back(g.item());
      return Tensor();
    });
    (x * x + x).sum().backward();  // 2x + 1 = 7
    CHECK(seen == std::vector<double>{7});
  }
  SUBCASE("a hook runs once with the summed gradient of a tensor used twice") {
    Tensor x = xg::tensor({1.0}, kFloat64, true);
    Tensor y = x * 2.0;
    int calls = 0;
    y.register_hook([&](const Tensor& g) {
      ++calls;
      CHECK(g.item() == 2.0);  // from y + y
      return Tensor();
    });
    (y + y).sum().backward();
    CHECK(calls == 1);
  }
}

TEST_CASE("retain_grad keeps a non-leaf's gradient") {
  Tensor x = xg::tensor({1.0, 2.0}, kFloat64, true);
  Tensor y = x * 3.0;
  Tensor z = x * 4.0;
  y.retain_grad();
  (y * y + z).sum().backward();
  check_values(y.grad(), {2}, {6, 12});  // 2y
  CHECK_FALSE(z.grad().defined());       // not retained
  check_values(x.grad(), {2}, {22, 40}); // 3·2y + 4 = 18x + 4
  x.retain_grad();                       // a leaf keeps its gradient anyway: a no-op
  CHECK(x.grad().defined());
}

TEST_CASE("autograd::grad returns gradients without touching .grad()") {
  Tensor x = xg::tensor({1.0, 2.0}, kFloat64, true);
  Tensor w = xg::tensor({3.0, -1.0}, kFloat64, true);
  Tensor unused = xg::tensor({0.0}, kFloat64, true);
  Tensor h = x * w;            // non-leaf
  Tensor L = (h * h).sum();    // h = {3, -2}; dL/dh = 2h, dL/dx = 2h·w, dL/dw = 2h·x
  const auto g = xg::autograd::grad({L}, {x, w, h}, {}, /*retain_graph=*/true);
  check_values(g[0], {2}, {18, 4});
  check_values(g[1], {2}, {6, -8});
  check_values(g[2], {2}, {6, -4});
  CHECK_FALSE(x.grad().defined());
  CHECK_FALSE(w.grad().defined());
  CHECK_FALSE(h.grad().defined());
  CHECK_THROWS_WITH_AS(xg::autograd::grad({L}, {x, unused}, {}, true), doctest::Contains("allow_unused=true"),
                       xg::Error);
  const auto g2 = xg::autograd::grad({L}, {unused, x}, {}, true, /*allow_unused=*/true);
  CHECK_FALSE(g2[0].defined());
  check_values(g2[1], {2}, {18, 4});
  CHECK_FALSE(x.grad().defined());
  // A retained non-leaf is not touched either.
  h.retain_grad();
  xg::autograd::grad({L}, {x}, {}, true);
  CHECK_FALSE(h.grad().defined());
  // Several outputs with explicit gradients: d(2·sum(h) + 1·sum(x))/dx = 2w + 1.
  const auto g3 = xg::autograd::grad({h.sum(), x.sum()}, {x}, {xg::scalar(2.0, kFloat64), Tensor()}, true);
  check_values(g3[0], {2}, {7, -1});
  // backward afterwards still works and fills .grad().
  L.backward();
  check_values(x.grad(), {2}, {18, 4});
}

TEST_CASE("diamonds: a tensor used several times gets the sum of its gradients") {
  Tensor x = xg::tensor({2.0, 3.0}, kFloat64, true);
  Tensor a = x * x;      // da/dx = 2x
  Tensor b = x * 5.0;    // db/dx = 5
  Tensor c = a * b;      // dc/dx = 2x·5x + x²·5 = 15x²
  (c + a + x).sum().backward();  // 15x² + 2x + 1
  check_values(x.grad(), {2}, {15 * 4 + 4 + 1, 15 * 9 + 6 + 1});
  Tensor y = xg::tensor({1.0}, kFloat64, true);
  (y + y + y).backward();
  CHECK(y.grad().item() == 3.0);
  check_grad("mul", [](auto& in) { return (in[0] * in[0]) * (in[0] + in[1]) * in[1]; },
             {rnd({3}, 91), rnd({3}, 92)});
}

TEST_CASE("a chain of 100,000 ops backpropagates (and is destroyed) without recursion") {
  Tensor x = xg::tensor({1.0}, kFloat32, true);
  const Tensor c = xg::tensor({0.5}, kFloat32);
  Tensor y = x;
  for (int i = 0; i < 100000; ++i) y = y + c;  // y = x + 100000·0.5; dy/dx = 1
  CHECK(y.item() == doctest::Approx(50001.0));
  CHECK(y.grad_fn()->name == "add");
  y.backward();
  CHECK(x.grad().item() == 1.0);
  y = Tensor();  // drops the chain: 100,000 nodes freed by ~Node's loop, not by recursion

  // The same for a chain that is never backpropagated, through a mix of ops.
  Tensor z = x;
  for (int i = 0; i < 50000; ++i) z = (i % 2 == 0) ? xg::neg(z) : xg::reshape(z, {1});
  z = Tensor();
  CHECK(x.requires_grad());
}

TEST_CASE("every op records its name on its node") {
  const Tensor a = rnd({2, 3}, 93), b = rnd({2, 3}, 94), p = rnd({2, 3}, 95, 0.5, 1.5);
  auto name = [](const Tensor& t) { return t.grad_fn() ? t.grad_fn()->name : std::string("(leaf)"); };
  CHECK(name(a + b) == "add");
  CHECK(name(a - b) == "sub");
  CHECK(name(a * b) == "mul");
  CHECK(name(a / p) == "div");
  CHECK(name(xg::maximum(a, b)) == "maximum");
  CHECK(name(xg::minimum(a, b)) == "minimum");
  CHECK(name(xg::pow(p, b)) == "pow");
  CHECK(name(xg::pow(a, 2.0)) == "pow");
  CHECK(name(-a) == "neg");
  CHECK(name(xg::exp(a)) == "exp");
  CHECK(name(xg::log(p)) == "log");
  CHECK(name(xg::sqrt(p)) == "sqrt");
  CHECK(name(xg::rsqrt(p)) == "rsqrt");
  CHECK(name(xg::abs(a)) == "abs");
  CHECK(name(xg::clamp(a, 0.0, 1.0)) == "clamp");
  CHECK(name(xg::where(xg::gt(a, 0.0), a, b)) == "where");
  CHECK(name(xg::sum(a)) == "sum");
  CHECK(name(xg::amax(a, {0})) == "amax");
  CHECK(name(xg::amin(a)) == "amin");
  CHECK(name(xg::sum_to(a, {3})) == "reshape");  // sum (keepdim) then reshape to the target
  CHECK(name(xg::reshape(a, {3, 2})) == "reshape");
  CHECK(name(xg::permute(a, {1, 0})) == "permute");
  CHECK(name(xg::expand(a, {4, 2, 3})) == "expand");
  CHECK(name(xg::slice(a, 1, 0, 2)) == "slice");
  CHECK(name(xg::index_select(a, 0, {1})) == "index_select");
  CHECK(name(xg::cat({a, b})) == "cat");
  CHECK(name(xg::matmul(a, xg::transpose(b, 0, 1))) == "matmul");
  CHECK(name(xg::linear(a, b)) == "linear");
  CHECK(name(xg::sigmoid(a)) == "sigmoid");
  CHECK(name(xg::tanh(a)) == "tanh");
  CHECK(name(xg::relu(a)) == "relu");
  CHECK(name(a.to(kFloat32)) == "to");
  CHECK(name(a.clone()) == "clone");
  // Composites end in the primitive that computed them last (docs/ops.md lists the compositions).
  CHECK(name(xg::mean(a)) == "mul");
  CHECK(name(xg::var(a)) == "mul");
  CHECK(name(xg::std(a)) == "sqrt");
  CHECK(name(xg::softmax(a, 1)) == "div");
  CHECK(name(xg::log_softmax(a, 1)) == "sub");
  CHECK(name(xg::logsumexp(a, {1}, true)) == "add");
  CHECK(name(xg::flatten(a)) == "reshape");
  CHECK(name(xg::transpose(a, 0, 1)) == "permute");
  CHECK(name(xg::squeeze(xg::unsqueeze(a, 0))) == "reshape");
  CHECK(name(xg::narrow(a, 0, 0, 1)) == "slice");
  CHECK(name(xg::stack({a, b})) == "cat");
  // Node ids grow with creation order (the engine runs newer nodes first).
  const Tensor u = a * 2.0, v = u * 2.0;
  CHECK(v.grad_fn()->id > u.grad_fn()->id);
}

TEST_CASE("a throwing backward closure leaves the engine usable") {
  Tensor x = xg::tensor({1.0}, kFloat64, true);
  Tensor out = xg::record_op("explodes", xg::tensor({1.0}, kFloat64), {x},
                             [](const Tensor&, const std::vector<bool>&) -> std::vector<Tensor> {
                               throw std::runtime_error("boom in backward");
                             });
  Tensor loss = (out * 2.0).sum();
  CHECK_THROWS_WITH(loss.backward(), "boom in backward");
  // The engine's bookkeeping was reset: another backward over fresh nodes works, and so does one that reaches
  // the same (retained) nodes of an unrelated graph.
  Tensor y = (x * 3.0).sum();
  y.backward();
  CHECK(x.grad().item() == 3.0);
}

TEST_CASE("custom ops through record_op: a vector of inputs and a braced list behave the same") {
  Tensor a = xg::tensor({2.0}, kFloat64, true), b = xg::tensor({5.0}, kFloat64, true);
  auto backward = [](const Tensor& g, const std::vector<bool>& needs) {
    CHECK(needs == std::vector<bool>{true, true});
    return std::vector<Tensor>{g * 10.0, g * 100.0};
  };
  const std::vector<Tensor> inputs{a, b};
  Tensor y1 = xg::record_op("custom", xg::tensor({0.0}, kFloat64), inputs, backward);
  Tensor y2 = xg::record_op("custom", xg::tensor({0.0}, kFloat64), {a, b}, backward);
  (y1 + y2).sum().backward();
  CHECK(a.grad().item() == 20.0);
  CHECK(b.grad().item() == 200.0);
  CHECK(xg::any_requires_grad({a, b}));
  CHECK_FALSE(xg::any_requires_grad({Tensor(), a.detach()}));
}
