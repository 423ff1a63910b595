// Bad input gets a clear xg::Error naming the op, the shapes/values involved and what to do — never a crash,
// a silent NaN or a wrong result. Each check asserts the essential part of the message.
#include "testing.h"

using namespace xgt;
using doctest::Contains;
using xg::kFloat32;
using xg::kFloat64;

#define CHECK_ERROR(expr, text) CHECK_THROWS_WITH_AS(expr, Contains(text), xg::Error)

TEST_CASE("broadcasting mismatch names the op and both shapes") {
  const Tensor a = xg::zeros({2, 3}), b = xg::zeros({4});
  CHECK_ERROR(xg::add(a, b), "add: cannot broadcast [2,3] with [4]");
  CHECK_ERROR(a - b, "sub: cannot broadcast [2,3] with [4]");
  CHECK_ERROR(a * b, "mul: cannot broadcast [2,3] with [4]");
  CHECK_ERROR(b / a, "div: cannot broadcast [4] with [2,3]");
  CHECK_ERROR(xg::maximum(a, b), "maximum: cannot broadcast");
  CHECK_ERROR(xg::minimum(a, b), "minimum: cannot broadcast");
  CHECK_ERROR(xg::pow(a, b), "pow: cannot broadcast");
  CHECK_ERROR(xg::eq(a, b), "eq: cannot broadcast [2,3] with [4]");
  CHECK_ERROR(xg::gt(a, b), "gt: cannot broadcast");
  CHECK_ERROR(xg::where(xg::gt(a, 0.0), a, b), "where: cannot broadcast");
  CHECK_ERROR(xg::zeros({3, 1, 4}) + xg::zeros({2, 3}), "add: cannot broadcast [3,1,4] with [2,3]");
  CHECK_ERROR(xg::expand(xg::zeros({3, 2}), {3, 4}), "expand: cannot expand shape [3,2] to [3,4]");
  CHECK_ERROR(xg::expand(xg::zeros({3, 2}), {2}), "expand: cannot expand shape [3,2] to [2]");
  CHECK_ERROR(xg::sum_to(xg::zeros({2, 3}), {4}), "sum_to: cannot sum shape [2,3] down to [4]");
  CHECK_ERROR(xg::sum_to(xg::zeros({3}), {2, 3}), "sum_to: cannot sum shape [3] down to [2,3]");
}

TEST_CASE("matmul and linear shape errors") {
  CHECK_ERROR(xg::matmul(xg::zeros({64, 10}), xg::zeros({20, 5})), "matmul: cannot multiply [64,10] by [20,5]");
  CHECK_ERROR(xg::matmul(xg::zeros({3}), xg::zeros({4})), "matmul: cannot multiply [3] by [4]");
  CHECK_ERROR(xg::matmul(xg::zeros({2, 3, 4}), xg::zeros({5, 4, 2})), "matmul: cannot broadcast [2] with [5]");
  CHECK_ERROR(xg::matmul(xg::scalar(1), xg::zeros({2})), "matmul: both arguments need at least 1 dimension");
  CHECK_ERROR(xg::linear(xg::zeros({8, 5}), xg::zeros({3, 4})), "linear: input [8,5] does not end in in_features = 4");
  CHECK_ERROR(xg::linear(xg::zeros({8, 4}), xg::zeros({4})), "linear: weight must be [out_features, in_features]");
  CHECK_ERROR(xg::linear(xg::zeros({8, 4}), xg::zeros({3, 4}), xg::zeros({4})), "linear: bias must be [3], got [4]");
}

TEST_CASE("dtype mismatch") {
  const Tensor f = xg::zeros({2}), d = xg::zeros({2}, kFloat64);
  CHECK((f + d).dtype() == kFloat64);  // elementwise ops promote (PyTorch); the others need equal dtypes
  CHECK_ERROR(xg::matmul(xg::zeros({2, 2}), xg::zeros({2, 2}, kFloat64)), "matmul: dtype mismatch");
  CHECK_ERROR(xg::cat({f, d}), "cat: dtype mismatch");
  CHECK_ERROR(xg::where(f, f, d), "where: the condition must be a bool tensor");
  CHECK_ERROR(xg::linear(f, xg::zeros({1, 2}, kFloat64)), "linear: dtype mismatch");
  CHECK_ERROR(f.data<double>(), "Tensor::data<float64>(): the tensor holds float32");
  Tensor x = xg::zeros({2}, kFloat32, true);
  CHECK_ERROR((x * 2.0).backward(xg::ones({2}, kFloat64)), "the gradient is float64 but the output is float32");
  CHECK_ERROR(x.set_grad(xg::zeros({2}, kFloat64)), "set_grad(): gradient of shape [2] (float64)");
}

TEST_CASE("bad axes") {
  const Tensor x = xg::zeros({2, 3});
  CHECK_ERROR(xg::sum(x, {2}), "sum: axis 2 is out of range for a tensor of shape [2,3] (valid axes are -2..1)");
  CHECK_ERROR(xg::sum(x, {-3}), "sum: axis -3 is out of range");
  CHECK_ERROR(xg::sum(x, {0, -2}), "sum: axis -2 appears twice");
  CHECK_ERROR(xg::mean(x, {5}), "mean: axis 5 is out of range");
  CHECK_ERROR(xg::amax(x, {2}), "amax: axis 2 is out of range");
  CHECK_ERROR(xg::amin(x, {2}), "amin: axis 2");
  CHECK_ERROR(xg::var(x, {2}), "var: axis 2");
  CHECK_ERROR(xg::softmax(x, 2), "axis 2 is out of range");
  CHECK_ERROR(xg::log_softmax(x, -3), "axis -3 is out of range");
  CHECK_ERROR(xg::logsumexp(x, {4}), "axis 4 is out of range");
  CHECK_ERROR(xg::transpose(x, 0, 2), "transpose: axis 2 is out of range");
  CHECK_ERROR(xg::permute(x, {0}), "permute: got 1 axes [0] for a tensor of shape [2,3]");
  CHECK_ERROR(xg::permute(x, {1, 1}), "permute: axis 1 repeated");
  CHECK_ERROR(xg::squeeze(x, 2), "squeeze: axis 2 is out of range");
  CHECK_ERROR(xg::unsqueeze(x, 3), "unsqueeze: axis 3 is out of range");
  CHECK_ERROR(xg::unsqueeze(x, -4), "unsqueeze: axis -4 is out of range");
  CHECK_ERROR(xg::flatten(x, 1, 0), "flatten: start axis 1 comes after end axis 0");
  CHECK_ERROR(xg::cat({x, x}, 2), "cat: axis 2 is out of range");
  CHECK_ERROR(xg::slice(x, 2, 0, 1), "slice: axis 2 is out of range");
  CHECK_ERROR(xg::index_select(x, -3, {0}), "index_select: axis -3 is out of range");
  CHECK_ERROR(x.size(2), "size: axis 2 is out of range");
  CHECK_ERROR(xg::sum(xg::scalar(1), {1}), "sum: axis 1 is out of range for a 0-d tensor");
}

TEST_CASE("backward misuse") {
  Tensor x = xg::zeros({2, 3}, kFloat32, true);
  Tensor y = x * 2.0;
  CHECK_ERROR(y.backward(), "backward() without a gradient needs a scalar");
  CHECK_ERROR(y.backward(), "the output has shape [2,3] (6 elements)");
  CHECK_ERROR(y.backward(xg::ones({3, 2})), "the gradient has shape [3,2] but the output has shape [2,3]");
  CHECK_ERROR(xg::zeros({2}).sum().backward(), "does not require grad and has no grad_fn");
  {
    xg::NoGradGuard g;
    Tensor z = (x * 2.0).sum();
    CHECK_ERROR(z.backward(), "NoGradGuard");
  }
  CHECK_ERROR(y.requires_grad_(false), "requires_grad_(): only leaves can change requires_grad");
  CHECK_ERROR(xg::zeros({2}).register_hook([](const Tensor& g) { return g; }), "register_hook(): the tensor does not require grad");
  Tensor h = xg::zeros({2}, kFloat32, true);
  h.register_hook([](const Tensor&) { return xg::zeros({3}); });
  CHECK_ERROR((h * 1.0).sum().backward(), "gradient hook returned shape [3] (float32) but the gradient has shape [2]");
  CHECK_ERROR(xg::autograd::backward({y.sum(), y.sum()}, {Tensor()}), "autograd::backward: 2 outputs but 1 gradients");
  CHECK_ERROR(xg::autograd::grad({y.sum()}, {xg::zeros({1})}), "autograd::grad: input 0 does not require grad");
  Tensor unused = xg::zeros({1}, kFloat32, true);
  CHECK_ERROR(xg::autograd::grad({y.sum()}, {unused}), "input 0 (shape [1]) was not used to compute the outputs");
  Tensor l = (x * x).sum();
  l.backward();
  CHECK_ERROR(l.backward(), "trying to backward through the graph a second time");
}

TEST_CASE("custom ops with a broken backward get a clear error") {
  Tensor x = xg::zeros({2}, kFloat64, true);
  auto op = [&](xg::BackwardFn fn) { return xg::record_op("custom", xg::zeros({2}, kFloat64), {x}, fn).sum(); };
  CHECK_ERROR(op([](const Tensor&, const std::vector<bool>&) { return std::vector<Tensor>{}; }).backward(),
              "backward of 'custom' returned 0 gradients for 1 inputs");
  CHECK_ERROR(op([](const Tensor&, const std::vector<bool>&) { return std::vector<Tensor>{Tensor()}; }).backward(),
              "backward of 'custom' returned no gradient for input 0 (shape [2]) which requires one");
  CHECK_ERROR(op([](const Tensor&, const std::vector<bool>&) { return std::vector<Tensor>{xg::zeros({3}, kFloat64)}; })
                  .backward(),
              "backward of 'custom' returned a gradient of shape [3] for input 0 of shape [2]");
  CHECK_ERROR(op([](const Tensor&, const std::vector<bool>&) { return std::vector<Tensor>{xg::zeros({2})}; }).backward(),
              "backward of 'custom' returned a float32 gradient for input 0 which is float64");
  CHECK_ERROR(xg::record_op("same", x, {x}, [](const Tensor& g, const std::vector<bool>&) { return std::vector<Tensor>{g}; }),
              "record_op('same'): the output must be a new tensor");
  const Tensor made = x * 2.0;
  CHECK_ERROR(xg::record_op("again", made, {x}, [](const Tensor& g, const std::vector<bool>&) { return std::vector<Tensor>{g}; }),
              "record_op('again'): the output was already produced by 'mul'");
}

TEST_CASE("item, element access and undefined tensors") {
  const Tensor x = xg::zeros({2, 3});
  CHECK_ERROR(x.item(), "item(): the tensor has 6 elements (shape [2,3])");
  CHECK_ERROR(xg::zeros({0}).item(), "item(): the tensor has 0 elements");
  CHECK_ERROR(x.at({2, 0}), "at: index 2 is out of range for axis 0 of size 2 (shape [2,3])");
  CHECK_ERROR(x.at({0, -4}), "at: index -4 is out of range for axis 1 of size 3");
  CHECK_ERROR(x.at({0}), "at: got 1 indices for a tensor of shape [2,3] (ndim 2)");
  Tensor y = xg::zeros({2});
  CHECK_ERROR(y.set({5}, 1.0), "set: index 5 is out of range");
  const Tensor u;
  CHECK_ERROR(u.shape(), "this Tensor is undefined");
  CHECK_ERROR(u.item(), "this Tensor is undefined");
  CHECK_ERROR(xg::add(u, x), "add: an input tensor is undefined");
  CHECK_ERROR(x.grad().numel(), "this Tensor is undefined (default-constructed or an absent gradient)");
}

TEST_CASE("reshape and other shape-op errors") {
  const Tensor x = xg::zeros({2, 3});
  CHECK_ERROR(xg::reshape(x, {4, 2}), "reshape: cannot reshape [2,3] (6 elements) into [4,2] (8 elements)");
  CHECK_ERROR(xg::reshape(x, {-1, 4}), "reshape: cannot reshape [2,3] (6 elements) into [-1,4]");
  CHECK_ERROR(xg::reshape(x, {-1, -1}), "reshape: only one axis may be -1");
  CHECK_ERROR(xg::reshape(x, {-2, 3}), "reshape: invalid size -2");
  CHECK_ERROR(x.view({7}), "reshape: cannot reshape [2,3] (6 elements) into [7] (7 elements)");
  CHECK_ERROR(xg::slice(xg::scalar(1), 0, 0, 1), "slice: cannot slice a 0-d tensor");
  CHECK_ERROR(xg::slice(x, 0, 0, 1, 0), "slice: step must be positive, got 0");
  CHECK_ERROR(xg::narrow(x, 1, 2, 2), "narrow: start 2 + length 2 exceeds size 3 of axis 1 (shape [2,3])");
  CHECK_ERROR(xg::index_select(x, 0, {0, 2}), "index_select: index 2 is out of range for axis 0 of size 2");
  CHECK_ERROR(xg::cat({}), "cat: needs at least one tensor");
  CHECK_ERROR(xg::cat({x, xg::zeros({3, 3})}, 1), "cat: tensor 1 has shape [3,3] but tensor 0 has shape [2,3]");
  CHECK_ERROR(xg::cat({xg::scalar(1), xg::scalar(2)}), "cat: cannot concatenate 0-d tensors; use stack");
  CHECK_ERROR(xg::stack({x, xg::zeros({3, 2})}), "stack: tensor 1 has shape [3,2] but tensor 0 has shape [2,3]");
  CHECK_ERROR(xg::stack({}), "stack: needs at least one tensor");
}

TEST_CASE("values that make an op undefined") {
  CHECK_ERROR(xg::var(xg::zeros({1, 3}), {0}), "var: the unbiased variance over 1 element(s) of shape [1,3] is undefined");
  CHECK_ERROR(xg::var(xg::zeros({1, 3}), {0}), "use unbiased=false");
  CHECK_ERROR(xg::std(xg::scalar(1)), "var: the unbiased variance over 1 element(s)");
  CHECK_ERROR(xg::mean(xg::zeros({0, 3}), {0}), "mean: reducing over an empty axis of shape [0,3]");
  CHECK_ERROR(xg::amax(xg::zeros({0})), "amax: cannot reduce an empty tensor of shape [0]");
  CHECK_ERROR(xg::amin(xg::zeros({2, 0}), {1}), "amin: cannot reduce an empty tensor");
  CHECK_ERROR(xg::clamp(xg::zeros({2}), 1.0, 0.0), "clamp: min 1 is greater than max 0");
}

TEST_CASE("factory and random errors") {
  CHECK_ERROR(xg::arange(0, 5, 0), "arange: step must be nonzero");
  CHECK_ERROR(xg::arange(0, 5, -1), "arange: empty range from 0 to 5 with step -1");
  CHECK_ERROR(xg::from_vector({1, 2, 3}, {2, 2}), "from_vector: 3 values do not fill shape [2,2] (4 elements)");
  CHECK_ERROR(xg::from_vector(std::vector<float>{1, 2}, {3}), "from_vector: 2 values do not fill shape [3]");
  CHECK_ERROR(xg::tensor({{1, 2}, {3}}), "tensor: row 1 has 1 values but row 0 has 2");
  CHECK_ERROR(xg::uniform({2}, 1.0, 0.0), "uniform: low (1) must not exceed high (0)");
  CHECK_ERROR(xg::normal({2}, 0.0, -1.0), "normal: std must be >= 0, got -1");
}

TEST_CASE("gradcheck misuse") {
  auto f = [](const std::vector<Tensor>& in) { return in[0] * 2.0; };
  CHECK_ERROR(xg::gradcheck(f, {xg::zeros({2}, kFloat32, true)}), "gradcheck: input 0 (shape [2]) is float32");
  CHECK_ERROR(xg::gradcheck(f, {xg::zeros({2}, kFloat64)}), "gradcheck: no input requires grad");
  CHECK_ERROR(xg::gradcheck(f, {Tensor()}), "gradcheck: input 0 is undefined");
  CHECK_ERROR(xg::gradcheck([](auto&) { return xg::zeros({1}, kFloat64); }, {xg::zeros({2}, kFloat64, true)}),
              "f's output does not depend on any input that requires grad");
  CHECK_ERROR(xg::gradcheck([](auto& in) { return in[0].to(kFloat32); }, {xg::zeros({2}, kFloat64, true)}),
              "gradcheck: f must return a defined float64 tensor");
}
