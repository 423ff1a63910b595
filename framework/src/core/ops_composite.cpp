// Activations and softmax-family ops. softmax, log_softmax and logsumexp are composed from primitives and
// need no backward of their own. sigmoid and tanh are primitives with a closed-form derivative: a
// composition of exp/div overflows to inf/inf = NaN in the gradient for large |x|, and the fused form is one
// pass instead of five (docs/ops.md shows the composed form; tests check both agree). relu is a primitive
// for speed: its composition where(x > 0, x, 0) takes three passes plus three more in backward (the composed
// form stays the reference in the tests).
#include "simd_warnings.h"  // first: silences a GCC 12 intrinsics-header warning (see the file)

#include <xtensor/xmath.hpp>

#include "detail.h"

namespace xg {
using detail::Grads;
using detail::Needs;

Tensor sigmoid(const Tensor& x_in) {
  const Tensor x = detail::as_floating(x_in);  // integers -> float32, as in PyTorch
  Tensor out = dispatch(x.dtype(), [&](auto t) {
    using T = decltype(t);
    // Stable for any x: 1/(1+e^-x) never overflows to NaN (e^-x = inf gives exactly 0).
    return detail::wrap<T>(T(1) / (T(1) + xt::exp(-x.data<T>())));
  });
  return record_op("sigmoid", out, {x}, [s = out.detach()](const Tensor& g, const Needs&) {
    return Grads{mul(g, mul(s, sub(detail::scalar_like(1, s), s)))};  // σ' = σ(1-σ)
  });
}

Tensor tanh(const Tensor& x_in) {
  const Tensor x = detail::as_floating(x_in);  // integers -> float32, as in PyTorch
  Tensor out = dispatch(x.dtype(), [&](auto t) {
    using T = decltype(t);
    return detail::wrap<T>(xt::tanh(x.data<T>()));
  });
  return record_op("tanh", out, {x}, [y = out.detach()](const Tensor& g, const Needs&) {
    return Grads{mul(g, sub(detail::scalar_like(1, y), mul(y, y)))};  // tanh' = 1 - tanh²
  });
}

namespace {
// out[i] = f(a[i], b[i]) for two tensors of the same shape and dtype, one plain loop.
template <class F>
Tensor zip_elements(const Tensor& a, const Tensor& b, F f, std::string_view op) {
  detail::check_same_dtype(a, b, op);
  if (!a.same_shape(b)) fail("{}: shapes {} and {} differ", op, shape_str(a.shape()), shape_str(b.shape()));
  return dispatch(a.dtype(), [&](auto t) {
    using T = decltype(t);
    const auto& xa = a.data<T>();
    auto out = xt::xarray<T>::from_shape(xa.shape());
    const T* pa = xa.data();
    const T* pb = b.data<T>().data();
    T* po = out.data();
    for (std::size_t i = 0, n = xa.size(); i < n; ++i) po[i] = f(pa[i], pb[i]);
    return Tensor(std::move(out));
  });
}
}  // namespace

Tensor relu(const Tensor& x) {
  // relu(x) = x if x > 0, else +0 (a choice, not x·[x > 0], which would give -0 for negative x); NaN stays
  // NaN, as in PyTorch, so a diverging network is not hidden.
  // relu'(x) = [x > 0]: 0 at x = 0 too, as in PyTorch. [x > 0] = [relu(x) > 0], so backward needs only the
  // output: dx = g where y > 0, else 0 (as PyTorch's threshold_backward: an inf or NaN in g does not leak
  // through the mask, and a NaN input gets gradient 0).
  if (!x.defined()) fail("relu: the input is undefined");
  Tensor out = zip_elements(x, x, [](auto v, auto) { return v > 0 || v != v ? v : decltype(v)(0); }, "relu");
  return record_op("relu", out, {x}, [y = out.detach()](const Tensor& g, const Needs&) {
    return Grads{zip_elements(g, y, [](auto gi, auto yi) { return yi > 0 ? gi : decltype(gi)(0); }, "relu backward")};
  });
}

Tensor softmax(const Tensor& x_in, int axis) {
  const Tensor x = detail::as_floating(x_in);
  // Shifting by the (detached) max changes nothing mathematically and keeps exp() from overflowing.
  Tensor z = sub(x, amax(x, {axis}, true).detach());
  Tensor e = exp(z);
  return div(e, sum(e, {axis}, true));
}

Tensor log_softmax(const Tensor& x_in, int axis) {
  const Tensor x = detail::as_floating(x_in);
  Tensor z = sub(x, amax(x, {axis}, true).detach());
  return sub(z, log(sum(exp(z), {axis}, true)));
}

Tensor logsumexp(const Tensor& x_in, const Dims& axes, bool keepdim) {
  const Tensor x = detail::as_floating(x_in);
  Tensor m = amax(x, axes, true).detach();
  // An all -inf (or inf) slice would give inf - inf = NaN: shift those slices by 0 instead (as PyTorch does).
  if (has_nonfinite(m)) m = where(eq(sub(m, m), zeros_like(m)), m, zeros_like(m)).detach();
  Tensor r = add(log(sum(exp(sub(x, m)), axes, true)), m);
  if (keepdim) return r;
  const Shape rs = detail::reduced_shape(x.shape(), detail::normalize_axes(axes, x.shape(), "logsumexp"));
  return reshape(r, std::vector<std::ptrdiff_t>(rs.begin(), rs.end()));
}

Tensor Tensor::sigmoid() const { return xg::sigmoid(*this); }
Tensor Tensor::tanh() const { return xg::tanh(*this); }
Tensor Tensor::relu() const { return xg::relu(*this); }
Tensor Tensor::softmax(int axis) const { return xg::softmax(*this, axis); }
Tensor Tensor::log_softmax(int axis) const { return xg::log_softmax(*this, axis); }
Tensor Tensor::logsumexp(const Dims& axes, bool keepdim) const { return xg::logsumexp(*this, axes, keepdim); }

}  // namespace xg
