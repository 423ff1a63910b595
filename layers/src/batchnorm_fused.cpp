// functional::batch_norm_fused: BatchNorm as one graph node over the hand-fused kernels
// (framework/include/xgrad/kernels/batchnorm.h). Same arguments and semantics as the composed
// functional::batch_norm in batchnorm.cpp, which stays the readable reference and the test oracle.
#include <vector>

#include "xgrad/autograd.h"
#include "xgrad/kernels/batchnorm.h"
#include "xgrad/nn/functional.h"
#include "xgrad/ops.h"

namespace xg::nn::functional {

namespace {
// x viewed as [N, C, S]: S is the product of the spatial axes (1 for [N, C]).
kernels::BnDims bn_dims(const Shape& s) {
  std::size_t S = 1;
  for (std::size_t a = 2; a < s.size(); ++a) S *= s[a];
  return {s[0], s[1], S};
}

template <class T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}
template <class T>
T* mut_ptr_or_null(Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// [1, C, 1, ...] view shape for a per-channel vector against a rank-nd input.
std::vector<std::ptrdiff_t> channel_view(std::size_t C, std::size_t nd) {
  std::vector<std::ptrdiff_t> s(nd, 1);
  s[1] = static_cast<std::ptrdiff_t>(C);
  return s;
}
}  // namespace

Tensor batch_norm_fused(const Tensor& input, Tensor running_mean, Tensor running_var, const Tensor& weight,
                        const Tensor& bias, bool training, double exponential_average_factor, double eps) {
  check_batch_norm_args(input, running_mean, running_var, weight, bias, training, exponential_average_factor, eps);
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
                                           exponential_average_factor);
    });
    return record_op(
        "batch_norm", y, inputs,
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
  Dims axes{0};
  for (std::size_t a = 2; a < shape.size(); ++a) axes.push_back(static_cast<int>(a));
  return record_op("batch_norm", y, inputs,
                   [x = input.detach(), w = has_w ? weight.detach().reshape(cv) : Tensor(), invstd, mean, axes, has_w,
                    has_b, C = d.C](const Tensor& g, const std::vector<bool>& needs) {
                     const std::vector<std::ptrdiff_t> c1{static_cast<std::ptrdiff_t>(C)};
                     std::vector<Tensor> grads{needs[0] ? (has_w ? g * (w * invstd) : g * invstd) : Tensor()};
                     if (has_w) grads.push_back(needs[1] ? (g * ((x - mean) * invstd)).sum(axes).reshape(c1) : Tensor());
                     if (has_b) grads.push_back(needs[has_w ? 2 : 1] ? g.sum(axes).reshape(c1) : Tensor());
                     return grads;
                   });
}

}  // namespace xg::nn::functional
