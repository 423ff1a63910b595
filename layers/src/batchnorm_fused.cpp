// functional::batch_norm_fused: the fused BatchNorm node, xg::native_batch_norm (framework/src/core/ops_nn.cpp),
// behind the same arguments, checks and messages as the composed functional::batch_norm in batchnorm.cpp.
#include "xgrad/autograd.h"
#include "xgrad/nn/functional.h"
#include "xgrad/ops.h"

namespace xg::nn::functional {

Tensor batch_norm_fused(const Tensor& input, Tensor running_mean, Tensor running_var, const Tensor& weight,
                        const Tensor& bias, bool training, double exponential_average_factor, double eps,
                        BatchStats* stats) {
  check_batch_norm_args(input, running_mean, running_var, weight, bias, training, exponential_average_factor, eps);
  BatchNormSaved saved;
  Tensor y = xg::native_batch_norm(input, weight, bias, running_mean, running_var, training,
                                   exponential_average_factor, eps, training && stats ? &saved : nullptr);
  if (training && stats) {
    // The kernel's saved mean and invstd; var_B = invstd^-2 - eps is a [C] computation, not a pass over x
    // (it carries invstd's rounding: relative error ~ 2·u·(var + eps)/var, so ~1e-7 in float32 unless var ≲ eps).
    NoGradGuard no_grad;
    stats->mean = saved.mean;
    stats->var = sub(div(scalar(1.0, saved.invstd.dtype()), mul(saved.invstd, saved.invstd)),
                     scalar(eps, saved.invstd.dtype()));
    stats->count = input.numel() / input.size(1);
  }
  return y;
}

}  // namespace xg::nn::functional
