// xgrad/nn/functional.h — the stateless forms of the layers and losses (PyTorch: torch::nn::functional).
// The modules in xgrad/nn/*.h hold parameters and options and call these. Where the op with its backward is
// the framework's (xgrad/ops.h), the form here is that op: conv2d, max_pool2d, avg_pool2d and nll_loss are
// xg::conv2d, ... themselves (using-declarations, nothing to add); cross_entropy calls xg::cross_entropy_loss and
// batch_norm_fused checks BatchNorm's arguments and calls xg::native_batch_norm, as torch::nn::functional calls
// torch::conv2d. The other functions here are compositions of framework ops.
//
//   namespace F = xg::nn::functional;
//   auto y = F::conv2d(x, w, b, /*stride=*/1, /*padding=*/1);
//
// Layouts are PyTorch's: images [N, C, H, W], conv weights [C_out, C_in, kH, kW], class scores [N, C].
// Every function checks its arguments and throws xg::Error naming the function, the shapes and the fix.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <optional>
#include <vector>

#include "xgrad/nn/options.h"
#include "xgrad/ops.h"
#include "xgrad/random.h"
#include "xgrad/tensor.h"

namespace xg::nn::functional {

// ---- convolution and pooling ---------------------------------------------------------------------------
/// 2-d cross-correlation (what deep learning calls convolution), zero padding:
///   y[n,o,i,j] = b[o] + Σ_{c,p,q} w[o,c,p,q] · x[n, c, i·sh + p - ph, j·sw + q - pw]   (x = 0 outside)
/// input [N, C_in, H, W], weight [C_out, C_in, kH, kW], bias [C_out] or undefined -> [N, C_out, H_out, W_out],
/// H_out = (H + 2·ph - kH)/sh + 1 (floor), likewise W_out. One recorded op "conv2d": forward by im2col and
/// one GEMM per image; backward dW = Σ_n dY_n · col_nᵀ, dx = col2im(Wᵀ · dY_n), db = Σ dY.
///   conv2d(input, weight, bias = Tensor(), Size2 stride = 1, Size2 padding = 0)
using xg::conv2d;

/// Max over each kH×kW window (padding counts as -inf), [N, C, H, W] -> [N, C, H_out, W_out] with
/// H_out = (H + 2·ph - kH)/sh + 1. stride defaults to the kernel size. The gradient goes to the window's
/// arg-max (the first one on ties, as PyTorch); a NaN in a window wins, as in PyTorch.
///   max_pool2d(input, Size2 kernel_size, std::optional<Size2> stride = std::nullopt, Size2 padding = 0)
using xg::max_pool2d;

/// Mean over each kH×kW window. count_include_pad (PyTorch's default true): divide by kH·kW even where the
/// window covers padding; false: divide by the number of real pixels in the window.
///   avg_pool2d(input, kernel_size, stride = std::nullopt, padding = 0, bool count_include_pad = true)
using xg::avg_pool2d;

// ---- dropout ---------------------------------------------------------------------------------------------
/// Inverted dropout: in training, each element is kept with probability 1-p and scaled by 1/(1-p), else 0
/// (p = 1 gives zeros); not training (or p = 0), returns the input itself. The mask is drawn from `gen`
/// (default_generator() if null), so a seeded generator gives the same mask every run. p must be in [0, 1].
Tensor dropout(const Tensor& input, double p = 0.5, bool training = true, Generator* gen = nullptr);
/// Dropout with a given mask (to replay another framework's run, or fix the mask of an MC-dropout study):
/// input·mask/(1-p), mask a bool (or 0/1 floating) tensor that broadcasts to the input. p in [0, 1); the
/// gradient is G·mask/(1-p).
Tensor dropout(const Tensor& input, const Tensor& mask, double p);

/// max_pool2d with the winners' positions (PyTorch: F.max_pool2d(..., return_indices=True)), and its partial
/// inverse (xg::max_pool2d_with_indices, xg::max_unpool2d, xg::adaptive_avg_pool2d).
using xg::adaptive_avg_pool2d;
using xg::max_pool2d_with_indices;
using xg::max_unpool2d;

/// The fraction of rows whose arg-max over axis 1 equals the label: logits [N, C], labels int64 [N] (or the
/// std::vector of class indices). A float64 0-d tensor, not differentiable. (Keras' "accuracy" metric.)
Tensor accuracy(const Tensor& logits, const Tensor& labels);
Tensor accuracy(const Tensor& logits, const std::vector<std::size_t>& labels);

// ---- losses ----------------------------------------------------------------------------------------------
/// Negative log-likelihood of class indices: loss_i = -log_probs[i, target_i].
///   log_probs [N, C] (or [N, C, d1, ...] with target [N, d1, ...], or [C] with a single target);
///   target: class indices as an int64 Tensor (int32, or floats holding whole numbers, are accepted) or a
///   std::vector. Targets equal to ignore_index contribute 0.
/// Reduction::Mean averages over the N·d1·... losses whose target is not ignored. A target outside [0, C) (and
/// not ignore_index) or not an integer is an error naming its position and value.
///   nll_loss(log_probs, const Tensor& target, Reduction reduction = Reduction::Mean, int64 ignore_index = -100)
///   nll_loss(log_probs, const std::vector<std::size_t>& target, Reduction reduction = Reduction::Mean)
using xg::nll_loss;
/// Braced class indices, `nll_loss(lp, {2, 0})` (otherwise ambiguous between the two forms above).
inline Tensor nll_loss(const Tensor& log_probs, std::initializer_list<std::size_t> target,
                       Reduction reduction = Reduction::Mean) {
  return xg::nll_loss(log_probs, std::vector<std::size_t>(target), reduction);
}

/// Cross-entropy from raw scores (logits): nll_loss(log_softmax(logits, 1), target). Stable for any logits
/// (log_softmax subtracts the row max). Shapes and targets as nll_loss. (xg::cross_entropy_loss.)
/// With an int64 target tensor, ignore_index and label_smoothing as PyTorch (see xg::cross_entropy_loss).
Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction = Reduction::Mean,
                     std::int64_t ignore_index = -100, double label_smoothing = 0.0);
Tensor cross_entropy(const Tensor& logits, const std::vector<std::size_t>& target,
                     Reduction reduction = Reduction::Mean);
inline Tensor cross_entropy(const Tensor& logits, std::initializer_list<std::size_t> target,
                            Reduction reduction = Reduction::Mean) {
  return cross_entropy(logits, std::vector<std::size_t>(target), reduction);
}

/// Mean squared error: (input - target)² reduced. Shapes must be equal (no broadcasting: PyTorch only warns,
/// and a silently broadcast loss is a classic bug).
Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean);

// ---- batch normalization -------------------------------------------------------------------------------
/// Batch normalization over every axis but the channel axis 1, composed from tensor ops (autograd derives
/// the gradient). PyTorch's torch.nn.functional.batch_norm semantics:
///   training:  y = (x - mean_B)/sqrt(var_B + eps)·weight + bias with the batch mean and the BIASED batch
///              variance over the m = N·spatial values of each channel; if running_mean/running_var are
///              defined they are updated in place, under no-grad (f = exponential_average_factor):
///                running_mean = (1 - f)·running_mean + f·mean_B
///                running_var  = (1 - f)·running_var  + f·var_B·m/(m - 1)   (unbiased)
///              m must be > 1 (error naming the shape, suggesting drop_last).
///   otherwise: y = (x - running_mean)/sqrt(running_var + eps)·weight + bias (running stats required).
/// input [N, C] / [N, C, L] / [N, C, H, W] / any [N, C, ...]; running stats, weight, bias [C] or undefined
/// (weight 1, bias 0). eps > 0.
/// exponential_average_factor in [0, 1] is the weight of this batch in the update: the module passes its
/// momentum, or 1/num_batches for the cumulative average. (PyTorch calls this argument `momentum` although it
/// receives the same precomputed factor; the name here says what it is. Positionally the calls are the same.)
/// running_mean and running_var are taken by value: they are handles to the caller's buffers, which are
/// written in place (PyTorch takes const Tensor&, whose constness is the handle's; in xgrad a const Tensor
/// gives read-only data, so a buffer that is written is not passed as one).
/// The batch statistics a training forward normalised with, per channel (detached, the input's dtype): mean [C],
/// var [C] the BIASED variance, count = m the values per channel. For probes: no extra pass computes them.
struct BatchStats {
  Tensor mean;
  Tensor var;
  std::size_t count = 0;
};
/// `stats`, if given, receives the batch statistics of a training call (untouched otherwise).
Tensor batch_norm(const Tensor& input, Tensor running_mean, Tensor running_var, const Tensor& weight = Tensor(),
                  const Tensor& bias = Tensor(), bool training = false, double exponential_average_factor = 0.1,
                  double eps = 1e-5, BatchStats* stats = nullptr);

/// The same maths and arguments as batch_norm, as ONE graph node backed by the hand-fused kernels of
/// xgrad/kernels/batchnorm.h (SIMD, threaded, deterministic): xg::native_batch_norm after check_batch_norm_args.
/// The forward saves only the per-channel mean and inverse std; the backward is the closed form
/// dx = w·invstd·(dy − mean(dy) − x̂·mean(dy·x̂)),
/// dw = Σ dy·x̂, db = Σ dy, computing only the gradients that are needed. Agrees with batch_norm to the
/// tolerances in docs/batchnorm-fused.md.
Tensor batch_norm_fused(const Tensor& input, Tensor running_mean, Tensor running_var,
                        const Tensor& weight = Tensor(), const Tensor& bias = Tensor(), bool training = false,
                        double exponential_average_factor = 0.1, double eps = 1e-5, BatchStats* stats = nullptr);

/// Validates batch_norm's arguments (shapes, dtypes, eps, exponential_average_factor, more than one value per
/// channel when training, running stats when not) with the errors both implementations share.
void check_batch_norm_args(const Tensor& input, const Tensor& running_mean, const Tensor& running_var,
                           const Tensor& weight, const Tensor& bias, bool training,
                           double exponential_average_factor, double eps);

}  // namespace xg::nn::functional
