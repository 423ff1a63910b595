// Tensor handle: metadata, data access, autograd state, factories.
#include "xgrad/tensor.h"

#include <atomic>
#include <cmath>
#include <limits>

#include <xtensor/xbuilder.hpp>

#include "detail.h"
#include "xgrad/autograd.h"
#include "xgrad/ops.h"

namespace xg {
namespace cpu {
extern const int kCpuCheckLinked;  // cpu.cpp
}
namespace {
// Every program that makes a tensor links cpu.cpp, whose start-up check (xgrad/cpu.h) then runs first.
[[gnu::used]] const int* const cpu_check_anchor = &cpu::kCpuCheckLinked;  // kept: the reference pulls cpu.o in
}  // namespace

namespace {
std::uint64_t next_tensor_id() {
  static std::atomic<std::uint64_t> counter{1};
  return counter.fetch_add(1, std::memory_order_relaxed);
}

// "requires_grad: only floating-point tensors can require gradients (this one is int64) ...", as in PyTorch.
void check_grad_dtype(Dtype d, bool requires_grad, std::string_view op) {
  if (requires_grad && !is_floating_point(d))
    fail("{}: only floating-point tensors can require gradients, and this one is {} (PyTorch: \"Only Tensors of "
         "floating point dtype can require gradients\"); convert it first with .to(xg::kFloat32)",
         op, dtype_name(d));
}

template <class T>
std::shared_ptr<TensorImpl> make_impl(xt::xarray<T>&& a, bool requires_grad);

// A tensor from an array of any dtype (requires_grad was checked against the dtype by the caller).
template <class T>
Tensor with_grad(xt::xarray<T>&& a, bool requires_grad) {
  return Tensor(make_impl(std::move(a), requires_grad));
}

template <class T>
std::shared_ptr<TensorImpl> make_impl(xt::xarray<T>&& a, bool requires_grad) {
  check_grad_dtype(dtype_of<T>(), requires_grad, "Tensor");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(std::move(a));
  impl->requires_grad = requires_grad;
  impl->id = next_tensor_id();
  return impl;
}

// Converts possibly negative indices into a flat row-major offset, with a clear error when out of range.
std::size_t flat_offset(const Shape& shape, std::initializer_list<std::ptrdiff_t> index, std::string_view op) {
  if (index.size() != shape.size())
    fail("{}: got {} indices for a tensor of shape {} (ndim {})", op, index.size(), shape_str(shape),
         shape.size());
  std::size_t off = 0, axis = 0;
  for (auto i : index) {
    const auto n = static_cast<std::ptrdiff_t>(shape[axis]);
    const auto j = i < 0 ? i + n : i;
    if (j < 0 || j >= n)
      fail("{}: index {} is out of range for axis {} of size {} (shape {})", op, i, axis, n, shape_str(shape));
    off = off * shape[axis] + static_cast<std::size_t>(j);
    ++axis;
  }
  return off;
}
}  // namespace

Tensor::Tensor(xt::xarray<float> a, bool requires_grad) : impl_(make_impl(std::move(a), requires_grad)) {}
Tensor::Tensor(xt::xarray<double> a, bool requires_grad) : impl_(make_impl(std::move(a), requires_grad)) {}
Tensor::Tensor(xt::xarray<std::int64_t> a) : impl_(make_impl(std::move(a), false)) {}
Tensor::Tensor(xt::xarray<std::int32_t> a) : impl_(make_impl(std::move(a), false)) {}
Tensor::Tensor(xt::xarray<bool> a) : impl_(make_impl(std::move(a), false)) {}

void fail_not_floating(Dtype d, std::string_view what) {
  fail("{} needs a floating-point tensor (float32 or float64) but got {}; convert it with .to(xg::kFloat32)", what,
       dtype_name(d));
}

const TensorImpl& Tensor::checked() const {
  if (!impl_) fail("this Tensor is undefined (default-constructed or an absent gradient); check defined() first");
  return *impl_;
}

Dtype Tensor::dtype() const { return static_cast<Dtype>(checked().storage->index()); }

Shape Tensor::shape() const {
  return std::visit([](const auto& a) { return Shape(a.shape().begin(), a.shape().end()); }, *checked().storage);
}
std::span<const std::size_t> Tensor::sizes() const {
  return std::visit([](const auto& a) { return std::span<const std::size_t>(a.shape().data(), a.shape().size()); },
                    *checked().storage);
}
bool Tensor::same_shape(const Tensor& other) const {
  const auto a = sizes(), b = other.sizes();
  return std::equal(a.begin(), a.end(), b.begin(), b.end());
}
std::size_t Tensor::ndim() const {
  return std::visit([](const auto& a) { return a.dimension(); }, *checked().storage);
}
std::size_t Tensor::numel() const {
  return std::visit([](const auto& a) { return a.size(); }, *checked().storage);
}
std::size_t Tensor::size(int axis) const {
  auto s = shape();
  return s.empty() ? 1 : s[normalize_axis(axis, s.size(), "size", s)];
}

std::vector<double> Tensor::to_vector() const {
  return std::visit([](const auto& a) { return std::vector<double>(a.begin(), a.end()); }, *checked().storage);
}

double Tensor::item() const {
  if (numel() != 1)
    fail("item(): the tensor has {} elements (shape {}); item() needs exactly one — reduce it first (e.g. .sum())",
         numel(), shape_str(shape()));
  return std::visit([](const auto& a) { return static_cast<double>(*a.data()); }, *checked().storage);
}

double Tensor::at(std::initializer_list<std::ptrdiff_t> index) const {
  const auto off = flat_offset(shape(), index, "at");
  return std::visit([&](const auto& a) { return static_cast<double>(a.data()[off]); }, *checked().storage);
}

void Tensor::set(std::initializer_list<std::ptrdiff_t> index, double value) {
  const auto off = flat_offset(shape(), index, "set");
  std::visit(
      [&](auto& a) {
        using T = typename std::decay_t<decltype(a)>::value_type;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
          if (!std::isfinite(value))
            fail("set: cannot store {} in an {} tensor (integers have no NaN or infinity)", value, dtype());
        a.data()[off] = static_cast<T>(value);
      },
      *impl_->storage);
}

// ---- autograd state --------------------------------------------------------------------------------------
bool Tensor::requires_grad() const { return checked().requires_grad; }

Tensor& Tensor::requires_grad_(bool on) {
  check_grad_dtype(dtype(), on, "requires_grad_()");
  if (!is_leaf())
    fail("requires_grad_(): only leaves can change requires_grad; this tensor was produced by '{}'. "
         "Use .detach().requires_grad_() for a new leaf",
         impl_->grad_fn->name);
  impl_->requires_grad = on;
  return *this;
}

bool Tensor::is_leaf() const { return checked().grad_fn == nullptr; }

Tensor Tensor::grad() const {
  const auto& g = checked().grad;
  return g ? Tensor(g) : Tensor();
}

void Tensor::set_grad(const Tensor& g) {
  if (g.defined() && (g.shape() != shape() || g.dtype() != dtype()))
    fail("set_grad(): gradient of shape {} ({}) does not match the tensor's shape {} ({})", shape_str(g.shape()),
         g.dtype(), shape_str(shape()), dtype());
  checked();
  impl_->grad = g.defined() ? g.impl() : nullptr;
}

void Tensor::zero_grad(bool set_to_none) {
  checked();
  if (set_to_none || !impl_->grad) {
    impl_->grad = nullptr;
    return;
  }
  std::visit([](auto& a) { std::fill(a.begin(), a.end(), 0); }, *impl_->grad->storage);
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  detail::backward_one(*this, gradient, retain_graph);
}

void Tensor::retain_grad() {
  checked();
  if (is_leaf()) return;  // leaves keep their gradient anyway
  impl_->retains_grad = true;
}

void Tensor::register_hook(GradHook hook) {
  if (!requires_grad())
    fail("register_hook(): the tensor does not require grad, so no gradient will ever reach the hook");
  if (is_leaf())
    impl_->hooks.push_back(std::move(hook));
  else
    impl_->grad_fn->hooks.push_back(std::move(hook));
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = checked().storage;  // shares the data, as PyTorch's detach()
  impl->id = next_tensor_id();
  impl->label = impl_->label;
  return Tensor(impl);
}

std::shared_ptr<Node> Tensor::grad_fn() const { return checked().grad_fn; }

Tensor& Tensor::set_label(std::string label) {
  checked();
  impl_->label = std::move(label);
  // The node remembers it too: graph export and anomaly messages can still name the op once this tensor is gone.
  if (impl_->grad_fn) impl_->grad_fn->created_by = impl_->label;
  return *this;
}
const std::string& Tensor::label() const { return checked().label; }

// ---- conversion -------------------------------------------------------------------------------------------
Tensor Tensor::to(Dtype d) const {
  if (d == dtype()) return *this;
  Tensor out = dispatch_all(d, [&](auto t) {
    using T = decltype(t);
    if constexpr (std::is_same_v<T, bool>) {  // `!= 0` (so a NaN is true, as in PyTorch)
      return std::visit(
          [](const auto& a) {
            auto o = xt::xarray<bool>::from_shape(a.shape());
            for (std::size_t i = 0; i < a.size(); ++i) o.data()[i] = a.data()[i] != 0;
            return Tensor(std::move(o));
          },
          *checked().storage);
    } else {
      return Tensor(to_xarray<T>());
    }
  });
  const Dtype from = dtype();
  if (!xg::is_floating_point(d) || !xg::is_floating_point(from)) return out;  // nothing to differentiate (PyTorch alike)
  return record_op("to", out, {*this}, [from](const Tensor& g, const std::vector<bool>&) {
    return std::vector<Tensor>{g.to(from)};
  });
}

Tensor Tensor::clone() const {
  Tensor out = std::visit([](const auto& a) { return Tensor(std::decay_t<decltype(a)>(a)); }, *checked().storage);
  return record_op("clone", out, {*this}, [](const Tensor& g, const std::vector<bool>&) {
    return std::vector<Tensor>{g};
  });
}

// ---- factories ----------------------------------------------------------------------------------------
Tensor full(const Shape& shape, double value, Dtype dtype, bool requires_grad) {
  check_grad_dtype(dtype, requires_grad, "full");
  if (!is_floating_point(dtype) && !std::isfinite(value))
    fail("full: cannot fill an {} tensor with {} (integers and bools have no NaN or infinity)", dtype_name(dtype),
         value);
  return dispatch_all(dtype, [&](auto t) {
    using T = decltype(t);
    xt::xarray<T> a = xt::xarray<T>::from_shape(shape);
    std::fill(a.begin(), a.end(), static_cast<T>(value));
    return with_grad(std::move(a), requires_grad);
  });
}
Tensor zeros(const Shape& shape, Dtype dtype, bool requires_grad) { return full(shape, 0.0, dtype, requires_grad); }
Tensor ones(const Shape& shape, Dtype dtype, bool requires_grad) { return full(shape, 1.0, dtype, requires_grad); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype()); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), t.dtype()); }
Tensor full_like(const Tensor& t, double value) { return full(t.shape(), value, t.dtype()); }
Tensor empty(const Shape& shape, Dtype dtype, bool requires_grad) {
#ifdef XGRAD_POISON_EMPTY
  if (!is_floating_point(dtype)) return full(shape, 0.0, dtype, requires_grad);
  return full(shape, std::numeric_limits<double>::quiet_NaN(), dtype, requires_grad);
#else
  check_grad_dtype(dtype, requires_grad, "empty");
  if (!is_floating_point(dtype)) return full(shape, 0.0, dtype);  // no NaN to poison with; zeros are cheap enough
  return dispatch(dtype, [&](auto t) {
    using T = decltype(t);
    return Tensor(xt::xarray<T>::from_shape(shape), requires_grad);
  });
#endif
}
Tensor empty_like(const Tensor& t) { return empty(t.shape(), t.dtype()); }
Tensor scalar(double value, Dtype dtype, bool requires_grad) { return full({}, value, dtype, requires_grad); }

Tensor arange(double start, double end, double step, Dtype dtype) {
  if (step == 0) fail("arange: step must be nonzero");
  if ((end - start) / step < 0)
    fail("arange: empty range from {} to {} with step {} (the step's sign points away from end)", start, end, step);
  const auto n = static_cast<std::size_t>(std::ceil((end - start) / step));
  return dispatch_numeric(dtype, [&](auto t) {
    using T = decltype(t);
    xt::xarray<T> a = xt::xarray<T>::from_shape({n});
    for (std::size_t i = 0; i < n; ++i) a(i) = static_cast<T>(start + static_cast<double>(i) * step);
    return Tensor(std::move(a));
  });
}
Tensor arange(double end, Dtype dtype) { return arange(0.0, end, 1.0, dtype); }

Tensor linspace(double start, double end, std::size_t steps, Dtype dtype) {
  return dispatch_numeric(dtype, [&](auto t) {
    using T = decltype(t);
    xt::xarray<T> a = xt::xarray<T>::from_shape({steps});
    for (std::size_t i = 0; i < steps; ++i)
      a(i) = static_cast<T>(steps == 1 ? start
                                       : start + (end - start) * static_cast<double>(i) / static_cast<double>(steps - 1));
    return Tensor(std::move(a));
  });
}

Tensor eye(std::size_t n, std::optional<std::size_t> m, Dtype dtype) {
  const std::size_t cols = m.value_or(n);
  Tensor t = zeros({n, cols}, dtype);
  dispatch_all(dtype, [&](auto v) {
    using T = decltype(v);
    T* p = t.data_ptr<T>();
    for (std::size_t i = 0; i < std::min(n, cols); ++i) p[i * cols + i] = T(1);
  });
  return t;
}

Tensor from_vector(const std::vector<double>& values, const Shape& shape, Dtype dtype, bool requires_grad) {
  if (numel_of(shape) != values.size())
    fail("from_vector: {} values do not fill shape {} ({} elements)", values.size(), shape_str(shape),
         numel_of(shape));
  check_grad_dtype(dtype, requires_grad, "from_vector");
  return dispatch_all(dtype, [&](auto t) {
    using T = decltype(t);
    xt::xarray<T> a = xt::xarray<T>::from_shape(shape);
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
      for (std::size_t i = 0; i < values.size(); ++i)
        if (!std::isfinite(values[i]) || values[i] != std::trunc(values[i]))
          fail("from_vector: value {} (index {}) is not an integer, so it cannot go into an {} tensor", values[i],
               i, dtype_name(dtype));
    }
    std::transform(values.begin(), values.end(), a.begin(), [](double v) { return static_cast<T>(v); });
    return with_grad(std::move(a), requires_grad);
  });
}
Tensor from_vector(const std::vector<float>& values, const Shape& shape, bool requires_grad) {
  if (numel_of(shape) != values.size())
    fail("from_vector: {} values do not fill shape {} ({} elements)", values.size(), shape_str(shape),
         numel_of(shape));
  xt::xarray<float> a = xt::xarray<float>::from_shape(shape);
  std::copy(values.begin(), values.end(), a.begin());
  return Tensor(std::move(a), requires_grad);
}

Tensor from_vector(const std::vector<std::int64_t>& values, const Shape& shape) {
  if (numel_of(shape) != values.size())
    fail("from_vector: {} values do not fill shape {} ({} elements)", values.size(), shape_str(shape),
         numel_of(shape));
  xt::xarray<std::int64_t> a = xt::xarray<std::int64_t>::from_shape(shape);
  std::copy(values.begin(), values.end(), a.begin());
  return Tensor(std::move(a));
}
Tensor from_vector(const std::vector<std::size_t>& values, const Shape& shape) {
  std::vector<std::int64_t> v(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (values[i] > static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max()))
      fail("from_vector: value {} (index {}) does not fit in int64", values[i], i);
    v[i] = static_cast<std::int64_t>(values[i]);
  }
  return from_vector(v, shape);
}

Tensor from_vector(std::initializer_list<double> values, const Shape& shape, Dtype dtype, bool requires_grad) {
  return from_vector(std::vector<double>(values), shape, dtype, requires_grad);
}

Tensor tensor(std::initializer_list<double> values, Dtype dtype, bool requires_grad) {
  return from_vector(std::vector<double>(values), {values.size()}, dtype, requires_grad);
}

Tensor tensor(std::initializer_list<std::initializer_list<double>> rows, Dtype dtype, bool requires_grad) {
  std::vector<double> flat;
  const std::size_t cols = rows.size() ? rows.begin()->size() : 0;
  std::size_t r = 0;
  for (const auto& row : rows) {
    if (row.size() != cols)
      fail("tensor: row {} has {} values but row 0 has {}; all rows need the same length", r, row.size(), cols);
    flat.insert(flat.end(), row.begin(), row.end());
    ++r;
  }
  return from_vector(flat, {rows.size(), cols}, dtype, requires_grad);
}

}  // namespace xg
