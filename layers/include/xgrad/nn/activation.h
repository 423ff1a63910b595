// xgrad/nn/activation.h — ReLU, Sigmoid, Tanh as modules (the ops are xg::relu/sigmoid/tanh).
#pragma once

#include "xgrad/nn/module.h"

namespace xg::nn {

/// max(x, 0) elementwise; gradient 0 at 0 (PyTorch's convention).
class ReLU : public Module {
 public:
  ReLU() = default;
  Tensor forward(const Tensor& input) override;
};

/// 1/(1 + e^-x) elementwise.
class Sigmoid : public Module {
 public:
  Sigmoid() = default;
  Tensor forward(const Tensor& input) override;
};

/// tanh(x) elementwise.
class Tanh : public Module {
 public:
  Tanh() = default;
  Tensor forward(const Tensor& input) override;
};

}  // namespace xg::nn
