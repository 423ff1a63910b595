// Weight initialisation (PyTorch's torch.nn.init formulas), in place, seeded.
#include "xgrad/nn/init.h"

#include <cmath>

#include "xgrad/autograd.h"

namespace xg::nn::init {

namespace {
// Overwrites t's values in its own storage with those of `values` (same shape and dtype). Under no-grad, as
// PyTorch's init functions: initialising a parameter that requires grad is not an op of the graph.
Tensor assign(Tensor t, const Tensor& values) {
  NoGradGuard no_grad;
  t.copy_(values);
  return t;
}

void check_defined(const Tensor& t, const char* fn) {
  if (!t.defined()) fail("nn::init::{}: the tensor is undefined", fn);
}

std::size_t fan(const Tensor& t, FanMode mode) {
  const auto [in, out] = calculate_fan_in_and_fan_out(t);
  const std::size_t f = mode == FanMode::FanIn ? in : out;
  if (f == 0) fail("nn::init: fan is 0 for a tensor of shape {}; cannot initialise it", shape_str(t.shape()));
  return f;
}
}  // namespace

double calculate_gain(Nonlinearity nl, double param) {
  switch (nl) {
    case Nonlinearity::Linear:
    case Nonlinearity::Conv:
    case Nonlinearity::Sigmoid: return 1.0;
    case Nonlinearity::Tanh: return 5.0 / 3.0;
    case Nonlinearity::ReLU: return std::sqrt(2.0);
    case Nonlinearity::LeakyReLU: return std::sqrt(2.0 / (1.0 + param * param));
    case Nonlinearity::SELU: return 3.0 / 4.0;
  }
  return 1.0;
}

std::pair<std::size_t, std::size_t> calculate_fan_in_and_fan_out(const Tensor& t) {
  check_defined(t, "calculate_fan_in_and_fan_out");
  const Shape s = t.shape();
  if (s.size() < 2)
    fail("nn::init: fan in and fan out need a tensor with at least 2 dimensions, got shape {}", shape_str(s));
  std::size_t receptive = 1;
  for (std::size_t i = 2; i < s.size(); ++i) receptive *= s[i];
  return {s[1] * receptive, s[0] * receptive};
}

Tensor uniform_(Tensor t, double a, double b, Generator* gen) {
  check_defined(t, "uniform_");
  if (!(a <= b)) fail("nn::init::uniform_: a ({}) must not exceed b ({})", a, b);
  return assign(t, uniform(t.shape(), a, b, t.dtype(), gen));
}

Tensor normal_(Tensor t, double mean, double std, Generator* gen) {
  check_defined(t, "normal_");
  if (!(std >= 0)) fail("nn::init::normal_: std must be >= 0, got {}", std);
  return assign(t, normal(t.shape(), mean, std, t.dtype(), gen));
}

Tensor constant_(Tensor t, double value) {
  check_defined(t, "constant_");
  return assign(t, full(t.shape(), value, t.dtype()));
}
Tensor zeros_(Tensor t) { return constant_(std::move(t), 0.0); }
Tensor ones_(Tensor t) { return constant_(std::move(t), 1.0); }

Tensor xavier_uniform_(Tensor t, double gain, Generator* gen) {
  const auto [in, out] = calculate_fan_in_and_fan_out(t);
  const double a = gain * std::sqrt(6.0 / static_cast<double>(in + out));
  return uniform_(std::move(t), -a, a, gen);
}

Tensor xavier_normal_(Tensor t, double gain, Generator* gen) {
  const auto [in, out] = calculate_fan_in_and_fan_out(t);
  return normal_(std::move(t), 0.0, gain * std::sqrt(2.0 / static_cast<double>(in + out)), gen);
}

Tensor kaiming_uniform_(Tensor t, double a, FanMode mode, Nonlinearity nl, Generator* gen) {
  const double stdev = calculate_gain(nl, a) / std::sqrt(static_cast<double>(fan(t, mode)));
  const double bound = std::sqrt(3.0) * stdev;  // U(-b, b) has standard deviation b/√3
  return uniform_(std::move(t), -bound, bound, gen);
}

Tensor kaiming_normal_(Tensor t, double a, FanMode mode, Nonlinearity nl, Generator* gen) {
  const double stdev = calculate_gain(nl, a) / std::sqrt(static_cast<double>(fan(t, mode)));
  return normal_(std::move(t), 0.0, stdev, gen);
}

}  // namespace xg::nn::init
