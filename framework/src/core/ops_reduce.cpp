// Reductions over any set of axes (keepdim as in PyTorch). Their backward broadcasts the gradient back.
#include "simd_warnings.h"  // first: silences a GCC 12 intrinsics-header warning (see the file)

#include <algorithm>

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "detail.h"

namespace xg {
using detail::Grads;
using detail::Needs;

namespace detail {
std::vector<std::size_t> normalize_axes(const Dims& axes, const Shape& shape, std::string_view op) {
  std::vector<std::size_t> out;
  if (axes.empty()) {
    for (std::size_t i = 0; i < shape.size(); ++i) out.push_back(i);
    return out;
  }
  for (int a : axes) {
    if (shape.empty()) {  // a 0-d tensor: axis 0/-1 is accepted and reduces nothing
      normalize_axis(a, 0, op, shape);
      continue;
    }
    const std::size_t n = normalize_axis(a, shape.size(), op, shape);
    if (std::find(out.begin(), out.end(), n) != out.end())
      fail("{}: axis {} appears twice in the axes list for shape {}", op, a, shape_str(shape));
    out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Shape keepdim_shape(const Shape& shape, const std::vector<std::size_t>& axes) {
  Shape s = shape;
  for (auto a : axes) s[a] = 1;
  return s;
}

Tensor reshaped_copy(const Tensor& t, const Shape& shape) {
  return std::visit(
      [&](const auto& a) {
        auto b = a;
        b.reshape(shape);
        return Tensor(std::move(b));
      },
      *t.impl()->storage);
}

Shape reduced_shape(const Shape& shape, const std::vector<std::size_t>& axes) {
  Shape s;
  for (std::size_t i = 0; i < shape.size(); ++i)
    if (std::find(axes.begin(), axes.end(), i) == axes.end()) s.push_back(shape[i]);
  return s;
}
}  // namespace detail

namespace {
std::vector<std::ptrdiff_t> signed_shape(const Shape& s) { return {s.begin(), s.end()}; }

// Every sum accumulates in double, whatever the dtype: float32 values are widened to double as they are loaded,
// and the total is rounded to the dtype once at the end. Any order of n-1 additions in double errs by at most
// (n-1) u_d sum|x| (Higham, Accuracy and Stability, eq. 4.4), so for n values
//     |s^ - s| <= u_T |s| [float32 only: the final rounding] + (n-1) u_d sum|x|,   u_f = 2^-24, u_d = 2^-53.
// The bound depends on the element count alone, not on the SIMD width, which only decides which values share a
// lane (docs/ops.md, "Accuracy of reductions"). Contiguous sums run in blocks of kSumBlock values, block totals
// added in order.
constexpr std::size_t kSumBlock = 4096;

// W_d floats widened to one batch<double> (xsimd 8.1's converting load goes through a scalar buffer).
inline xsimd::batch<double> widen_load(const float* p) {
#if defined(__AVX512F__)
  return _mm512_cvtps_pd(_mm256_loadu_ps(p));
#elif defined(__AVX__)
  return _mm256_cvtps_pd(_mm_loadu_ps(p));
#elif defined(__SSE2__)
  return _mm_cvtps_pd(_mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
#else
  alignas(64) double buf[xsimd::batch<double>::size];
  for (std::size_t j = 0; j < xsimd::batch<double>::size; ++j) buf[j] = p[j];
  return xsimd::batch<double>::load_aligned(buf);
#endif
}

inline xsimd::batch<double> load_as_double(const double* p) { return xsimd::batch<double>::load_unaligned(p); }
inline xsimd::batch<double> load_as_double(const float* p) { return widen_load(p); }

// Sum of n <= kSumBlock values (any n for float32) in double lanes.
template <class T>
double block_sum(const T* p, std::size_t n) {
  using B = xsimd::batch<double>;
  constexpr std::size_t W = B::size;
  B a0(0.0), a1(0.0), a2(0.0), a3(0.0);
  std::size_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    a0 += load_as_double(p + i);
    a1 += load_as_double(p + i + W);
    a2 += load_as_double(p + i + 2 * W);
    a3 += load_as_double(p + i + 3 * W);
  }
  for (; i + W <= n; i += W) a0 += load_as_double(p + i);
  double s = xsimd::hadd((a0 + a1) + (a2 + a3));
  for (; i < n; ++i) s += double(p[i]);
  return s;
}

// The sum of p[0..n) in double (rounded to T by the caller).
template <class T>
double flat_sum(const T* p, std::size_t n) {
  if (std::is_same_v<T, float> || n <= kSumBlock) return block_sum(p, n);
  double total = 0;
  for (std::size_t i = 0; i < n; i += kSumBlock) total += block_sum(p + i, std::min(kSumBlock, n - i));
  return total;
}

// Reduces a contiguous row-major array over `axes` into `out` (keepdim layout, pre-filled with the identity).
// Adjacent axes that are all reduced or all kept are merged into groups first, so [N,C,H,W] over {0,2,3}
// becomes three groups R(N) K(C) R(H·W); the innermost group runs as a tight (SIMD) loop.
enum class ReduceOp { Sum, Max, Min };

template <class T>
T combine(ReduceOp op, T a, T b) {
  switch (op) {
    case ReduceOp::Sum: return a + b;
    case ReduceOp::Max: return (b > a || std::isnan(b)) ? b : a;  // NaN propagates, as in PyTorch
    default: return (b < a || std::isnan(b)) ? b : a;
  }
}

// Acc: the type of `out` (double for sums, T for max/min).
template <class T, class Acc>
void reduce_axes(const T* in, const Shape& shape, const std::vector<std::size_t>& axes, Acc* out, ReduceOp op) {
  struct Group {
    std::size_t size;
    bool reduced;
    std::size_t out_stride = 0;
  };
  std::vector<Group> groups;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    const bool r = std::find(axes.begin(), axes.end(), i) != axes.end();
    if (!groups.empty() && groups.back().reduced == r)
      groups.back().size *= shape[i];
    else
      groups.push_back({shape[i], r});
  }
  std::size_t stride = 1;
  for (auto it = groups.rbegin(); it != groups.rend(); ++it)
    if (!it->reduced) {
      it->out_stride = stride;
      stride *= it->size;
    }
  const std::size_t total = numel_of(shape);
  if (total == 0 || groups.empty()) return;
  const Group inner = groups.back();
  const std::size_t outer_count = total / inner.size;
  std::vector<std::size_t> idx(groups.size() - 1, 0);  // multi-index over the outer groups
  std::size_t o = 0;                                   // current output offset
  for (std::size_t block = 0; block < outer_count; ++block) {
    const T* p = in + block * inner.size;
    if (inner.reduced) {
      const Acc v = op == ReduceOp::Sum ? [&] {
        if constexpr (std::is_integral_v<T>) {  // integer sums are exact in int64
          Acc s = 0;
          for (std::size_t i = 0; i < inner.size; ++i) s += Acc(p[i]);
          return s;
        } else {
          return Acc(flat_sum(p, inner.size));
        }
      }() : [&] {
        Acc m = p[0];
        for (std::size_t i = 1; i < inner.size; ++i) m = combine<Acc>(op, m, p[i]);
        return m;
      }();
      out[o] = combine(op, out[o], v);
    } else {
      Acc* q = out + o;
      if (op == ReduceOp::Sum)
        for (std::size_t i = 0; i < inner.size; ++i) q[i] += Acc(p[i]);
      else
        for (std::size_t i = 0; i < inner.size; ++i) q[i] = combine<Acc>(op, q[i], p[i]);
    }
    // advance the multi-index over the outer groups (last one fastest)
    for (std::size_t g = idx.size(); g-- > 0;) {
      o += groups[g].out_stride;
      if (++idx[g] < groups[g].size) break;
      o -= groups[g].out_stride * groups[g].size;
      idx[g] = 0;
    }
  }
}

// Reduces over normalised axes; returns the keepdim shape.
Tensor reduce_keepdim(const Tensor& x, const std::vector<std::size_t>& ax, ReduceOp op) {
  const Shape in = x.shape();
  const Shape kshape = detail::keepdim_shape(in, ax);
  return dispatch_numeric(x.dtype(), [&](auto t) {
    using T = decltype(t);
    constexpr bool inf = std::numeric_limits<T>::has_infinity;
    const T lowest = inf ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::lowest();
    const T highest = inf ? std::numeric_limits<T>::infinity() : std::numeric_limits<T>::max();
    const T init = op == ReduceOp::Sum ? T(0) : op == ReduceOp::Max ? lowest : highest;
    Tensor out = empty(kshape, x.dtype());
    T* o = out.data_ptr<T>();
    std::fill_n(o, out.numel(), init);
    if (std::is_integral_v<T> && op == ReduceOp::Sum) {  // int64 (sum() converts integers first): exact
      reduce_axes(x.data_ptr<T>(), in, ax, o, op);
    } else if (op == ReduceOp::Sum) {  // accumulate in double, round once
      std::vector<double> acc(out.numel(), 0.0);
      reduce_axes(x.data_ptr<T>(), in, ax, acc.data(), op);
      for (std::size_t i = 0; i < acc.size(); ++i) o[i] = static_cast<T>(acc[i]);
    } else {
      reduce_axes(x.data_ptr<T>(), in, ax, o, op);
    }
    return out;
  }, "this reduction");
}
}  // namespace

Tensor sum(const Tensor& x_in, const Dims& axes, bool keepdim) {
  // The sum of integers or bools is int64, as in PyTorch (so a count of true values does not overflow int32).
  const Tensor x = x_in.defined() && !x_in.is_floating_point() && x_in.dtype() != kInt64 ? x_in.to(kInt64) : x_in;
  const Shape in = x.shape();
  const auto ax = detail::normalize_axes(axes, in, "sum");
  Tensor out;
  if (in.empty() && !x.is_floating_point()) {  // a 0-d integer: its own value (nothing to reduce)
    out = detail::reshaped_copy(x, {});
  } else if (ax.size() == in.size() && x.is_floating_point()) {  // full reduction: one SIMD pass
    out = dispatch(x.dtype(), [&](auto t) {
      using T = decltype(t);
      return full(detail::keepdim_shape(in, ax), static_cast<T>(flat_sum(x.data_ptr<T>(), x.numel())), x.dtype());
    });
  } else {
    out = reduce_keepdim(x, ax, ReduceOp::Sum);
  }
  if (!keepdim) out = detail::reshaped_copy(out, detail::reduced_shape(in, ax));
  return record_op("sum", out, {x}, [in, kshape = detail::keepdim_shape(in, ax)](const Tensor& g, const Needs&) {
    return Grads{expand(reshape(g, signed_shape(kshape)), in)};  // every input element gets the output's gradient
  });
}

namespace {
void check_floating(const Tensor& x, std::string_view op) {
  if (x.defined() && !x.is_floating_point())
    fail("{}: the input is {}, and {} needs a floating-point tensor (as in PyTorch, whose error is \"could not "
         "infer output dtype\"); convert it first, e.g. x.to(xg::kFloat32).{}()",
         op, x.dtype(), op, op);
}
}  // namespace

Tensor mean(const Tensor& x, const Dims& axes, bool keepdim) {
  check_floating(x, "mean");
  const Shape in = x.shape();
  const auto ax = detail::normalize_axes(axes, in, "mean");
  std::size_t count = 1;
  for (auto a : ax) count *= in[a];
  if (count == 0) fail("mean: reducing over an empty axis of shape {}", shape_str(in));
  return mul(sum(x, axes, keepdim), detail::scalar_like(1.0 / static_cast<double>(count), x));
}

namespace {
// amax/amin: the gradient goes to the elements equal to the extremum, split evenly among ties.
Tensor extreme(const Tensor& x, const Dims& axes, bool keepdim, bool is_max) {
  const char* name = is_max ? "amax" : "amin";
  const Shape in = x.shape();
  if (x.numel() == 0) fail("{}: cannot reduce an empty tensor of shape {}", name, shape_str(in));
  const auto ax = detail::normalize_axes(axes, in, name);
  Tensor kept;
  if (ax.empty()) {  // a 0-d tensor: nothing to reduce
    kept = x.detach().clone();
  } else {
    kept = reduce_keepdim(x, ax, is_max ? ReduceOp::Max : ReduceOp::Min);
  }
  const Shape kshape = kept.shape();
  Tensor out = keepdim ? kept : detail::reshaped_copy(kept, detail::reduced_shape(in, ax));
  return record_op(name, out, {x}, [x = x.detach(), kept = kept.detach(), kshape, ax](const Tensor& g, const Needs&) {
    const Shape in = x.shape();
    Dims axes(ax.begin(), ax.end());
    Tensor mask = eq(x, kept).to(x.dtype());         // 1 where x is the extremum
    Tensor count = sum(mask, axes, /*keepdim=*/true);  // ties share the gradient
    return Grads{mul(expand(reshape(g, signed_shape(kshape)), in), div(mask, count))};
  });
}
}  // namespace
Tensor amax(const Tensor& x, const Dims& axes, bool keepdim) { return extreme(x, axes, keepdim, true); }
Tensor amin(const Tensor& x, const Dims& axes, bool keepdim) { return extreme(x, axes, keepdim, false); }

Tensor var(const Tensor& x, const Dims& axes, bool unbiased, bool keepdim) {
  check_floating(x, "var");
  const Shape in = x.shape();
  const auto ax = detail::normalize_axes(axes, in, "var");
  std::size_t count = 1;
  for (auto a : ax) count *= in[a];
  if (count == 0 || (unbiased && count < 2))
    fail("var: {} variance over {} element(s) of shape {} is undefined{}", unbiased ? "the unbiased" : "the",
         count, shape_str(in), unbiased ? " (it divides by n-1 = 0); use unbiased=false" : "");
  // Two passes: the mean first, then the mean squared deviation — survives large means (docs/ops.md).
  Tensor d = sub(x, mean(x, axes, /*keepdim=*/true));
  return mul(sum(mul(d, d), axes, keepdim),
             detail::scalar_like(1.0 / static_cast<double>(unbiased ? count - 1 : count), x));
}

Tensor std(const Tensor& x, const Dims& axes, bool unbiased, bool keepdim) {
  return sqrt(var(x, axes, unbiased, keepdim));
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  const auto sz = x.sizes();
  if (std::equal(sz.begin(), sz.end(), shape.begin(), shape.end())) return x;  // nothing was broadcast
  const Shape xs = x.shape();
  if (shape.size() > xs.size()) fail("sum_to: cannot sum shape {} down to {}", shape_str(xs), shape_str(shape));
  const std::size_t lead = xs.size() - shape.size();
  Dims axes;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (i < lead) {
      axes.push_back(static_cast<int>(i));
    } else if (shape[i - lead] == 1 && xs[i] != 1) {
      axes.push_back(static_cast<int>(i));
    } else if (shape[i - lead] != xs[i]) {
      fail("sum_to: cannot sum shape {} down to {}", shape_str(xs), shape_str(shape));
    }
  }
  Tensor s = axes.empty() ? x : sum(x, axes, /*keepdim=*/true);
  const auto ss = s.sizes();
  if (std::equal(ss.begin(), ss.end(), shape.begin(), shape.end())) return s;  // keepdim gave the shape already
  return reshape(s, signed_shape(shape));
}

// ---- arg-reductions, max(dim), topk, sort -------------------------------------------------------------------
namespace {
using detail::Split3;
using detail::split_at;

// Calls f(o, i, first) for every line along the split axis: its elements are first + j·inner, j < mid.
template <class F>
void for_each_line(const Split3& sp, F f) {
  for (std::size_t o = 0; o < sp.outer; ++o)
    for (std::size_t i = 0; i < sp.inner; ++i) f(o, i, o * sp.mid * sp.inner + i);
}

template <class T>
bool is_nan(T v) {
  if constexpr (std::is_floating_point_v<T>) return std::isnan(v);
  else return false;
}

// "a comes before b" in an ascending (or descending) order where NaN is the largest value, as in PyTorch.
template <class T>
bool before(T a, T b, bool descending) {
  if (is_nan(a) || is_nan(b)) return descending ? (is_nan(a) && !is_nan(b)) : (!is_nan(a) && is_nan(b));
  return descending ? a > b : a < b;
}

Tensor arg_extreme(const Tensor& x_in, std::optional<int> axis, bool keepdim, bool is_max) {
  const char* name = is_max ? "argmax" : "argmin";
  if (!x_in.defined()) fail("{}: the input is undefined", name);
  if (x_in.numel() == 0) fail("{}: cannot reduce an empty tensor of shape {}", name, shape_str(x_in.shape()));
  const Tensor x = axis ? x_in : reshape(x_in.detach(), {-1});
  const Shape in = x.shape();
  const std::size_t a = in.empty() ? 0 : axis ? normalize_axis(*axis, in.size(), name, in) : 0;
  const Split3 sp = in.empty() ? Split3{} : split_at(in, a);
  xt::xarray<std::int64_t> out = xt::xarray<std::int64_t>::from_shape({sp.outer * sp.inner});
  dispatch_all(x.dtype(), [&](auto t) {
    using T = decltype(t);
    for_each_line(sp, [&](std::size_t o, std::size_t i, std::size_t first) {
      const T* q = x.data_ptr<T>() + first;
      std::size_t best = 0;
      for (std::size_t j = 1; j < sp.mid; ++j) {  // strictly better only: the first index wins ties
        const T b = q[best * sp.inner], v = q[j * sp.inner];
        if (is_nan(b)) break;  // a NaN wins both argmax and argmin (PyTorch)
        if (is_nan(v) || (is_max ? v > b : v < b)) best = j;
      }
      out.data()[o * sp.inner + i] = static_cast<std::int64_t>(best);
    });
  });
  Shape os;
  if (!axis) {
    os = keepdim ? Shape(x_in.ndim(), 1) : Shape{};
  } else {
    os = in;
    if (!os.empty()) {
      if (keepdim) os[a] = 1;
      else os.erase(os.begin() + static_cast<std::ptrdiff_t>(a));
    }
  }
  out.reshape(os);
  return Tensor(std::move(out));
}
}  // namespace

Tensor argmax(const Tensor& x, std::optional<int> axis, bool keepdim) { return arg_extreme(x, axis, keepdim, true); }
Tensor argmin(const Tensor& x, std::optional<int> axis, bool keepdim) { return arg_extreme(x, axis, keepdim, false); }

std::pair<Tensor, Tensor> max(const Tensor& x, int dim, bool keepdim) {
  Tensor idx = argmax(x, dim, /*keepdim=*/true);
  Tensor values = x.ndim() == 0 ? x.clone() : gather(x, dim, idx);
  if (!keepdim && x.ndim() > 0) return {squeeze(values, dim), squeeze(idx, dim)};
  return {values, idx};
}
std::pair<Tensor, Tensor> min(const Tensor& x, int dim, bool keepdim) {
  Tensor idx = argmin(x, dim, /*keepdim=*/true);
  Tensor values = x.ndim() == 0 ? x.clone() : gather(x, dim, idx);
  if (!keepdim && x.ndim() > 0) return {squeeze(values, dim), squeeze(idx, dim)};
  return {values, idx};
}

namespace {
// The int64 indices that stably sort every line of x along `axis` (keeping the first `k` of each line).
Tensor sort_indices(const Tensor& x, int axis, bool descending, std::size_t k, const char* name) {
  if (!x.defined()) fail("{}: the input is undefined", name);
  if (x.ndim() == 0) return full({}, 0.0, kInt64);
  const Shape in = x.shape();
  const std::size_t a = normalize_axis(axis, in.size(), name, in);
  const Split3 sp = split_at(in, a);
  if (k > sp.mid) fail("{}: k = {} exceeds the size {} of axis {} (shape {})", name, k, sp.mid, axis, shape_str(in));
  Shape os = in;
  os[a] = k;
  xt::xarray<std::int64_t> out = xt::xarray<std::int64_t>::from_shape(os);
  std::vector<std::size_t> order(sp.mid);
  dispatch_all(x.dtype(), [&](auto t) {
    using T = decltype(t);
    for_each_line(sp, [&](std::size_t o, std::size_t i, std::size_t first) {
      const T* q = x.data_ptr<T>() + first;
      for (std::size_t j = 0; j < sp.mid; ++j) order[j] = j;
      std::stable_sort(order.begin(), order.end(),
                       [&](std::size_t u, std::size_t v) { return before(q[u * sp.inner], q[v * sp.inner], descending); });
      for (std::size_t j = 0; j < k; ++j) out.data()[(o * k + j) * sp.inner + i] = static_cast<std::int64_t>(order[j]);
    });
  });
  return Tensor(std::move(out));
}
}  // namespace

std::pair<Tensor, Tensor> topk(const Tensor& x, std::size_t k, int dim, bool largest) {
  Tensor idx = sort_indices(x, dim, largest, k, "topk");
  return {x.ndim() == 0 ? x.clone() : gather(x, dim, idx), idx};
}
std::pair<Tensor, Tensor> sort(const Tensor& x, int dim, bool descending) {
  Tensor idx = sort_indices(x, dim, descending, x.defined() && x.ndim() > 0 ? x.size(dim) : 1, "sort");
  return {x.ndim() == 0 ? x.clone() : gather(x, dim, idx), idx};
}
Tensor argsort(const Tensor& x, int dim, bool descending) { return sort(x, dim, descending).second; }

// ---- methods ----------------------------------------------------------------------------------------------
Tensor Tensor::argmax(std::optional<int> axis, bool keepdim) const { return xg::argmax(*this, axis, keepdim); }
Tensor Tensor::argmin(std::optional<int> axis, bool keepdim) const { return xg::argmin(*this, axis, keepdim); }
Tensor Tensor::sum() const { return xg::sum(*this); }
Tensor Tensor::sum(const Dims& axes, bool keepdim) const { return xg::sum(*this, axes, keepdim); }
Tensor Tensor::mean() const { return xg::mean(*this); }
Tensor Tensor::mean(const Dims& axes, bool keepdim) const { return xg::mean(*this, axes, keepdim); }
Tensor Tensor::max() const { return amax(*this); }
Tensor Tensor::max(const Dims& axes, bool keepdim) const { return amax(*this, axes, keepdim); }
Tensor Tensor::min() const { return amin(*this); }
Tensor Tensor::min(const Dims& axes, bool keepdim) const { return amin(*this, axes, keepdim); }
Tensor Tensor::var(const Dims& axes, bool unbiased, bool keepdim) const { return xg::var(*this, axes, unbiased, keepdim); }
Tensor Tensor::std(const Dims& axes, bool unbiased, bool keepdim) const { return xg::std(*this, axes, unbiased, keepdim); }

}  // namespace xg
