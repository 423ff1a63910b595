// xgrad/ops.h — the differentiable ops. Each primitive has one derivative, written as a closure in
// framework/src/core/ops_*.cpp; the composites at the end are built from primitives and need no backward of their
// own. docs/ops.md lists every op with its derivative.
//
// Broadcasting follows numpy: shapes are aligned on the right; an axis of size 1 (or a missing axis) stretches.
// The backward of a broadcast op sums the gradient back to each input's shape (sum_to).
//
// Type promotion (docs/tensors.md#dtypes-and-type-promotion) follows PyTorch: the elementwise ops convert both
// inputs to their common dtype, ordered by category bool < integer < floating point (int64 ⊕ float32 -> float32,
// int32 ⊕ int64 -> int64, bool ⊕ int32 -> int32, float32 ⊕ float64 -> float64); a 0-d tensor only decides when its
// category is higher. A C++ double scalar is a Python float (an integer tensor becomes float32, a float tensor
// keeps its dtype), a C++ integer scalar a Python int (keeps an integer tensor's dtype). `/` is true division
// (int / int -> float32); comparisons give bool. The other ops (matmul, linear, conv2d, cat, ...) need equal
// dtypes and say so.
#pragma once

#include <concepts>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "xgrad/tensor.h"

namespace xg {

// ---- elementwise, binary (broadcasting) --------------------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b);  // d/da = 1, d/db = 1
Tensor sub(const Tensor& a, const Tensor& b);  // d/da = 1, d/db = -1
Tensor mul(const Tensor& a, const Tensor& b);  // d/da = b, d/db = a
Tensor div(const Tensor& a, const Tensor& b);  // d/da = 1/b, d/db = -a/b²
/// Elementwise max/min; where a == b the gradient goes half to each (like PyTorch's maximum).
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
/// a^b elementwise for tensor exponents (a > 0 where the exponent's gradient is needed).
Tensor pow(const Tensor& a, const Tensor& b);

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator+(const Tensor& a, double b);
Tensor operator-(const Tensor& a, double b);
Tensor operator*(const Tensor& a, double b);
Tensor operator/(const Tensor& a, double b);
Tensor operator+(double a, const Tensor& b);
Tensor operator-(double a, const Tensor& b);
Tensor operator*(double a, const Tensor& b);
Tensor operator/(double a, const Tensor& b);
/// The 0-d tensor a scalar becomes against t (see the top of this file): a double takes t's dtype if t is floating
/// point, else float32; an integer takes t's dtype, or int64 if t is bool.
Tensor scalar_for(const Tensor& t, double v);
Tensor scalar_for(const Tensor& t, std::int64_t v);
/// C++ integer scalars (`labels + 1`, `x * 2`): PyTorch's Python ints, see scalar_for.
template <std::integral I> requires(!std::same_as<I, bool>)
Tensor operator+(const Tensor& a, I b) { return add(a, scalar_for(a, static_cast<std::int64_t>(b))); }
template <std::integral I> requires(!std::same_as<I, bool>)
Tensor operator-(const Tensor& a, I b) { return sub(a, scalar_for(a, static_cast<std::int64_t>(b))); }
template <std::integral I> requires(!std::same_as<I, bool>)
Tensor operator*(const Tensor& a, I b) { return mul(a, scalar_for(a, static_cast<std::int64_t>(b))); }
template <std::integral I> requires(!std::same_as<I, bool>)
Tensor operator/(const Tensor& a, I b) { return div(a, scalar_for(a, static_cast<std::int64_t>(b))); }
template <std::integral I> requires(!std::same_as<I, bool>)
Tensor operator+(I a, const Tensor& b) { return add(scalar_for(b, static_cast<std::int64_t>(a)), b); }
template <std::integral I> requires(!std::same_as<I, bool>)
Tensor operator-(I a, const Tensor& b) { return sub(scalar_for(b, static_cast<std::int64_t>(a)), b); }
template <std::integral I> requires(!std::same_as<I, bool>)
Tensor operator*(I a, const Tensor& b) { return mul(scalar_for(b, static_cast<std::int64_t>(a)), b); }
template <std::integral I> requires(!std::same_as<I, bool>)
Tensor operator/(I a, const Tensor& b) { return div(scalar_for(b, static_cast<std::int64_t>(a)), b); }

// ---- elementwise, unary --------------------------------------------------------------------------------
// exp, log, sqrt, rsqrt and pow(x, double) of an integer or bool tensor compute in float32 (PyTorch); neg, abs
// and clamp with integral bounds keep an integer dtype.
Tensor neg(const Tensor& x);                       // -1
Tensor pow(const Tensor& x, double exponent);      // p·x^(p-1)
Tensor exp(const Tensor& x);                       // exp(x)
Tensor log(const Tensor& x);                       // 1/x
Tensor sqrt(const Tensor& x);                      // 1/(2·sqrt(x))
Tensor rsqrt(const Tensor& x);                     // -1/2·x^(-3/2)
Tensor abs(const Tensor& x);                       // sign(x) (0 at 0)
/// Clamps to [min, max] (either may be absent); gradient 1 inside, 0 where clamped.
Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max);

// ---- comparisons, masks and where (comparisons give bool tensors and are not differentiable) -----------
// The inputs are promoted to their common dtype first (int64 [1, 2, 3] > 2.5 compares in float32).
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, double b);
Tensor ne(const Tensor& a, double b);
Tensor lt(const Tensor& a, double b);
Tensor le(const Tensor& a, double b);
Tensor gt(const Tensor& a, double b);
Tensor ge(const Tensor& a, double b);
/// `x > 0`, `a <= b`: the same as gt/le/... (== and != are xg::eq / xg::ne: Tensor::operator== would make
/// handles look comparable by identity).
Tensor operator<(const Tensor& a, const Tensor& b);
Tensor operator<=(const Tensor& a, const Tensor& b);
Tensor operator>(const Tensor& a, const Tensor& b);
Tensor operator>=(const Tensor& a, const Tensor& b);
Tensor operator<(const Tensor& a, double b);
Tensor operator<=(const Tensor& a, double b);
Tensor operator>(const Tensor& a, double b);
Tensor operator>=(const Tensor& a, double b);
/// Elementwise tests (bool; integer tensors are never NaN or infinite).
Tensor isnan(const Tensor& x);
Tensor isinf(const Tensor& x);
Tensor isfinite(const Tensor& x);
/// Logical ops on any dtype (nonzero = true), bool results, broadcasting.
Tensor logical_not(const Tensor& x);
Tensor logical_and(const Tensor& a, const Tensor& b);
Tensor logical_or(const Tensor& a, const Tensor& b);
Tensor logical_xor(const Tensor& a, const Tensor& b);
/// cond ? a : b elementwise; cond must be bool (as in PyTorch), a and b are promoted to their common dtype, all
/// three broadcast. Differentiable in a and b (the gradient goes where the condition picked each).
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
/// x with `value` where the bool mask is true (the mask broadcasts to x's shape); x's dtype. Differentiable in x.
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);
/// The elements of x where the bool mask (broadcast with x) is true, as a 1-d tensor in row-major order
/// (PyTorch: x[mask]). Differentiable in x.
Tensor masked_select(const Tensor& x, const Tensor& mask);
/// True if any element is NaN or ±Inf (always false for integer and bool tensors).
bool has_nonfinite(const Tensor& t);

// ---- reductions (axes may be negative; empty axes list = all axes) -------------------------------------
// The sum of an integer or bool tensor is int64 (PyTorch); mean, var and std need floating point (an error for
// integers, as in PyTorch: convert with .to(xg::kFloat32)); amax/amin keep an integer dtype.
Tensor sum(const Tensor& x, const Dims& axes = {}, bool keepdim = false);   // gradient broadcast back
Tensor mean(const Tensor& x, const Dims& axes = {}, bool keepdim = false);  // sum / count
/// Max/min over axes; the gradient goes to the arg-max (split evenly among ties).
Tensor amax(const Tensor& x, const Dims& axes = {}, bool keepdim = false);
Tensor amin(const Tensor& x, const Dims& axes = {}, bool keepdim = false);
/// Index (int64) of the largest / smallest value along `axis`, the first on ties, a NaN counting as the largest
/// (PyTorch); without an axis, of the flattened tensor. Not differentiable.
Tensor argmax(const Tensor& x, std::optional<int> axis = std::nullopt, bool keepdim = false);
Tensor argmin(const Tensor& x, std::optional<int> axis = std::nullopt, bool keepdim = false);
/// PyTorch's max(dim) / min(dim): {values, indices (int64)}. The values are gather(x, dim, indices), so the
/// gradient goes to the returned index only (amax splits it among ties instead).
std::pair<Tensor, Tensor> max(const Tensor& x, int dim, bool keepdim = false);
std::pair<Tensor, Tensor> min(const Tensor& x, int dim, bool keepdim = false);
/// The k largest (or smallest) values along `dim` and their int64 indices, in sorted order (ties: lower index
/// first). Values differentiable through gather.
std::pair<Tensor, Tensor> topk(const Tensor& x, std::size_t k, int dim = -1, bool largest = true);
/// Stable sort along `dim`: {values, indices (int64)}; argsort returns the indices only. NaN sorts last
/// (ascending), as in PyTorch.
std::pair<Tensor, Tensor> sort(const Tensor& x, int dim = -1, bool descending = false);
Tensor argsort(const Tensor& x, int dim = -1, bool descending = false);
/// Variance over axes, two-pass (mean first): sum((x-mean)²)/(n-1 if unbiased else n).
Tensor var(const Tensor& x, const Dims& axes = {}, bool unbiased = true, bool keepdim = false);
Tensor std(const Tensor& x, const Dims& axes = {}, bool unbiased = true, bool keepdim = false);
/// Sums `x` down to `shape` (the backward of broadcasting).
Tensor sum_to(const Tensor& x, const Shape& shape);

// ---- shape ops -------------------------------------------------------------------------------------------
Tensor reshape(const Tensor& x, const std::vector<std::ptrdiff_t>& shape);
Tensor flatten(const Tensor& x, int start_axis = 0, int end_axis = -1);
Tensor transpose(const Tensor& x, int a, int b);
Tensor permute(const Tensor& x, const Dims& order);
Tensor squeeze(const Tensor& x);
Tensor squeeze(const Tensor& x, int axis);
Tensor unsqueeze(const Tensor& x, int axis);
/// Broadcasts to `shape` (numpy rules); backward sums back.
Tensor expand(const Tensor& x, const Shape& shape);
/// Elements start, start+step, ... < end along one axis (negative start/end count from the end; clamped).
Tensor slice(const Tensor& x, int axis, std::ptrdiff_t start, std::ptrdiff_t end, std::ptrdiff_t step = 1);
/// `length` elements from `start` along `axis` (error if out of range).
Tensor narrow(const Tensor& x, int axis, std::size_t start, std::size_t length);
/// Picks entries along `axis` (indices may repeat; their gradients add up).
Tensor index_select(const Tensor& x, int axis, const std::vector<std::size_t>& index);
/// The same with a 1-d int64 (or int32) index tensor.
Tensor index_select(const Tensor& x, int axis, const Tensor& index);
/// Braced indices, `index_select(x, 0, {2, 0})` (otherwise ambiguous between the two forms above).
inline Tensor index_select(const Tensor& x, int axis, std::initializer_list<std::size_t> index) {
  return index_select(x, axis, std::vector<std::size_t>(index));
}
/// out[i][j][k] = input[index[i][j][k]][j][k] for dim 0 (likewise for other dims): index is int64 with input's
/// number of axes and sizes <= input's off `dim`; the output has index's shape. Differentiable in input (the
/// gradient is added back at each element read, so repeated indices add up).
Tensor gather(const Tensor& input, int dim, const Tensor& index);
/// A copy of input with src's elements added at the indexed places: out[index[i][j]][j] += src[i][j] (dim 0).
/// index (int64) as for gather, against both input and src. Differentiable in input (G) and src (G gathered).
Tensor scatter_add(const Tensor& input, int dim, const Tensor& index, const Tensor& src);
/// Joins along an existing axis / a new axis.
Tensor cat(const std::vector<Tensor>& xs, int axis = 0);
Tensor stack(const std::vector<Tensor>& xs, int axis = 0);

// ---- linear algebra ----------------------------------------------------------------------------------
/// Matrix product through BLAS: [n,k]·[k,m]; 1-d operands as in numpy; batched [...,n,k]·[...,k,m] with
/// broadcasting of the batch axes. d/dA = G·Bᵀ, d/dB = Aᵀ·G.
Tensor matmul(const Tensor& a, const Tensor& b);
/// y = x·Wᵀ + b with PyTorch's layout: x [..., in], W [out, in], b [out] (may be undefined) -> y [..., out].
/// One GEMM forward, two backward (dx = G·W, dW = Gᵀ·x, db = Σ G); no transposed copies.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());

// ---- activations and the softmax family ---------------------------------------------------------------
// sigmoid and tanh are primitives with a closed-form derivative (the composed forms overflow to NaN in the
// gradient for large |x|); relu is a one-pass primitive for speed; the others are composites of the
// primitives above (docs/ops.md).
Tensor sigmoid(const Tensor& x);               // 1/(1+exp(-x)), computed stably; σ' = σ(1-σ)
Tensor tanh(const Tensor& x);                  // equals 2·sigmoid(2x) - 1; tanh' = 1 - tanh²
Tensor relu(const Tensor& x);                  // equals where(x > 0, x, 0) (+0, never -0): gradient [x > 0], 0 at 0
Tensor softmax(const Tensor& x, int axis);     // exp(x - max) / sum(exp(x - max))
Tensor log_softmax(const Tensor& x, int axis); // (x - max) - log(sum(exp(x - max)))
Tensor logsumexp(const Tensor& x, const Dims& axes, bool keepdim = false);

// ---- neural-network ops ------------------------------------------------------------------------------
// Primitives with hand-written loops and kernels, one graph node each (framework/src/core/ops_conv.cpp, ops_pool.cpp,
// ops_nn.cpp), named as in PyTorch's ATen. Layouts are PyTorch's: images [N, C, H, W], conv weights
// [C_out, C_in, kH, kW], class scores [N, C] or [N, C, d1, ...]. The layers use them through
// xg::nn::functional, whose conv2d, max_pool2d, avg_pool2d and nll_loss are these very functions.

/// A (height, width) pair for kernel sizes, strides and paddings. One number means both:
/// `Size2(3)` == `Size2(3, 3)`; braces give two: `{3, 5}`. (libtorch: ExpandingArray<2>.)
struct Size2 {
  std::size_t h = 0;
  std::size_t w = 0;
  Size2(std::size_t both) : h(both), w(both) {}  // NOLINT: implicit on purpose, as libtorch
  Size2(std::size_t height, std::size_t width) : h(height), w(width) {}
  bool operator==(const Size2&) const = default;
};
inline std::string to_string(const Size2& s) { return fmt::format("({}, {})", s.h, s.w); }

/// How a loss reduces its per-element values: keep them (None), average (Mean, the default) or add (Sum).
/// (ATen: at::Reduction.)
enum class Reduction { None, Mean, Sum };
inline const char* to_string(Reduction r) {
  return r == Reduction::None ? "none" : r == Reduction::Mean ? "mean" : "sum";
}

/// 2-d cross-correlation with zero padding, y[n,o,i,j] = b[o] + Σ_{c,p,q} w[o,c,p,q]·x[n,c, i·sh+p-ph, j·sw+q-pw]:
/// input [N, C, H, W], weight [O, C, kH, kW], bias [O] or undefined -> [N, O, Ho, Wo], Ho = (H + 2·ph - kH)/sh + 1.
/// im2col + one GEMM per image. dx = col2im(Wᵀ·G_n), dW = Σ_n G_n·col_nᵀ, db = Σ_{n,i,j} G.
Tensor conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias = Tensor(), Size2 stride = 1,
              Size2 padding = 0);
/// Max over each kH×kW window (padding is -inf), [N, C, H, W] -> [N, C, Ho, Wo]; stride defaults to the kernel,
/// padding at most half the kernel. G goes to the window's arg-max (the first on ties; a NaN wins).
Tensor max_pool2d(const Tensor& input, Size2 kernel_size, std::optional<Size2> stride = std::nullopt,
                  Size2 padding = 0);
/// max_pool2d that also returns where each maximum came from (PyTorch: return_indices=true): indices int64
/// [N, C, Ho, Wo], each the flat position r·W + c of the winner inside its [H, W] plane (PyTorch's convention,
/// what max_unpool2d takes). The values are the same node as max_pool2d's.
std::pair<Tensor, Tensor> max_pool2d_with_indices(const Tensor& input, Size2 kernel_size,
                                                  std::optional<Size2> stride = std::nullopt, Size2 padding = 0);
/// The partial inverse of max_pool2d: out [N, C, H, W] is 0 except out[n, c].flat[indices[n, c, i, j]] =
/// input[n, c, i, j]. (H, W) = output_size, or (Ho-1)·stride - 2·padding + kernel (PyTorch's default) if absent.
/// input and indices [N, C, Ho, Wo]. d/dinput[n,c,i,j] = G[n, c].flat[indices[n,c,i,j]] (a gather).
Tensor max_unpool2d(const Tensor& input, const Tensor& indices, Size2 kernel_size,
                    std::optional<Size2> stride = std::nullopt, Size2 padding = 0,
                    std::optional<Size2> output_size = std::nullopt);
/// Mean over adaptive windows (PyTorch's AdaptiveAvgPool2d): output pixel (i, j) of [N, C, oh, ow] averages input
/// rows floor(i·H/oh) .. ceil((i+1)·H/oh) - 1 and the columns likewise. G/d to every pixel of the window.
Tensor adaptive_avg_pool2d(const Tensor& input, Size2 output_size);
/// Mean over each window, divided by kH·kW (count_include_pad) or by the window's real pixels d. G/d to every
/// pixel of the window.
Tensor avg_pool2d(const Tensor& input, Size2 kernel_size, std::optional<Size2> stride = std::nullopt,
                  Size2 padding = 0, bool count_include_pad = true);
/// loss[n, d...] = -input[n, target[n, d...], d...], reduced: input [N, C, d...] (log-probabilities; or [C] for
/// one sample), target the class indices [N, d...] as an int64 tensor (int32, or floats holding whole numbers,
/// are accepted too) or N·d... indices in row-major order. Targets equal to ignore_index (PyTorch's default -100)
/// contribute 0, and the mean divides by the number of the others (NaN if every target is ignored, as in
/// PyTorch). d/dinput = -G at the target class (÷ that count for the mean), 0 elsewhere.
Tensor nll_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean,
                std::int64_t ignore_index = -100);
Tensor nll_loss(const Tensor& input, const std::vector<std::size_t>& target, Reduction reduction = Reduction::Mean);
/// nll_loss(log_softmax(input, class axis), target): a composite (shapes and targets as nll_loss, checked before
/// anything is computed). d/dinput = softmax(input) - onehot(target), times G (÷ count for the mean).
/// label_smoothing ε in [0, 1] as PyTorch: loss[n] = (1-ε)·(-lp[n, y_n]) + ε·(-(1/C)·Σ_c lp[n, c]) with
/// lp = log_softmax(input); both parts are 0 for an ignored target and the mean divides both by the number of
/// targets not ignored.
Tensor cross_entropy_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean,
                          std::int64_t ignore_index = -100, double label_smoothing = 0.0);
Tensor cross_entropy_loss(const Tensor& input, const std::vector<std::size_t>& target,
                          Reduction reduction = Reduction::Mean);
/// Batch normalization as ONE node over the fused kernels of xgrad/kernels/batchnorm.h: input [N, C, ...];
/// weight, bias, running_mean, running_var [C] or undefined. training: y = w·x̂ + b with x̂ = (x - mean_B)·invstd,
/// invstd = 1/sqrt(var_B + eps) (biased variance over the N·spatial values of a channel), and the running stats
/// (if defined) become (1 - f)·running + f·batch stat (unbiased variance), f = exp_avg_factor. Otherwise x̂ uses
/// the running stats. Backward (training, docs/batchnorm-fused.md): dx = w·invstd·(G - mean(G) - x̂·mean(G·x̂)),
/// dw = Σ G·x̂, db = Σ G; eval: dx = G·w·invstd. PyTorch's native_batch_norm also returns the saved mean and
/// invstd; here they stay inside the node. running_mean and running_var are handles to the caller's buffers (taken
/// by value, as tensors share storage): training writes them in place.
/// What a training forward of native_batch_norm computed per channel, [C] each: the batch mean and
/// invstd = 1/sqrt(var_B + eps) (PyTorch's save_mean / save_invstd). Filled only when `saved` is given.
struct BatchNormSaved {
  Tensor mean;
  Tensor invstd;
};
Tensor native_batch_norm(const Tensor& input, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                         Tensor running_var, bool training, double exp_avg_factor, double eps,
                         BatchNormSaved* saved = nullptr);

/// GroupNorm as ONE node over the fused kernels of xgrad/kernels/group_norm.h: input [N, C, ...], the C channels
/// split into num_groups groups of C/num_groups adjacent channels; each (sample, group) is normalised over its
/// (C/G)·spatial values with its own mean and BIASED variance, y = x̂·w_c + b_c (weight, bias [C] or undefined).
/// No running statistics (train and eval compute the same). Backward: dx = invstd·(g − mean(g) − x̂·mean(g·x̂)) with
/// g = G·w per row, dw = Σ G·x̂, db = Σ G (docs/normalization.md). num_groups must divide C; eps > 0.
Tensor native_group_norm(const Tensor& input, std::size_t num_groups, const Tensor& weight, const Tensor& bias,
                         double eps);
/// LayerNorm as ONE node on the same kernels: every row of the last normalized_shape.size() dims (which must equal
/// normalized_shape) is normalised over its D = prod(normalized_shape) values; weight, bias of shape
/// normalized_shape (elementwise affine) or undefined. GroupNorm with N = rows, C = D, spatial 1, one group.
Tensor native_layer_norm(const Tensor& input, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias,
                         double eps);

/// For per-channel ops on [N, C, ...] inputs (BatchNorm): the shape [1, C, 1, ...] of rank `ndim` that lines a
/// [C] vector up with axis 1 (a reshape target), and the axes {0, 2, 3, ...} each channel is reduced over.
std::vector<std::ptrdiff_t> channel_view(std::size_t C, std::size_t ndim);
Dims non_channel_axes(std::size_t ndim);

// ---- broadcasting helpers -----------------------------------------------------------------------------
/// The numpy broadcast of two shapes; throws "<op>: cannot broadcast [2,3] with [4]" when incompatible.
Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view op);

}  // namespace xg
