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

/// softmax(x, dim) as a module, to end a Sequential (PyTorch: nn.Softmax(dim)). Feed its output to a loss
/// that takes probabilities; CrossEntropyLoss wants the logits (it applies log_softmax itself).
class Softmax : public Module {
 public:
  explicit Softmax(int dim) : dim_(dim) {}
  Tensor forward(const Tensor& input) override;
  void pretty_print(std::ostream& os) const override;

 private:
  int dim_;
};

/// log_softmax(x, dim) as a module (PyTorch: nn.LogSoftmax(dim)); with NLLLoss it equals CrossEntropyLoss.
class LogSoftmax : public Module {
 public:
  explicit LogSoftmax(int dim) : dim_(dim) {}
  Tensor forward(const Tensor& input) override;
  void pretty_print(std::ostream& os) const override;

 private:
  int dim_;
};

}  // namespace xg::nn
