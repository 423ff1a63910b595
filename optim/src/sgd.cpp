// SGD: options validation and the in-place update (see xgrad/optim/sgd.h for the formulas).
#include "xgrad/optim/sgd.h"

namespace xg::optim {

void SGDOptions::validate() const {
  OptimizerOptionsBase::validate();
  if (nesterov_ && (momentum_ <= 0 || dampening_ != 0))
    fail("SGD: nesterov=true needs momentum > 0 and dampening = 0, got momentum {} and dampening {}", momentum_,
         dampening_);
}

SGD::SGD(std::vector<Tensor> params, const SGDOptions& defaults)
    : SGD(std::vector<ParamGroup>{ParamGroup(std::move(params))}, defaults) {}

SGD::SGD(std::vector<ParamGroup> groups, const SGDOptions& defaults)
    : Optimizer("SGD", std::move(groups), defaults.clone()) {}

namespace {

// One pass over the n elements of a parameter p with gradient g and momentum buffer b (null: no momentum).
//   d = g + wd·p                       (wd = weight_decay; skipped when 0)
//   b = d             on the first step (`first`), else   b = momentum·b + (1 − dampening)·d
//   s = d + momentum·b (nesterov)  or  s = b              (with momentum; s = d without)
//   p = p + alpha·s                    (alpha = −lr, or +lr with maximize)
// Every operand is in the parameter's dtype T, like PyTorch's kernels.
template <class T>
void sgd_kernel(std::size_t n, T* p, const T* g, T* b, T alpha, T wd, T momentum, T one_minus_dampening, bool first,
                bool nesterov) {
  const bool decay = wd != 0;
  if (!b) {
    for (std::size_t i = 0; i < n; ++i) {
      const T d = decay ? g[i] + wd * p[i] : g[i];
      p[i] = p[i] + alpha * d;
    }
    return;
  }
  for (std::size_t i = 0; i < n; ++i) {
    const T d = decay ? g[i] + wd * p[i] : g[i];
    const T buf = first ? d : b[i] * momentum + one_minus_dampening * d;
    b[i] = buf;
    const T s = nesterov ? d + momentum * buf : buf;
    p[i] = p[i] + alpha * s;
  }
}

}  // namespace

void SGD::update(Tensor& param, const Tensor& grad, const OptimizerOptions& options, ParamState& state) {
  const auto& o = static_cast<const SGDOptions&>(options);
  const bool use_momentum = o.momentum() != 0;
  const bool first = !state.has("momentum_buffer");
  Tensor buf = use_momentum ? state.buffer_or_full("momentum_buffer", param) : Tensor();
  state.step += 1;
  dispatch(param.dtype(), [&](auto v) {
    using T = decltype(v);
    sgd_kernel<T>(param.numel(), param.data_ptr<T>(), grad.data_ptr<T>(), use_momentum ? buf.data_ptr<T>() : nullptr,
                  T(o.maximize() ? o.lr() : -o.lr()), T(o.weight_decay()), T(o.momentum()), T(1 - o.dampening()), first,
                  o.nesterov());
  });
}

}  // namespace xg::optim
