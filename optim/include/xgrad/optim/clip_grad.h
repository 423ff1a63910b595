// xgrad/optim/clip_grad.h — gradient clipping and the NaN/Inf gradient check.
//
// All three work on the gradients of a list of parameters (e.g. `model->parameters()` or
// `opt.parameters()`), in place; a parameter whose gradient is undefined is skipped.
//
//   loss.backward();
//   double norm = xg::optim::clip_grad_norm_(params, 1.0);   // rescale so that ||g||_2 <= 1
//   opt.step();
//
// PyTorch: torch.nn.utils.clip_grad_norm_ / clip_grad_value_.
#pragma once

#include <limits>
#include <string>
#include <vector>

#include "xgrad/tensor.h"

namespace xg::optim {

/// Rescales the gradients so that their total norm (all gradients seen as one vector) is at most `max_norm`:
///   total = (sum_i |g_i|^p)^(1/p)   (p = norm_type; p = inf: max_i |g_i|)
///   coef  = max_norm / (total + 1e-6),  and if coef < 1 every gradient is multiplied by coef.
/// Returns `total` (before clipping). The norm is accumulated in double (PyTorch: in the gradients' dtype).
/// A NaN total makes every gradient NaN, as in PyTorch 1.13; with error_if_nonfinite a NaN/Inf total throws
/// xg::Error instead and leaves the gradients untouched. norm_type must be > 0 (or inf), max_norm >= 0.
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0,
                       bool error_if_nonfinite = false);

/// Clamps every gradient element into [-clip_value, clip_value] (clip_value >= 0). NaN stays NaN.
void clip_grad_value_(const std::vector<Tensor>& params, double clip_value);

/// Throws xg::Error if a gradient holds NaN or ±Inf, naming the first such parameter: its index in `params`,
/// its name (`names[i]` if given — one name per parameter — else its label() if set), shape, dtype, how many
/// values are bad and the first one. Does nothing when every gradient is finite.
void check_finite_grads(const std::vector<Tensor>& params, const std::vector<std::string>& names = {});

namespace detail {
/// check_finite_grads with the caller's name at the start of the message ("SGD.step()").
void check_finite_grads(const std::vector<Tensor>& params, const std::vector<std::string>& names,
                        const std::string& who, const std::string& consequence);
}  // namespace detail

}  // namespace xg::optim
