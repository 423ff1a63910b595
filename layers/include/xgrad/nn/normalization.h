// xgrad/nn/normalization.h — the alternatives to BatchNorm: LayerNorm, GroupNorm, Batch Renormalization, and
// update_bn (BatchNorm's population statistics recomputed over a data loader). docs/normalization.md has the
// formulas, the derivatives and where each differs from PyTorch.
//
//   LayerNorm(LayerNormOptions({D}))          each sample's last dims normalised together      (Ba et al., 2016)
//   GroupNorm(GroupNormOptions(G, C))         each sample's channel groups normalised together  (Wu & He, 2018)
//   BatchRenorm1d/2d(BatchRenormOptions(C))   BatchNorm corrected towards the running statistics (Ioffe, 2017)
//   update_bn(loader, model)                  precise BN: running stats from forward passes over a loader
//
// LayerNorm and GroupNorm use no batch statistics and have no running statistics: train and eval compute the
// same thing, a batch of one is fine. Like BatchNorm they run Composed (tensor ops, autograd's gradient) or
// Fused (xg::native_layer_norm / native_group_norm, on the normalisation driver of the BatchNorm kernels),
// chosen by the options' `impl`, else by the same global switch, set_default_batchnorm_impl().
#pragma once

#include <optional>

#include "xgrad/data.h"
#include "xgrad/nn/batchnorm.h"
#include "xgrad/nn/module.h"
#include "xgrad/nn/options.h"

namespace xg::nn {

// ---- LayerNorm -------------------------------------------------------------------------------------------
/// PyTorch's LayerNormOptions: `LayerNormOptions({28, 28}).eps(1e-6).elementwise_affine(false)`.
struct LayerNormOptions {
  LayerNormOptions(Shape normalized_shape) : normalized_shape_(std::move(normalized_shape)) {}  // NOLINT: implicit
  /// The trailing dimensions normalised together (the input's last normalized_shape.size() dims must equal it).
  XG_ARG(Shape, normalized_shape);
  /// Added to the variance inside the square root; must be > 0.
  XG_ARG(double, eps) = 1e-5;
  /// Learn `weight` (init 1) and `bias` (init 0), each of shape normalized_shape (one per normalised element).
  XG_ARG(bool, elementwise_affine) = true;
  /// Composed or Fused; empty = default_batchnorm_impl() at each forward.
  XG_ARG(std::optional<BatchNormImpl>, impl) = std::nullopt;
};

/// y = (x - E[x])/sqrt(Var[x] + eps)·weight + bias, E and the BIASED Var over the last D = prod(normalized_shape)
/// values of each row. input [*, normalized_shape...] -> same shape.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(const LayerNormOptions& options);
  Tensor forward(const Tensor& input) override;
  /// weight = 1, bias = 0.
  void reset_parameters();
  const LayerNormOptions& options() const { return options_; }
  BatchNormImpl impl() const { return options_.impl().value_or(default_batchnorm_impl()); }
  void pretty_print(std::ostream& os) const override;

  Tensor weight;  // normalized_shape, init 1 (undefined without elementwise_affine)
  Tensor bias;    // normalized_shape, init 0 (undefined without elementwise_affine)

 private:
  LayerNormOptions options_;
};

// ---- GroupNorm -------------------------------------------------------------------------------------------
/// PyTorch's GroupNormOptions: `GroupNormOptions(/*num_groups=*/8, /*num_channels=*/32).affine(false)`.
struct GroupNormOptions {
  GroupNormOptions(std::size_t num_groups, std::size_t num_channels)
      : num_groups_(num_groups), num_channels_(num_channels) {}
  /// G: the channels are split into G groups of C/G adjacent channels (G must divide C). G = 1 normalises each
  /// sample over all its values (LayerNorm over [C, H, W], but with a per-channel affine); G = C is InstanceNorm.
  XG_ARG(std::size_t, num_groups);
  /// C, axis 1 of the input.
  XG_ARG(std::size_t, num_channels);
  XG_ARG(double, eps) = 1e-5;
  /// Learn a per-channel `weight` (init 1) and `bias` (init 0), [C].
  XG_ARG(bool, affine) = true;
  XG_ARG(std::optional<BatchNormImpl>, impl) = std::nullopt;
};

/// input [N, C, *]: each (sample, group) normalised over its (C/G)·prod(*) values, then y = x̂·weight_c + bias_c.
class GroupNorm : public Module {
 public:
  explicit GroupNorm(const GroupNormOptions& options);
  Tensor forward(const Tensor& input) override;
  void reset_parameters();
  const GroupNormOptions& options() const { return options_; }
  BatchNormImpl impl() const { return options_.impl().value_or(default_batchnorm_impl()); }
  void pretty_print(std::ostream& os) const override;

  Tensor weight;  // [C], init 1 (undefined if !affine)
  Tensor bias;    // [C], init 0 (undefined if !affine)

 private:
  GroupNormOptions options_;
};

// ---- Batch Renormalization -------------------------------------------------------------------------------
/// Options of BatchRenorm1d/2d. The clipping bounds follow the paper's warm-up schedule (Ioffe 2017, §4): plain
/// BatchNorm (rmax = 1, dmax = 0) for the first `warmup_steps` training batches, then rmax rises linearly to
/// `rmax` at step `rmax_steps` and dmax to `dmax` at step `dmax_steps` (the paper: 5000, 40k, 25k; 3 and 5).
struct BatchRenormOptions {
  BatchRenormOptions(std::size_t num_features) : num_features_(num_features) {}  // NOLINT: implicit
  XG_ARG(std::size_t, num_features);
  XG_ARG(double, eps) = 1e-5;
  /// running = (1 - momentum)·running + momentum·batch (as BatchNorm; in [0, 1]).
  XG_ARG(double, momentum) = 0.1;
  XG_ARG(bool, affine) = true;
  /// Final clipping bounds: r in [1/rmax, rmax] (rmax >= 1), d in [-dmax, dmax] (dmax >= 0).
  XG_ARG(double, rmax) = 3.0;
  XG_ARG(double, dmax) = 5.0;
  /// Warm-up: the step (training batch) counts at which relaxing starts, and at which rmax / dmax are reached.
  XG_ARG(std::size_t, warmup_steps) = 5000;
  XG_ARG(std::size_t, rmax_steps) = 40000;
  XG_ARG(std::size_t, dmax_steps) = 25000;
};
using BatchRenorm1dOptions = BatchRenormOptions;
using BatchRenorm2dOptions = BatchRenormOptions;

/// Batch Renormalization, composed from tensor ops. Training, with the batch mean μ_B and σ_B = sqrt(var_B + eps)
/// (biased var) and the running σ = sqrt(running_var + eps):
///   r = clip(σ_B/σ, 1/rmax_t, rmax_t),   d = clip((μ_B - running_mean)/σ, -dmax_t, dmax_t)   (CONSTANTS: no
///   gradient flows through r and d — the paper's stop_gradient), x̂ = (x - μ_B)/σ_B·r + d,  y = weight·x̂ + bias,
/// then the running statistics move exactly as BatchNorm's (unbiased var) and num_batches_tracked counts the step.
/// Eval: BatchNorm's eval, (x - running_mean)/σ·weight + bias. A layer of its own rather than a BatchNorm option:
/// its training output depends on the running statistics and on the step, so none of BatchNorm's statistics modes
/// (no-update, frozen, track_running_stats(false)) and neither fused kernel applies unchanged.
class BatchRenormBase : public Module {
 public:
  Tensor forward(const Tensor& input) override;
  /// rmax_t and dmax_t at training step t (t = num_batches_tracked before the batch).
  double rmax_at(double step) const;
  double dmax_at(double step) const;
  /// r and d of the last training forward, [C] each (empty before the first).
  const std::vector<double>& last_r() const { return last_r_; }
  const std::vector<double>& last_d() const { return last_d_; }
  const BatchRenormOptions& options() const { return options_; }
  void pretty_print(std::ostream& os) const override;

  Tensor weight, bias;                                  // [C] (undefined if !affine)
  Tensor running_mean, running_var, num_batches_tracked;  // [C], [C], [] buffers

 protected:
  BatchRenormBase(const BatchRenormOptions& options, std::string name);
  virtual void check_input_dim(const Tensor& input) const = 0;

 private:
  BatchRenormOptions options_;
  std::vector<double> last_r_, last_d_;
};

class BatchRenorm1d : public BatchRenormBase {
 public:
  explicit BatchRenorm1d(const BatchRenorm1dOptions& o) : BatchRenormBase(o, "BatchRenorm1d") {}

 private:
  void check_input_dim(const Tensor& input) const override;
};

class BatchRenorm2d : public BatchRenormBase {
 public:
  explicit BatchRenorm2d(const BatchRenorm2dOptions& o) : BatchRenormBase(o, "BatchRenorm2d") {}

 private:
  void check_input_dim(const Tensor& input) const override;
};

// ---- population statistics ("precise BN") ----------------------------------------------------------------
/// Which running statistics update_bn writes.
enum class BnStatistics {
  /// PyTorch's torch.optim.swa_utils.update_bn: the result of momentum = None, i.e. the plain average over
  /// the batches of each batch's mean and of each batch's UNBIASED variance (Ioffe & Szegedy's Alg. 2,
  /// Var = m/(m-1)·E_B[σ²_B]).
  Cumulative,
  /// The exact mean and unbiased variance of every value the layer saw over the whole pass (all batches
  /// pooled with Chan's combine). Differs from Cumulative by the variance of the batch means.
  Population,
};

/// Recomputes the running_mean / running_var of every BatchNorm in `model` from one pass over `loader`:
/// model in training mode (each layer normalises with its batch statistics, as in training), no gradients,
/// forward(batch.images) per batch. Afterwards running_mean/var hold the statistics chosen by `how`,
/// num_batches_tracked the number of batches, and nothing else has changed: parameters, other buffers, the
/// training/eval mode of every module, each BatchNorm's momentum and flags. BatchNorms without running
/// statistics are left alone. Returns the number of batches. Throws if the model has no BatchNorm with running
/// statistics or the loader is empty.
std::size_t update_bn(data::DataLoader& loader, Module& model, BnStatistics how = BnStatistics::Cumulative);

namespace functional {
/// LayerNorm composed from tensor ops (autograd derives the gradient): shapes as the LayerNorm module;
/// weight, bias of shape normalized_shape or undefined.
Tensor layer_norm(const Tensor& input, const Shape& normalized_shape, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), double eps = 1e-5);
/// The same as one node on the fused kernels (xg::native_layer_norm), after the same checks.
Tensor layer_norm_fused(const Tensor& input, const Shape& normalized_shape, const Tensor& weight = Tensor(),
                        const Tensor& bias = Tensor(), double eps = 1e-5);
/// GroupNorm composed from tensor ops: input [N, C, *], num_groups dividing C, weight/bias [C] or undefined.
Tensor group_norm(const Tensor& input, std::size_t num_groups, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), double eps = 1e-5);
/// The same as one node on the fused kernels (xg::native_group_norm).
Tensor group_norm_fused(const Tensor& input, std::size_t num_groups, const Tensor& weight = Tensor(),
                        const Tensor& bias = Tensor(), double eps = 1e-5);
}  // namespace functional

}  // namespace xg::nn
