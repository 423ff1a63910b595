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

/// (β1, β2): decay rates of the first and second moment.
using Betas = std::pair<double, double>;

/// Adam hyper-parameters (PyTorch: AdamOptions / torch.optim.Adam arguments).
class AdamOptions : public OptimizerOptions {
 public:
  explicit AdamOptions(double lr = 1e-3) : lr_(lr) {}
  XG_OPTION(double, lr);
  XG_OPTION(Betas, betas) = {0.9, 0.999};
  XG_OPTION(double, eps) = 1e-8;
  XG_OPTION(double, weight_decay) = 0;  // L2 penalty added to the gradient
  XG_OPTION(bool, amsgrad) = false;
  XG_OPTION(bool, maximize) = false;

 public:
  std::unique_ptr<OptimizerOptions> clone() const override { return std::make_unique<AdamOptions>(*this); }
  std::string_view optimizer_name() const override { return "Adam"; }
  double get_lr() const override { return lr_; }
  void set_lr(double lr) override { lr_ = lr; }
  /// lr >= 0, eps >= 0, 0 <= beta1 < 1, 0 <= beta2 < 1, weight_decay >= 0.
  void validate() const override;
  std::vector<std::pair<std::string, double>> values() const override;
  void set_values(const std::function<double(const std::string&)>& get) override;
};

/// AdamW hyper-parameters: as Adam, but weight_decay is decoupled and defaults to 1e-2.
class AdamWOptions : public OptimizerOptions {
 public:
  explicit AdamWOptions(double lr = 1e-3) : lr_(lr) {}
  XG_OPTION(double, lr);
  XG_OPTION(Betas, betas) = {0.9, 0.999};
  XG_OPTION(double, eps) = 1e-8;
  XG_OPTION(double, weight_decay) = 1e-2;  // θ ← θ·(1 − lr·weight_decay) each step
  XG_OPTION(bool, amsgrad) = false;
  XG_OPTION(bool, maximize) = false;

 public:
  std::unique_ptr<OptimizerOptions> clone() const override { return std::make_unique<AdamWOptions>(*this); }
  std::string_view optimizer_name() const override { return "AdamW"; }
  double get_lr() const override { return lr_; }
  void set_lr(double lr) override { lr_ = lr; }
  void validate() const override;
  std::vector<std::pair<std::string, double>> values() const override;
  void set_values(const std::function<double(const std::string&)>& get) override;
};

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
