// functional::batch_norm_fused: the fused BatchNorm node, xg::native_batch_norm (framework/src/core/ops_nn.cpp),
// behind the same arguments, checks and messages as the composed functional::batch_norm in batchnorm.cpp.
#include "xgrad/nn/functional.h"
#include "xgrad/ops.h"

namespace xg::nn::functional {

Tensor batch_norm_fused(const Tensor& input, Tensor running_mean, Tensor running_var, const Tensor& weight,
                        const Tensor& bias, bool training, double exponential_average_factor, double eps) {
  check_batch_norm_args(input, running_mean, running_var, weight, bias, training, exponential_average_factor, eps);
  return xg::native_batch_norm(input, weight, bias, running_mean, running_var, training, exponential_average_factor,
                               eps);
}

}  // namespace xg::nn::functional
