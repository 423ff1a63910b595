// RMSprop: the in-place update (see xgrad/optim/rmsprop.h for the formulas).
#include "xgrad/optim/rmsprop.h"

#include <cmath>

namespace xg::optim {

RMSprop::RMSprop(std::vector<Tensor> params, const RMSpropOptions& defaults)
    : RMSprop(std::vector<ParamGroup>{ParamGroup(std::move(params))}, defaults) {}
RMSprop::RMSprop(std::vector<ParamGroup> groups, const RMSpropOptions& defaults)
    : Optimizer("RMSprop", std::move(groups), defaults.clone()) {}

namespace {

// One pass over the n elements of parameter p with gradient g, square average v, gradient average a (Centered)
// and momentum buffer b (Momentum):
//   g' = −g (maximize);  g' = g' + wd·p (wd ≠ 0)
//   v = α·v + (1 − α)·g'·g'
//   a = α·a + (1 − α)·g',  d = sqrt(v − a·a) + eps     (centered)   else   d = sqrt(v) + eps
//   b = μ·b + g'/d,  p = p − lr·b                       (momentum)   else   p = p − lr·g'/d
// Centered and Momentum are template arguments so that each variant is a branch-free loop the compiler
// vectorises (optim/CMakeLists.txt adds -fno-math-errno for the sqrt).
template <class T, bool Centered, bool Momentum>
void rmsprop_kernel(std::size_t n, T* p, const T* g, T* v, T* a, T* b, const RMSpropOptions& o) {
  const T alpha = T(o.alpha()), one_minus_alpha = T(1 - o.alpha()), eps = T(o.eps());
  const T wd = T(o.weight_decay()), momentum = T(o.momentum()), neg_lr = T(-o.lr());
  const bool l2 = o.weight_decay() != 0, maximize = o.maximize();
  for (std::size_t i = 0; i < n; ++i) {
    T gi = maximize ? -g[i] : g[i];
    gi = l2 ? gi + wd * p[i] : gi;
    const T vi = v[i] * alpha + one_minus_alpha * gi * gi;
    v[i] = vi;
    T d;
    if constexpr (Centered) {
      const T ai = a[i] * alpha + one_minus_alpha * gi;
      a[i] = ai;
      d = std::sqrt(vi - ai * ai) + eps;
    } else {
      d = std::sqrt(vi) + eps;
    }
    if constexpr (Momentum) {
      const T bi = b[i] * momentum + gi / d;
      b[i] = bi;
      p[i] = p[i] + neg_lr * bi;
    } else {
      p[i] = p[i] + neg_lr * (gi / d);
    }
  }
}

}  // namespace

void RMSprop::update(Tensor& param, const Tensor& grad, const OptimizerOptions& options, ParamState& state) {
  const auto& o = static_cast<const RMSpropOptions&>(options);
  Tensor v = state.buffer_or_full("square_avg", param);
  Tensor b = o.momentum() > 0 ? state.buffer_or_full("momentum_buffer", param) : Tensor();
  Tensor a = o.centered() ? state.buffer_or_full("grad_avg", param) : Tensor();
  state.step += 1;
  dispatch(param.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const std::size_t n = param.numel();
    T* pa = a.defined() ? a.data_ptr<T>() : nullptr;
    T* pb = b.defined() ? b.data_ptr<T>() : nullptr;
    T *p = param.data_ptr<T>(), *pv = v.data_ptr<T>();
    const T* g = grad.data_ptr<T>();
    if (pa && pb)
      rmsprop_kernel<T, true, true>(n, p, g, pv, pa, pb, o);
    else if (pa)
      rmsprop_kernel<T, true, false>(n, p, g, pv, pa, pb, o);
    else if (pb)
      rmsprop_kernel<T, false, true>(n, p, g, pv, pa, pb, o);
    else
      rmsprop_kernel<T, false, false>(n, p, g, pv, pa, pb, o);
  });
}

}  // namespace xg::optim
