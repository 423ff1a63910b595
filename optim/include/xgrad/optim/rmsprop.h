// xgrad/optim/rmsprop.h — RMSprop, optionally centered and with momentum.
//
// PyTorch 1.13 semantics (torch.optim.RMSprop). For parameter θ with gradient g:
//   g ← −g                                       if maximize
//   g ← g + λ·θ                                  if weight_decay λ ≠ 0
//   v ← α·v + (1 − α)·g²
//   a ← g_avg ← α·g_avg + (1 − α)·g,   ṽ ← v − a²          if centered, else ṽ ← v
//   d ← sqrt(ṽ) + eps                            (eps added after the square root; TensorFlow adds it inside)
//   b ← μ·b + g/d,  θ ← θ − lr·b                 if momentum μ > 0
//   θ ← θ − lr·g/d                               otherwise
#pragma once

#include <vector>

#include "xgrad/optim/optimizer.h"

namespace xg::optim {

/// RMSprop hyper-parameters (PyTorch: RMSpropOptions / torch.optim.RMSprop arguments).
class RMSpropOptions : public OptimizerOptionsBase<RMSpropOptions> {
 public:
  explicit RMSpropOptions(double lr = 1e-2) : lr_(lr) {}
  XG_OPTION(double, lr);
  XG_OPTION(double, alpha) = 0.99;
  XG_OPTION(double, eps) = 1e-8;
  XG_OPTION(double, weight_decay) = 0;
  XG_OPTION(double, momentum) = 0;
  XG_OPTION(bool, centered) = false;
  XG_OPTION(bool, maximize) = false;

 public:
  /// Every option once: its checkpoint name, its field and its check (see OptimizerOptionsBase).
  template <class Self, class Visit>
  static void for_each_option(Self& o, Visit&& visit) {
    visit("lr", o.lr_, check::non_negative);
    visit("alpha", o.alpha_, check::non_negative);
    visit("eps", o.eps_, check::non_negative);
    visit("weight_decay", o.weight_decay_, check::non_negative);
    visit("momentum", o.momentum_, check::non_negative);
    visit("centered", o.centered_);
    visit("maximize", o.maximize_);
  }
  std::string_view optimizer_name() const override { return "RMSprop"; }
};

/// Per-parameter state: "square_avg" (v), "momentum_buffer" (b, momentum > 0), "grad_avg" (centered).
class RMSprop final : public Optimizer {
 public:
  RMSprop(std::vector<Tensor> params, const RMSpropOptions& defaults = RMSpropOptions());
  RMSprop(std::vector<ParamGroup> groups, const RMSpropOptions& defaults = RMSpropOptions());

 protected:
  void update(Tensor& param, const Tensor& grad, const OptimizerOptions& options, ParamState& state) override;
};

}  // namespace xg::optim
