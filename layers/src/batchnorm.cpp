// BatchNorm: functional::batch_norm composed from tensor ops (the readable reference; autograd derives the
// gradient), and the BatchNormBase module with its statistics modes. The maths is in docs/batchnorm.md.
#include "xgrad/nn/batchnorm.h"

#include <cmath>
#include <ostream>

#include "xgrad/autograd.h"
#include "xgrad/nn/functional.h"
#include "xgrad/ops.h"

namespace xg::nn {

namespace {

BatchNormImpl g_default_impl = BatchNormImpl::Fused;
thread_local bool g_no_stats_update = false;

// One value of every channel, [1, C, 1, ...]: x[0, c, 0, ...]. A constant (no gradient flows through it).
Tensor first_value_per_channel(const Tensor& x) {
  NoGradGuard no_grad;
  Tensor s = x.narrow(0, 0, 1);
  for (std::size_t a = 2; a < x.ndim(); ++a) s = s.narrow(static_cast<int>(a), 0, 1);
  return s;
}

// running = (1 - factor)·running + factor·batch, in running's own storage (the buffer keeps its identity, so
// anything holding the handle sees the new values). Called under NoGradGuard.
void update_running(Tensor& running, const Tensor& batch, double exponential_average_factor) {
  running.mul_(1.0 - exponential_average_factor).add_(batch, exponential_average_factor);
}

void check_per_channel(const char* what, const Tensor& t, std::size_t C, const Tensor& input) {
  if (!t.defined()) return;
  if (t.shape() != Shape{C})
    fail("batch_norm: {} must be [{}] (one value per channel of the input {}), got {}", what, C,
         shape_str(input.shape()), shape_str(t.shape()));
  if (t.dtype() != input.dtype())
    fail("batch_norm: {} is {} but the input is {}; convert the module with .to()", what, t.dtype(), input.dtype());
}

}  // namespace

const char* to_string(BatchNormImpl impl) { return impl == BatchNormImpl::Composed ? "composed" : "fused"; }
void set_default_batchnorm_impl(BatchNormImpl impl) { g_default_impl = impl; }
BatchNormImpl default_batchnorm_impl() { return g_default_impl; }

NoStatsUpdateGuard::NoStatsUpdateGuard() : prev_(g_no_stats_update) { g_no_stats_update = true; }
NoStatsUpdateGuard::~NoStatsUpdateGuard() { g_no_stats_update = prev_; }
bool NoStatsUpdateGuard::active() { return g_no_stats_update; }

// ---- the composed forward ------------------------------------------------------------------------------
namespace functional {

void check_batch_norm_args(const Tensor& input, const Tensor& running_mean, const Tensor& running_var,
                           const Tensor& weight, const Tensor& bias, bool training,
                           double exponential_average_factor, double eps) {
  if (!input.defined()) fail("batch_norm: the input is undefined");
  const Shape shape = input.shape();
  if (shape.size() < 2)
    fail("batch_norm: the input must be [N, C, ...] with at least 2 dimensions, got {}", shape_str(shape));
  const std::size_t C = shape[1];
  check_per_channel("running_mean", running_mean, C, input);
  check_per_channel("running_var", running_var, C, input);
  check_per_channel("weight", weight, C, input);
  check_per_channel("bias", bias, C, input);
  if (!(eps > 0) || !std::isfinite(eps)) fail("batch_norm: eps must be a finite number > 0, got {}", eps);
  if (!(exponential_average_factor >= 0 && exponential_average_factor <= 1))
    fail("batch_norm: exponential_average_factor must be in [0, 1], got {}", exponential_average_factor);
  if (training) {
    const std::size_t m = C == 0 ? 0 : input.numel() / C;  // values per channel: N·spatial
    if (m <= 1)
      fail("batch_norm: expected more than 1 value per channel when training, got input of shape {} "
           "({} value{} per channel): batch statistics of one value are undefined. Use drop_last=true in the "
           "data loader (the last batch may hold a single sample), a larger batch, or eval()",
           shape_str(shape), m, m == 1 ? "" : "s");
  } else if (!running_mean.defined() || !running_var.defined()) {
    fail("batch_norm: evaluation (training = false) needs running_mean and running_var; pass them, or use "
         "training = true for batch statistics");
  }
}

Tensor batch_norm(const Tensor& input, Tensor running_mean, Tensor running_var, const Tensor& weight,
                  const Tensor& bias, bool training, double exponential_average_factor, double eps,
                  BatchStats* stats) {
  check_batch_norm_args(input, running_mean, running_var, weight, bias, training, exponential_average_factor, eps);
  const Shape shape = input.shape();
  const std::size_t nd = shape.size();
  const std::size_t C = shape[1];
  const auto cshape = channel_view(C, nd);

  Tensor xhat;  // the normalised input, (x - mean)/sqrt(var + eps)
  if (training) {
    const std::size_t m = input.numel() / C;  // values per channel: N·spatial (> 1, checked above)
    const Dims axes = non_channel_axes(nd);
    // Batch statistics, two passes. For any per-channel constant K, x - mean = (x - K) - mean(x - K); with K
    // one sample of the channel the values stay small, so a float32 channel with mean 1e4 and std 1e-2 keeps
    // its digits (no catastrophic cancellation). K is a constant: it changes no value and no gradient.
    const Tensor shift = first_value_per_channel(input);  // K, [1, C, 1, ...]
    const Tensor d = input - shift;                       // x - K
    const Tensor d_mean = d.mean(axes, true);             // mean(x) - K, per channel
    const Tensor xc = d - d_mean;                         // x - mean(x): the centred input
    const Tensor var = (xc * xc).mean(axes, true);        // Σ (x - mean)² / m: the BIASED variance
    xhat = xc * rsqrt(var + eps);                         // eps inside the square root
    if (stats) {  // the statistics just computed, detached: no extra pass
      const std::ptrdiff_t c = static_cast<std::ptrdiff_t>(C);
      stats->mean = (shift + d_mean).detach().reshape({c});
      stats->var = var.detach().reshape({c});
      stats->count = m;
    }
    if (running_mean.defined() || running_var.defined()) {
      // The running averages are state, not part of the graph: no gradient flows into them.
      NoGradGuard no_grad;
      const double unbiased = static_cast<double>(m) / static_cast<double>(m - 1);  // Bessel: ÷(m-1), not ÷m
      if (running_mean.defined())
        update_running(running_mean, (shift + d_mean).reshape({static_cast<std::ptrdiff_t>(C)}),
                       exponential_average_factor);
      if (running_var.defined())
        update_running(running_var, var.reshape({static_cast<std::ptrdiff_t>(C)}) * unbiased,
                       exponential_average_factor);
    }
  } else {
    const Tensor mean = running_mean.reshape(cshape);         // [1, C, 1, ...]
    const Tensor invstd = rsqrt(running_var.reshape(cshape) + eps);
    xhat = (input - mean) * invstd;
  }
  Tensor y = xhat;
  if (weight.defined()) y = y * weight.reshape(cshape);  // scale γ per channel
  if (bias.defined()) y = y + bias.reshape(cshape);      // shift β per channel
  return y;
}

}  // namespace functional

// ---- the module ------------------------------------------------------------------------------------------
BatchNormBase::BatchNormBase(const BatchNormOptions& o, std::string name) : Module(std::move(name)), options_(o) {
  if (o.num_features() == 0) fail("{}: num_features must be > 0", Module::name());
  if (!(o.eps() > 0) || !std::isfinite(o.eps()))
    fail("{}: eps must be a finite number > 0 (it keeps 1/sqrt(var + eps) finite), got {}", Module::name(), o.eps());
  if (o.momentum() && !(*o.momentum() >= 0 && *o.momentum() <= 1))
    fail("{}: momentum must be in [0, 1] (PyTorch's convention: 0.1 = Keras's 0.9), got {}; use std::nullopt "
         "for a cumulative average",
         Module::name(), *o.momentum());
  const std::size_t C = o.num_features();
  weight = register_parameter("weight", o.affine() ? ones({C}) : Tensor());
  bias = register_parameter("bias", o.affine() ? zeros({C}) : Tensor());
  // Without tracking, the buffer names stay registered with undefined tensors (stable names, as PyTorch).
  const bool track = o.track_running_stats();
  running_mean = register_buffer("running_mean", track ? zeros({C}) : Tensor());
  running_var = register_buffer("running_var", track ? ones({C}) : Tensor());
  num_batches_tracked = register_buffer("num_batches_tracked", track ? scalar(0.0) : Tensor());
}

void BatchNormBase::reset_running_stats() {
  if (!options_.track_running_stats()) return;
  NoGradGuard no_grad;
  running_mean.zero_();
  running_var.fill_(1.0);
  num_batches_tracked.zero_();
}

void BatchNormBase::reset_parameters() {
  reset_running_stats();
  if (options_.affine()) {
    NoGradGuard no_grad;
    weight.fill_(1.0);
    bias.zero_();
  }
}

void BatchNormBase::freeze_statistics(bool on) {
  if (on && !options_.track_running_stats())
    fail("{}: freeze_statistics needs running statistics, but this layer was built with "
         "track_running_stats(false)",
         name());
  frozen_ = on;
}

BatchNormImpl BatchNormBase::impl() const { return options_.impl().value_or(default_batchnorm_impl()); }

void BatchNormBase::check_channels(const Tensor& input) const {
  if (input.shape()[1] != options_.num_features())
    fail("{}: the input has {} channels (axis 1 of shape {}) but the layer was built for num_features = {}", name(),
         input.shape()[1], shape_str(input.shape()), options_.num_features());
}

Tensor BatchNormBase::forward(const Tensor& input) {
  if (!input.defined()) fail("{}: the input is undefined", name());
  check_input_dim(input);
  check_channels(input);
  // Which statistics, and whether the buffers move (the table in batchnorm.h).
  const bool track = options_.track_running_stats();
  const bool batch_stats = !track || (is_training() && !frozen_);
  const bool update = track && batch_stats && update_running_stats_ && !NoStatsUpdateGuard::active();
  // momentum, or the cumulative average 1/(number of batches including this one)
  const double nbt = track ? num_batches_tracked.item() : 0.0;
  const double factor = !update ? 0.0 : options_.momentum() ? *options_.momentum() : 1.0 / (nbt + 1.0);
  // The running buffers are passed only when they are read (eval) or written (update).
  const Tensor rm = track && (update || !batch_stats) ? running_mean : Tensor();
  const Tensor rv = track && (update || !batch_stats) ? running_var : Tensor();

  Tensor y;
  if (batch_stats && stats_fn_) {
    // The installed (synchronised) statistics are not this rank's: last_batch_stats() is left empty.
    last_batch_stats_ = {};
    y = stats_fn_(input, rm, rv, weight, bias, factor, options_.eps());
  } else switch (impl()) {
    case BatchNormImpl::Composed:
      y = functional::batch_norm(input, rm, rv, weight, bias, batch_stats, factor, options_.eps(),
                                 batch_stats ? &last_batch_stats_ : nullptr);
      break;
    case BatchNormImpl::Fused:
      y = functional::batch_norm_fused(input, rm, rv, weight, bias, batch_stats, factor, options_.eps(),
                                       batch_stats ? &last_batch_stats_ : nullptr);
      break;
  }
  if (update) {  // counted only once the batch went through
    NoGradGuard no_grad;
    num_batches_tracked.add_(1.0);
  }
  return apply_forward_hooks(input, y);
}

void BatchNormBase::set_batch_statistics_fn(BatchStatisticsFn fn, std::string tag) {
  stats_fn_ = std::move(fn);
  stats_tag_ = stats_fn_ ? std::move(tag) : std::string();
}

void BatchNormBase::pretty_print(std::ostream& os) const {
  os << name() << "(" << options_.num_features() << ", eps=" << options_.eps() << ", momentum=";
  if (options_.momentum())
    os << *options_.momentum();
  else
    os << "None";
  os << ", affine=" << (options_.affine() ? "true" : "false")
     << ", track_running_stats=" << (options_.track_running_stats() ? "true" : "false");
  if (!stats_tag_.empty()) os << ", " << stats_tag_;
  os << ")";
}

void BatchNorm1d::check_input_dim(const Tensor& input) const {
  if (input.ndim() != 2 && input.ndim() != 3)
    fail("BatchNorm1d: expected a 2-d [N, C] or 3-d [N, C, L] input, got shape {} (BatchNorm2d takes [N, C, H, W])",
         shape_str(input.shape()));
}

void BatchNorm2d::check_input_dim(const Tensor& input) const {
  if (input.ndim() != 4)
    fail("BatchNorm2d: expected a 4-d [N, C, H, W] input, got shape {} (BatchNorm1d takes [N, C] or [N, C, L])",
         shape_str(input.shape()));
}

}  // namespace xg::nn
