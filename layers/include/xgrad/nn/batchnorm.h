// xgrad/nn/batchnorm.h — BatchNorm1d and BatchNorm2d: one dimension-generic implementation.
//
// Normalises every channel (axis 1) over all other axes, m = N·spatial values per channel (Ioffe & Szegedy,
// 2015), with PyTorch's conventions — the maths, each option and where other libraries differ are in
// docs/batchnorm.md:
//   y = (x - mean)/sqrt(var + eps)·weight + bias      eps INSIDE the square root
//   training: mean/var of the batch, var BIASED (÷m); running_var is updated with the UNBIASED var (÷(m-1)):
//             running = (1 - momentum)·running + momentum·batch_statistic      (momentum 0.1 = PyTorch's)
//   eval:     running_mean/running_var instead of the batch statistics.
//
// Which statistics a forward uses, and whether it updates the buffers:
//   mode                                            statistics   buffers updated
//   train()                                         batch        yes
//   train() + set_update_running_stats(false)       batch        no   (loss-landscape / ICS probes)
//   train() inside a NoStatsUpdateGuard             batch        no   (same, for a whole model at once)
//   train() + freeze_statistics()                   running      no   (survives a parent's train())
//   eval()                                          running      no
//   track_running_stats(false), any mode            batch        no buffers at all
//
// Beyond PyTorch: the no-update mode, freeze_statistics, and an error instead of NaN/garbage when a channel
// has only one value in training.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "xgrad/nn/functional.h"
#include "xgrad/nn/module.h"
#include "xgrad/nn/options.h"

namespace xg::nn {

/// How BatchNorm computes: Composed = from framework tensor ops, autograd derives the gradient (the readable
/// reference); Fused = the hand-fused kernels of xgrad/kernels/batchnorm.h.
enum class BatchNormImpl { Composed, Fused };
const char* to_string(BatchNormImpl impl);

/// The implementation BatchNorm layers use when their options leave `impl` empty. Examples switch it to
/// compare both paths; the initial value is Fused.
void set_default_batchnorm_impl(BatchNormImpl impl);
BatchNormImpl default_batchnorm_impl();

/// Options of BatchNorm1d / BatchNorm2d: `BatchNormOptions(64).momentum(std::nullopt).affine(false)`.
/// All fixed at construction (changing track_running_stats later is a PyTorch pitfall, pytorch#20967).
struct BatchNormOptions {
  BatchNormOptions(std::size_t num_features) : num_features_(num_features) {}  // NOLINT: implicit
  /// C, the size of axis 1 of the input.
  XG_ARG(std::size_t, num_features);
  /// Added to the variance inside the square root; must be > 0.
  XG_ARG(double, eps) = 1e-5;
  /// running = (1 - momentum)·running + momentum·batch, momentum in [0, 1] (PyTorch's 0.1 = Keras's 0.9).
  /// std::nullopt: cumulative average, momentum = 1/num_batches_tracked.
  XG_ARG(std::optional<double>, momentum) = 0.1;
  /// Learn a per-channel scale `weight` (init 1) and shift `bias` (init 0).
  XG_ARG(bool, affine) = true;
  /// Keep running_mean/running_var/num_batches_tracked; false: always batch statistics, no such buffers
  /// (their names stay registered with undefined tensors, so they are absent from state_dict, as PyTorch).
  XG_ARG(bool, track_running_stats) = true;
  /// Composed or Fused; empty = default_batchnorm_impl() at each forward.
  XG_ARG(std::optional<BatchNormImpl>, impl) = std::nullopt;
};
using BatchNorm1dOptions = BatchNormOptions;
using BatchNorm2dOptions = BatchNormOptions;

/// The implementation shared by BatchNorm1d/2d (PyTorch: BatchNormImplBase; named BatchNormBase here because
/// BatchNormImpl is the Composed/Fused switch). The subclasses only check the input's rank.
class BatchNormBase : public Module {
 public:
  /// Normalises `input` [N, C, ...]; see the table at the top for which statistics are used.
  Tensor forward(const Tensor& input) override;

  /// running_mean = 0, running_var = 1, num_batches_tracked = 0.
  void reset_running_stats();
  /// reset_running_stats() and weight = 1, bias = 0.
  void reset_parameters();

  /// Use the running statistics and never update them, whatever train()/eval() say — the flag survives a
  /// parent's train() (frozen BN for fine-tuning). Needs track_running_stats.
  void freeze_statistics(bool on = true);
  bool statistics_frozen() const { return frozen_; }
  /// false: in training, still normalise with the batch statistics but leave the buffers (and
  /// num_batches_tracked) untouched. For probes that must not change the model.
  void set_update_running_stats(bool on) { update_running_stats_ = on; }
  bool updates_running_stats() const { return update_running_stats_; }

  /// How a training forward with batch statistics normalises instead of impl()'s functional: called as
  /// fn(input, running_mean, running_var, weight, bias, exponential_average_factor, eps) with the buffers
  /// undefined when they are not to be updated. xg::dist::convert_sync_batchnorm installs the synchronised one
  /// (the layer below cannot see MPI); an empty fn restores the default. `tag` is shown by pretty_print.
  using BatchStatisticsFn = std::function<Tensor(const Tensor& input, const Tensor& running_mean,
                                                 const Tensor& running_var, const Tensor& weight, const Tensor& bias,
                                                 double exponential_average_factor, double eps)>;
  void set_batch_statistics_fn(BatchStatisticsFn fn, std::string tag = "");
  const std::string& batch_statistics_tag() const { return stats_tag_; }

  const BatchNormOptions& options() const { return options_; }
  /// The batch statistics (mean, biased var [C], count per channel) of the last forward that normalised with
  /// batch statistics, from the computation itself (both impls; no extra pass). Empty before the first one, and
  /// after a forward through an installed BatchStatisticsFn (SyncBatchNorm: the statistics are not this rank's).
  const functional::BatchStats& last_batch_stats() const { return last_batch_stats_; }
  /// The implementation the next forward will use (options().impl() or the global default).
  BatchNormImpl impl() const;
  void pretty_print(std::ostream& os) const override;

  Tensor weight;               // [C] scale γ, init 1 (undefined if !affine)
  Tensor bias;                 // [C] shift β, init 0 (undefined if !affine)
  Tensor running_mean;         // [C] buffer, init 0 (undefined if !track_running_stats)
  Tensor running_var;          // [C] buffer, init 1 (undefined if !track_running_stats)
  Tensor num_batches_tracked;  // [] buffer counting updates; float (exact up to 2^24 in float32), PyTorch: int64

 protected:
  /// `name` is the type name ("BatchNorm2d"); subclasses check the rank in check_input_dim.
  BatchNormBase(const BatchNormOptions& options, std::string name);
  virtual void check_input_dim(const Tensor& input) const = 0;
  void check_channels(const Tensor& input) const;

 private:
  BatchNormOptions options_;
  bool frozen_ = false;
  bool update_running_stats_ = true;
  BatchStatisticsFn stats_fn_;
  std::string stats_tag_;
  functional::BatchStats last_batch_stats_;
};

/// BatchNorm over [N, C] (features) or [N, C, L] (sequences): statistics over N (and L).
class BatchNorm1d : public BatchNormBase {
 public:
  explicit BatchNorm1d(const BatchNorm1dOptions& options) : BatchNormBase(options, "BatchNorm1d") {}

 private:
  void check_input_dim(const Tensor& input) const override;
};

/// BatchNorm over [N, C, H, W] (images): statistics over N, H and W.
class BatchNorm2d : public BatchNormBase {
 public:
  explicit BatchNorm2d(const BatchNorm2dOptions& options) : BatchNormBase(options, "BatchNorm2d") {}

 private:
  void check_input_dim(const Tensor& input) const override;
};

/// While alive, no BatchNorm on this thread updates its running statistics (training still normalises with
/// batch statistics). For loss-landscape probes that run extra forward/backward passes on a model:
///   { xg::nn::NoStatsUpdateGuard probe; loss_at(w + t·g); }
class NoStatsUpdateGuard {
 public:
  NoStatsUpdateGuard();
  ~NoStatsUpdateGuard();
  NoStatsUpdateGuard(const NoStatsUpdateGuard&) = delete;
  NoStatsUpdateGuard& operator=(const NoStatsUpdateGuard&) = delete;
  /// True while a guard is alive on this thread.
  static bool active();

 private:
  bool prev_;
};

}  // namespace xg::nn
