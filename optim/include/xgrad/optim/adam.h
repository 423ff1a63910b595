// xgrad/optim/adam.h — Adam (L2 weight decay) and AdamW (decoupled weight decay), with AMSGrad.
//
// PyTorch 1.13 semantics (torch.optim.Adam / AdamW, the single-tensor implementation). For parameter θ with
// gradient g at step t (t counts this parameter's updates, starting at 1):
//   g ← −g                                       if maximize
//   θ ← θ·(1 − lr·λ)                             AdamW only (decoupled decay, before the Adam step)
//   g ← g + λ·θ                                  Adam only, if λ ≠ 0 (L2 penalty inside the moments)
//   m ← β1·m + (1 − β1)·g
//   v ← β2·v + (1 − β2)·g²
//   v_max ← max(v_max, v)                        if amsgrad (the max of the *raw* second moment)
//   denom ← sqrt(v or v_max) / sqrt(1 − β2^t) + eps      (eps added after the bias-corrected square root)
//   θ ← θ − (lr / (1 − β1^t)) · m / denom
// The scalars (bias corrections, step size) are computed in double; the per-element work in the parameter's
// dtype, like PyTorch.
#pragma once

#include <utility>
#include <vector>

#include "xgrad/optim/optimizer.h"

namespace xg::optim {

/// Adam and AdamW take the same options; only weight_decay's meaning and default differ, so one class template
/// declares them for both: AdamOptions = AdamFamilyOptions<false>, AdamWOptions = AdamFamilyOptions<true>.
template <bool Decoupled>
class AdamFamilyOptions : public OptimizerOptionsBase<AdamFamilyOptions<Decoupled>> {
 public:
  explicit AdamFamilyOptions(double lr = 1e-3) : lr_(lr) {}
  XG_OPTION(double, lr);
  XG_OPTION(Betas, betas) = {0.9, 0.999};
  XG_OPTION(double, eps) = 1e-8;
  /// Adam: L2 penalty added to the gradient (default 0). AdamW: θ ← θ·(1 − lr·weight_decay) each step
  /// (default 1e-2).
  XG_OPTION(double, weight_decay) = Decoupled ? 1e-2 : 0.0;
  XG_OPTION(bool, amsgrad) = false;
  XG_OPTION(bool, maximize) = false;

 public:
  /// Every option once: its checkpoint name, its field and its check (see OptimizerOptionsBase).
  template <class Self, class Visit>
  static void for_each_option(Self& o, Visit&& visit) {
    visit("lr", o.lr_, check::non_negative);
    visit("betas", o.betas_, check::betas);
    visit("eps", o.eps_, check::non_negative);
    visit("weight_decay", o.weight_decay_, check::non_negative);
    visit("amsgrad", o.amsgrad_);
    visit("maximize", o.maximize_);
  }
  std::string_view optimizer_name() const override { return Decoupled ? "AdamW" : "Adam"; }
};

/// Adam hyper-parameters (PyTorch: AdamOptions / torch.optim.Adam arguments).
using AdamOptions = AdamFamilyOptions<false>;
/// AdamW hyper-parameters: as Adam, but weight_decay is decoupled and defaults to 1e-2.
using AdamWOptions = AdamFamilyOptions<true>;

/// Per-parameter state: "exp_avg" (m), "exp_avg_sq" (v), and "max_exp_avg_sq" (v_max) with amsgrad.
class Adam final : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, const AdamOptions& defaults = AdamOptions());
  Adam(std::vector<ParamGroup> groups, const AdamOptions& defaults = AdamOptions());

 protected:
  void update(Tensor& param, const Tensor& grad, const OptimizerOptions& options, ParamState& state) override;
};

/// Same state as Adam.
class AdamW final : public Optimizer {
 public:
  AdamW(std::vector<Tensor> params, const AdamWOptions& defaults = AdamWOptions());
  AdamW(std::vector<ParamGroup> groups, const AdamWOptions& defaults = AdamWOptions());

 protected:
  void update(Tensor& param, const Tensor& grad, const OptimizerOptions& options, ParamState& state) override;
};

}  // namespace xg::optim
