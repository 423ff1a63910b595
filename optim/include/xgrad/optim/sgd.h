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

// [sgd_options]
/// SGD hyper-parameters (PyTorch: SGDOptions / torch.optim.SGD arguments). lr has no default, as in PyTorch.
class SGDOptions : public OptimizerOptionsBase<SGDOptions> {
 public:
  explicit SGDOptions(double lr) : lr_(lr) {}
  XG_OPTION(double, lr);
  XG_OPTION(double, momentum) = 0;
  XG_OPTION(double, dampening) = 0;
  XG_OPTION(double, weight_decay) = 0;
  XG_OPTION(bool, nesterov) = false;
  XG_OPTION(bool, maximize) = false;

 public:
  /// Every option once: its checkpoint name, its field and its check (see OptimizerOptionsBase).
  template <class Self, class Visit>
  static void for_each_option(Self& o, Visit&& visit) {
    visit("lr", o.lr_, check::non_negative);
    visit("momentum", o.momentum_, check::non_negative);
    visit("dampening", o.dampening_, check::finite);
    visit("weight_decay", o.weight_decay_, check::non_negative);
    visit("nesterov", o.nesterov_);
    visit("maximize", o.maximize_);
  }
  std::string_view optimizer_name() const override { return "SGD"; }
  /// The checks above, then: nesterov needs momentum > 0 and dampening = 0.
  void validate() const override;
};
// [/sgd_options]

/// Per-parameter state: "momentum_buffer" (only when momentum ≠ 0).
class SGD final : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, const SGDOptions& defaults);
  SGD(std::vector<ParamGroup> groups, const SGDOptions& defaults);

 protected:
  void update(Tensor& param, const Tensor& grad, const OptimizerOptions& options, ParamState& state) override;
};

}  // namespace xg::optim
