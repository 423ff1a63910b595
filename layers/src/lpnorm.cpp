// LpNorm1d / LpNorm2d: ℓp normalisation composed from tensor ops (the maths is in xgrad/nn/lpnorm.h and
// docs/batchnorm.md#lp-normalisation); autograd derives the gradient.
#include "xgrad/nn/lpnorm.h"

#include <cmath>
#include <ostream>

#include "xgrad/autograd.h"
#include "xgrad/nn/batchnorm.h"
#include "xgrad/ops.h"

namespace xg::nn {

LpNormBase::LpNormBase(const LpNormOptions& o, std::string name, std::size_t min_rank, std::size_t max_rank)
    : Module(std::move(name)), options_(o), min_rank_(min_rank), max_rank_(max_rank) {
  if (o.num_features() == 0) fail("{}: num_features must be > 0", Module::name());
  if (!(o.p() == 1.0 || o.p() == 2.0 || o.p() == std::numeric_limits<double>::infinity()))
    fail("{}: p must be 1, 2 or infinity (std::numeric_limits<double>::infinity()), got {}", Module::name(), o.p());
  if (!(o.eps() > 0) || !std::isfinite(o.eps()))
    fail("{}: eps must be a finite number > 0 (it keeps 1/(s + eps) finite), got {}", Module::name(), o.eps());
  if (!(o.momentum() >= 0 && o.momentum() <= 1))
    fail("{}: momentum must be in [0, 1], got {}", Module::name(), o.momentum());
  const std::size_t C = o.num_features();
  weight = register_parameter("weight", o.affine() ? ones({C}) : Tensor());
  bias = register_parameter("bias", o.affine() ? zeros({C}) : Tensor());
  running_mean = register_buffer("running_mean", zeros({C}));
  running_scale = register_buffer("running_scale", ones({C}));
}

Tensor LpNormBase::forward(const Tensor& input) {
  if (!input.defined()) fail("{}: the input is undefined", name());
  const std::size_t nd = input.ndim();
  if (nd < min_rank_ || nd > max_rank_)
    fail("{}: expected an input of rank {}{}, got shape {}", name(), min_rank_,
         max_rank_ > min_rank_ ? fmt::format(" to {}", max_rank_) : std::string(), shape_str(input.shape()));
  const std::size_t C = options_.num_features();
  if (input.shape()[1] != C)
    fail("{}: the input has {} channels (axis 1 of shape {}) but the layer was built for num_features = {}", name(),
         input.shape()[1], shape_str(input.shape()), C);
  if (running_mean.dtype() != input.dtype())
    fail("{}: the module is {} but the input is {}; convert the module with .to()", name(), running_mean.dtype(),
         input.dtype());
  const auto cshape = channel_view(C, nd);  // [1, C, 1, ...]
  Tensor xc, s;                             // x − μ and the per-channel scale s, [1, C, 1, ...]
  if (is_training()) {
    const std::size_t m = input.numel() / C;
    if (m < 2)
      fail("{}: training needs more than one value per channel to normalise, got shape {}", name(),
           shape_str(input.shape()));
    const Dims axes = non_channel_axes(nd);
    const Tensor mu = input.mean(axes, true);
    xc = input - mu;
    const double p = options_.p();
    if (p == 1.0) s = xc.abs().mean(axes, true);                  // (1/m) Σ |x − μ|
    else if (p == 2.0) s = (xc * xc).mean(axes, true).sqrt();     // ((1/m) Σ (x − μ)²)^(1/2)
    else s = xc.abs().max(axes, true);                            // max |x − μ|
    if (!NoStatsUpdateGuard::active()) {
      NoGradGuard no_grad;
      const double f = options_.momentum();
      const std::vector<std::ptrdiff_t> flat{static_cast<std::ptrdiff_t>(C)};
      running_mean.mul_(1.0 - f).add_(mu.detach().reshape(flat), f);
      running_scale.mul_(1.0 - f).add_(s.detach().reshape(flat), f);
    }
  } else {
    xc = input - running_mean.reshape(cshape);
    s = running_scale.reshape(cshape);
  }
  Tensor y = xc / (s + options_.eps());
  if (weight.defined()) y = y * weight.reshape(cshape);
  if (bias.defined()) y = y + bias.reshape(cshape);
  return apply_forward_hooks(input, y);
}

void LpNormBase::pretty_print(std::ostream& os) const {
  os << name() << "(" << options_.num_features() << ", p=";
  if (std::isinf(options_.p())) os << "inf";
  else os << options_.p();
  os << ", eps=" << options_.eps() << ", momentum=" << options_.momentum() << ", affine=" << options_.affine() << ")";
}

}  // namespace xg::nn
