// Adam and AdamW: the in-place update (see xgrad/optim/adam.h for the formulas).
#include "xgrad/optim/adam.h"

#include <algorithm>
#include <cmath>

namespace xg::optim {

namespace {

// The per-step scalars, computed once per parameter in double (PyTorch computes them in Python floats).
struct AdamScalars {
  double beta1, beta2, eps;
  double weight_decay;  // Adam: L2 coefficient; AdamW: 0 (the decay is the factor below)
  double decay_factor;  // AdamW: 1 − lr·weight_decay; Adam: 1
  double step_size;     // lr / (1 − β1^t)
  double bc2_sqrt;      // sqrt(1 − β2^t)
  bool amsgrad, maximize;
};

// One pass over the n elements of a parameter p with gradient g, moments m, v and (amsgrad) v_max:
//   g' = −g (maximize);  p = p·decay_factor (AdamW);  g' = g' + wd·p (Adam, wd ≠ 0)
//   m = β1·m + (1 − β1)·g'
//   v = β2·v + (1 − β2)·g'·g'
//   v_max = max(v_max, v)                                  (amsgrad)
//   p = p − step_size · m / (sqrt(v or v_max) / bc2_sqrt + eps)
// Same operation order as PyTorch's mul_/add_/addcmul_/addcdiv_ chain, every operand in the parameter's dtype T.
// (optim/CMakeLists.txt compiles this with -fno-math-errno so that the sqrt vectorises.)
template <class T>
void adam_kernel(std::size_t n, T* p, const T* g, T* m, T* v, T* vmax, const AdamScalars& s) {
  const T beta1 = T(s.beta1), one_minus_beta1 = T(1 - s.beta1);
  const T beta2 = T(s.beta2), one_minus_beta2 = T(1 - s.beta2);
  const T eps = T(s.eps), wd = T(s.weight_decay), decay_factor = T(s.decay_factor);
  const T neg_step_size = T(-s.step_size), bc2_sqrt = T(s.bc2_sqrt);
  const bool decoupled = s.decay_factor != 1, l2 = s.weight_decay != 0, amsgrad = s.amsgrad, maximize = s.maximize;
  for (std::size_t i = 0; i < n; ++i) {
    T pi = decoupled ? p[i] * decay_factor : p[i];
    T gi = maximize ? -g[i] : g[i];
    gi = l2 ? gi + wd * pi : gi;
    const T mi = m[i] * beta1 + one_minus_beta1 * gi;
    const T vi = v[i] * beta2 + one_minus_beta2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    T second = vi;
    if (amsgrad) {
      second = std::max(vmax[i], vi);
      vmax[i] = second;
    }
    const T denom = std::sqrt(second) / bc2_sqrt + eps;
    p[i] = pi + neg_step_size * (mi / denom);
  }
}

// The update shared by Adam (decoupled = false) and AdamW (decoupled = true).
void adam_update(Tensor& param, const Tensor& grad, ParamState& state, double lr, Betas betas, double eps,
                 double weight_decay, bool amsgrad, bool maximize, bool decoupled) {
  Tensor m = state.buffer_or_full("exp_avg", param);
  Tensor v = state.buffer_or_full("exp_avg_sq", param);
  Tensor vmax = amsgrad ? state.buffer_or_full("max_exp_avg_sq", param) : Tensor();
  state.step += 1;
  const double t = state.step;
  AdamScalars s{};
  s.beta1 = betas.first;
  s.beta2 = betas.second;
  s.eps = eps;
  s.weight_decay = decoupled ? 0.0 : weight_decay;
  s.decay_factor = decoupled ? 1 - lr * weight_decay : 1.0;
  s.step_size = lr / (1 - std::pow(betas.first, t));
  s.bc2_sqrt = std::sqrt(1 - std::pow(betas.second, t));
  s.amsgrad = amsgrad;
  s.maximize = maximize;
  dispatch(param.dtype(), [&](auto tag) {
    using T = decltype(tag);
    adam_kernel<T>(param.numel(), param.data_ptr<T>(), grad.data_ptr<T>(), m.data_ptr<T>(), v.data_ptr<T>(),
                   amsgrad ? vmax.data_ptr<T>() : nullptr, s);
  });
}

}  // namespace

// ---- Adam ---------------------------------------------------------------------------------------------------
Adam::Adam(std::vector<Tensor> params, const AdamOptions& defaults)
    : Adam(std::vector<ParamGroup>{ParamGroup(std::move(params))}, defaults) {}
Adam::Adam(std::vector<ParamGroup> groups, const AdamOptions& defaults)
    : Optimizer("Adam", std::move(groups), defaults.clone()) {}

void Adam::update(Tensor& param, const Tensor& grad, const OptimizerOptions& options, ParamState& state) {
  const auto& o = static_cast<const AdamOptions&>(options);
  adam_update(param, grad, state, o.lr(), o.betas(), o.eps(), o.weight_decay(), o.amsgrad(), o.maximize(),
              /*decoupled=*/false);
}

// ---- AdamW --------------------------------------------------------------------------------------------------
AdamW::AdamW(std::vector<Tensor> params, const AdamWOptions& defaults)
    : AdamW(std::vector<ParamGroup>{ParamGroup(std::move(params))}, defaults) {}
AdamW::AdamW(std::vector<ParamGroup> groups, const AdamWOptions& defaults)
    : Optimizer("AdamW", std::move(groups), defaults.clone()) {}

void AdamW::update(Tensor& param, const Tensor& grad, const OptimizerOptions& options, ParamState& state) {
  const auto& o = static_cast<const AdamWOptions&>(options);
  adam_update(param, grad, state, o.lr(), o.betas(), o.eps(), o.weight_decay(), o.amsgrad(), o.maximize(),
              /*decoupled=*/true);
}

}  // namespace xg::optim
