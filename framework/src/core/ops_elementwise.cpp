// Elementwise ops: the binary ones broadcast (numpy rules) and sum their gradient back with sum_to.
// The array maths is xtensor's (vectorised with xsimd because XTENSOR_USE_XSIMD is defined).
#include "simd_warnings.h"  // first: silences a GCC 12 intrinsics-header warning (see the file)

#include <cmath>

#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>

#include "detail.h"

namespace xg {
using detail::Grads;
using detail::Needs;

namespace detail {
std::string_view dtype_constant(Dtype d) {
  switch (d) {
    case Dtype::Float32: return "kFloat32";
    case Dtype::Float64: return "kFloat64";
    case Dtype::Int64: return "kInt64";
    case Dtype::Int32: return "kInt32";
    default: return "kBool";
  }
}
void check_same_dtype(const Tensor& a, const Tensor& b, std::string_view op) {
  if (!a.defined() || !b.defined()) fail("{}: an input tensor is undefined", op);
  if (a.dtype() != b.dtype())
    fail("{}: dtype mismatch ({} vs {}) for shapes {} and {}; convert one with .to(xg::{})", op, a.dtype(),
         b.dtype(), shape_str(a.shape()), shape_str(b.shape()), dtype_constant(a.dtype()));
}
Tensor scalar_like(double v, const Tensor& like) { return scalar(v, like.dtype()); }

namespace {
int category(Dtype d) { return is_floating_point(d) ? 2 : is_integral(d) ? 1 : 0; }
}  // namespace

Dtype result_type(const Tensor& a, const Tensor& b) {
  const Dtype da = a.dtype(), db = b.dtype();
  if (da == db) return da;
  const bool za = a.ndim() == 0, zb = b.ndim() == 0;
  if (za == zb) return promote_types(da, db);
  // A 0-d tensor only decides the dtype when its category is higher (PyTorch): float32 [3] ⊕ float64 0-d is
  // float32, int64 [3] ⊕ float64 0-d is float64.
  const Dtype dim = za ? db : da, zero = za ? da : db;
  return category(zero) > category(dim) ? zero : dim;
}

bool needs_promotion(const Tensor& a, const Tensor& b) {
  return a.defined() && b.defined() && a.dtype() != b.dtype();
}

Tensor as_floating(const Tensor& x) { return !x.defined() || x.is_floating_point() ? x : x.to(kFloat32); }

Dtype float_scalar_dtype(const Tensor& t) { return t.is_floating_point() ? t.dtype() : kFloat32; }
Dtype int_scalar_dtype(const Tensor& t) { return t.dtype() == kBool ? kInt64 : t.dtype(); }

std::optional<BlockBroadcast> block_broadcast(const Shape& big, const Shape& small) {
  if (small.size() > big.size()) return std::nullopt;
  const std::size_t lead = big.size() - small.size();  // small's axis i is big's axis lead + i
  std::size_t first = big.size(), last = 0;
  for (std::size_t i = 0; i < small.size(); ++i)
    if (small[i] != 1) {
      first = std::min(first, lead + i);
      last = lead + i;
    }
  if (first == big.size()) return std::nullopt;  // one element
  for (std::size_t i = first; i <= last; ++i)
    if (small[i - lead] != big[i]) return std::nullopt;
  BlockBroadcast b{1, 1, 1};
  for (std::size_t i = 0; i < big.size(); ++i) (i < first ? b.outer : i <= last ? b.mid : b.inner) *= big[i];
  return b;
}
}  // namespace detail

Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view op) {
  const std::size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const std::size_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1) fail("{}: cannot broadcast {} with {}", op, shape_str(a), shape_str(b));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

namespace {
// out = f(big, small) where small broadcasts against big along one block of axes (see detail::block_broadcast):
// plain loops that the compiler vectorises (along the row when inner = 1, else along inner).
template <class T, class F>
xt::xarray<T> map_block(const xt::xarray<T>& big, const T* small, const detail::BlockBroadcast& k, F f) {
  auto out = xt::xarray<T>::from_shape(big.shape());
  const T* pa = big.data();
  T* po = out.data();
  for (std::size_t o = 0; o < k.outer; ++o)
    if (k.inner == 1) {
      const std::size_t base = o * k.mid;
      for (std::size_t m = 0; m < k.mid; ++m) po[base + m] = f(pa[base + m], small[m]);
    } else {
      for (std::size_t m = 0; m < k.mid; ++m) {
        const std::size_t base = (o * k.mid + m) * k.inner;
        const T s = small[m];
        for (std::size_t i = 0; i < k.inner; ++i) po[base + i] = f(pa[base + i], s);
      }
    }
  return out;
}

// Applies a binary op elementwise with numpy broadcasting; checks dtypes and shapes first.
//   fs(T, T) -> T      the scalar form, used by the fast paths: equal shapes, one side a single element
//                      (a 0-d scalar like the 2 of `x * 2`), or one side varying along one block of axes
//                      (a per-channel [1, C, 1, 1], a row, a column) — plain loops over contiguous memory
//                      that the compiler vectorises;
//   fe(xarray, xarray) the xtensor form, for every other broadcast.
template <class FS, class FE>
Tensor binary_map(const Tensor& a, const Tensor& b, std::string_view op, FS fs, FE fe) {
  detail::check_same_dtype(a, b, op);
  return dispatch_numeric(a.dtype(), [&](auto t) {
    using T = decltype(t);
    const auto& xa = a.data<T>();
    const auto& xb = b.data<T>();
    const std::size_t n = xa.size();
    if (a.same_shape(b)) {
      auto out = xt::xarray<T>::from_shape(xa.shape());
      const T* pa = xa.data();
      const T* pb = xb.data();
      T* po = out.data();
      for (std::size_t i = 0; i < n; ++i) po[i] = fs(pa[i], pb[i]);
      return Tensor(std::move(out));
    }
    if (xb.size() == 1 && xb.dimension() <= xa.dimension()) {  // tensor ⊕ scalar
      auto out = xt::xarray<T>::from_shape(xa.shape());
      const T* pa = xa.data();
      const T s = xb.data()[0];
      T* po = out.data();
      for (std::size_t i = 0; i < n; ++i) po[i] = fs(pa[i], s);
      return Tensor(std::move(out));
    }
    if (xa.size() == 1 && xa.dimension() <= xb.dimension()) {  // scalar ⊕ tensor
      auto out = xt::xarray<T>::from_shape(xb.shape());
      const T s = xa.data()[0];
      const T* pb = xb.data();
      T* po = out.data();
      for (std::size_t i = 0, m = xb.size(); i < m; ++i) po[i] = fs(s, pb[i]);
      return Tensor(std::move(out));
    }
    const Shape as = a.shape(), bs = b.shape();
    if (const auto k = detail::block_broadcast(as, bs))  // tensor ⊕ per-channel / row / column
      return Tensor(map_block<T>(xa, xb.data(), *k, [&](T x, T y) { return fs(x, y); }));
    if (const auto k = detail::block_broadcast(bs, as))  // per-channel / row / column ⊕ tensor
      return Tensor(map_block<T>(xb, xa.data(), *k, [&](T y, T x) { return fs(x, y); }));
    broadcast_shapes(as, bs, op);  // throws with both shapes when incompatible
    return detail::wrap<T>(fe(xa, xb));
  }, op);
}

// The common case where the same generic lambda serves as scalar and xtensor form (+ - * /).
template <class F>
Tensor binary_map(const Tensor& a, const Tensor& b, std::string_view op, F f) {
  return binary_map(a, b, op, f, f);
}

template <class F>
Tensor unary_map(const Tensor& x, F f) {
  return dispatch(x.dtype(), [&](auto t) {  // floating point only (callers convert integers with as_floating)
    using T = decltype(t);
    return detail::wrap<T>(f(x.data<T>()));
  });
}

// Applies f(x_i) elementwise with a plain loop into a new tensor of x's shape and dtype. f is called with a
// value of the element type T, so it can use T-typed constants.
template <class F>
Tensor map_elements(const Tensor& x, F f) {
  return dispatch_numeric(x.dtype(), [&](auto t) {
    using T = decltype(t);
    const auto& a = x.data<T>();
    auto out = xt::xarray<T>::from_shape(a.shape());
    const T* pa = a.data();
    T* po = out.data();
    for (std::size_t i = 0, n = a.size(); i < n; ++i) po[i] = f(pa[i]);
    return Tensor(std::move(out));
  });
}

template <class T>
T bound_or(std::optional<double> b, T fallback) {
  return b ? static_cast<T>(*b) : fallback;
}
template <class T>
T lowest_of() {
  return std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::lowest();
}
template <class T>
T highest_of() {
  return std::numeric_limits<T>::has_infinity ? std::numeric_limits<T>::infinity() : std::numeric_limits<T>::max();
}

// PyTorch's type promotion for a binary op: both inputs converted to result_type (the conversion of an input
// that requires grad is recorded, so gradients flow back in its own dtype).
template <class F>
Tensor promoted(F f, const Tensor& a, const Tensor& b) {
  const Dtype d = detail::result_type(a, b);
  return f(a.to(d), b.to(d));
}

// bool ⊕ bool for add/mul/maximum/minimum: computed in int32 and read back as bool (x != 0), so add is a
// logical or and mul a logical and, as in PyTorch.
template <class F>
Tensor on_bools(F f, const Tensor& a, const Tensor& b) {
  return f(a.to(kInt32), b.to(kInt32)).to(kBool);
}
bool both_bool(const Tensor& a, const Tensor& b) {
  return a.defined() && b.defined() && a.dtype() == kBool && b.dtype() == kBool;
}
}  // namespace

// ---- binary ------------------------------------------------------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b) {
  if (detail::needs_promotion(a, b)) return promoted([](const Tensor& x, const Tensor& y) { return add(x, y); }, a, b);
  if (both_bool(a, b)) return on_bools([](const Tensor& x, const Tensor& y) { return add(x, y); }, a, b);
  Tensor out = binary_map(a, b, "add", [](const auto& x, const auto& y) { return x + y; });
  if (!any_requires_grad({a, b})) return out;
  if (a.same_shape(b))  // no broadcast: the gradient passes through unchanged (and the closure captures nothing)
    return record_op("add", out, {a, b}, [](const Tensor& g, const Needs& n) {
      return Grads{n[0] ? g : Tensor(), n[1] ? g : Tensor()};
    });
  return record_op("add", out, {a, b}, [as = a.shape(), bs = b.shape()](const Tensor& g, const Needs& n) {
    return Grads{n[0] ? sum_to(g, as) : Tensor(), n[1] ? sum_to(g, bs) : Tensor()};
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  if (detail::needs_promotion(a, b)) return promoted([](const Tensor& x, const Tensor& y) { return sub(x, y); }, a, b);
  if (both_bool(a, b))
    fail("sub: subtracting two bool tensors is not supported (as in PyTorch); use logical_xor, or convert with "
         ".to(xg::kInt64)");
  Tensor out = binary_map(a, b, "sub", [](const auto& x, const auto& y) { return x - y; });
  if (!any_requires_grad({a, b})) return out;
  return record_op("sub", out, {a, b}, [as = a.shape(), bs = b.shape()](const Tensor& g, const Needs& n) {
    return Grads{n[0] ? sum_to(g, as) : Tensor(), n[1] ? sum_to(neg(g), bs) : Tensor()};
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  if (detail::needs_promotion(a, b)) return promoted([](const Tensor& x, const Tensor& y) { return mul(x, y); }, a, b);
  if (both_bool(a, b)) return on_bools([](const Tensor& x, const Tensor& y) { return mul(x, y); }, a, b);
  Tensor out = binary_map(a, b, "mul", [](const auto& x, const auto& y) { return x * y; });
  return record_op("mul", out, {a, b}, [a = a.detach(), b = b.detach()](const Tensor& g, const Needs& n) {
    return Grads{n[0] ? sum_to(mul(g, b), a.shape()) : Tensor(), n[1] ? sum_to(mul(g, a), b.shape()) : Tensor()};
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  // True division, as PyTorch's `/`: integers and bools are divided as float32 (the default dtype), 7 / 2 = 3.5.
  if (a.defined() && b.defined() && (a.dtype() != b.dtype() || !a.is_floating_point())) {
    Dtype d = detail::result_type(a, b);
    if (!is_floating_point(d)) d = kFloat32;
    return div(a.to(d), b.to(d));
  }
  Tensor out = binary_map(a, b, "div", [](const auto& x, const auto& y) { return x / y; });
  return record_op("div", out, {a, b}, [a = a.detach(), b = b.detach()](const Tensor& g, const Needs& n) {
    // d(a/b)/da = 1/b ; d(a/b)/db = -a/b²
    return Grads{n[0] ? sum_to(div(g, b), a.shape()) : Tensor(),
                 n[1] ? sum_to(neg(div(mul(g, a), mul(b, b))), b.shape()) : Tensor()};
  });
}

namespace {
// maximum/minimum share one derivative: the gradient goes to the winner, half to each on a tie.
Tensor extremum(const Tensor& a, const Tensor& b, bool is_max) {
  const char* name = is_max ? "maximum" : "minimum";
  auto again = [is_max](const Tensor& x, const Tensor& y) { return extremum(x, y, is_max); };
  if (detail::needs_promotion(a, b)) return promoted(again, a, b);
  if (both_bool(a, b)) return on_bools(again, a, b);
  // Scalar forms: a NaN on either side wins, as in PyTorch.
  Tensor out =
      is_max ? binary_map(
                   a, b, name, [](auto x, auto y) { return (x != x || x > y) ? x : y; },
                   [](const auto& x, const auto& y) { return xt::maximum(x, y); })
             : binary_map(
                   a, b, name, [](auto x, auto y) { return (x != x || x < y) ? x : y; },
                   [](const auto& x, const auto& y) { return xt::minimum(x, y); });
  return record_op(name, out, {a, b}, [a = a.detach(), b = b.detach(), is_max](const Tensor& g, const Needs& n) {
    Tensor wins_a = add((is_max ? gt(a, b) : lt(a, b)).to(a.dtype()), mul(eq(a, b).to(a.dtype()), detail::scalar_like(0.5, a)));
    return Grads{n[0] ? sum_to(mul(g, wins_a), a.shape()) : Tensor(),
                 n[1] ? sum_to(mul(g, sub(detail::scalar_like(1.0, a), wins_a)), b.shape()) : Tensor()};
  });
}
}  // namespace
Tensor maximum(const Tensor& a, const Tensor& b) { return extremum(a, b, true); }
Tensor minimum(const Tensor& a, const Tensor& b) { return extremum(a, b, false); }

Tensor pow(const Tensor& a, const Tensor& b) {
  if (detail::needs_promotion(a, b)) return promoted([](const Tensor& x, const Tensor& y) { return pow(x, y); }, a, b);
  Tensor out = binary_map(
      a, b, "pow", [](auto x, auto y) { return std::pow(x, y); },
      [](const auto& x, const auto& y) { return xt::pow(x, y); });
  return record_op("pow", out, {a, b},
                   [a = a.detach(), b = b.detach(), out = out.detach()](const Tensor& g, const Needs& n) {
                     // d(a^b)/da = b·a^(b-1) ; d(a^b)/db = a^b·log(a)
                     return Grads{n[0] ? sum_to(mul(g, mul(b, pow(a, sub(b, detail::scalar_like(1, b))))), a.shape())
                                       : Tensor(),
                                  n[1] ? sum_to(mul(g, mul(out, log(a))), b.shape()) : Tensor()};
                   });
}

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
// A double is PyTorch's Python float: it takes a floating tensor's dtype and turns an integer or bool tensor into
// float32; a C++ integer is a Python int: it keeps an integer tensor's dtype (int64 for a bool tensor).
Tensor scalar_for(const Tensor& t, double v) { return scalar(v, detail::float_scalar_dtype(t)); }
Tensor scalar_for(const Tensor& t, std::int64_t v) {
  return scalar(static_cast<double>(v), detail::int_scalar_dtype(t));
}
Tensor operator+(const Tensor& a, double b) { return add(a, scalar_for(a, b)); }
Tensor operator-(const Tensor& a, double b) { return sub(a, scalar_for(a, b)); }
Tensor operator*(const Tensor& a, double b) { return mul(a, scalar_for(a, b)); }
Tensor operator/(const Tensor& a, double b) { return div(a, scalar_for(a, b)); }
Tensor operator+(double a, const Tensor& b) { return add(scalar_for(b, a), b); }
Tensor operator-(double a, const Tensor& b) { return sub(scalar_for(b, a), b); }
Tensor operator*(double a, const Tensor& b) { return mul(scalar_for(b, a), b); }
Tensor operator/(double a, const Tensor& b) { return div(scalar_for(b, a), b); }

// ---- unary -------------------------------------------------------------------------------------------------
Tensor neg(const Tensor& x) {
  if (x.defined() && !x.is_floating_point()) {
    if (x.dtype() == kBool)
      fail("neg: negating a bool tensor is not supported (as in PyTorch); use logical_not");
    return map_elements(x, [](auto v) { return static_cast<decltype(v)>(-v); });
  }
  Tensor out = unary_map(x, [](const auto& a) { return -a; });
  return record_op("neg", out, {x}, [](const Tensor& g, const Needs&) { return Grads{neg(g)}; });
}

Tensor pow(const Tensor& x_in, double p) {
  const Tensor x = detail::as_floating(x_in);  // a double exponent is a Python float: int ** 2.0 is float32
  Tensor out = unary_map(x, [p](const auto& a) {
    using T = typename std::decay_t<decltype(a)>::value_type;
    return xt::pow(a, static_cast<T>(p));
  });
  return record_op("pow", out, {x}, [x = x.detach(), p](const Tensor& g, const Needs&) {
    return Grads{mul(g, mul(pow(x, p - 1.0), detail::scalar_like(p, x)))};  // p·x^(p-1)
  });
}

Tensor exp(const Tensor& x_in) {
  const Tensor x = detail::as_floating(x_in);  // integers -> float32, as in PyTorch
  Tensor out = unary_map(x, [](const auto& a) { return xt::exp(a); });
  return record_op("exp", out, {x}, [out = out.detach()](const Tensor& g, const Needs&) {
    return Grads{mul(g, out)};  // d exp(x) = exp(x)
  });
}

Tensor log(const Tensor& x_in) {
  const Tensor x = detail::as_floating(x_in);  // integers -> float32, as in PyTorch
  Tensor out = unary_map(x, [](const auto& a) { return xt::log(a); });
  return record_op("log", out, {x}, [x = x.detach()](const Tensor& g, const Needs&) {
    return Grads{div(g, x)};  // d log(x) = 1/x
  });
}

Tensor sqrt(const Tensor& x_in) {
  const Tensor x = detail::as_floating(x_in);  // integers -> float32, as in PyTorch
  Tensor out = unary_map(x, [](const auto& a) { return xt::sqrt(a); });
  return record_op("sqrt", out, {x}, [out = out.detach()](const Tensor& g, const Needs&) {
    return Grads{div(g, mul(out, detail::scalar_like(2, out)))};  // d sqrt(x) = 1/(2 sqrt(x))
  });
}

Tensor rsqrt(const Tensor& x_in) {
  const Tensor x = detail::as_floating(x_in);  // integers -> float32, as in PyTorch
  Tensor out = unary_map(x, [](const auto& a) {
    using T = typename std::decay_t<decltype(a)>::value_type;
    return T(1) / xt::sqrt(a);
  });
  return record_op("rsqrt", out, {x}, [out = out.detach()](const Tensor& g, const Needs&) {
    // d x^(-1/2) = -1/2 · x^(-3/2) = -1/2 · rsqrt(x)³
    return Grads{mul(g, mul(pow(out, 3.0), detail::scalar_like(-0.5, out)))};
  });
}

Tensor abs(const Tensor& x) {
  if (x.defined() && !x.is_floating_point()) {
    if (x.dtype() == kBool) return x.clone();
    return map_elements(x, [](auto v) { return static_cast<decltype(v)>(v < 0 ? -v : v); });
  }
  Tensor out = unary_map(x, [](const auto& a) { return xt::abs(a); });
  return record_op("abs", out, {x}, [x = x.detach()](const Tensor& g, const Needs&) {
    // sign(x), 0 at 0
    return Grads{mul(g, map_elements(x, [](auto v) { return static_cast<decltype(v)>((v > 0) - (v < 0)); }))};
  });
}

Tensor clamp(const Tensor& x_in, std::optional<double> lo, std::optional<double> hi) {
  if (lo && hi && *lo > *hi) fail("clamp: min {} is greater than max {}", *lo, *hi);
  // An integer tensor stays integer for integral bounds; a fractional bound makes it float32 (PyTorch).
  auto integral = [](std::optional<double> b) { return !b || (std::isfinite(*b) && *b == std::trunc(*b)); };
  const Tensor x = x_in.defined() && !x_in.is_floating_point() && !(integral(lo) && integral(hi))
                       ? x_in.to(kFloat32)
                       : x_in;
  // min(max(x, lo), hi); a NaN stays NaN
  Tensor out = map_elements(x, [lo, hi](auto v) {
    using T = decltype(v);
    const T l = bound_or(lo, lowest_of<T>());
    const T h = bound_or(hi, highest_of<T>());
    return v < l ? l : (v > h ? h : v);
  });
  return record_op("clamp", out, {x}, [x = x.detach(), lo, hi](const Tensor& g, const Needs&) {
    // 1 where lo <= x <= hi (the bounds included, as in PyTorch), else 0
    Tensor inside = map_elements(x, [lo, hi](auto v) {
      using T = decltype(v);
      const T l = bound_or(lo, lowest_of<T>());
      const T h = bound_or(hi, highest_of<T>());
      return static_cast<T>(v >= l && v <= h);
    });
    return Grads{mul(g, inside)};
  });
}

// ---- comparisons, masks and where -------------------------------------------------------------------------
namespace {
// out[i] = f(a[i], b[i]) as a bool tensor, after promoting both to their common dtype and broadcasting.
template <class F>
Tensor compare_map(const Tensor& a_in, const Tensor& b_in, std::string_view op, F f) {
  if (!a_in.defined() || !b_in.defined()) fail("{}: an input tensor is undefined", op);
  NoGradGuard no_grad;  // a comparison has no gradient: the promotion and broadcast below record nothing
  Tensor a = a_in, b = b_in;
  if (a.dtype() != b.dtype()) {
    const Dtype d = detail::result_type(a, b);
    a = a.to(d);
    b = b.to(d);
  }
  const Shape s = broadcast_shapes(a.shape(), b.shape(), op);
  const bool a_one = a.numel() == 1 && a.ndim() <= s.size(), b_one = b.numel() == 1 && b.ndim() <= s.size();
  if (!a.same_shape(b)) {
    if (!a_one) a = expand(a, s);
    if (!b_one) b = expand(b, s);
  }
  auto out = xt::xarray<bool>::from_shape(s);
  dispatch_all(a.dtype(), [&](auto t) {
    using T = decltype(t);
    const T* pa = a.data_ptr<T>();
    const T* pb = b.data_ptr<T>();
    bool* po = out.data();
    const std::size_t n = out.size(), sa = a.numel() == n ? 1 : 0, sb = b.numel() == n ? 1 : 0;
    for (std::size_t i = 0; i < n; ++i) po[i] = f(pa[i * sa], pb[i * sb]);
  });
  return Tensor(std::move(out));
}

// out[i] = f(x[i]) as a bool tensor.
template <class F>
Tensor predicate_map(const Tensor& x, F f) {
  if (!x.defined()) fail("the input tensor is undefined");
  auto out = xt::xarray<bool>::from_shape(x.shape());
  dispatch_all(x.dtype(), [&](auto t) {
    using T = decltype(t);
    const T* p = x.data_ptr<T>();
    bool* po = out.data();
    for (std::size_t i = 0, n = out.size(); i < n; ++i) po[i] = f(p[i]);
  });
  return Tensor(std::move(out));
}

void check_bool(const Tensor& t, std::string_view op, std::string_view what) {
  if (!t.defined()) fail("{}: the {} is undefined", op, what);
  if (t.dtype() != kBool)
    fail("{}: the {} must be a bool tensor (e.g. the result of xg::gt(x, 0)), got {} of shape {}; convert it "
         "with .to(xg::kBool) (nonzero = true)",
         op, what, t.dtype(), shape_str(t.shape()));
}
}  // namespace

Tensor eq(const Tensor& a, const Tensor& b) { return compare_map(a, b, "eq", [](auto x, auto y) { return x == y; }); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare_map(a, b, "ne", [](auto x, auto y) { return x != y; }); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare_map(a, b, "lt", [](auto x, auto y) { return x < y; }); }
Tensor le(const Tensor& a, const Tensor& b) { return compare_map(a, b, "le", [](auto x, auto y) { return x <= y; }); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare_map(a, b, "gt", [](auto x, auto y) { return x > y; }); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare_map(a, b, "ge", [](auto x, auto y) { return x >= y; }); }
Tensor eq(const Tensor& a, double b) { return eq(a, scalar_for(a, b)); }
Tensor ne(const Tensor& a, double b) { return ne(a, scalar_for(a, b)); }
Tensor lt(const Tensor& a, double b) { return lt(a, scalar_for(a, b)); }
Tensor le(const Tensor& a, double b) { return le(a, scalar_for(a, b)); }
Tensor gt(const Tensor& a, double b) { return gt(a, scalar_for(a, b)); }
Tensor ge(const Tensor& a, double b) { return ge(a, scalar_for(a, b)); }
Tensor operator<(const Tensor& a, const Tensor& b) { return lt(a, b); }
Tensor operator<=(const Tensor& a, const Tensor& b) { return le(a, b); }
Tensor operator>(const Tensor& a, const Tensor& b) { return gt(a, b); }
Tensor operator>=(const Tensor& a, const Tensor& b) { return ge(a, b); }
Tensor operator<(const Tensor& a, double b) { return lt(a, b); }
Tensor operator<=(const Tensor& a, double b) { return le(a, b); }
Tensor operator>(const Tensor& a, double b) { return gt(a, b); }
Tensor operator>=(const Tensor& a, double b) { return ge(a, b); }

Tensor isnan(const Tensor& x) {
  return predicate_map(x, [](auto v) {
    if constexpr (std::is_floating_point_v<decltype(v)>) return std::isnan(v);
    else return false;
  });
}
Tensor isinf(const Tensor& x) {
  return predicate_map(x, [](auto v) {
    if constexpr (std::is_floating_point_v<decltype(v)>) return std::isinf(v);
    else return false;
  });
}
Tensor isfinite(const Tensor& x) {
  return predicate_map(x, [](auto v) {
    if constexpr (std::is_floating_point_v<decltype(v)>) return std::isfinite(v);
    else return true;
  });
}
Tensor logical_not(const Tensor& x) { return predicate_map(x, [](auto v) { return !static_cast<bool>(v); }); }
Tensor logical_and(const Tensor& a, const Tensor& b) {
  return compare_map(a, b, "logical_and", [](auto x, auto y) { return static_cast<bool>(x) && static_cast<bool>(y); });
}
Tensor logical_or(const Tensor& a, const Tensor& b) {
  return compare_map(a, b, "logical_or", [](auto x, auto y) { return static_cast<bool>(x) || static_cast<bool>(y); });
}
Tensor logical_xor(const Tensor& a, const Tensor& b) {
  return compare_map(a, b, "logical_xor", [](auto x, auto y) { return static_cast<bool>(x) != static_cast<bool>(y); });
}

Tensor where(const Tensor& cond, const Tensor& a_in, const Tensor& b_in) {
  check_bool(cond, "where", "condition");
  if (!a_in.defined() || !b_in.defined()) fail("where: an input tensor is undefined");
  const Dtype d = detail::result_type(a_in, b_in);
  const Tensor a = a_in.to(d), b = b_in.to(d);
  const Shape out_shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor out;
  {
    NoGradGuard no_grad;
    const Tensor c = expand(cond, out_shape), ea = expand(a, out_shape), eb = expand(b, out_shape);
    out = dispatch_all(d, [&](auto t) {
      using T = decltype(t);
      auto o = xt::xarray<T>::from_shape(out_shape);
      const bool* pc = c.data_ptr<bool>();
      const T* pa = ea.data_ptr<T>();
      const T* pb = eb.data_ptr<T>();
      T* po = o.data();
      for (std::size_t i = 0, n = o.size(); i < n; ++i) po[i] = pc[i] ? pa[i] : pb[i];
      return Tensor(std::move(o));
    });
  }
  return record_op("where", out, {a, b}, [c = cond.detach(), as = a.shape(), bs = b.shape()](const Tensor& g,
                                                                                            const Needs& n) {
    return Grads{n[0] ? sum_to(mul(g, c.to(g.dtype())), as) : Tensor(),
                 n[1] ? sum_to(mul(g, logical_not(c).to(g.dtype())), bs) : Tensor()};
  });
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  check_bool(mask, "masked_fill", "mask");
  if (!x.defined()) fail("masked_fill: the input is undefined");
  if (broadcast_shapes(x.shape(), mask.shape(), "masked_fill") != x.shape())
    fail("masked_fill: the mask of shape {} must broadcast to the input's shape {}", shape_str(mask.shape()),
         shape_str(x.shape()));
  return where(mask, scalar(value, x.dtype()), x);
}

Tensor masked_select(const Tensor& x, const Tensor& mask) {
  check_bool(mask, "masked_select", "mask");
  if (!x.defined()) fail("masked_select: the input is undefined");
  const Shape s = broadcast_shapes(x.shape(), mask.shape(), "masked_select");
  std::vector<std::size_t> picked;  // flat offsets into the broadcast shape
  Tensor ex, em;
  {
    NoGradGuard no_grad;
    ex = expand(x, s);
    em = expand(mask, s);
  }
  const bool* pm = em.data_ptr<bool>();
  for (std::size_t i = 0, n = em.numel(); i < n; ++i)
    if (pm[i]) picked.push_back(i);
  Tensor out = dispatch_all(x.dtype(), [&](auto t) {
    using T = decltype(t);
    auto o = xt::xarray<T>::from_shape({picked.size()});
    const T* px = ex.data_ptr<T>();
    for (std::size_t j = 0; j < picked.size(); ++j) o.data()[j] = px[picked[j]];
    return Tensor(std::move(o));
  });
  return record_op("masked_select", out, {x}, [picked, s, xs = x.shape()](const Tensor& g, const Needs&) {
    Tensor gx = zeros(s, g.dtype());  // each picked element's gradient back at its place, then summed to x
    dispatch(g.dtype(), [&](auto t) {
      using T = decltype(t);
      const T* pg = g.data_ptr<T>();
      T* po = gx.data_ptr<T>();
      for (std::size_t j = 0; j < picked.size(); ++j) po[picked[j]] = pg[j];
    });
    return Grads{sum_to(gx, xs)};
  });
}

bool has_nonfinite(const Tensor& t) {
  if (!t.is_floating_point()) return false;  // integers and bools are always finite
  return dispatch(t.dtype(), [&](auto v) {
    using T = decltype(v);
    const T* p = t.data_ptr<T>();
    for (std::size_t i = 0, n = t.numel(); i < n; ++i)
      if (!std::isfinite(p[i])) return true;
    return false;
  });
}

// ---- Tensor methods that forward to the free functions ----------------------------------------------------
Tensor Tensor::operator-() const { return neg(*this); }
Tensor Tensor::pow(double e) const { return xg::pow(*this, e); }
Tensor Tensor::exp() const { return xg::exp(*this); }
Tensor Tensor::log() const { return xg::log(*this); }
Tensor Tensor::sqrt() const { return xg::sqrt(*this); }
Tensor Tensor::rsqrt() const { return xg::rsqrt(*this); }
Tensor Tensor::abs() const { return xg::abs(*this); }
Tensor Tensor::clamp(std::optional<double> lo, std::optional<double> hi) const { return xg::clamp(*this, lo, hi); }

}  // namespace xg
