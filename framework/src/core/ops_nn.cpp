// The neural-network ops that are not convolution or pooling: nll_loss (one recorded op: pick -log p of the
// target class; backward scatters -G back), cross_entropy_loss (its composition with log_softmax), and
// native_batch_norm, BatchNorm as one graph node over the hand-fused kernels of xgrad/kernels/batchnorm.h (the
// composed BatchNorm, xg::nn::functional::batch_norm, stays the readable reference and the test oracle).
#include <cmath>
#include <utility>
#include <vector>

#include "detail.h"
#include "xgrad/autograd.h"
#include "xgrad/kernels/batchnorm.h"
#include "xgrad/ops.h"

namespace xg {

// ---- nll_loss, cross_entropy_loss --------------------------------------------------------------------------
namespace {

// Scores viewed as [N, C, S]: N samples, C classes (axis 1), S = product of the extra axes (1 if none).
// A 1-d [C] input is one sample. The target holds N·S class indices, shaped like the scores without axis 1.
struct ClassLayout {
  std::size_t N = 1, C = 0, S = 1;
  Shape target_shape;  // what a Tensor target must look like; also the shape of Reduction::None's output
};

ClassLayout class_layout(const char* op, const Tensor& scores) {
  if (!scores.defined()) fail("{}: the input is undefined", op);
  const Shape s = scores.shape();
  if (s.empty()) fail("{}: the input must be [N, C] (or [C], or [N, C, d1, ...]), got a 0-d tensor", op);
  ClassLayout l;
  if (s.size() == 1) {
    l.C = s[0];
    if (l.C == 0) fail("{}: the input [0] has no classes", op);
    return l;  // target_shape [] (one class index)
  }
  l.N = s[0];
  l.C = s[1];
  l.target_shape.push_back(s[0]);
  for (std::size_t i = 2; i < s.size(); ++i) {
    l.S *= s[i];
    l.target_shape.push_back(s[i]);
  }
  if (l.C == 0) fail("{}: the input {} has no classes (axis 1 is 0)", op, shape_str(s));
  return l;
}

void check_range(const char* op, const std::vector<std::size_t>& target, std::size_t C) {
  for (std::size_t i = 0; i < target.size(); ++i)
    if (target[i] >= C)
      fail("{}: target {} at position {} is out of range for {} classes (valid class indices are 0..{})", op,
           target[i], i, C, C - 1);
}

// The class indices of a target tensor: int64/int32 (PyTorch's Long targets), or, for the code written before
// xgrad had integer dtypes, floats holding whole numbers. Entries equal to ignore_index are kept as they are;
// every other one must be a class index 0..C-1.
std::vector<std::int64_t> indices_from_tensor(const char* op, const Tensor& target, const ClassLayout& l,
                                              std::int64_t ignore_index) {
  if (!target.defined()) fail("{}: the target is undefined", op);
  if (target.shape() != l.target_shape)
    fail("{}: target of shape {} does not match the input: expected class indices of shape {}", op,
         shape_str(target.shape()), shape_str(l.target_shape));
  if (target.dtype() == kBool) fail("{}: the target is a bool tensor; class indices are int64", op);
  std::vector<std::int64_t> out(target.numel());
  dispatch_numeric(target.dtype(), [&](auto t) {
    using T = decltype(t);
    const T* p = target.data_ptr<T>();
    for (std::size_t i = 0; i < out.size(); ++i) {
      const double v = static_cast<double>(p[i]);
      if (std::is_floating_point_v<T> && v != std::floor(v))
        fail("{}: target {} at position {} is not a class index in 0..{} (the input has {} classes)", op, v, i,
             l.C - 1, l.C);
      out[i] = static_cast<std::int64_t>(p[i]);
      if (out[i] != ignore_index && (out[i] < 0 || out[i] >= static_cast<std::int64_t>(l.C)))
        fail("{}: target {} at position {} is not a class index in 0..{} (the input has {} classes){}", op, out[i],
             i, l.C - 1, l.C,
             ignore_index == -100 ? "" : fmt::format(", nor the ignore_index {}", ignore_index));
    }
  });
  return out;
}

std::vector<std::int64_t> as_int64(const std::vector<std::size_t>& v) { return {v.begin(), v.end()}; }

// loss[n, s] = -log_probs[n, target[n, s], s] (0 where target == ignore_index), then reduced; the mean divides
// by the number of targets that are not ignored (PyTorch; NaN if all are).
Tensor nll(const char* op, const Tensor& lp, const std::vector<std::int64_t>& target, const ClassLayout& l,
           Reduction reduction, std::int64_t ignore_index) {
  const std::size_t count = l.N * l.S;
  if (target.size() != count)
    fail("{}: {} targets given for an input of shape {} (expected {}, one per sample{})", op, target.size(),
         shape_str(lp.shape()), count, l.S > 1 ? " and position" : "");
  if (reduction == Reduction::Mean && count == 0)
    fail("{}: mean over an empty batch (input {})", op, shape_str(lp.shape()));
  std::size_t kept = 0;
  for (auto t : target) kept += t != ignore_index;
  Tensor out = zeros(reduction == Reduction::None ? l.target_shape : Shape{}, lp.dtype());
  dispatch(lp.dtype(), [&](auto t) {
    using T = decltype(t);
    const T* p = lp.data_ptr<T>();
    T* o = out.data_ptr<T>();
    double total = 0;
    for (std::size_t n = 0; n < l.N; ++n)
      for (std::size_t s = 0; s < l.S; ++s) {
        const std::int64_t c = target[n * l.S + s];
        const T v = c == ignore_index ? T(0) : -p[(n * l.C + static_cast<std::size_t>(c)) * l.S + s];
        if (reduction == Reduction::None)
          o[n * l.S + s] = v;
        else
          total += v;
      }
    if (reduction == Reduction::Sum) o[0] = static_cast<T>(total);
    if (reduction == Reduction::Mean) o[0] = static_cast<T>(total / static_cast<double>(kept));  // 0/0 = NaN
  });
  return record_op("nll_loss", out, {lp},
                   [target, l, reduction, shape = lp.shape(), kept, ignore_index](const Tensor& g,
                                                                                  const std::vector<bool>&) {
                     // d loss[n,s] / d lp[n,c,s] = -1 where c = target[n,s] is not ignored, else 0 (÷kept for
                     // the mean)
                     Tensor d = zeros(shape, g.dtype());
                     dispatch(g.dtype(), [&](auto t) {
                       using T = decltype(t);
                       const T* pg = g.data_ptr<T>();
                       T* pd = d.data_ptr<T>();
                       const T scale = reduction == Reduction::Mean ? T(1) / static_cast<T>(kept) : T(1);
                       for (std::size_t n = 0; n < l.N; ++n)
                         for (std::size_t s = 0; s < l.S; ++s) {
                           const std::int64_t c = target[n * l.S + s];
                           if (c == ignore_index) continue;
                           const T gi = reduction == Reduction::None ? pg[n * l.S + s] : pg[0] * scale;
                           pd[(n * l.C + static_cast<std::size_t>(c)) * l.S + s] = -gi;
                         }
                     });
                     return std::vector<Tensor>{d};
                   });
}

int class_axis(const Tensor& scores) { return scores.ndim() == 1 ? 0 : 1; }

void check_not_empty(const char* op, const Tensor& scores, const ClassLayout& l, Reduction reduction) {
  if (reduction == Reduction::Mean && l.N * l.S == 0)
    fail("{}: mean over an empty batch (input {})", op, shape_str(scores.shape()));
}

// PyTorch's cross_entropy with class-index targets: with log-probabilities lp = log_softmax(logits) and
// ε = label_smoothing, loss[n] = (1-ε)·(-lp[n, y_n]) + ε·(-(1/C)·Σ_c lp[n, c]), 0 where y_n == ignore_index;
// the mean divides both parts by the number of targets not ignored.
Tensor cross_entropy_impl(const Tensor& logits, const std::vector<std::int64_t>& target, const ClassLayout& l,
                          Reduction reduction, std::int64_t ignore_index, double label_smoothing) {
  const char* op = "cross_entropy_loss";
  if (!(label_smoothing >= 0.0 && label_smoothing <= 1.0))
    fail("{}: label_smoothing must be in [0, 1], got {}", op, label_smoothing);
  check_not_empty(op, logits, l, reduction);
  // log_softmax subtracts each row's max before exp, so any finite logits are safe.
  const Tensor lp = log_softmax(logits, class_axis(logits));
  const Tensor hard = nll(op, lp, target, l, reduction, ignore_index);
  if (label_smoothing == 0.0) return hard;
  std::vector<double> keep(target.size());
  std::size_t kept = 0;
  for (std::size_t i = 0; i < target.size(); ++i) {
    keep[i] = target[i] != ignore_index ? 1.0 : 0.0;
    kept += target[i] != ignore_index;
  }
  // smooth[n, s] = -Σ_c lp[n, c, s], 0 where ignored
  Tensor smooth = mul(neg(sum(lp, {class_axis(logits)})), from_vector(keep, l.target_shape, lp.dtype()));
  if (reduction == Reduction::Sum) smooth = sum(smooth);
  if (reduction == Reduction::Mean) smooth = mul(sum(smooth), scalar(1.0 / static_cast<double>(kept), lp.dtype()));
  return add(mul(hard, scalar(1.0 - label_smoothing, lp.dtype())),
             mul(smooth, scalar(label_smoothing / static_cast<double>(l.C), lp.dtype())));
}

}  // namespace

Tensor nll_loss(const Tensor& input, const Tensor& target, Reduction reduction, std::int64_t ignore_index) {
  const ClassLayout l = class_layout("nll_loss", input);
  return nll("nll_loss", input, indices_from_tensor("nll_loss", target, l, ignore_index), l, reduction,
             ignore_index);
}

Tensor nll_loss(const Tensor& input, const std::vector<std::size_t>& target, Reduction reduction) {
  const ClassLayout l = class_layout("nll_loss", input);
  check_range("nll_loss", target, l.C);
  return nll("nll_loss", input, as_int64(target), l, reduction, -1);
}

Tensor cross_entropy_loss(const Tensor& logits, const Tensor& target, Reduction reduction, std::int64_t ignore_index,
                          double label_smoothing) {
  const ClassLayout l = class_layout("cross_entropy_loss", logits);
  const auto idx = indices_from_tensor("cross_entropy_loss", target, l, ignore_index);  // validate first
  return cross_entropy_impl(logits, idx, l, reduction, ignore_index, label_smoothing);
}

Tensor cross_entropy_loss(const Tensor& logits, const std::vector<std::size_t>& target, Reduction reduction) {
  const ClassLayout l = class_layout("cross_entropy_loss", logits);
  if (target.size() != l.N * l.S)
    fail("cross_entropy_loss: {} targets given for an input of shape {} (expected {})", target.size(),
         shape_str(logits.shape()), l.N * l.S);
  check_range("cross_entropy_loss", target, l.C);
  return cross_entropy_impl(logits, as_int64(target), l, reduction, -1, 0.0);
}

// ---- native_batch_norm, and the per-channel shape helpers BatchNorm uses -----------------------------------
std::vector<std::ptrdiff_t> channel_view(std::size_t C, std::size_t ndim) {
  std::vector<std::ptrdiff_t> s(ndim, 1);
  s[1] = static_cast<std::ptrdiff_t>(C);
  return s;
}

Dims non_channel_axes(std::size_t ndim) {
  Dims axes{0};
  for (std::size_t a = 2; a < ndim; ++a) axes.push_back(static_cast<int>(a));
  return axes;
}

namespace {

// x viewed as [N, C, S]: S is the product of the spatial axes (1 for [N, C]).
kernels::BnDims bn_dims(const Shape& s) {
  std::size_t S = 1;
  for (std::size_t a = 2; a < s.size(); ++a) S *= s[a];
  return {s[0], s[1], S};
}

using detail::mut_ptr_or_null;  // core/detail.h
using detail::ptr_or_null;

// What the kernels need of their arguments. xg::nn::functional::check_batch_norm_args checks the rest of
// BatchNorm's contract (eps, the factor's range) with the messages the layers report.
void check_native_batch_norm_args(const Tensor& input, const Tensor& weight, const Tensor& bias,
                                  const Tensor& running_mean, const Tensor& running_var, bool training) {
  if (!input.defined() || input.ndim() < 2)
    fail("native_batch_norm: the input must be [N, C, ...] with at least 2 dimensions, got {}",
         input.defined() ? shape_str(input.shape()) : "an undefined tensor");
  const std::size_t C = input.shape()[1];
  const std::pair<const char*, const Tensor*> per_channel[] = {
      {"weight", &weight}, {"bias", &bias}, {"running_mean", &running_mean}, {"running_var", &running_var}};
  for (const auto& [what, t] : per_channel)
    if (t->defined() && (t->shape() != Shape{C} || t->dtype() != input.dtype()))
      fail("native_batch_norm: {} must be [{}] of dtype {} (one value per channel of the input {}), got {} of "
           "dtype {}",
           what, C, input.dtype(), shape_str(input.shape()), shape_str(t->shape()), t->dtype());
  if (training && (C == 0 ? 0 : input.numel() / C) <= 1)
    fail("native_batch_norm: training needs more than 1 value per channel, got input {}", shape_str(input.shape()));
  if (!training && (!running_mean.defined() || !running_var.defined()))
    fail("native_batch_norm: evaluation (training = false) needs running_mean and running_var");
}

}  // namespace

Tensor native_batch_norm(const Tensor& input, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                         Tensor running_var, bool training, double exp_avg_factor, double eps,
                         BatchNormSaved* saved) {
  check_native_batch_norm_args(input, weight, bias, running_mean, running_var, training);
  const Shape shape = input.shape();
  const kernels::BnDims d = bn_dims(shape);
  const Dtype dt = input.dtype();
  Tensor y = empty(shape, dt);  // every value written by the kernels below

  // The graph node's inputs: x, then weight and bias when present (their gradients come back in this order).
  std::vector<Tensor> inputs{input};
  if (weight.defined()) inputs.push_back(weight);
  if (bias.defined()) inputs.push_back(bias);
  const bool has_w = weight.defined(), has_b = bias.defined();

  if (training) {
    // Forward: per-channel mean and invstd (saved), y = w·(x − mean)·invstd + b, running stats updated —
    // all inside one kernel call.
    Tensor save_mean = zeros({d.C}, dt), save_invstd = zeros({d.C}, dt);
    dispatch(dt, [&](auto t) {
      using T = decltype(t);
      kernels::batch_norm_forward_train<T>(input.data_ptr<T>(), ptr_or_null<T>(weight), ptr_or_null<T>(bias),
                                           y.data_ptr<T>(), save_mean.data_ptr<T>(), save_invstd.data_ptr<T>(),
                                           mut_ptr_or_null<T>(running_mean), mut_ptr_or_null<T>(running_var), d, eps,
                                           exp_avg_factor);
    });
    if (saved) *saved = {save_mean, save_invstd};  // the kernel's own values, shared with the node (read only)
    return record_op(
        "native_batch_norm", y, inputs,
        [x = input.detach(), w = has_w ? weight.detach() : Tensor(), save_mean, save_invstd, d, has_w,
         has_b](const Tensor& g, const std::vector<bool>& needs) {
          // Closed form (docs/batchnorm-fused.md): dx = w·invstd·(dy − mean(dy) − x̂·mean(dy·x̂)),
          // dw = Σ dy·x̂, db = Σ dy — only the ones asked for.
          const Dtype dt = g.dtype();
          Tensor dx = needs[0] ? empty(x.shape(), dt) : Tensor();  // written whole; dw, db are sums
          Tensor dw = has_w && needs[1] ? zeros({d.C}, dt) : Tensor();
          Tensor db = has_b && needs[has_w ? 2 : 1] ? zeros({d.C}, dt) : Tensor();
          dispatch(dt, [&](auto t) {
            using T = decltype(t);
            kernels::batch_norm_backward<T>(g.data_ptr<T>(), x.data_ptr<T>(), ptr_or_null<T>(w),
                                            save_mean.data_ptr<T>(), save_invstd.data_ptr<T>(),
                                            mut_ptr_or_null<T>(dx), mut_ptr_or_null<T>(dw), mut_ptr_or_null<T>(db), d);
          });
          std::vector<Tensor> grads{dx};
          if (has_w) grads.push_back(dw);
          if (has_b) grads.push_back(db);
          return grads;
        });
  }

  // Eval: y = x·scale + shift with scale = w/sqrt(running_var + eps), shift = b − running_mean·scale.
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    kernels::batch_norm_forward_eval<T>(input.data_ptr<T>(), ptr_or_null<T>(weight), ptr_or_null<T>(bias),
                                        running_mean.data_ptr<T>(), running_var.data_ptr<T>(), y.data_ptr<T>(), d,
                                        eps);
  });
  if (!any_requires_grad(inputs)) return y;
  // The running statistics are constants here, so the backward is that of an affine map per channel:
  // dx = dy·w·invstd, dw = Σ dy·x̂, db = Σ dy (x̂ = (x − running_mean)·invstd). Rarely on a hot path: written
  // with tensor ops for clarity.
  const auto cv = channel_view(d.C, shape.size());
  Tensor invstd, mean;
  {
    NoGradGuard no_grad;  // constants of the node, not part of the graph
    invstd = rsqrt(running_var.detach() + eps).reshape(cv);
    mean = running_mean.detach().reshape(cv);
  }
  const Dims axes = non_channel_axes(shape.size());
  return record_op("native_batch_norm", y, inputs,
                   [x = input.detach(), w = has_w ? weight.detach().reshape(cv) : Tensor(), invstd, mean, axes, has_w,
                    has_b, C = d.C](const Tensor& g, const std::vector<bool>& needs) {
                     const std::vector<std::ptrdiff_t> c1{static_cast<std::ptrdiff_t>(C)};
                     std::vector<Tensor> grads{needs[0] ? (has_w ? g * (w * invstd) : g * invstd) : Tensor()};
                     if (has_w) grads.push_back(needs[1] ? (g * ((x - mean) * invstd)).sum(axes).reshape(c1) : Tensor());
                     if (has_b) grads.push_back(needs[has_w ? 2 : 1] ? g.sum(axes).reshape(c1) : Tensor());
                     return grads;
                   });
}

}  // namespace xg
