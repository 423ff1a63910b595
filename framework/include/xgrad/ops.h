// xgrad/ops.h — the differentiable ops. Each primitive has one derivative, written as a closure in
// framework/src/core/ops_*.cpp; the composites at the end are built from primitives and need no backward of their
// own. docs/ops.md lists every op with its derivative.
//
// Broadcasting follows numpy: shapes are aligned on the right; an axis of size 1 (or a missing axis) stretches.
// The backward of a broadcast op sums the gradient back to each input's shape (sum_to).
// Binary ops need equal dtypes (error otherwise); a double scalar takes the tensor's dtype.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
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

// ---- elementwise, unary --------------------------------------------------------------------------------
Tensor neg(const Tensor& x);                       // -1
Tensor pow(const Tensor& x, double exponent);      // p·x^(p-1)
Tensor exp(const Tensor& x);                       // exp(x)
Tensor log(const Tensor& x);                       // 1/x
Tensor sqrt(const Tensor& x);                      // 1/(2·sqrt(x))
Tensor rsqrt(const Tensor& x);                     // -1/2·x^(-3/2)
Tensor abs(const Tensor& x);                       // sign(x) (0 at 0)
/// Clamps to [min, max] (either may be absent); gradient 1 inside, 0 where clamped.
Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max);

// ---- comparisons and where (masks: 1/0 in the inputs' dtype; not differentiable) --------------------
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, double b);
Tensor lt(const Tensor& a, double b);
/// cond ? a : b elementwise (cond nonzero = true), broadcasting all three; differentiable in a and b.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
/// True if any element is NaN or ±Inf.
bool has_nonfinite(const Tensor& t);

// ---- reductions (axes may be negative; empty axes list = all axes) -------------------------------------
Tensor sum(const Tensor& x, const Dims& axes = {}, bool keepdim = false);   // gradient broadcast back
Tensor mean(const Tensor& x, const Dims& axes = {}, bool keepdim = false);  // sum / count
/// Max/min over axes; the gradient goes to the arg-max (split evenly among ties).
Tensor amax(const Tensor& x, const Dims& axes = {}, bool keepdim = false);
Tensor amin(const Tensor& x, const Dims& axes = {}, bool keepdim = false);
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
/// Mean over each window, divided by kH·kW (count_include_pad) or by the window's real pixels d. G/d to every
/// pixel of the window.
Tensor avg_pool2d(const Tensor& input, Size2 kernel_size, std::optional<Size2> stride = std::nullopt,
                  Size2 padding = 0, bool count_include_pad = true);
/// loss[n, d...] = -input[n, target[n, d...], d...], reduced: input [N, C, d...] (log-probabilities; or [C] for
/// one sample), target the class indices [N, d...] as a Tensor of integral values or N·d... indices in
/// row-major order. d/dinput = -G at the target class (÷ N·d... for the mean), 0 elsewhere.
Tensor nll_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean);
Tensor nll_loss(const Tensor& input, const std::vector<std::size_t>& target, Reduction reduction = Reduction::Mean);
/// nll_loss(log_softmax(input, class axis), target): a composite (shapes and targets as nll_loss, checked before
/// anything is computed). d/dinput = softmax(input) - onehot(target), times G (÷ count for the mean).
Tensor cross_entropy_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean);
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
Tensor native_batch_norm(const Tensor& input, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                         Tensor running_var, bool training, double exp_avg_factor, double eps);

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
