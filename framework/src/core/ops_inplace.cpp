// The in-place methods of Tensor (copy_, fill_, add_, ...): writes into the tensor's own storage, recording
// nothing for autograd. The rules and the deviations from PyTorch are in docs/tensors.md#in-place-methods.
#include <algorithm>
#include <cmath>
#include <limits>

#include "detail.h"
#include "xgrad/autograd.h"
#include "xgrad/tensor.h"

namespace xg {

namespace {

// In-place methods record no graph node, so while grad mode is on none of the tensors involved may take part
// in autograd: writing a leaf that requires grad would change a parameter behind the graph's back (PyTorch
// refuses it too), writing a tensor produced by an op could change a value its backward has saved (PyTorch
// catches that with version counters, xgrad keeps none), and an operand that requires grad would get no
// gradient.
void check_inplace(const Tensor& self, const Tensor* operand, std::string_view op) {
  if (!self.defined()) fail("{}: the tensor is undefined", op);
  if (operand && !operand->defined()) fail("{}: the operand is undefined", op);
  if (!is_grad_enabled()) return;
  if (self.requires_grad() && self.is_leaf())
    fail("{}: a leaf tensor that requires grad is being used in an in-place operation; wrap the update in "
         "xg::NoGradGuard (as optimizers and nn::init do), or write through .detach()",
         op);
  if (self.requires_grad())
    fail("{}: the tensor was produced by '{}' and is part of a graph; xgrad refuses in-place operations on it "
         "while grad mode is on (its backward may need the old values). Use the out-of-place op, or "
         "xg::NoGradGuard if no gradient is wanted",
         op, self.grad_fn()->name);
  if (operand && operand->requires_grad())
    fail("{}: the operand requires grad, but in-place operations record no graph, so no gradient would reach "
         "it; use the out-of-place op, or .detach() the operand (or xg::NoGradGuard) if no gradient is wanted",
         op);
}

// True if `from` broadcasts to `to` (numpy's rule, right-aligned) without changing `to`.
bool broadcasts_to(const std::span<const std::size_t> from, const std::span<const std::size_t> to) {
  if (from.size() > to.size()) return false;
  const std::size_t lead = to.size() - from.size();
  for (std::size_t i = 0; i < from.size(); ++i)
    if (from[i] != 1 && from[i] != to[lead + i]) return false;
  return true;
}

// The operand as values for self's elements: itself if the shapes match or it holds one value (read as a
// scalar by the loops below), else a broadcast copy of self's shape.
Tensor broadcast_operand(const Tensor& self, const Tensor& operand, std::string_view op) {
  if (!broadcasts_to(operand.sizes(), self.sizes()))
    fail("{}: an operand of shape {} does not broadcast to the tensor's shape {} (an in-place op keeps the "
         "tensor's shape)",
         op, shape_str(operand.shape()), shape_str(self.shape()));
  if (operand.numel() == 1 || operand.same_shape(self)) return operand;
  NoGradGuard no_grad;
  return operand.expand(self.shape());
}

// self[i] = f(self[i], operand[i]) for a tensor operand of self's dtype, broadcast to self's shape.
template <class F>
Tensor& apply_binary(Tensor& self, const Tensor& operand, std::string_view op, F f) {
  check_inplace(self, &operand, op);
  if (!self.is_floating_point()) fail_not_floating(self.dtype(), op);  // integer tensors: fill_ and copy_ only
  detail::check_same_dtype(self, operand, op);
  const Tensor b = broadcast_operand(self, operand, op);
  dispatch(self.dtype(), [&](auto t) {
    using T = decltype(t);
    T* a = self.data_ptr<T>();
    const T* pb = b.data_ptr<T>();
    const std::size_t n = self.numel();
    if (b.numel() == 1) {
      const T v = pb[0];
      for (std::size_t i = 0; i < n; ++i) a[i] = f(a[i], v);
    } else {
      for (std::size_t i = 0; i < n; ++i) a[i] = f(a[i], pb[i]);
    }
  });
  return self;
}

// self[i] = f(self[i]); f gets the element type through its argument.
template <class F>
Tensor& apply_unary(Tensor& self, std::string_view op, F f) {
  check_inplace(self, nullptr, op);
  if (!self.is_floating_point()) fail_not_floating(self.dtype(), op);
  dispatch(self.dtype(), [&](auto t) {
    using T = decltype(t);
    T* a = self.data_ptr<T>();
    const std::size_t n = self.numel();
    for (std::size_t i = 0; i < n; ++i) a[i] = f(a[i]);
  });
  return self;
}

// Every element = value (fill_ and zero_, each under its own name in errors).
Tensor& fill(Tensor& self, double value, std::string_view op) {
  check_inplace(self, nullptr, op);
  if (!self.is_floating_point() && !std::isfinite(value))
    fail("{}: cannot fill an {} tensor with {} (integers and bools have no NaN or infinity)", op, self.dtype(), value);
  dispatch_all(self.dtype(), [&](auto t) {
    using T = decltype(t);
    std::fill_n(self.data_ptr<T>(), self.numel(), static_cast<T>(value));
  });
  return self;
}

}  // namespace

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace(*this, &src, "copy_");
  Tensor b = broadcast_operand(*this, src, "copy_");
  if (b.dtype() != dtype()) {
    NoGradGuard no_grad;
    b = b.to(dtype());
  }
  dispatch_all(dtype(), [&](auto t) {
    using T = decltype(t);
    T* a = data_ptr<T>();
    const T* pb = b.data_ptr<T>();
    if (b.numel() == 1)
      std::fill(a, a + numel(), pb[0]);
    else if (pb != a)  // equal for a src on the same storage (a detach()ed handle): nothing to do
      std::copy(pb, pb + numel(), a);
  });
  return *this;
}

Tensor& Tensor::fill_(double value) { return fill(*this, value, "fill_"); }
Tensor& Tensor::zero_() { return fill(*this, 0.0, "zero_"); }

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  return apply_binary(*this, other, "add_", [alpha](auto a, auto b) { return a + decltype(a)(alpha) * b; });
}
Tensor& Tensor::add_(double other, double alpha) {
  return apply_unary(*this, "add_", [v = other * alpha](auto a) { return a + decltype(a)(v); });
}
Tensor& Tensor::sub_(const Tensor& other, double alpha) {
  return apply_binary(*this, other, "sub_", [alpha](auto a, auto b) { return a - decltype(a)(alpha) * b; });
}
Tensor& Tensor::sub_(double other, double alpha) {
  return apply_unary(*this, "sub_", [v = other * alpha](auto a) { return a - decltype(a)(v); });
}
Tensor& Tensor::mul_(const Tensor& other) {
  return apply_binary(*this, other, "mul_", [](auto a, auto b) { return a * b; });
}
Tensor& Tensor::mul_(double other) {
  return apply_unary(*this, "mul_", [other](auto a) { return a * decltype(a)(other); });
}
Tensor& Tensor::div_(const Tensor& other) {
  return apply_binary(*this, other, "div_", [](auto a, auto b) { return a / b; });
}
Tensor& Tensor::div_(double other) {
  return apply_unary(*this, "div_", [other](auto a) { return a / decltype(a)(other); });
}

Tensor& Tensor::clamp_(std::optional<double> min, std::optional<double> max) {
  if (min && max && *min > *max) fail("clamp_: min {} is greater than max {}", *min, *max);
  return apply_unary(*this, "clamp_", [min, max](auto v) {
    using T = decltype(v);
    const T lo = min ? static_cast<T>(*min) : -std::numeric_limits<T>::infinity();
    const T hi = max ? static_cast<T>(*max) : std::numeric_limits<T>::infinity();
    return v < lo ? lo : (v > hi ? hi : v);  // a NaN compares false both times and stays NaN
  });
}

void Tensor::set_data(const Tensor& new_data) {
  checked();
  if (!new_data.defined()) fail("set_data: the new data is undefined");
  if (new_data.impl_->storage != impl_->storage) *impl_->storage = *new_data.impl_->storage;
}

}  // namespace xg
