// Adagrad: the in-place update (see xgrad/optim/adagrad.h for the formulas).
#include "xgrad/optim/adagrad.h"

#include <cmath>

namespace xg::optim {

Adagrad::Adagrad(std::vector<Tensor> params, const AdagradOptions& defaults)
    : Adagrad(std::vector<ParamGroup>{ParamGroup(std::move(params))}, defaults) {}
Adagrad::Adagrad(std::vector<ParamGroup> groups, const AdagradOptions& defaults)
    : Optimizer("Adagrad", std::move(groups), defaults.clone()) {}

namespace {

// One pass over the n elements of parameter p with gradient g and accumulator s:
//   g' = −g (maximize);  g' = g' + wd·p (wd ≠ 0)
//   s = s + g'·g'
//   p = p − clr · g' / (sqrt(s) + eps)          clr = lr / (1 + (t − 1)·lr_decay), computed by the caller
// (optim/CMakeLists.txt compiles this with -fno-math-errno so that the sqrt vectorises.)
template <class T>
void adagrad_kernel(std::size_t n, T* p, const T* g, T* s, T neg_clr, T wd, T eps, bool maximize) {
  const bool l2 = wd != 0;
  for (std::size_t i = 0; i < n; ++i) {
    T gi = maximize ? -g[i] : g[i];
    gi = l2 ? gi + wd * p[i] : gi;
    const T si = s[i] + gi * gi;
    s[i] = si;
    p[i] = p[i] + neg_clr * (gi / (std::sqrt(si) + eps));
  }
}

}  // namespace

void Adagrad::update(Tensor& param, const Tensor& grad, const OptimizerOptions& options, ParamState& state) {
  const auto& o = static_cast<const AdagradOptions&>(options);
  Tensor s = state.buffer_or_full("sum", param, o.initial_accumulator_value());
  state.step += 1;
  const double clr = o.lr() / (1 + (state.step - 1) * o.lr_decay());
  dispatch(param.dtype(), [&](auto tag) {
    using T = decltype(tag);
    adagrad_kernel<T>(param.numel(), param.data_ptr<T>(), grad.data_ptr<T>(), s.data_ptr<T>(), T(-clr),
                      T(o.weight_decay()), T(o.eps()), o.maximize());
  });
}

}  // namespace xg::optim
