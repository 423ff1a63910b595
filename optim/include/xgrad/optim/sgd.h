// xgrad/optim/sgd.h — stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay.
//
// PyTorch 1.13 semantics (torch.optim.SGD). For parameter θ with gradient g at step t:
//   g ← g + λ·θ                                  if weight_decay λ ≠ 0   (L2 enters *before* momentum)
//   b ← g                                        if momentum μ ≠ 0 and t = 1   (no dampening on the first step)
//   b ← μ·b + (1 − τ)·g                          if momentum μ ≠ 0 and t > 1   (τ = dampening)
//   g ← g + μ·b  (nesterov)   or   g ← b          if momentum μ ≠ 0
//   θ ← θ − lr·g                                 (θ ← θ + lr·g with maximize)
// Note: as in PyTorch 1.13, maximize flips the whole step, including the L2 term.
#pragma once

#include <vector>

#include "xgrad/optim/optimizer.h"

namespace xg::optim {

/// SGD hyper-parameters (PyTorch: SGDOptions / torch.optim.SGD arguments). lr has no default, as in PyTorch.
class SGDOptions : public OptimizerOptions {
 public:
  explicit SGDOptions(double lr) : lr_(lr) {}
  XG_OPTION(double, lr);
  XG_OPTION(double, momentum) = 0;
  XG_OPTION(double, dampening) = 0;
  XG_OPTION(double, weight_decay) = 0;
  XG_OPTION(bool, nesterov) = false;
  XG_OPTION(bool, maximize) = false;

 public:
  std::unique_ptr<OptimizerOptions> clone() const override { return std::make_unique<SGDOptions>(*this); }
  std::string_view optimizer_name() const override { return "SGD"; }
  double get_lr() const override { return lr_; }
  void set_lr(double lr) override { lr_ = lr; }
  /// lr >= 0, momentum >= 0, weight_decay >= 0; nesterov needs momentum > 0 and dampening = 0.
  void validate() const override;
  std::vector<std::pair<std::string, double>> values() const override;
  void set_values(const std::function<double(const std::string&)>& get) override;
};

/// Per-parameter state: "momentum_buffer" (only when momentum ≠ 0).
class SGD final : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, const SGDOptions& defaults);
  SGD(std::vector<ParamGroup> groups, const SGDOptions& defaults);

 protected:
  void update(Tensor& param, const Tensor& grad, const OptimizerOptions& options, ParamState& state) override;
};

}  // namespace xg::optim
