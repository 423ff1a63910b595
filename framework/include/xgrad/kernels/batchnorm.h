// xgrad — hand-fused BatchNorm kernels on raw pointers (float and double).
//
// Layout. Every tensor argument named x, y, dy, dx is one contiguous row-major array viewed as [N, C, S]:
//   element (n, c, s) lives at  x[(n*C + c)*S + s],
// where N is the batch, C the channels (axis 1) and S the product of all spatial dims (S = 1 for a [N, C]
// input, S = L for [N, C, L], S = H*W for [N, C, H, W]). Per-channel arrays (weight, bias, running_mean,
// running_var, save_mean, save_invstd, dweight, dbias) hold C contiguous values. Statistics are taken over
// the m = N*S values of each channel. Input and output arrays must not overlap (except dy/dx, see below).
//
// Maths (PyTorch semantics; derivation in docs/batchnorm-fused.md):
//   mean_c = (1/m) sum x            var_c = (1/m) sum (x - mean_c)^2   (biased, used to normalise)
//   invstd_c = 1/sqrt(var_c + eps)  xhat = (x - mean_c)*invstd_c       y = weight_c*xhat + bias_c
//
// Numerics. Statistics are two-pass and shifted: every chunk of at most ~16 KiB of one channel is summed
// once for a rough mean K, then d = x - K is summed (sum d, sum d^2) while the chunk is still in L1; chunk
// results go to double and are combined with Chan's formula. A channel of mean 1e4 and std 1e-2 in float
// keeps its variance, a constant channel gives xhat == 0 and y == bias exactly. The rounding of the mean to
// T is compensated (forward: in the shift; backward: by re-centring), so large means cost no accuracy.
//
// Threads and determinism. The kernels use xg::parallel_for (xgrad/parallel.h) across channels and, when
// there are fewer channels than threads can share evenly, across the batch. The reduction blocking depends
// only on (N, C, S), partial results are combined in a fixed order: the output bits are the same for any
// xg::set_num_threads(n).
//
// Structure for a future cross-process (SyncBN) path: the fused kernels are "local sums -> combine ->
// finish" per channel. The same three steps are exported below (batch_norm_local_moments, bn_combine,
// batch_norm_finish_stats + batch_norm_normalize) so an all-reduce of BnMoments can be slotted in between
// combine and finish. Combine counts, means and M2 (sums of squares about the mean) — never average
// per-worker variances.
#pragma once

#include <cstddef>

namespace xg::kernels {

/// Shape of x viewed as [N, C, S] (see the layout note at the top).
struct BnDims {
  std::size_t N;  ///< batch size
  std::size_t C;  ///< channels (axis 1)
  std::size_t S;  ///< product of the spatial dims (1 for a [N, C] input)
};

/// Training forward: batch statistics, normalise, scale/shift and running-stat update in one call.
///   x             [N, C, S] input.
///   weight, bias  [C] affine parameters, each may be nullptr (affine=false: weight 1, bias 0).
///   y             [N, C, S] output: y = weight*(x - mean)*invstd + bias.
///   save_mean     [C] output: batch mean (needed by the backward).
///   save_invstd   [C] output: 1/sqrt(var_biased + eps) (needed by the backward).
///   running_mean  [C] in/out, may be nullptr (not updated): (1 - f)*running_mean + f*mean.
///   running_var   [C] in/out, may be nullptr (not updated): (1 - f)*running_var + f*var*m/(m-1)
///                 (the UNBIASED batch variance, m = N*S).
///   d             shape; eps > 0 is added to the variance inside the sqrt; exp_avg_factor = f (PyTorch's
///                 momentum, e.g. 0.1; a cumulative average passes 1/(batches seen)).
/// Throws std::invalid_argument if N*S == 0 (and C > 0), or if running_var is given and N*S == 1 (the
/// unbiased variance of one value is undefined).
template <class T>
void batch_norm_forward_train(const T* x, const T* weight, const T* bias, T* y, T* save_mean, T* save_invstd,
                              T* running_mean, T* running_var, BnDims d, double eps, double exp_avg_factor);

/// Eval (inference) forward with the running statistics, fused to one multiply-add per element:
///   scale_c = weight_c/sqrt(running_var_c + eps),  shift_c = bias_c - running_mean_c*scale_c,
///   y = x*scale_c + shift_c.
///   x, y [N, C, S]; weight, bias [C] may be nullptr (1 / 0); running_mean, running_var [C] required.
/// y may alias x (in place).
template <class T>
void batch_norm_forward_eval(const T* x, const T* weight, const T* bias, const T* running_mean,
                             const T* running_var, T* y, BnDims d, double eps);

/// Backward of the training forward, closed form, computing only what is requested:
///   xhat = (x - mean)*invstd;   dbias = sum dy;   dweight = sum dy*xhat;
///   dx = weight*invstd*(dy - mean(dy) - xhat*mean(dy*xhat))      (sums/means over the m = N*S values).
///   dy, x        [N, C, S]: upstream gradient and the forward's input.
///   weight       [C] or nullptr (1).
///   save_mean, save_invstd  [C] as written by batch_norm_forward_train for this x.
///   dx           [N, C, S] output or nullptr (not computed; dx may alias dy).
///   dweight, dbias  [C] outputs or nullptr (not computed). They are OVERWRITTEN, not accumulated.
/// One reduction pass (sum dy, sum dy*(x - mean), sum (x - mean)) and one elementwise pass for dx, per channel
/// while its slab is in cache. The sum of (x - save_mean) re-centres xhat on the exact batch mean: it removes
/// the rounding of save_mean to T (for float, half an ulp of the mean — 5% of a std for mean 1e4, std 1e-2).
/// If only dbias is requested, x is not read (and may be nullptr).
template <class T>
void batch_norm_backward(const T* dy, const T* x, const T* weight, const T* save_mean, const T* save_invstd,
                         T* dx, T* dweight, T* dbias, BnDims d);

// ---------------------------------------------------------------------------------------------------------
// The three reduction steps, exported for a future cross-process (SyncBN) path. The fused kernels above run
// exactly these steps per channel (and produce the same bits as the composition below).
//
//   forward:  batch_norm_local_moments -> [all-reduce with bn_combine] -> batch_norm_finish_stats
//             -> batch_norm_normalize
//   backward: batch_norm_backward_local_sums -> [all-reduce with bn_grad_combine] -> batch_norm_backward_finish
// ---------------------------------------------------------------------------------------------------------

/// Moments of one channel's values: count, mean, and M2 = sum (x - mean)^2.
struct BnMoments {
  double count = 0;
  double mean = 0;
  double m2 = 0;
};

/// Combine: Chan et al.'s parallel update. n = na + nb, delta = mean_b - mean_a,
///   mean = mean_a + delta*nb/n,   M2 = M2_a + M2_b + delta^2*na*nb/n.
/// Associative up to rounding; the kernels always apply it in a fixed order.
BnMoments bn_combine(const BnMoments& a, const BnMoments& b);

/// Local sums: per-channel moments of this process's x [N, C, S] -> out[C].
template <class T>
void batch_norm_local_moments(const T* x, BnDims d, BnMoments* out);

/// Finish: from global moments[C] write save_mean[C], save_invstd[C], update running_mean/var (each may be
/// nullptr) exactly as batch_norm_forward_train does. Throws like batch_norm_forward_train on count 0, or on
/// count 1 with running_var.
template <class T>
void batch_norm_finish_stats(const BnMoments* moments, std::size_t C, double eps, double exp_avg_factor,
                             T* save_mean, T* save_invstd, T* running_mean, T* running_var);

/// Elementwise: y = weight*(x - mean)*invstd + bias from the global moments[C], exactly as the fused forward
/// (the mean's rounding to T is compensated in the shift). weight/bias may be nullptr.
template <class T>
void batch_norm_normalize(const T* x, const T* weight, const T* bias, const BnMoments* moments, double eps, T* y,
                          BnDims d);

/// Backward local sums of one channel, with xc = x - save_mean: sum dy, sum dy*xc, sum xc.
struct BnGradSums {
  double sum_dy = 0;
  double sum_dy_xc = 0;
  double sum_xc = 0;
};

/// Combine for the backward: plain addition of the three sums.
BnGradSums bn_grad_combine(const BnGradSums& a, const BnGradSums& b);

/// Backward local sums over this process's dy, x [N, C, S] -> out[C].
template <class T>
void batch_norm_backward_local_sums(const T* dy, const T* x, const T* save_mean, BnDims d, BnGradSums* out);

/// Backward finish: given the global sums[C] and the global count m (= sum over processes of N*S), write
/// dweight/dbias (may be nullptr) and dx (may be nullptr) for this process's data.
template <class T>
void batch_norm_backward_finish(const T* dy, const T* x, const T* weight, const T* save_mean,
                                const T* save_invstd, const BnGradSums* sums, double count, T* dx, T* dweight,
                                T* dbias, BnDims d);

// ---------------------------------------------------------------------------------------------------------
// The same maths as plain loops over [N, C, S], accumulating in double whatever T (llm.c style;
// batchnorm_reference.cpp): the shortest statement of what the kernels above compute, and the oracle the
// tests compare them against. Same arguments and outputs as batch_norm_forward_train / batch_norm_backward;
// slow (three passes, no threads, no SIMD).
// ---------------------------------------------------------------------------------------------------------
template <class T>
void batch_norm_forward_reference(const T* x, const T* weight, const T* bias, T* y, T* save_mean, T* save_invstd,
                                  T* running_mean, T* running_var, BnDims d, double eps, double exp_avg_factor);
template <class T>
void batch_norm_backward_reference(const T* dy, const T* x, const T* weight, const T* save_mean,
                                   const T* save_invstd, T* dx, T* dweight, T* dbias, BnDims d);

}  // namespace xg::kernels
