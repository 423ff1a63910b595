// xgrad/nn/init.h — weight initialisation, in place and seeded (PyTorch: torch::nn::init).
//
// Every function fills `t` in place (no autograd recording) and returns it. The random ones draw from `gen`,
// or from xg::default_generator() when it is null, so xg::manual_seed(s) makes initialisation reproducible.
//
// fan_in / fan_out of a weight [out, in, k1, k2, ...] are in·k1·k2·... and out·k1·k2·... (PyTorch's rule).
#pragma once

#include <utility>

#include "xgrad/random.h"
#include "xgrad/tensor.h"

namespace xg::nn::init {

/// Which fan the kaiming_* functions keep the variance of: the forward pass (FanIn) or the backward (FanOut).
enum class FanMode { FanIn, FanOut };
/// Nonlinearities calculate_gain knows.
enum class Nonlinearity { Linear, Conv, Sigmoid, Tanh, ReLU, LeakyReLU, SELU };

/// The recommended gain for a nonlinearity: 1 for linear/conv/sigmoid, 5/3 for tanh, √2 for ReLU,
/// √(2/(1+a²)) for leaky ReLU with negative slope a (`param`, default 0.01), 3/4 for SELU.
double calculate_gain(Nonlinearity nonlinearity, double param = 0.01);
/// {fan_in, fan_out}; needs at least 2 dimensions (error otherwise).
std::pair<std::size_t, std::size_t> calculate_fan_in_and_fan_out(const Tensor& t);

Tensor uniform_(Tensor t, double a = 0.0, double b = 1.0, Generator* gen = nullptr);     // U(a, b)
Tensor normal_(Tensor t, double mean = 0.0, double std = 1.0, Generator* gen = nullptr);  // N(mean, std²)
Tensor constant_(Tensor t, double value);
Tensor zeros_(Tensor t);
Tensor ones_(Tensor t);
/// Glorot: U(-a, a) with a = gain·√(6/(fan_in + fan_out)).
Tensor xavier_uniform_(Tensor t, double gain = 1.0, Generator* gen = nullptr);
/// Glorot: N(0, std²) with std = gain·√(2/(fan_in + fan_out)).
Tensor xavier_normal_(Tensor t, double gain = 1.0, Generator* gen = nullptr);
/// He: U(-b, b) with b = gain·√(3/fan), gain = calculate_gain(nonlinearity, a). PyTorch's Linear and Conv
/// defaults are kaiming_uniform_(w, a = √5), i.e. b = 1/√fan_in.
Tensor kaiming_uniform_(Tensor t, double a = 0.0, FanMode mode = FanMode::FanIn,
                        Nonlinearity nonlinearity = Nonlinearity::LeakyReLU, Generator* gen = nullptr);
/// He: N(0, std²) with std = gain/√fan.
Tensor kaiming_normal_(Tensor t, double a = 0.0, FanMode mode = FanMode::FanIn,
                       Nonlinearity nonlinearity = Nonlinearity::LeakyReLU, Generator* gen = nullptr);

}  // namespace xg::nn::init
