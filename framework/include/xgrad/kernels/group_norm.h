// xgrad — hand-fused GroupNorm and LayerNorm kernels on raw pointers (float and double): two more policies of
// the normalisation driver that runs BatchNorm (framework/src/kernels/norm_driver.h), not a second kernel.
//
// Layout. x, y, dy, dx are contiguous [N, C, S] arrays (element (n, c, s) at x[(n*C + c)*S + s]); the C channels
// form G groups of P = C/G adjacent channels. Statistics are taken per (sample n, group g) over its L = P*S
// values — the driver's view (1, N*G, L): every (n, g) row is one of the driver's "channels". Per-channel
// arrays (weight, bias, dweight, dbias) hold C values; save_mean, save_invstd hold N*G values, row (n, g) at
// n*G + g.
//   LayerNorm over the last D values of each of `rows` rows is GroupNorm with N = rows, C = D, S = 1, G = 1:
//   the "channels" are the D normalised positions, so weight/bias are its elementwise affine [D].
//
// Maths (PyTorch semantics; derivation in docs/normalization.md):
//   mean = (1/L) sum x,  var = (1/L) sum (x - mean)^2 (BIASED),  invstd = 1/sqrt(var + eps)  per (n, g)
//   y = (x - mean)*invstd*weight_c + bias_c                     (c: the channel of the element)
// Backward, with g = dy*weight_c and xhat = (x - mean)*invstd, sums over the row's L values:
//   dx = invstd*(g - mean(g) - xhat*mean(g*xhat)),   dweight_c = sum_{n,s} dy*xhat,   dbias_c = sum_{n,s} dy.
// No running statistics: GroupNorm and LayerNorm use the statistics of the sample itself in train and eval.
//
// Numerics and determinism as the BatchNorm kernels (xgrad/kernels/batchnorm.h): shifted two-pass moments per
// chunk, Chan's combine in double, the mean's rounding to T put back; blocking by the shape only, so the bits do
// not depend on xg::set_num_threads.
#pragma once

#include <cstddef>

namespace xg::kernels {

/// Shape of a GroupNorm input: x [N, C, S] with G groups of C/G channels (C % G == 0).
struct GnDims {
  std::size_t N;  ///< batch (LayerNorm: the number of rows)
  std::size_t C;  ///< channels (LayerNorm: D, the normalised size)
  std::size_t S;  ///< product of the spatial dims (1 for [N, C]; LayerNorm: 1)
  std::size_t G;  ///< groups (LayerNorm: 1)
};

/// Forward: y = weight*(x - mean)*invstd + bias per (n, g) row; weight, bias [C] may be nullptr (1 / 0);
/// save_mean, save_invstd [N*G] outputs (may be nullptr). Throws std::invalid_argument if C % G != 0 or G == 0.
template <class T>
void group_norm_forward(const T* x, const T* weight, const T* bias, T* y, T* save_mean, T* save_invstd, GnDims d,
                        double eps);

/// Backward of group_norm_forward: dx [N, C, S], dweight, dbias [C] (each may be nullptr; dweight/dbias are
/// overwritten). save_mean, save_invstd as written by the forward for this x.
template <class T>
void group_norm_backward(const T* dy, const T* x, const T* weight, const T* save_mean, const T* save_invstd, T* dx,
                         T* dweight, T* dbias, GnDims d);

}  // namespace xg::kernels
