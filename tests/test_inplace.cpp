// The in-place methods of Tensor (copy_, fill_, zero_, add_, sub_, mul_, div_, clamp_, set_data): values,
// broadcasting and dtype conversion, aliasing (every handle on the storage sees the write), the grad-mode rule
// and its errors, shape errors, and the layers that use them (BatchNorm's running statistics, nn::init,
// Module::to).
//
// The region marked // [inplace] ... // [/inplace] is the snippet of docs/tensors.md#in-place-methods
// (tests/test_docs.cpp checks they match).
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "testing.h"

using namespace xgt;
using xg::kFloat32;
using xg::kFloat64;

TEST_CASE("in-place methods: the docs example") {
  // [inplace]
  xg::Tensor t = xg::zeros({2, 3});
  xg::Tensor same = t;                      // a second handle on the same storage
  t.copy_(xg::tensor({1, 2, 3}));           // broadcast over the rows: [[1, 2, 3], [1, 2, 3]]
  t.mul_(2.0).add_(xg::ones({2, 3}), 0.5);  // chained: t = 2·t + 0.5·1
  // same.to_vector() is {2.5, 4.5, 6.5, 2.5, 4.5, 6.5}: the writes went into the shared storage

  xg::Tensor w = xg::ones({3}).requires_grad_();
  // w.sub_(xg::full({3}, 0.1)) is an error here: w is a leaf that requires grad
  {
    xg::NoGradGuard no_grad;                // how optimizers update parameters
    w.sub_(xg::full({3}, 0.1));             // w = [0.9, 0.9, 0.9], still a leaf that requires grad
  }
  // [/inplace]
  check_values(same, {2, 3}, {2.5, 4.5, 6.5, 2.5, 4.5, 6.5});
  check_values(t, {2, 3}, {2.5, 4.5, 6.5, 2.5, 4.5, 6.5});
  CHECK_THROWS_WITH_AS(w.sub_(xg::full({3}, 0.1)),
                       doctest::Contains("a leaf tensor that requires grad is being used in an in-place operation"),
                       xg::Error);
  check_values(w, {3}, {0.9, 0.9, 0.9}, 1e-7);
  CHECK(w.requires_grad());
  CHECK(w.is_leaf());
}

TEST_CASE("copy_ broadcasts the source to the tensor's shape and converts its dtype") {
  SUBCASE("same shape") {
    Tensor t = xg::zeros({2, 2});
    check_values(t.copy_(xg::tensor({{1, 2}, {3, 4}})), {2, 2}, {1, 2, 3, 4});
  }
  SUBCASE("a row over the rows, a column over the columns, a 0-d value everywhere") {
    Tensor t = xg::zeros({2, 3});
    check_values(t.copy_(xg::tensor({7, 8, 9})), {2, 3}, {7, 8, 9, 7, 8, 9});
    check_values(t.copy_(xg::from_vector({5, 6}, {2, 1})), {2, 3}, {5, 5, 5, 6, 6, 6});
    check_values(t.copy_(xg::scalar(-1.5)), {2, 3}, std::vector<double>(6, -1.5));
    check_values(t.copy_(xg::from_vector({4}, {1, 1})), {2, 3}, std::vector<double>(6, 4.0));
  }
  SUBCASE("a middle axis of a rank-3 tensor") {
    Tensor t = xg::zeros({2, 2, 2}, kFloat64);
    t.copy_(xg::from_vector({1, 2}, {2, 1}, kFloat64));  // [2,1] -> [2,2,2]: varies along axis 1
    check_values(t, {2, 2, 2}, {1, 1, 2, 2, 1, 1, 2, 2});
  }
  SUBCASE("float64 into float32: rounded to float, the tensor stays float32") {
    Tensor t = xg::zeros({2});
    t.copy_(xg::tensor({0.1, 1.0 / 3.0}, kFloat64));
    CHECK(t.dtype() == kFloat32);
    CHECK(t.data<float>()(0) == 0.1f);
    CHECK(t.data<float>()(1) == static_cast<float>(1.0 / 3.0));
  }
  SUBCASE("float32 into float64, broadcasting and converting at once") {
    Tensor t = xg::zeros({2, 2}, kFloat64);
    t.copy_(xg::tensor({0.1, 0.2}));  // float32 [2]
    CHECK(t.dtype() == kFloat64);
    CHECK(t.at({1, 0}) == static_cast<double>(0.1f));
    CHECK(t.at({1, 1}) == static_cast<double>(0.2f));
    CHECK(t.at({1, 0}) != 0.1);  // the float32 value, not the decimal one
  }
  SUBCASE("copy_ returns the tensor itself") {
    Tensor t = xg::zeros({2});
    CHECK(&t.copy_(xg::ones({2})) == &t);
  }
}

TEST_CASE("fill_, zero_, add_, sub_, mul_, div_, clamp_: values") {
  const Tensor base = xg::tensor({{1, 2, 3}, {4, 5, 6}}, kFloat64);
  auto fresh = [&] { return base.clone(); };

  check_values(fresh().fill_(2.5), {2, 3}, std::vector<double>(6, 2.5));
  check_values(fresh().zero_(), {2, 3}, std::vector<double>(6, 0.0));
  Tensor f32 = xg::zeros({2});
  CHECK(f32.fill_(0.1).dtype() == kFloat32);
  CHECK(f32.data<float>()(1) == 0.1f);

  const Tensor row = xg::tensor({10, 20, 30}, kFloat64);
  const Tensor col = xg::from_vector({100, 200}, {2, 1}, kFloat64);
  check_values(fresh().add_(row), {2, 3}, {11, 22, 33, 14, 25, 36});
  check_values(fresh().add_(col, 0.5), {2, 3}, {51, 52, 53, 104, 105, 106});
  check_values(fresh().add_(1.0), {2, 3}, {2, 3, 4, 5, 6, 7});
  check_values(fresh().add_(1.0, -2.0), {2, 3}, {-1, 0, 1, 2, 3, 4});
  check_values(fresh().sub_(row), {2, 3}, {-9, -18, -27, -6, -15, -24});
  check_values(fresh().sub_(row, 0.1), {2, 3}, {0, 0, 0, 3, 3, 3}, 1e-12);
  check_values(fresh().sub_(0.5), {2, 3}, {0.5, 1.5, 2.5, 3.5, 4.5, 5.5});
  check_values(fresh().sub_(1.0, 3.0), {2, 3}, {-2, -1, 0, 1, 2, 3});
  check_values(fresh().mul_(row), {2, 3}, {10, 40, 90, 40, 100, 180});
  check_values(fresh().mul_(xg::scalar(-1.0, kFloat64)), {2, 3}, {-1, -2, -3, -4, -5, -6});
  check_values(fresh().mul_(0.5), {2, 3}, {0.5, 1, 1.5, 2, 2.5, 3});
  check_values(fresh().div_(col), {2, 3}, {0.01, 0.02, 0.03, 0.02, 0.025, 0.03}, 1e-15);
  check_values(fresh().div_(4.0), {2, 3}, {0.25, 0.5, 0.75, 1, 1.25, 1.5});
  check_values(fresh().clamp_(2.0, 5.0), {2, 3}, {2, 2, 3, 4, 5, 5});
  check_values(fresh().clamp_(std::nullopt, 3.0), {2, 3}, {1, 2, 3, 3, 3, 3});
  check_values(fresh().clamp_(4.0, std::nullopt), {2, 3}, {4, 4, 4, 4, 5, 6});

  // the same as the out-of-place ops, value for value, in float32 too (one rounding per element; with alpha,
  // a + alpha·b may be rounded once or twice depending on whether the compiler fuses the multiply-add, so
  // that case is checked against float64 to float32 precision)
  const Tensor x = xg::tensor({{0.3, -1.7, 2.2}, {5.5, 0.01, -3}});
  const Tensor y = xg::tensor({0.7, 1.9, -0.4});
  const Tensor x64 = x.to(kFloat64), y64 = y.to(kFloat64);
  CHECK((x.clone().add_(y, 0.3).to(kFloat64) - (x64 + y64 * 0.3)).abs().max().item() < 1e-6);
  CHECK((x.clone().sub_(y, 0.3).to(kFloat64) - (x64 - y64 * 0.3)).abs().max().item() < 1e-6);
  CHECK((x.clone().add_(y) - (x + y)).abs().max().item() == 0.0);
  CHECK((x.clone().sub_(y) - (x - y)).abs().max().item() == 0.0);
  CHECK((x.clone().mul_(y) - x * y).abs().max().item() == 0.0);
  CHECK((x.clone().div_(y) - x / y).abs().max().item() == 0.0);
  CHECK((x.clone().clamp_(-1.0, 1.0) - x.clamp(-1.0, 1.0)).abs().max().item() == 0.0);

  // a NaN stays NaN through clamp_, as through clamp
  Tensor n = xg::tensor({std::numeric_limits<double>::quiet_NaN(), 9.0});
  n.clamp_(0.0, 1.0);
  CHECK(std::isnan(n.at({0})));
  CHECK(n.at({1}) == 1.0);
  CHECK_THROWS_WITH_AS(fresh().clamp_(3.0, 2.0), "clamp_: min 3 is greater than max 2", xg::Error);

  // an empty tensor and a 0-d one
  Tensor empty = xg::zeros({0, 3}, kFloat64);
  check_values(empty.add_(row), {0, 3}, {});
  Tensor s = xg::scalar(2.0);
  check_values(s.mul_(xg::scalar(4.0)).add_(1.0), {}, {9.0});
}

TEST_CASE("in-place methods write the shared storage: every handle sees the write") {
  Tensor a = xg::tensor({1, 2, 3});
  Tensor copy = a;             // the same handle
  Tensor detached = a.detach();  // a new leaf on the same storage
  const void* storage = &a.storage();

  a.add_(xg::ones({3}));
  check_values(copy, {3}, {2, 3, 4});
  check_values(detached, {3}, {2, 3, 4});
  detached.mul_(10.0);  // and the other way round
  check_values(a, {3}, {20, 30, 40});
  CHECK(&a.storage() == storage);
  CHECK(&detached.storage() == storage);

  // the operand may alias the tensor itself
  a.add_(a);
  check_values(copy, {3}, {40, 60, 80});
  a.copy_(detached);
  check_values(a, {3}, {40, 60, 80});
  a.div_(detached);
  check_values(a, {3}, {1, 1, 1});
  CHECK(&a.storage() == storage);

  // a clone does not share
  Tensor c = a.clone();
  c.zero_();
  check_values(a, {3}, {1, 1, 1});
}

// Every in-place method, to check the grad-mode rule on each.
std::vector<std::pair<const char*, std::function<void(Tensor&)>>> all_inplace_methods() {
  return {
      {"copy_", [](Tensor& t) { t.copy_(xg::ones(t.shape(), t.dtype())); }},
      {"fill_", [](Tensor& t) { t.fill_(1.0); }},
      {"zero_", [](Tensor& t) { t.zero_(); }},
      {"add_", [](Tensor& t) { t.add_(xg::ones(t.shape(), t.dtype())); }},
      {"add_", [](Tensor& t) { t.add_(1.0); }},
      {"sub_", [](Tensor& t) { t.sub_(xg::ones(t.shape(), t.dtype())); }},
      {"sub_", [](Tensor& t) { t.sub_(1.0); }},
      {"mul_", [](Tensor& t) { t.mul_(xg::ones(t.shape(), t.dtype())); }},
      {"mul_", [](Tensor& t) { t.mul_(2.0); }},
      {"div_", [](Tensor& t) { t.div_(xg::ones(t.shape(), t.dtype())); }},
      {"div_", [](Tensor& t) { t.div_(2.0); }},
      {"clamp_", [](Tensor& t) { t.clamp_(0.0, 1.0); }},
  };
}

TEST_CASE("a leaf that requires grad: an error while grad mode is on, allowed under NoGradGuard") {
  for (const auto& [name, method] : all_inplace_methods()) {
    CAPTURE(name);
    Tensor w = xg::tensor({0.5, 2.0}).requires_grad_();
    const std::vector<double> before = w.to_vector();
    CHECK_THROWS_WITH_AS(method(w),
                         doctest::Contains((std::string(name) +
                                            ": a leaf tensor that requires grad is being used in an in-place "
                                            "operation; wrap the update in xg::NoGradGuard")
                                               .c_str()),
                         xg::Error);
    CHECK(w.to_vector() == before);  // refused before anything was written
    {
      xg::NoGradGuard no_grad;
      method(w);
    }
    CHECK(w.requires_grad());
    CHECK(w.is_leaf());
    // writing through detach() needs no guard: the detached leaf does not require grad
    Tensor d = w.detach();
    method(d);
  }
  // set_grad_enabled(false) is the same as a guard
  Tensor w = xg::ones({2}).requires_grad_();
  xg::set_grad_enabled(false);
  w.fill_(3.0);
  xg::set_grad_enabled(true);
  check_values(w, {2}, {3, 3});
}

TEST_CASE("the gradient of a parameter survives an update under NoGradGuard") {
  Tensor w = xg::tensor({1.0, 2.0}, kFloat64, true);
  (w * w).sum().backward();
  check_values(w.grad(), {2}, {2, 4});
  {
    xg::NoGradGuard no_grad;
    w.sub_(w.grad(), 0.5);  // one SGD step: w - lr·grad
  }
  check_values(w, {2}, {0, 0});
  check_values(w.grad(), {2}, {2, 4});
  w.zero_grad();
  (w * 3.0).sum().backward();  // the updated leaf still works in a new graph
  check_values(w.grad(), {2}, {3, 3});
}

TEST_CASE("a tensor produced by an op, and an operand that requires grad: errors while grad mode is on") {
  for (const auto& [name, method] : all_inplace_methods()) {
    CAPTURE(name);
    Tensor w = xg::tensor({0.5, 2.0}).requires_grad_();
    Tensor y = w * 2.0;
    CHECK_THROWS_WITH_AS(method(y),
                         doctest::Contains((std::string(name) +
                                            ": the tensor was produced by 'mul' and is part of a graph; xgrad refuses "
                                            "in-place operations on it while grad mode is on")
                                               .c_str()),
                         xg::Error);
    xg::NoGradGuard no_grad;  // allowed under a guard (the caller's responsibility, as writing through detach())
    method(y);
  }
  Tensor w = xg::tensor({0.5, 2.0}).requires_grad_();
  Tensor buffer = xg::zeros({2});
  const std::string operand_error = "the operand requires grad, but in-place operations record no graph";
  CHECK_THROWS_WITH_AS(buffer.copy_(w), doctest::Contains(("copy_: " + operand_error).c_str()), xg::Error);
  CHECK_THROWS_WITH_AS(buffer.add_(w), doctest::Contains(("add_: " + operand_error).c_str()), xg::Error);
  CHECK_THROWS_WITH_AS(buffer.mul_(w * 1.0), doctest::Contains(("mul_: " + operand_error).c_str()), xg::Error);
  check_values(buffer, {2}, {0, 0});
  buffer.copy_(w.detach());  // what the message suggests
  check_values(buffer, {2}, {0.5, 2.0});
  {
    xg::NoGradGuard no_grad;
    buffer.add_(w);
  }
  check_values(buffer, {2}, {1.0, 4.0});
  CHECK_FALSE(buffer.requires_grad());
}

TEST_CASE("in-place shape, dtype and undefined-tensor errors") {
  Tensor v = xg::zeros({3});
  CHECK_THROWS_WITH_AS(v.add_(xg::ones({2, 3})),
                       "add_: an operand of shape [2,3] does not broadcast to the tensor's shape [3] (an in-place op "
                       "keeps the tensor's shape)",
                       xg::Error);
  Tensor m = xg::zeros({2, 3});
  CHECK_THROWS_WITH_AS(m.copy_(xg::ones({4})), doctest::Contains("copy_: an operand of shape [4] does not broadcast"),
                       xg::Error);
  CHECK_THROWS_WITH_AS(m.mul_(xg::ones({3, 1})), doctest::Contains("mul_: an operand of shape [3,1]"), xg::Error);
  CHECK_THROWS_WITH_AS(m.sub_(xg::ones({2, 2})), doctest::Contains("to the tensor's shape [2,3]"), xg::Error);
  CHECK_THROWS_WITH_AS(m.div_(xg::ones({1, 2, 3})), doctest::Contains("div_: an operand of shape [1,2,3]"),
                       xg::Error);
  Tensor s = xg::scalar(1.0);
  CHECK_THROWS_WITH_AS(s.add_(xg::ones({1})),
                       doctest::Contains("shape [1] does not broadcast to the tensor's shape []"), xg::Error);
  check_values(m, {2, 3}, std::vector<double>(6, 0.0));  // nothing was written

  CHECK_THROWS_WITH_AS(m.add_(xg::ones({2, 3}, kFloat64)),
                       "add_: dtype mismatch (float32 vs float64) for shapes [2,3] and [2,3]; convert one with "
                       ".to(xg::kFloat32)",
                       xg::Error);
  CHECK_NOTHROW(m.copy_(xg::ones({2, 3}, kFloat64)));  // copy_ converts

  Tensor undefined;
  CHECK_THROWS_WITH_AS(undefined.fill_(1.0), "fill_: the tensor is undefined", xg::Error);
  CHECK_THROWS_WITH_AS(m.copy_(Tensor()), "copy_: the operand is undefined", xg::Error);
}

TEST_CASE("set_data replaces data, shape and dtype in the same storage, keeping the autograd state") {
  Tensor p = xg::tensor({1.5, 2.5}).requires_grad_();
  Tensor detached = p.detach();
  const void* storage = &p.storage();
  p.set_data(xg::tensor({{1, 2, 3}}, kFloat64));  // allowed in grad mode, on a leaf that requires grad
  CHECK(p.dtype() == kFloat64);
  check_values(p, {1, 3}, {1, 2, 3});
  CHECK(p.requires_grad());
  CHECK(&p.storage() == storage);
  check_values(detached, {1, 3}, {1, 2, 3});  // the storage object is the same, so the detached handle follows

  Tensor src = xg::zeros({2});
  p.set_data(src);
  src.fill_(7.0);  // new_data was copied: the two do not share
  check_values(p, {2}, {0, 0});
  CHECK_THROWS_WITH_AS(p.set_data(Tensor()), "set_data: the new data is undefined", xg::Error);
}

TEST_CASE("layers write through the in-place methods: BatchNorm's running statistics, nn::init, Module::to") {
  namespace nn = xg::nn;
  namespace F = xg::nn::functional;
  for (const bool fused : {false, true}) {
    CAPTURE(fused);
    // The functional updates the caller's buffers in place: other handles on them see the new values.
    Tensor running_mean = xg::zeros({2}), running_var = xg::ones({2});
    const Tensor mean_view = running_mean.detach(), var_view = running_var;
    const Tensor x = xg::tensor({{1, 10}, {3, 20}});  // batch means [2, 15], unbiased variances [2, 50]
    const Tensor w = xg::ones({2}).requires_grad_(), b = xg::zeros({2}).requires_grad_();
    Tensor y = fused ? F::batch_norm_fused(x, running_mean, running_var, w, b, true, 0.25)
                     : F::batch_norm(x, running_mean, running_var, w, b, true, 0.25);
    check_values(mean_view, {2}, {0.5, 3.75}, 1e-6);        // 0.75·0 + 0.25·mean
    check_values(var_view, {2}, {1.25, 13.25}, 1e-5);       // 0.75·1 + 0.25·unbiased var
    CHECK_FALSE(running_mean.requires_grad());
    y.sum().backward();  // the graph is intact
    CHECK(w.grad().defined());
    CHECK_THROWS_WITH_AS(F::batch_norm(x, running_mean, running_var, w, b, true, 1.5),
                         "batch_norm: exponential_average_factor must be in [0, 1], got 1.5", xg::Error);
  }

  // The module: buffers keep their storage across forwards and resets; reset_parameters works in grad mode
  // although weight requires grad.
  nn::BatchNorm1d bn(nn::BatchNormOptions(2).momentum(0.5));
  const void* rm_storage = &bn.running_mean.storage();
  const void* w_storage = &bn.weight.storage();
  bn.forward(xg::tensor({{1, 10}, {3, 20}}));
  check_values(bn.running_mean, {2}, {1, 7.5}, 1e-6);
  CHECK(bn.num_batches_tracked.item() == 1.0);
  {
    xg::NoGradGuard no_grad;
    bn.weight.fill_(3.0);
  }
  bn.reset_parameters();
  check_values(bn.running_mean, {2}, {0, 0});
  check_values(bn.running_var, {2}, {1, 1});
  CHECK(bn.num_batches_tracked.item() == 0.0);
  check_values(bn.weight, {2}, {1, 1});
  check_values(bn.bias, {2}, {0, 0});
  CHECK(bn.weight.requires_grad());
  CHECK(&bn.running_mean.storage() == rm_storage);
  CHECK(&bn.weight.storage() == w_storage);

  // nn::init fills a parameter that requires grad, in grad mode, in its own storage.
  Tensor param = xg::zeros({3, 4}).requires_grad_();
  const void* p_storage = &param.storage();
  const Tensor alias = param;
  nn::init::constant_(param, 0.25);
  check_values(alias, {3, 4}, std::vector<double>(12, 0.25));
  xg::Generator g(1);
  nn::init::kaiming_uniform_(param, std::sqrt(5.0), nn::init::FanMode::FanIn, nn::init::Nonlinearity::LeakyReLU, &g);
  CHECK(param.abs().max().item() <= 0.5);  // bound 1/√fan_in = 1/2
  CHECK(param.abs().max().item() > 0.0);
  CHECK(&param.storage() == p_storage);
  CHECK(param.requires_grad());

  // Module::to converts in place: same handles, same storage objects, new dtype.
  nn::Linear lin(3, 2);
  const Tensor weight_handle = lin.weight;
  const std::vector<double> values = lin.weight.to_vector();
  const void* lw_storage = &lin.weight.storage();
  lin.to(kFloat64);
  CHECK(weight_handle.dtype() == kFloat64);
  CHECK(weight_handle.to_vector() == values);  // float32 values are exact in float64
  CHECK(&lin.weight.storage() == lw_storage);
  CHECK(lin.weight.requires_grad());
}
