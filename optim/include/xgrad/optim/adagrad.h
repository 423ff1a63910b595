// xgrad/optim/adagrad.h — Adagrad.
//
// PyTorch 1.13 semantics (torch.optim.Adagrad). For parameter θ with gradient g at step t (from 1):
//   g ← −g                                       if maximize
//   g ← g + λ·θ                                  if weight_decay λ ≠ 0
//   clr ← lr / (1 + (t − 1)·lr_decay)
//   s ← s + g²                                   (s starts at initial_accumulator_value)
//   θ ← θ − clr·g / (sqrt(s) + eps)
#pragma once

#include <vector>

#include "xgrad/optim/optimizer.h"

namespace xg::optim {

/// Adagrad hyper-parameters (PyTorch: AdagradOptions / torch.optim.Adagrad arguments).
class AdagradOptions : public OptimizerOptionsBase<AdagradOptions> {
 public:
  explicit AdagradOptions(double lr = 1e-2) : lr_(lr) {}
  XG_OPTION(double, lr);
  XG_OPTION(double, lr_decay) = 0;
  XG_OPTION(double, weight_decay) = 0;
  XG_OPTION(double, initial_accumulator_value) = 0;
  XG_OPTION(double, eps) = 1e-10;
  XG_OPTION(bool, maximize) = false;

 public:
  /// Every option once: its checkpoint name, its field and its check (see OptimizerOptionsBase).
  template <class Self, class Visit>
  static void for_each_option(Self& o, Visit&& visit) {
    visit("lr", o.lr_, check::non_negative);
    visit("lr_decay", o.lr_decay_, check::non_negative);
    visit("weight_decay", o.weight_decay_, check::non_negative);
    visit("initial_accumulator_value", o.initial_accumulator_value_, check::non_negative);
    visit("eps", o.eps_, check::non_negative);
    visit("maximize", o.maximize_);
  }
  std::string_view optimizer_name() const override { return "Adagrad"; }
};

/// Per-parameter state: "sum" (s). Created at the parameter's first update (PyTorch creates it in the
/// constructor; the values are the same).
class Adagrad final : public Optimizer {
 public:
  Adagrad(std::vector<Tensor> params, const AdagradOptions& defaults = AdagradOptions());
  Adagrad(std::vector<ParamGroup> groups, const AdagradOptions& defaults = AdagradOptions());

 protected:
  void update(Tensor& param, const Tensor& grad, const OptimizerOptions& options, ParamState& state) override;
};

}  // namespace xg::optim
