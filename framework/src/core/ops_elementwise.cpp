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
void check_same_dtype(const Tensor& a, const Tensor& b, std::string_view op) {
  if (!a.defined() || !b.defined()) fail("{}: an input tensor is undefined", op);
  if (a.dtype() != b.dtype())
    fail("{}: dtype mismatch ({} vs {}) for shapes {} and {}; convert one with .to(xg::k{})", op, a.dtype(),
         b.dtype(), shape_str(a.shape()), shape_str(b.shape()), a.dtype() == kFloat32 ? "Float32" : "Float64");
}
Tensor scalar_like(double v, const Tensor& like) { return scalar(v, like.dtype()); }

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
  return dispatch(a.dtype(), [&](auto t) {
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
  });
}

// The common case where the same generic lambda serves as scalar and xtensor form (+ - * /).
template <class F>
Tensor binary_map(const Tensor& a, const Tensor& b, std::string_view op, F f) {
  return binary_map(a, b, op, f, f);
}

template <class F>
Tensor unary_map(const Tensor& x, F f) {
  return dispatch(x.dtype(), [&](auto t) {
    using T = decltype(t);
    return detail::wrap<T>(f(x.data<T>()));
  });
}

// Applies f(x_i) elementwise with a plain loop into a new tensor of x's shape and dtype. f is called with a
// value of the element type T, so it can use T-typed constants.
template <class F>
Tensor map_elements(const Tensor& x, F f) {
  return dispatch(x.dtype(), [&](auto t) {
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
}  // namespace

// ---- binary ------------------------------------------------------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b) {
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
  Tensor out = binary_map(a, b, "sub", [](const auto& x, const auto& y) { return x - y; });
  if (!any_requires_grad({a, b})) return out;
  return record_op("sub", out, {a, b}, [as = a.shape(), bs = b.shape()](const Tensor& g, const Needs& n) {
    return Grads{n[0] ? sum_to(g, as) : Tensor(), n[1] ? sum_to(neg(g), bs) : Tensor()};
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_map(a, b, "mul", [](const auto& x, const auto& y) { return x * y; });
  return record_op("mul", out, {a, b}, [a = a.detach(), b = b.detach()](const Tensor& g, const Needs& n) {
    return Grads{n[0] ? sum_to(mul(g, b), a.shape()) : Tensor(), n[1] ? sum_to(mul(g, a), b.shape()) : Tensor()};
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
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
  // Scalar forms: a NaN on either side wins, as in PyTorch.
  Tensor out =
      is_max ? binary_map(
                   a, b, name, [](auto x, auto y) { return (x != x || x > y) ? x : y; },
                   [](const auto& x, const auto& y) { return xt::maximum(x, y); })
             : binary_map(
                   a, b, name, [](auto x, auto y) { return (x != x || x < y) ? x : y; },
                   [](const auto& x, const auto& y) { return xt::minimum(x, y); });
  return record_op(name, out, {a, b}, [a = a.detach(), b = b.detach(), is_max](const Tensor& g, const Needs& n) {
    Tensor wins_a = add(is_max ? gt(a, b) : lt(a, b), mul(eq(a, b), detail::scalar_like(0.5, a)));
    return Grads{n[0] ? sum_to(mul(g, wins_a), a.shape()) : Tensor(),
                 n[1] ? sum_to(mul(g, sub(detail::scalar_like(1.0, a), wins_a)), b.shape()) : Tensor()};
  });
}
}  // namespace
Tensor maximum(const Tensor& a, const Tensor& b) { return extremum(a, b, true); }
Tensor minimum(const Tensor& a, const Tensor& b) { return extremum(a, b, false); }

Tensor pow(const Tensor& a, const Tensor& b) {
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
Tensor operator+(const Tensor& a, double b) { return add(a, detail::scalar_like(b, a)); }
Tensor operator-(const Tensor& a, double b) { return sub(a, detail::scalar_like(b, a)); }
Tensor operator*(const Tensor& a, double b) { return mul(a, detail::scalar_like(b, a)); }
Tensor operator/(const Tensor& a, double b) { return div(a, detail::scalar_like(b, a)); }
Tensor operator+(double a, const Tensor& b) { return add(detail::scalar_like(a, b), b); }
Tensor operator-(double a, const Tensor& b) { return sub(detail::scalar_like(a, b), b); }
Tensor operator*(double a, const Tensor& b) { return mul(detail::scalar_like(a, b), b); }
Tensor operator/(double a, const Tensor& b) { return div(detail::scalar_like(a, b), b); }

// ---- unary -------------------------------------------------------------------------------------------------
Tensor neg(const Tensor& x) {
  Tensor out = unary_map(x, [](const auto& a) { return -a; });
  return record_op("neg", out, {x}, [](const Tensor& g, const Needs&) { return Grads{neg(g)}; });
}

Tensor pow(const Tensor& x, double p) {
  Tensor out = unary_map(x, [p](const auto& a) {
    using T = typename std::decay_t<decltype(a)>::value_type;
    return xt::pow(a, static_cast<T>(p));
  });
  return record_op("pow", out, {x}, [x = x.detach(), p](const Tensor& g, const Needs&) {
    return Grads{mul(g, mul(pow(x, p - 1.0), detail::scalar_like(p, x)))};  // p·x^(p-1)
  });
}

Tensor exp(const Tensor& x) {
  Tensor out = unary_map(x, [](const auto& a) { return xt::exp(a); });
  return record_op("exp", out, {x}, [out = out.detach()](const Tensor& g, const Needs&) {
    return Grads{mul(g, out)};  // d exp(x) = exp(x)
  });
}

Tensor log(const Tensor& x) {
  Tensor out = unary_map(x, [](const auto& a) { return xt::log(a); });
  return record_op("log", out, {x}, [x = x.detach()](const Tensor& g, const Needs&) {
    return Grads{div(g, x)};  // d log(x) = 1/x
  });
}

Tensor sqrt(const Tensor& x) {
  Tensor out = unary_map(x, [](const auto& a) { return xt::sqrt(a); });
  return record_op("sqrt", out, {x}, [out = out.detach()](const Tensor& g, const Needs&) {
    return Grads{div(g, mul(out, detail::scalar_like(2, out)))};  // d sqrt(x) = 1/(2 sqrt(x))
  });
}

Tensor rsqrt(const Tensor& x) {
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
  Tensor out = unary_map(x, [](const auto& a) { return xt::abs(a); });
  return record_op("abs", out, {x}, [x = x.detach()](const Tensor& g, const Needs&) {
    // sign(x), 0 at 0
    return Grads{mul(g, map_elements(x, [](auto v) { return static_cast<decltype(v)>((v > 0) - (v < 0)); }))};
  });
}

Tensor clamp(const Tensor& x, std::optional<double> lo, std::optional<double> hi) {
  if (lo && hi && *lo > *hi) fail("clamp: min {} is greater than max {}", *lo, *hi);
  // min(max(x, lo), hi); a NaN stays NaN
  Tensor out = map_elements(x, [lo, hi](auto v) {
    using T = decltype(v);
    const T l = bound_or(lo, -std::numeric_limits<T>::infinity());
    const T h = bound_or(hi, std::numeric_limits<T>::infinity());
    return v < l ? l : (v > h ? h : v);
  });
  return record_op("clamp", out, {x}, [x = x.detach(), lo, hi](const Tensor& g, const Needs&) {
    // 1 where lo <= x <= hi (the bounds included, as in PyTorch), else 0
    Tensor inside = map_elements(x, [lo, hi](auto v) {
      using T = decltype(v);
      const T l = bound_or(lo, -std::numeric_limits<T>::infinity());
      const T h = bound_or(hi, std::numeric_limits<T>::infinity());
      return static_cast<T>(v >= l && v <= h);
    });
    return Grads{mul(g, inside)};
  });
}

// ---- comparisons and where ---------------------------------------------------------------------------------
#define XG_COMPARISON(NAME, SCALAR, EXPR)                                                          \
  Tensor NAME(const Tensor& a, const Tensor& b) {                                                   \
    return binary_map(                                                                              \
        a, b, #NAME, [](auto x, auto y) { return static_cast<decltype(x)>(SCALAR); },               \
        [](const auto& x, const auto& y) {                                                          \
          using T = typename std::decay_t<decltype(x)>::value_type;                                 \
          return xt::cast<T>(EXPR);                                                                 \
        });                                                                                         \
  }
XG_COMPARISON(eq, x == y, xt::equal(x, y))
XG_COMPARISON(ne, x != y, xt::not_equal(x, y))
XG_COMPARISON(lt, x < y, x < y)
XG_COMPARISON(le, x <= y, x <= y)
XG_COMPARISON(gt, x > y, x > y)
XG_COMPARISON(ge, x >= y, x >= y)
#undef XG_COMPARISON
Tensor gt(const Tensor& a, double b) { return gt(a, detail::scalar_like(b, a)); }
Tensor lt(const Tensor& a, double b) { return lt(a, detail::scalar_like(b, a)); }

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  detail::check_same_dtype(a, b, "where");
  detail::check_same_dtype(cond, a, "where");
  const Shape out_shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor out = dispatch(a.dtype(), [&](auto t) {
    using T = decltype(t);
    return detail::wrap<T>(xt::where(xt::not_equal(cond.data<T>(), T(0)), a.data<T>(), b.data<T>()));
  });
  (void)out_shape;
  return record_op("where", out, {a, b}, [c = cond.detach(), as = a.shape(), bs = b.shape()](const Tensor& g,
                                                                                            const Needs& n) {
    Tensor mask = ne(c, detail::scalar_like(0, c));
    return Grads{n[0] ? sum_to(mul(g, mask), as) : Tensor(),
                 n[1] ? sum_to(mul(g, sub(detail::scalar_like(1, mask), mask)), bs) : Tensor()};
  });
}

bool has_nonfinite(const Tensor& t) {
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
