// xgrad/nn/lpnorm.h — LpNorm1d and LpNorm2d: BatchNorm with the batch's standard deviation replaced by its
// average ℓp norm, for p = 1, 2 or ∞ (Santurkar, Tsipras, Ilyas & Madry 2018, §3.3 "Is BatchNorm the best (only)
// way to smoothen the landscape?"). Per channel j, over the m = N·spatial values x_ij of the batch:
//
//   μ_j  = (1/m) Σ_i x_ij                                   the batch mean, as BatchNorm
//   s_j  = ( (1/m) Σ_i |x_ij − μ_j|^p )^(1/p)   p = 1, 2     the average ℓp norm of the centred values
//   s_j  = max_i |x_ij − μ_j|                   p = ∞        (the limit p → ∞)
//   y_ij = γ_j · (x_ij − μ_j) / (s_j + eps) + β_j
//
// p = 2 is BatchNorm's biased standard deviation (with eps outside the square root instead of inside the
// variance); p = 1 is the mean absolute deviation. Composed from tensor ops, so autograd derives the gradient
// (d|x|/dx at 0 is taken as 0; for p = ∞ the gradient of the max goes to the largest |x − μ|).
// Like BatchNorm, training mode normalises with the batch's μ and s and updates running averages
// (running = (1 − momentum)·running + momentum·batch, no Bessel correction), which eval mode uses instead;
// training inside an xg::nn::NoStatsUpdateGuard leaves them untouched (for probes).
#pragma once

#include <limits>

#include "xgrad/nn/module.h"
#include "xgrad/nn/options.h"

namespace xg::nn {

/// Options of LpNorm1d / LpNorm2d: `LpNormOptions(100).p(1)`; p = std::numeric_limits<double>::infinity()
/// for the ℓ∞ version.
struct LpNormOptions {
  LpNormOptions(std::size_t num_features) : num_features_(num_features) {}  // NOLINT: implicit
  /// C, the size of axis 1 of the input.
  XG_ARG(std::size_t, num_features);
  /// 1, 2 or infinity.
  XG_ARG(double, p) = 2.0;
  /// Added to s (outside any root); must be > 0.
  XG_ARG(double, eps) = 1e-5;
  /// Weight of the batch in the running averages of μ and s, in [0, 1].
  XG_ARG(double, momentum) = 0.1;
  /// Learn a per-channel scale `weight` (init 1) and shift `bias` (init 0).
  XG_ARG(bool, affine) = true;
};

/// The implementation shared by LpNorm1d and LpNorm2d.
class LpNormBase : public Module {
 public:
  /// Normalises `input` [N, C, ...] per channel over every other axis.
  Tensor forward(const Tensor& input) override;
  const LpNormOptions& options() const { return options_; }
  void pretty_print(std::ostream& os) const override;

  Tensor weight;         // [C] γ, init 1 (undefined if !affine)
  Tensor bias;           // [C] β, init 0 (undefined if !affine)
  Tensor running_mean;   // [C] buffer, init 0
  Tensor running_scale;  // [C] buffer (running average of s), init 1

 protected:
  LpNormBase(const LpNormOptions& options, std::string name, std::size_t min_rank, std::size_t max_rank);

 private:
  LpNormOptions options_;
  std::size_t min_rank_, max_rank_;
};

/// ℓp normalisation over [N, C] or [N, C, L]: statistics over N (and L).
class LpNorm1d : public LpNormBase {
 public:
  explicit LpNorm1d(const LpNormOptions& options) : LpNormBase(options, "LpNorm1d", 2, 3) {}
};

/// ℓp normalisation over [N, C, H, W]: statistics over N, H and W.
class LpNorm2d : public LpNormBase {
 public:
  explicit LpNorm2d(const LpNormOptions& options) : LpNormBase(options, "LpNorm2d", 4, 4) {}
};

}  // namespace xg::nn
