// xgrad/tensor.h — the Tensor: a cheap shared handle to an n-d array (xtensor) plus its autograd state.
//
// Value semantics: copying a Tensor copies the *handle* (like PyTorch, like flashlight's Variable): both copies
// see the same data and the same gradient. Use clone() for a deep copy.
//
// Storage: one contiguous row-major xt::xarray of float, double, int64, int32 or bool (the Dtype). Only detach() shares it (as in
// PyTorch); reshape/transpose/narrow return new contiguous tensors — xgrad has no strided views, a deliberate
// simplification documented in docs/tensors.md.
#pragma once

#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include <xtensor/xarray.hpp>

#include "xgrad/common.h"

namespace xg {

class Tensor;
struct Node;

/// A gradient hook: called with the gradient flowing into a tensor; return a tensor to replace it, or an
/// undefined Tensor() to keep it. (PyTorch: Tensor.register_hook.)
using GradHook = std::function<Tensor(const Tensor& grad)>;

/// The array behind a tensor. Shared between a tensor and its detach()ed copies, as in PyTorch. The
/// alternatives are in Dtype's order, so dtype() is the variant's index.
using Storage = std::variant<xt::xarray<float>, xt::xarray<double>, xt::xarray<std::int64_t>,
                             xt::xarray<std::int32_t>, xt::xarray<bool>>;

/// What a Tensor handle points to. Users normally never touch it.
struct TensorImpl {
  std::shared_ptr<Storage> storage;    // never null for a defined tensor
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;       // the node that produced this tensor (null for leaves)
  std::shared_ptr<TensorImpl> grad;    // accumulated gradient (leaves, and non-leaves after retain_grad())
  bool retains_grad = false;
  std::vector<GradHook> hooks;         // hooks of a leaf (non-leaf hooks live on grad_fn)
  std::string label;                   // user label shown by to_dot / tracers
  std::uint64_t id = 0;                // unique id (graph export)
};

class Tensor {
 public:
  // ---- construction ---------------------------------------------------------------------------------
  Tensor() = default;  // undefined tensor (defined() == false), like torch::Tensor()
  /// Wraps an xtensor array; the array is moved in, so `Tensor(std::move(a))` copies nothing.
  explicit Tensor(xt::xarray<float> a, bool requires_grad = false);
  explicit Tensor(xt::xarray<double> a, bool requires_grad = false);
  /// Integer and bool arrays: such tensors never require grad.
  explicit Tensor(xt::xarray<std::int64_t> a);
  explicit Tensor(xt::xarray<std::int32_t> a);
  explicit Tensor(xt::xarray<bool> a);
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  const std::shared_ptr<TensorImpl>& impl() const { return impl_; }

  // ---- metadata -------------------------------------------------------------------------------------
  Dtype dtype() const;
  Shape shape() const;
  /// The shape as a view into the tensor's own metadata (no allocation; valid while the tensor is alive and
  /// not reshaped). For hot paths, where shape() would allocate a vector.
  std::span<const std::size_t> sizes() const;
  /// True if both tensors have the same shape (no allocation).
  bool same_shape(const Tensor& other) const;
  std::size_t ndim() const;
  std::size_t numel() const;
  /// Size of one axis (negative counts from the end).
  std::size_t size(int axis) const;

  // ---- data access ----------------------------------------------------------------------------------
  /// The underlying xtensor array (no copy). Throws if T does not match dtype().
  template <class T> xt::xarray<T>& data();
  template <class T> const xt::xarray<T>& data() const;
  template <class T> T* data_ptr() { return data<T>().data(); }
  template <class T> const T* data_ptr() const { return data<T>().data(); }
  /// Copies out as an xtensor array of type T (converting if the dtype differs).
  template <class T> xt::xarray<T> to_xarray() const;
  /// Copies out as a flat std::vector<double> (row-major), handy in tests.
  std::vector<double> to_vector() const;
  /// The single value of a one-element tensor; error if numel() != 1.
  double item() const;
  /// The same, converted to T from the stored type directly (so an int64 beyond 2^53 keeps every digit).
  template <class T> T item() const;
  /// Element access by index (negative indices count from the end): `t.at({1, 2})`.
  double at(std::initializer_list<std::ptrdiff_t> index) const;
  /// Writes one element (no autograd; for setting up inputs and buffers).
  void set(std::initializer_list<std::ptrdiff_t> index, double value);

  // ---- autograd ------------------------------------------------------------------------------------
  bool requires_grad() const;
  /// Marks a leaf as needing a gradient (error on a non-leaf: use detach() first).
  Tensor& requires_grad_(bool on = true);
  /// A leaf is a tensor not produced by a recorded op (user-created or detached).
  bool is_leaf() const;
  /// The accumulated gradient, or an undefined Tensor if none has been computed.
  Tensor grad() const;
  void set_grad(const Tensor& g);
  /// Sets grad to undefined (set_to_none=true, PyTorch's default) or to zeros.
  void zero_grad(bool set_to_none = true);
  /// Backpropagates from this tensor. A scalar needs no `gradient`; any other tensor needs one of its shape.
  /// Unless retain_graph, the graph's saved tensors are freed and a second backward is an error.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;
  /// Makes a non-leaf keep its .grad() after backward.
  void retain_grad();
  /// Registers a gradient hook (see GradHook).
  void register_hook(GradHook hook);
  /// A new leaf sharing this tensor's data (no copy), cut from the graph (requires_grad false).
  Tensor detach() const;
  /// The node that produced this tensor, or null for a leaf.
  std::shared_ptr<Node> grad_fn() const;
  /// A label shown by graph export and tracers (`x`, `conv1.weight`, ...).
  Tensor& set_label(std::string label);
  const std::string& label() const;

  // ---- in place (PyTorch's trailing-underscore methods; docs/tensors.md#in-place-methods) -----------
  // Each writes into this tensor's storage, so every handle sharing it (copies of this handle, detach()ed
  // tensors) sees the new values, and returns *this. The shape and dtype never change. Tensor operands
  // broadcast to this tensor's shape; add_ ... div_ need the same dtype (copy_ converts). They record nothing
  // for autograd, so while grad mode is on neither this tensor nor a tensor operand may require grad (PyTorch:
  // "a leaf Variable that requires grad is being used in an in-place operation"): update parameters under
  // xg::NoGradGuard, as the optimizers and nn::init do.
  /// Copies src's values, broadcast to this shape and converted to this dtype.
  Tensor& copy_(const Tensor& src);
  Tensor& fill_(double value);
  Tensor& zero_();
  Tensor& add_(const Tensor& other, double alpha = 1.0);  // self + alpha·other
  Tensor& add_(double other, double alpha = 1.0);
  Tensor& sub_(const Tensor& other, double alpha = 1.0);  // self − alpha·other
  Tensor& sub_(double other, double alpha = 1.0);
  Tensor& mul_(const Tensor& other);
  Tensor& mul_(double other);
  Tensor& div_(const Tensor& other);
  Tensor& div_(double other);
  /// min(max(self, min), max); a NaN stays NaN (like clamp()).
  Tensor& clamp_(std::optional<double> min, std::optional<double> max);
  /// Replaces the data, shape and dtype with a copy of new_data's, in this tensor's storage (PyTorch's
  /// set_data, the C++ form of `x.data = y`, for Module::to). Autograd state (requires_grad, grad) is kept.
  void set_data(const Tensor& new_data);
  /// The array behind the tensor, shared with detach()ed copies; its address identifies the data (PyTorch:
  /// Tensor::storage()).
  const Storage& storage() const { return *checked().storage; }

  // ---- conversion ----------------------------------------------------------------------------------
  /// Converts the dtype (float -> float is differentiable, the gradient converted back; a conversion to an integer
  /// or bool dtype ends the graph, as in PyTorch). Float -> int truncates toward zero; any -> bool is `!= 0`.
  Tensor to(Dtype d) const;
  /// Deep copy (differentiable).
  Tensor clone() const;

  // ---- ops as methods (see ops.h for the free functions and their derivatives) -----------------------
  Tensor operator-() const;
  Tensor pow(double exponent) const;
  Tensor exp() const;
  Tensor log() const;
  Tensor sqrt() const;
  Tensor rsqrt() const;
  Tensor abs() const;
  Tensor clamp(std::optional<double> min, std::optional<double> max) const;
  Tensor sigmoid() const;
  Tensor tanh() const;
  Tensor relu() const;

  Tensor sum() const;
  Tensor sum(const Dims& axes, bool keepdim = false) const;
  Tensor mean() const;
  Tensor mean(const Dims& axes, bool keepdim = false) const;
  Tensor max() const;
  Tensor max(const Dims& axes, bool keepdim = false) const;
  Tensor min() const;
  Tensor min(const Dims& axes, bool keepdim = false) const;
  Tensor var(const Dims& axes, bool unbiased = true, bool keepdim = false) const;
  Tensor std(const Dims& axes, bool unbiased = true, bool keepdim = false) const;
  Tensor softmax(int axis) const;
  Tensor log_softmax(int axis) const;
  Tensor logsumexp(const Dims& axes, bool keepdim = false) const;

  Tensor reshape(const std::vector<std::ptrdiff_t>& shape) const;  // one entry may be -1
  Tensor view(const std::vector<std::ptrdiff_t>& shape) const;     // same as reshape (copies; see top)
  Tensor flatten(int start_axis = 0, int end_axis = -1) const;
  Tensor transpose(int a, int b) const;
  Tensor permute(const Dims& order) const;
  Tensor squeeze() const;
  Tensor squeeze(int axis) const;
  Tensor unsqueeze(int axis) const;
  Tensor expand(const Shape& shape) const;
  Tensor narrow(int axis, std::size_t start, std::size_t length) const;
  Tensor slice(int axis, std::ptrdiff_t start, std::ptrdiff_t end, std::ptrdiff_t step = 1) const;
  Tensor index_select(int axis, const std::vector<std::size_t>& index) const;
  Tensor index_select(int axis, const Tensor& index) const;
  Tensor index_select(int axis, std::initializer_list<std::size_t> index) const {
    return index_select(axis, std::vector<std::size_t>(index));
  }
  /// Index of the largest / smallest value along `axis` (int64; the first one on ties), or of the flattened
  /// tensor without an axis. (PyTorch: argmax / argmin.)
  Tensor argmax(std::optional<int> axis = std::nullopt, bool keepdim = false) const;
  Tensor argmin(std::optional<int> axis = std::nullopt, bool keepdim = false) const;
  bool is_floating_point() const { return xg::is_floating_point(dtype()); }
  Tensor matmul(const Tensor& other) const;

 private:
  std::shared_ptr<TensorImpl> impl_;
  const TensorImpl& checked() const;
};

// ---- factories (float32 unless a dtype is given) ---------------------------------------------------------
Tensor zeros(const Shape& shape, Dtype dtype = kFloat32, bool requires_grad = false);
Tensor ones(const Shape& shape, Dtype dtype = kFloat32, bool requires_grad = false);
Tensor full(const Shape& shape, double value, Dtype dtype = kFloat32, bool requires_grad = false);
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor full_like(const Tensor& t, double value);
/// A tensor whose values are unspecified (PyTorch's torch::empty), for an output that is then written
/// entirely: it skips the fill that zeros() pays for. In builds configured with XGRAD_SANITIZE=ON every value
/// is NaN instead, so that a value read before it is written shows up in the tests.
Tensor empty(const Shape& shape, Dtype dtype = kFloat32, bool requires_grad = false);
Tensor empty_like(const Tensor& t);
/// 0-d tensor holding one value.
Tensor scalar(double value, Dtype dtype = kFloat32, bool requires_grad = false);
/// [start, end) with step, like torch.arange.
Tensor arange(double start, double end, double step = 1.0, Dtype dtype = kFloat32);
Tensor arange(double end, Dtype dtype = kFloat32);
/// `steps` points from start to end inclusive.
Tensor linspace(double start, double end, std::size_t steps, Dtype dtype = kFloat32);
/// n×n identity (n×m if m given).
Tensor eye(std::size_t n, std::optional<std::size_t> m = std::nullopt, Dtype dtype = kFloat32);
/// From a flat std::vector (row-major) and a shape whose product matches its size.
Tensor from_vector(const std::vector<double>& values, const Shape& shape, Dtype dtype = kFloat32,
                   bool requires_grad = false);
Tensor from_vector(const std::vector<float>& values, const Shape& shape, bool requires_grad = false);
/// int64 tensors from integer vectors (class labels, indices): `xg::from_vector(labels, {labels.size()})`.
Tensor from_vector(const std::vector<std::int64_t>& values, const Shape& shape);
Tensor from_vector(const std::vector<std::size_t>& values, const Shape& shape);
/// The same for a braced list: `xg::from_vector({1, 2, 3, 4}, {2, 2})`.
Tensor from_vector(std::initializer_list<double> values, const Shape& shape, Dtype dtype = kFloat32,
                   bool requires_grad = false);
/// A 1-d tensor from a list: `xg::tensor({1, 2, 3})`.
Tensor tensor(std::initializer_list<double> values, Dtype dtype = kFloat32, bool requires_grad = false);
/// A 2-d tensor from nested lists: `xg::tensor({{1, 2}, {3, 4}})`; rows must have equal lengths.
Tensor tensor(std::initializer_list<std::initializer_list<double>> rows, Dtype dtype = kFloat32,
              bool requires_grad = false);

// ---- dtype dispatch helpers ------------------------------------------------------------------------------
/// "<what> needs a floating-point tensor (float32 or float64) but got int64; convert it with .to(xg::kFloat32)".
[[noreturn]] void fail_not_floating(Dtype d, std::string_view what = "this op");

/// Calls f(T{}) with T = float or double according to `d` (used by every floating-point op implementation); an
/// integer or bool dtype is an error (fail_not_floating). The two float tests come first: the float paths pay
/// nothing for the other dtypes.
template <class F>
decltype(auto) dispatch(Dtype d, F&& f) {
  if (d == Dtype::Float32) return f(float{});
  if (d == Dtype::Float64) return f(double{});
  fail_not_floating(d);
}
/// The same over the numeric dtypes: float, double, int64_t, int32_t (bool is an error).
template <class F>
decltype(auto) dispatch_numeric(Dtype d, F&& f, std::string_view what = "this op") {
  switch (d) {
    case Dtype::Float32: return f(float{});
    case Dtype::Float64: return f(double{});
    case Dtype::Int64: return f(std::int64_t{});
    case Dtype::Int32: return f(std::int32_t{});
    default: break;
  }
  fail("{} does not take bool tensors; convert with .to(xg::kInt64) or .to(xg::kFloat32)", what);
}
/// The same over every dtype, bool included (shape ops, copies, factories).
template <class F>
decltype(auto) dispatch_all(Dtype d, F&& f) {
  switch (d) {
    case Dtype::Float32: return f(float{});
    case Dtype::Float64: return f(double{});
    case Dtype::Int64: return f(std::int64_t{});
    case Dtype::Int32: return f(std::int32_t{});
    default: return f(bool{});
  }
}

// ---- template definitions ------------------------------------------------------------------------------
template <class T>
xt::xarray<T>& Tensor::data() {
  auto* p = std::get_if<xt::xarray<T>>(impl_->storage.get());
  if (!p) fail("Tensor::data<{}>(): the tensor holds {}", dtype_name(dtype_of<T>()), dtype_name(dtype()));
  return *p;
}
template <class T>
const xt::xarray<T>& Tensor::data() const {
  const auto* p = std::get_if<xt::xarray<T>>(checked().storage.get());
  if (!p) fail("Tensor::data<{}>(): the tensor holds {}", dtype_name(dtype_of<T>()), dtype_name(dtype()));
  return *p;
}
template <class T>
T Tensor::item() const {
  (void)item();  // the one-element check and its message
  return std::visit([](const auto& a) { return static_cast<T>(*a.data()); }, *checked().storage);
}
template <class T>
xt::xarray<T> Tensor::to_xarray() const {
  return std::visit([](const auto& a) { return xt::xarray<T>(xt::cast<T>(a)); }, *checked().storage);
}

}  // namespace xg

namespace xg {
/// PyTorch-style text: values (summarised with "..." beyond 1000 elements), then shape, dtype if not float32,
/// and grad_fn / requires_grad. Used by fmt::format("{}", t) and operator<<.
std::string to_string(const Tensor& t);
std::ostream& operator<<(std::ostream& os, const Tensor& t);
}  // namespace xg

template <>
struct fmt::formatter<xg::Tensor> : fmt::formatter<std::string_view> {
  auto format(const xg::Tensor& t, fmt::format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(xg::to_string(t), ctx);
  }
};
