// LayerNorm, GroupNorm (composed forms and modules), Batch Renormalization, and update_bn. The maths and the
// derivatives are in docs/normalization.md; the fused forms are xg::native_layer_norm / native_group_norm.
#include "xgrad/nn/normalization.h"

#include <algorithm>
#include <cmath>
#include <ostream>

#include "xgrad/autograd.h"
#include "xgrad/nn/functional.h"
#include "xgrad/kernels/batchnorm.h"
#include "xgrad/ops.h"

namespace xg::nn {

namespace {

void check_eps(const char* who, double eps) {
  if (!(eps > 0) || !std::isfinite(eps))
    fail("{}: eps must be a finite number > 0 (it keeps 1/sqrt(var + eps) finite), got {}", who, eps);
}

void check_affine(const char* who, const char* what, const Tensor& t, const Shape& want, const Tensor& input) {
  if (!t.defined()) return;
  if (t.shape() != want)
    fail("{}: {} must be {} for the input {}, got {}", who, what, shape_str(want), shape_str(input.shape()),
         shape_str(t.shape()));
  if (t.dtype() != input.dtype())
    fail("{}: {} is {} but the input is {}; convert the module with .to()", who, what, t.dtype(), input.dtype());
}

// Rows of the last `k` axes, normalised: x̂ = (x - mean)/sqrt(var + eps), mean and BIASED var over those axes.
// Two passes about a per-row constant K (one value of the row, no gradient), as the composed BatchNorm: a row of
// mean 1e4 and std 1e-2 keeps its digits in float32.
Tensor normalise_last_axes(const Tensor& x, std::size_t k, double eps) {
  const std::size_t nd = x.ndim();
  Dims axes;
  for (std::size_t a = nd - k; a < nd; ++a) axes.push_back(static_cast<int>(a));
  Tensor shift;
  {
    NoGradGuard no_grad;
    shift = x;
    for (int a : axes) shift = shift.narrow(a, 0, 1);  // K, [..., 1, ..., 1]
  }
  const Tensor d = x - shift;
  const Tensor xc = d - d.mean(axes, true);             // x - mean
  const Tensor var = (xc * xc).mean(axes, true);        // biased
  return xc * rsqrt(var + eps);
}

void check_layer_norm(const Tensor& input, const Shape& ns, const Tensor& weight, const Tensor& bias, double eps) {
  if (!input.defined()) fail("layer_norm: the input is undefined");
  const Shape s = input.shape();
  if (ns.empty() || ns.size() > s.size() || !std::equal(ns.begin(), ns.end(), s.end() - ns.size()))
    fail("layer_norm: normalized_shape {} must equal the last {} dimension(s) of the input {}", shape_str(ns),
         ns.size(), shape_str(s));
  if (numel_of(ns) == 0) fail("layer_norm: normalized_shape {} has no elements to normalise", shape_str(ns));
  check_affine("layer_norm", "weight", weight, ns, input);
  check_affine("layer_norm", "bias", bias, ns, input);
  check_eps("layer_norm", eps);
}

void check_group_norm(const Tensor& input, std::size_t G, const Tensor& weight, const Tensor& bias, double eps) {
  if (!input.defined()) fail("group_norm: the input is undefined");
  const Shape s = input.shape();
  if (s.size() < 2) fail("group_norm: the input must be [N, C, ...] with at least 2 dimensions, got {}", shape_str(s));
  if (G == 0 || s[1] % G != 0)
    fail("group_norm: the {} channels (axis 1 of {}) cannot be split into num_groups = {} equal groups; choose a "
         "divisor of {}",
         s[1], shape_str(s), G, s[1]);
  if (numel_of(s) / std::max<std::size_t>(1, s[0]) == 0)
    fail("group_norm: the input {} has no values per sample", shape_str(s));
  check_affine("group_norm", "weight", weight, {s[1]}, input);
  check_affine("group_norm", "bias", bias, {s[1]}, input);
  check_eps("group_norm", eps);
}

}  // namespace

// ---- functional forms --------------------------------------------------------------------------------------
namespace functional {

Tensor layer_norm(const Tensor& input, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias,
                  double eps) {
  check_layer_norm(input, normalized_shape, weight, bias, eps);
  Tensor y = normalise_last_axes(input, normalized_shape.size(), eps);
  if (weight.defined()) y = y * weight;  // [normalized_shape] broadcasts along the trailing dims
  if (bias.defined()) y = y + bias;
  return y;
}

Tensor layer_norm_fused(const Tensor& input, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias,
                        double eps) {
  check_layer_norm(input, normalized_shape, weight, bias, eps);
  return xg::native_layer_norm(input, normalized_shape, weight, bias, eps);
}

Tensor group_norm(const Tensor& input, std::size_t num_groups, const Tensor& weight, const Tensor& bias, double eps) {
  check_group_norm(input, num_groups, weight, bias, eps);
  const Shape s = input.shape();
  const auto N = static_cast<std::ptrdiff_t>(s[0]), G = static_cast<std::ptrdiff_t>(num_groups);
  std::vector<std::ptrdiff_t> back(s.begin(), s.end());
  // [N, C, *] -> [N, G, (C/G)·prod(*)]: each (sample, group) is one row, normalised like a LayerNorm row
  Tensor y = normalise_last_axes(input.reshape({N, G, -1}), 1, eps).reshape(back);
  const auto cv = channel_view(s[1], s.size());
  if (weight.defined()) y = y * weight.reshape(cv);  // per channel
  if (bias.defined()) y = y + bias.reshape(cv);
  return y;
}

Tensor group_norm_fused(const Tensor& input, std::size_t num_groups, const Tensor& weight, const Tensor& bias,
                        double eps) {
  check_group_norm(input, num_groups, weight, bias, eps);
  return xg::native_group_norm(input, num_groups, weight, bias, eps);
}

}  // namespace functional

// ---- LayerNorm, GroupNorm ------------------------------------------------------------------------------------
LayerNorm::LayerNorm(const LayerNormOptions& o) : Module("LayerNorm"), options_(o) {
  if (o.normalized_shape().empty() || numel_of(o.normalized_shape()) == 0)
    fail("LayerNorm: normalized_shape must be non-empty with no zero dimension, got {}",
         shape_str(o.normalized_shape()));
  check_eps("LayerNorm", o.eps());
  weight = register_parameter("weight", o.elementwise_affine() ? ones(o.normalized_shape()) : Tensor());
  bias = register_parameter("bias", o.elementwise_affine() ? zeros(o.normalized_shape()) : Tensor());
}

void LayerNorm::reset_parameters() {
  if (!options_.elementwise_affine()) return;
  NoGradGuard no_grad;
  weight.fill_(1.0);
  bias.zero_();
}

Tensor LayerNorm::forward(const Tensor& input) {
  const auto& o = options_;
  Tensor y = impl() == BatchNormImpl::Fused
                 ? functional::layer_norm_fused(input, o.normalized_shape(), weight, bias, o.eps())
                 : functional::layer_norm(input, o.normalized_shape(), weight, bias, o.eps());
  return apply_forward_hooks(input, y);
}

void LayerNorm::pretty_print(std::ostream& os) const {
  os << "LayerNorm(" << shape_str(options_.normalized_shape()) << ", eps=" << options_.eps()
     << ", elementwise_affine=" << (options_.elementwise_affine() ? "true" : "false") << ")";
}

GroupNorm::GroupNorm(const GroupNormOptions& o) : Module("GroupNorm"), options_(o) {
  if (o.num_groups() == 0 || o.num_channels() == 0 || o.num_channels() % o.num_groups() != 0)
    fail("GroupNorm: num_channels = {} must be a positive multiple of num_groups = {}", o.num_channels(),
         o.num_groups());
  check_eps("GroupNorm", o.eps());
  weight = register_parameter("weight", o.affine() ? ones({o.num_channels()}) : Tensor());
  bias = register_parameter("bias", o.affine() ? zeros({o.num_channels()}) : Tensor());
}

void GroupNorm::reset_parameters() {
  if (!options_.affine()) return;
  NoGradGuard no_grad;
  weight.fill_(1.0);
  bias.zero_();
}

Tensor GroupNorm::forward(const Tensor& input) {
  if (!input.defined()) fail("GroupNorm: the input is undefined");
  if (input.ndim() < 2 || input.shape()[1] != options_.num_channels())
    fail("GroupNorm: expected an input [N, {}, ...] (num_channels = {} on axis 1), got {}", options_.num_channels(),
         options_.num_channels(), shape_str(input.shape()));
  const auto& o = options_;
  Tensor y = impl() == BatchNormImpl::Fused ? functional::group_norm_fused(input, o.num_groups(), weight, bias, o.eps())
                                            : functional::group_norm(input, o.num_groups(), weight, bias, o.eps());
  return apply_forward_hooks(input, y);
}

void GroupNorm::pretty_print(std::ostream& os) const {
  os << "GroupNorm(" << options_.num_groups() << ", " << options_.num_channels() << ", eps=" << options_.eps()
     << ", affine=" << (options_.affine() ? "true" : "false") << ")";
}

// ---- Batch Renormalization -----------------------------------------------------------------------------------
BatchRenormBase::BatchRenormBase(const BatchRenormOptions& o, std::string name)
    : Module(std::move(name)), options_(o) {
  const std::string n = Module::name();
  if (o.num_features() == 0) fail("{}: num_features must be > 0", n);
  check_eps(n.c_str(), o.eps());
  if (!(o.momentum() >= 0 && o.momentum() <= 1)) fail("{}: momentum must be in [0, 1], got {}", n, o.momentum());
  if (!(o.rmax() >= 1) || !std::isfinite(o.rmax())) fail("{}: rmax must be a finite number >= 1, got {}", n, o.rmax());
  if (!(o.dmax() >= 0) || !std::isfinite(o.dmax())) fail("{}: dmax must be a finite number >= 0, got {}", n, o.dmax());
  if (o.rmax_steps() < o.warmup_steps() || o.dmax_steps() < o.warmup_steps())
    fail("{}: rmax_steps ({}) and dmax_steps ({}) are where the ramps end, so they must be >= warmup_steps ({})", n,
         o.rmax_steps(), o.dmax_steps(), o.warmup_steps());
  const std::size_t C = o.num_features();
  weight = register_parameter("weight", o.affine() ? ones({C}) : Tensor());
  bias = register_parameter("bias", o.affine() ? zeros({C}) : Tensor());
  running_mean = register_buffer("running_mean", zeros({C}));
  running_var = register_buffer("running_var", ones({C}));
  num_batches_tracked = register_buffer("num_batches_tracked", scalar(0.0));
}

namespace {
// 0 before `start`, rising linearly to 1 at `end` (a step function if end == start)
double ramp(double step, double start, double end) {
  if (step < start) return 0.0;
  if (end <= start) return 1.0;
  return std::min(1.0, (step - start) / (end - start));
}
}  // namespace

double BatchRenormBase::rmax_at(double step) const {
  return 1.0 + (options_.rmax() - 1.0) * ramp(step, double(options_.warmup_steps()), double(options_.rmax_steps()));
}
double BatchRenormBase::dmax_at(double step) const {
  return options_.dmax() * ramp(step, double(options_.warmup_steps()), double(options_.dmax_steps()));
}

Tensor BatchRenormBase::forward(const Tensor& input) {
  if (!input.defined()) fail("{}: the input is undefined", name());
  check_input_dim(input);
  const std::size_t C = options_.num_features();
  if (input.shape()[1] != C)
    fail("{}: the input has {} channels (axis 1 of shape {}) but the layer was built for num_features = {}", name(),
         input.shape()[1], shape_str(input.shape()), C);
  const auto& o = options_;
  if (!is_training()) {  // BatchNorm's eval: the running statistics
    Tensor y = functional::batch_norm(input, running_mean, running_var, weight, bias, false, 0.0, o.eps());
    return apply_forward_hooks(input, y);
  }
  const std::size_t m = input.numel() / C;
  if (m <= 1)
    fail("{}: expected more than 1 value per channel when training, got input of shape {}; use drop_last=true or a "
         "larger batch",
         name(), shape_str(input.shape()));
  const std::size_t nd = input.ndim();
  const Dims axes = non_channel_axes(nd);
  const auto cv = channel_view(C, nd);
  // Batch statistics, two passes about one sample K per channel (as the composed BatchNorm).
  Tensor shift;
  {
    NoGradGuard no_grad;
    shift = input;
    shift = shift.narrow(0, 0, 1);
    for (std::size_t a = 2; a < nd; ++a) shift = shift.narrow(static_cast<int>(a), 0, 1);
  }
  const Tensor dd = input - shift;
  const Tensor d_mean = dd.mean(axes, true);
  const Tensor xc = dd - d_mean;
  const Tensor var = (xc * xc).mean(axes, true);  // biased
  Tensor xhat = xc * rsqrt(var + o.eps());

  // r and d from DETACHED batch statistics and the running ones before this batch: constants of the graph.
  const double step = num_batches_tracked.item();
  const double rmax = rmax_at(step), dmax = dmax_at(step);
  std::vector<double> r(C), d(C), mu_b(C), var_b(C);
  {
    NoGradGuard no_grad;
    const auto mb = (shift + d_mean).detach().to_vector(), vb = var.detach().to_vector();
    const auto rm = running_mean.to_vector(), rv = running_var.to_vector();
    for (std::size_t c = 0; c < C; ++c) {
      const double sigma_b = std::sqrt(vb[c] + o.eps()), sigma = std::sqrt(rv[c] + o.eps());
      r[c] = std::clamp(sigma_b / sigma, 1.0 / rmax, rmax);
      d[c] = std::clamp((mb[c] - rm[c]) / sigma, -dmax, dmax);
      mu_b[c] = mb[c];
      var_b[c] = vb[c];
    }
  }
  const Tensor rt = from_vector(r, {C}, input.dtype()).reshape(cv), dt = from_vector(d, {C}, input.dtype()).reshape(cv);
  xhat = xhat * rt + dt;  // r, d: no requires_grad, so no gradient flows into them
  Tensor y = xhat;
  if (weight.defined()) y = y * weight.reshape(cv);
  if (bias.defined()) y = y + bias.reshape(cv);
  {  // running statistics exactly as BatchNorm's (unbiased variance), then count the step
    NoGradGuard no_grad;
    const double f = o.momentum(), unbiased = double(m) / double(m - 1);
    std::vector<double> nm(C), nv(C);
    const auto rm = running_mean.to_vector(), rv = running_var.to_vector();
    for (std::size_t c = 0; c < C; ++c) {
      nm[c] = (1 - f) * rm[c] + f * mu_b[c];
      nv[c] = (1 - f) * rv[c] + f * var_b[c] * unbiased;
    }
    running_mean.copy_(from_vector(nm, {C}, input.dtype()));
    running_var.copy_(from_vector(nv, {C}, input.dtype()));
    num_batches_tracked.add_(1.0);
  }
  last_r_ = std::move(r);
  last_d_ = std::move(d);
  return apply_forward_hooks(input, y);
}

void BatchRenormBase::pretty_print(std::ostream& os) const {
  const auto& o = options_;
  os << name() << "(" << o.num_features() << ", eps=" << o.eps() << ", momentum=" << o.momentum()
     << ", affine=" << (o.affine() ? "true" : "false") << ", rmax=" << o.rmax() << ", dmax=" << o.dmax()
     << ", warmup_steps=" << o.warmup_steps() << ", rmax_steps=" << o.rmax_steps() << ", dmax_steps=" << o.dmax_steps()
     << ")";
}

void BatchRenorm1d::check_input_dim(const Tensor& input) const {
  if (input.ndim() != 2 && input.ndim() != 3)
    fail("BatchRenorm1d: expected a 2-d [N, C] or 3-d [N, C, L] input, got shape {}", shape_str(input.shape()));
}
void BatchRenorm2d::check_input_dim(const Tensor& input) const {
  if (input.ndim() != 4) fail("BatchRenorm2d: expected a 4-d [N, C, H, W] input, got shape {}", shape_str(input.shape()));
}

// ---- update_bn -------------------------------------------------------------------------------------------------
std::size_t update_bn(data::DataLoader& loader, Module& model, BnStatistics how) {
  struct Acc {
    BatchNormBase* bn;
    std::vector<kernels::BnMoments> pooled;  // Population: Chan's combine of every batch
    std::vector<double> sum_mean, sum_var;   // Cumulative: sums of batch means / unbiased variances
    std::size_t batches = 0;
  };
  std::vector<Acc> accs;
  std::vector<HookHandle> hooks;
  model.apply([&](Module& m) {
    auto* bn = dynamic_cast<BatchNormBase*>(&m);
    if (bn && bn->options().track_running_stats()) accs.push_back({bn, {}, {}, {}, 0});
  });
  if (accs.empty())
    fail("update_bn: the model has no BatchNorm layer with running statistics (track_running_stats(true))");
  if (loader.num_batches() == 0) fail("update_bn: the data loader yields no batches");
  for (Acc& a : accs) {
    const std::size_t C = a.bn->options().num_features();
    a.pooled.assign(C, {});
    a.sum_mean.assign(C, 0.0);
    a.sum_var.assign(C, 0.0);
    // Each forward's input: its per-channel moments, two-pass in double (the kernels' local sums).
    hooks.push_back(a.bn->register_forward_hook([&a, C](Module&, const Tensor& in, const Tensor&) {
      const Tensor x = in.detach().to(kFloat64);
      const Shape s = x.shape();
      std::size_t S = 1;
      for (std::size_t k = 2; k < s.size(); ++k) S *= s[k];
      std::vector<kernels::BnMoments> mo(C);
      kernels::batch_norm_local_moments<double>(x.data_ptr<double>(), {s[0], C, S}, mo.data());
      for (std::size_t c = 0; c < C; ++c) {
        a.pooled[c] = kernels::bn_combine(a.pooled[c], mo[c]);
        a.sum_mean[c] += mo[c].mean;
        a.sum_var[c] += mo[c].count > 1 ? mo[c].m2 / (mo[c].count - 1) : 0.0;
      }
      ++a.batches;
    }));
  }
  // Training mode (batch statistics, as PyTorch's update_bn) without touching any buffer; modes restored after.
  std::vector<std::pair<Module*, bool>> modes;
  model.apply([&](Module& m) { modes.emplace_back(&m, m.is_training()); });
  std::size_t n = 0;
  try {
    NoGradGuard no_grad;
    NoStatsUpdateGuard no_update;
    model.train(true);
    for (const auto& batch : loader) {
      model.forward(batch.images);
      ++n;
    }
  } catch (...) {
    for (auto& h : hooks) h.remove();
    for (auto& [m, on] : modes) m->Module::train(on);
    throw;
  }
  for (auto& h : hooks) h.remove();
  for (auto& [m, on] : modes) m->Module::train(on);
  NoGradGuard no_grad;
  for (Acc& a : accs) {
    if (a.batches == 0) continue;  // a layer the forward never reached keeps its statistics
    const std::size_t C = a.pooled.size();
    std::vector<double> mean(C), var(C);
    for (std::size_t c = 0; c < C; ++c) {
      if (how == BnStatistics::Cumulative) {
        mean[c] = a.sum_mean[c] / double(a.batches);
        var[c] = a.sum_var[c] / double(a.batches);
      } else {
        mean[c] = a.pooled[c].mean;
        var[c] = a.pooled[c].count > 1 ? a.pooled[c].m2 / (a.pooled[c].count - 1) : 0.0;
      }
    }
    const Dtype dt = a.bn->running_mean.dtype();
    a.bn->running_mean.copy_(from_vector(mean, {C}, dt));
    a.bn->running_var.copy_(from_vector(var, {C}, dt));
    a.bn->num_batches_tracked.fill_(double(a.batches));
  }
  return n;
}

}  // namespace xg::nn
