// Shape ops. xgrad tensors are always contiguous, so each of these produces a new contiguous tensor; their
// backward undoes the move (reshape back, inverse permutation, scatter into zeros, sum back).
#include <numeric>

#include <xtensor/xbroadcast.hpp>
#include <xtensor/xmanipulation.hpp>

#include "detail.h"

namespace xg {
using detail::Grads;
using detail::Needs;

namespace {
std::vector<std::ptrdiff_t> signed_shape(const Shape& s) { return {s.begin(), s.end()}; }

using detail::Split3;
using detail::split_at;
}  // namespace

Tensor reshape(const Tensor& x, const std::vector<std::ptrdiff_t>& shape) {
  const Shape in = x.shape();
  Shape out(shape.size());
  std::ptrdiff_t infer = -1;
  std::size_t known = 1;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer >= 0) fail("reshape: only one axis may be -1, got {} for input {}", fmt::join(shape, ","), shape_str(in));
      infer = static_cast<std::ptrdiff_t>(i);
    } else if (shape[i] < 0) {
      fail("reshape: invalid size {} in [{}]", shape[i], fmt::join(shape, ","));
    } else {
      out[i] = static_cast<std::size_t>(shape[i]);
      known *= out[i];
    }
  }
  const std::size_t n = x.numel();
  if (infer >= 0) {
    if (known == 0 || n % known != 0)
      fail("reshape: cannot reshape {} ({} elements) into [{}]", shape_str(in), n, fmt::join(shape, ","));
    out[static_cast<std::size_t>(infer)] = n / known;
  } else if (known != n) {
    fail("reshape: cannot reshape {} ({} elements) into [{}] ({} elements)", shape_str(in), n, fmt::join(shape, ","),
         known);
  }
  if (out == in && !any_requires_grad({x})) return x;
  Tensor result = detail::reshaped_copy(x, out);
  return record_op("reshape", result, {x}, [in](const Tensor& g, const Needs&) {
    return Grads{reshape(g, signed_shape(in))};
  });
}

Tensor flatten(const Tensor& x, int start_axis, int end_axis) {
  const Shape in = x.shape();
  if (in.empty()) return reshape(x, {1});
  const std::size_t s = normalize_axis(start_axis, in.size(), "flatten", in);
  const std::size_t e = normalize_axis(end_axis, in.size(), "flatten", in);
  if (s > e) fail("flatten: start axis {} comes after end axis {} for shape {}", start_axis, end_axis, shape_str(in));
  std::vector<std::ptrdiff_t> out;
  for (std::size_t i = 0; i < s; ++i) out.push_back(static_cast<std::ptrdiff_t>(in[i]));
  std::size_t merged = 1;
  for (std::size_t i = s; i <= e; ++i) merged *= in[i];
  out.push_back(static_cast<std::ptrdiff_t>(merged));
  for (std::size_t i = e + 1; i < in.size(); ++i) out.push_back(static_cast<std::ptrdiff_t>(in[i]));
  return reshape(x, out);
}

Tensor permute(const Tensor& x, const Dims& order) {
  const Shape in = x.shape();
  if (order.size() != in.size())
    fail("permute: got {} axes [{}] for a tensor of shape {} (ndim {})", order.size(), fmt::join(order, ","),
         shape_str(in), in.size());
  std::vector<std::size_t> perm, inverse(in.size());
  std::vector<bool> seen(in.size(), false);
  for (int a : order) {
    const std::size_t p = normalize_axis(a, in.size(), "permute", in);
    if (seen[p]) fail("permute: axis {} repeated in [{}]", a, fmt::join(order, ","));
    seen[p] = true;
    perm.push_back(p);
  }
  for (std::size_t i = 0; i < perm.size(); ++i) inverse[perm[i]] = i;
  Tensor out = dispatch_all(x.dtype(), [&](auto t) {
    using T = decltype(t);
    return detail::wrap<T>(xt::transpose(x.data<T>(), perm));
  });
  return record_op("permute", out, {x}, [inverse](const Tensor& g, const Needs&) {
    return Grads{permute(g, Dims(inverse.begin(), inverse.end()))};
  });
}

Tensor transpose(const Tensor& x, int a, int b) {
  const Shape in = x.shape();
  if (in.size() < 2 && (a == 0 || a == -1) && (b == 0 || b == -1)) return x;
  const std::size_t pa = normalize_axis(a, in.size(), "transpose", in);
  const std::size_t pb = normalize_axis(b, in.size(), "transpose", in);
  Dims order(in.size());
  std::iota(order.begin(), order.end(), 0);
  std::swap(order[pa], order[pb]);
  return permute(x, order);
}

Tensor squeeze(const Tensor& x) {
  std::vector<std::ptrdiff_t> out;
  for (auto d : x.shape())
    if (d != 1) out.push_back(static_cast<std::ptrdiff_t>(d));
  return reshape(x, out);
}

Tensor squeeze(const Tensor& x, int axis) {
  const Shape in = x.shape();
  if (in.empty()) return x;
  const std::size_t a = normalize_axis(axis, in.size(), "squeeze", in);
  if (in[a] != 1) return x;  // PyTorch: squeezing a non-1 axis is a no-op
  std::vector<std::ptrdiff_t> out(in.begin(), in.end());
  out.erase(out.begin() + static_cast<std::ptrdiff_t>(a));
  return reshape(x, out);
}

Tensor unsqueeze(const Tensor& x, int axis) {
  const Shape in = x.shape();
  // valid axes: -(ndim+1) .. ndim
  const std::size_t a = normalize_axis(axis, in.size() + 1, "unsqueeze", in);
  std::vector<std::ptrdiff_t> out(in.begin(), in.end());
  out.insert(out.begin() + static_cast<std::ptrdiff_t>(a), 1);
  return reshape(x, out);
}

Tensor expand(const Tensor& x, const Shape& shape) {
  const Shape in = x.shape();
  if (in == shape) return x;
  bool ok = shape.size() >= in.size();
  if (ok) {
    const std::size_t lead = shape.size() - in.size();
    for (std::size_t i = 0; i < in.size(); ++i)
      if (in[i] != 1 && in[i] != shape[lead + i]) ok = false;
  }
  if (!ok) fail("expand: cannot expand shape {} to {}", shape_str(in), shape_str(shape));
  Tensor out = dispatch_all(x.dtype(), [&](auto t) {
    using T = decltype(t);
    const auto& xa = x.data<T>();
    // Fast paths: one element (the gradient of a full sum), or a per-channel [1, C, 1, 1], a row or a column.
    const auto k = xa.size() == 1 ? detail::BlockBroadcast{1, 1, numel_of(shape)} : detail::block_broadcast(shape, in);
    if (!k) return detail::wrap<T>(xt::broadcast(xa, shape));
    auto o = xt::xarray<T>::from_shape(shape);
    T* po = o.data();
    for (std::size_t i = 0; i < k->outer; ++i)
      for (std::size_t m = 0; m < k->mid; ++m, po += k->inner) std::fill(po, po + k->inner, xa.data()[m]);
    return Tensor(std::move(o));
  });
  return record_op("expand", out, {x}, [in](const Tensor& g, const Needs&) { return Grads{sum_to(g, in)}; });
}

namespace {
// Copies rows of a [outer, mid, inner] layout: dst row j <- src row (start + j·step), for `count` rows
// (scatter=true: the reverse direction, accumulating).
template <class T>
void strided_rows(const T* src, T* dst, const Split3& sp, std::size_t start, std::size_t step, std::size_t count,
                  bool scatter) {
  for (std::size_t o = 0; o < sp.outer; ++o)
    for (std::size_t j = 0; j < count; ++j) {
      const std::size_t big = (o * sp.mid + start + j * step) * sp.inner, small = (o * count + j) * sp.inner;
      if (scatter)
        std::copy_n(src + small, sp.inner, dst + big);
      else
        std::copy_n(src + big, sp.inner, dst + small);
    }
}
}  // namespace

Tensor slice(const Tensor& x, int axis, std::ptrdiff_t start, std::ptrdiff_t end, std::ptrdiff_t step) {
  const Shape in = x.shape();
  if (in.empty()) fail("slice: cannot slice a 0-d tensor");
  const std::size_t a = normalize_axis(axis, in.size(), "slice", in);
  if (step <= 0) fail("slice: step must be positive, got {}", step);
  const auto n = static_cast<std::ptrdiff_t>(in[a]);
  auto clampi = [n](std::ptrdiff_t v) { return std::clamp(v < 0 ? v + n : v, std::ptrdiff_t{0}, n); };
  const std::ptrdiff_t s = clampi(start), e = std::max(clampi(end), s);
  const auto first = static_cast<std::size_t>(s), st = static_cast<std::size_t>(step);
  const std::size_t count = static_cast<std::size_t>((e - s + step - 1) / step);
  const Split3 sp = split_at(in, a);
  Shape out_shape = in;
  out_shape[a] = count;
  Tensor out = zeros(out_shape, x.dtype());
  dispatch_all(x.dtype(), [&](auto t) {
    using T = decltype(t);
    strided_rows(x.data_ptr<T>(), out.data_ptr<T>(), sp, first, st, count, false);
  });
  return record_op("slice", out, {x}, [in, sp, first, st, count](const Tensor& g, const Needs&) {
    Tensor gx = zeros(in, g.dtype());  // scatter the gradient back into the sliced positions
    dispatch(g.dtype(), [&](auto t) {
      using T = decltype(t);
      strided_rows(g.data_ptr<T>(), gx.data_ptr<T>(), sp, first, st, count, true);
    });
    return Grads{gx};
  });
}

Tensor narrow(const Tensor& x, int axis, std::size_t start, std::size_t length) {
  const Shape in = x.shape();
  if (in.empty()) fail("narrow: cannot narrow a 0-d tensor");
  const std::size_t a = normalize_axis(axis, in.size(), "narrow", in);
  if (start + length > in[a])
    fail("narrow: start {} + length {} exceeds size {} of axis {} (shape {})", start, length, in[a], axis,
         shape_str(in));
  return slice(x, axis, static_cast<std::ptrdiff_t>(start), static_cast<std::ptrdiff_t>(start + length));
}

Tensor index_select(const Tensor& x, int axis, const std::vector<std::size_t>& index) {
  const Shape in = x.shape();
  if (in.empty()) fail("index_select: cannot index a 0-d tensor");
  const std::size_t a = normalize_axis(axis, in.size(), "index_select", in);
  for (auto i : index)
    if (i >= in[a])
      fail("index_select: index {} is out of range for axis {} of size {} (shape {})", i, axis, in[a], shape_str(in));
  const Split3 sp = split_at(in, a);
  Shape out_shape = in;
  out_shape[a] = index.size();
  Tensor out = zeros(out_shape, x.dtype());
  dispatch_all(x.dtype(), [&](auto t) {
    using T = decltype(t);
    const T* src = x.data_ptr<T>();
    T* dst = out.data_ptr<T>();
    for (std::size_t o = 0; o < sp.outer; ++o)
      for (std::size_t j = 0; j < index.size(); ++j)
        std::copy_n(src + (o * sp.mid + index[j]) * sp.inner, sp.inner, dst + (o * index.size() + j) * sp.inner);
  });
  return record_op("index_select", out, {x}, [in, a, index, sp](const Tensor& g, const Needs&) {
    Tensor gx = zeros(in, g.dtype());  // repeated indices add up
    dispatch(g.dtype(), [&](auto t) {
      using T = decltype(t);
      const T* src = g.data_ptr<T>();
      T* dst = gx.data_ptr<T>();
      for (std::size_t o = 0; o < sp.outer; ++o)
        for (std::size_t j = 0; j < index.size(); ++j) {
          const T* s = src + (o * index.size() + j) * sp.inner;
          T* d = dst + (o * sp.mid + index[j]) * sp.inner;
          for (std::size_t k = 0; k < sp.inner; ++k) d[k] += s[k];
        }
    });
    return Grads{gx};
  });
}

namespace {
// The entries of an int64/int32 index tensor in row-major order; a negative entry is an error (the callers
// check the upper bound against the axis they index).
std::vector<std::size_t> index_values(const Tensor& index, std::string_view op) {
  if (!index.defined()) fail("{}: the index tensor is undefined", op);
  if (!is_integral(index.dtype()))
    fail("{}: the index must be an int64 (or int32) tensor, got {}; convert it with .to(xg::kInt64)", op,
         index.dtype());
  std::vector<std::size_t> out(index.numel());
  dispatch_numeric(index.dtype(), [&](auto t) {
    using T = decltype(t);
    if constexpr (std::is_integral_v<T>) {
      const T* p = index.data_ptr<T>();
      for (std::size_t i = 0; i < out.size(); ++i) {
        if (p[i] < 0) fail("{}: index {} (entry {}) is negative; indices must be >= 0", op, p[i], i);
        out[i] = static_cast<std::size_t>(p[i]);
      }
    }
  });
  return out;
}

// For gather/scatter_add: walks every position of `index` (shape ishape) and calls f(index_pos, self_pos) where
// self_pos is the flat offset into a tensor of shape `self` at the same coordinates except coordinate `dim`,
// which is the index value there (checked against self[dim]).
template <class F>
void for_each_indexed(const Shape& ishape, const std::vector<std::size_t>& idx, const Shape& self, std::size_t dim,
                      std::string_view op, F f) {
  const std::size_t nd = ishape.size();
  std::vector<std::size_t> stride(nd, 1), coord(nd, 0);
  for (std::size_t k = nd; k-- > 1;) stride[k - 1] = stride[k] * self[k];
  for (std::size_t i = 0; i < idx.size(); ++i) {
    if (idx[i] >= self[dim])
      fail("{}: index {} is out of range for axis {} of size {} (shape {})", op, idx[i], dim, self[dim],
           shape_str(self));
    std::size_t off = 0;
    for (std::size_t k = 0; k < nd; ++k) off += (k == dim ? idx[i] : coord[k]) * stride[k];
    f(i, off);
    for (std::size_t k = nd; k-- > 0;) {  // next coordinate of index, the last axis fastest
      if (++coord[k] < ishape[k]) break;
      coord[k] = 0;
    }
  }
}

std::size_t check_gather_shapes(const Shape& self, const Shape& ishape, int dim, std::string_view op,
                                std::string_view other) {
  if (self.empty()) fail("{}: cannot index a 0-d tensor", op);
  const std::size_t d = normalize_axis(dim, self.size(), op, self);
  if (ishape.size() != self.size())
    fail("{}: the index has {} axes (shape {}) but the {} has {} (shape {}); they need the same number", op,
         ishape.size(), shape_str(ishape), other, self.size(), shape_str(self));
  for (std::size_t k = 0; k < self.size(); ++k)
    if (k != d && ishape[k] > self[k])
      fail("{}: the index's size {} on axis {} exceeds the {}'s size {} (index shape {}, {} shape {})", op,
           ishape[k], k, other, self[k], shape_str(ishape), other, shape_str(self));
  return d;
}
}  // namespace

Tensor index_select(const Tensor& x, int axis, const Tensor& index) {
  if (index.defined() && index.ndim() > 1)
    fail("index_select: the index must be 1-d, got shape {}", shape_str(index.shape()));
  return index_select(x, axis, index_values(index, "index_select"));
}

Tensor gather(const Tensor& input, int dim, const Tensor& index) {
  if (!input.defined()) fail("gather: the input is undefined");
  const Shape in = input.shape(), is = index.defined() ? index.shape() : Shape{};
  const std::size_t d = check_gather_shapes(in, is, dim, "gather", "input");
  const auto idx = index_values(index, "gather");
  std::vector<std::size_t> src(idx.size());
  for_each_indexed(is, idx, in, d, "gather", [&](std::size_t i, std::size_t off) { src[i] = off; });
  Tensor out = dispatch_all(input.dtype(), [&](auto t) {
    using T = decltype(t);
    auto o = xt::xarray<T>::from_shape(is);
    const T* p = input.data_ptr<T>();
    for (std::size_t i = 0; i < src.size(); ++i) o.data()[i] = p[src[i]];
    return Tensor(std::move(o));
  });
  // d/dinput: each output's gradient added at the element it was read from (scatter_add into zeros).
  return record_op("gather", out, {input}, [in, src](const Tensor& g, const Needs&) {
    Tensor gx = zeros(in, g.dtype());
    dispatch(g.dtype(), [&](auto t) {
      using T = decltype(t);
      const T* pg = g.data_ptr<T>();
      T* po = gx.data_ptr<T>();
      for (std::size_t i = 0; i < src.size(); ++i) po[src[i]] += pg[i];
    });
    return Grads{gx};
  });
}

Tensor scatter_add(const Tensor& input, int dim, const Tensor& index, const Tensor& src) {
  if (!input.defined() || !src.defined()) fail("scatter_add: an input tensor is undefined");
  detail::check_same_dtype(input, src, "scatter_add");
  const Shape in = input.shape(), is = index.defined() ? index.shape() : Shape{}, ss = src.shape();
  const std::size_t d = check_gather_shapes(in, is, dim, "scatter_add", "input");
  check_gather_shapes(ss, is, dim, "scatter_add", "src");
  for (std::size_t k = 0; k < is.size(); ++k)
    if (k == d && is[k] > ss[k])
      fail("scatter_add: the index's size {} on axis {} exceeds src's size {}", is[k], k, ss[k]);
  const auto idx = index_values(index, "scatter_add");
  std::vector<std::size_t> dst(idx.size()), from(idx.size());
  for_each_indexed(is, idx, in, d, "scatter_add", [&](std::size_t i, std::size_t off) { dst[i] = off; });
  {  // the element of src each index entry adds: same coordinates in src's shape
    const std::size_t nd = is.size();
    std::vector<std::size_t> stride(nd, 1), coord(nd, 0);
    for (std::size_t k = nd; k-- > 1;) stride[k - 1] = stride[k] * ss[k];
    for (std::size_t i = 0; i < idx.size(); ++i) {
      std::size_t off = 0;
      for (std::size_t k = 0; k < nd; ++k) off += coord[k] * stride[k];
      from[i] = off;
      for (std::size_t k = nd; k-- > 0;) {
        if (++coord[k] < is[k]) break;
        coord[k] = 0;
      }
    }
  }
  Tensor out = dispatch_numeric(input.dtype(), [&](auto t) {
    using T = decltype(t);
    auto o = xt::xarray<T>(input.data<T>());
    const T* ps = src.data_ptr<T>();
    for (std::size_t i = 0; i < dst.size(); ++i) o.data()[dst[i]] += ps[from[i]];
    return Tensor(std::move(o));
  }, "scatter_add");
  // d/dinput = G; d/dsrc[j] = G at the element src[j] was added to (a gather of G), 0 where src was not read.
  return record_op("scatter_add", out, {input, src}, [dst, from, ss](const Tensor& g, const Needs& n) {
    Tensor gs;
    if (n[1]) {
      gs = zeros(ss, g.dtype());
      dispatch(g.dtype(), [&](auto t) {
        using T = decltype(t);
        const T* pg = g.data_ptr<T>();
        T* po = gs.data_ptr<T>();
        for (std::size_t i = 0; i < dst.size(); ++i) po[from[i]] = pg[dst[i]];
      });
    }
    return Grads{n[0] ? g : Tensor(), gs};
  });
}

Tensor cat(const std::vector<Tensor>& xs, int axis) {
  if (xs.empty()) fail("cat: needs at least one tensor");
  const Shape first = xs[0].shape();
  if (first.empty()) fail("cat: cannot concatenate 0-d tensors; use stack");
  const std::size_t a = normalize_axis(axis, first.size(), "cat", first);
  Shape out_shape = first;
  out_shape[a] = 0;
  std::vector<std::size_t> sizes;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    detail::check_same_dtype(xs[0], xs[i], "cat");
    const Shape s = xs[i].shape();
    bool ok = s.size() == first.size();
    for (std::size_t d = 0; ok && d < s.size(); ++d)
      if (d != a && s[d] != first[d]) ok = false;
    if (!ok)
      fail("cat: tensor {} has shape {} but tensor 0 has shape {}; all sizes except axis {} must match", i,
           shape_str(s), shape_str(first), axis);
    sizes.push_back(s[a]);
    out_shape[a] += s[a];
  }
  Tensor out = zeros(out_shape, xs[0].dtype());
  const Split3 sp = split_at(out_shape, a);
  dispatch_all(out.dtype(), [&](auto t) {
    using T = decltype(t);
    T* dst = out.data_ptr<T>();
    std::size_t offset = 0;
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const T* src = xs[i].data_ptr<T>();
      const std::size_t run = sizes[i] * sp.inner;
      for (std::size_t o = 0; o < sp.outer; ++o)
        std::copy_n(src + o * run, run, dst + o * sp.mid * sp.inner + offset * sp.inner);
      offset += sizes[i];
    }
  });
  return record_op("cat", out, xs, [a, sizes](const Tensor& g, const Needs& n) {
    Grads grads(sizes.size());
    std::size_t offset = 0;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      if (n[i]) grads[i] = narrow(g, static_cast<int>(a), offset, sizes[i]);
      offset += sizes[i];
    }
    return grads;
  });
}

Tensor stack(const std::vector<Tensor>& xs, int axis) {
  if (xs.empty()) fail("stack: needs at least one tensor");
  const Shape first = xs[0].shape();
  std::vector<Tensor> us;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (xs[i].shape() != first)
      fail("stack: tensor {} has shape {} but tensor 0 has shape {}; stack needs equal shapes", i,
           shape_str(xs[i].shape()), shape_str(first));
    us.push_back(unsqueeze(xs[i], axis));
  }
  return cat(us, axis);
}

// ---- methods ------------------------------------------------------------------------------------------------
Tensor Tensor::reshape(const std::vector<std::ptrdiff_t>& s) const { return xg::reshape(*this, s); }
Tensor Tensor::view(const std::vector<std::ptrdiff_t>& s) const { return xg::reshape(*this, s); }
Tensor Tensor::flatten(int s, int e) const { return xg::flatten(*this, s, e); }
Tensor Tensor::transpose(int a, int b) const { return xg::transpose(*this, a, b); }
Tensor Tensor::permute(const Dims& o) const { return xg::permute(*this, o); }
Tensor Tensor::squeeze() const { return xg::squeeze(*this); }
Tensor Tensor::squeeze(int a) const { return xg::squeeze(*this, a); }
Tensor Tensor::unsqueeze(int a) const { return xg::unsqueeze(*this, a); }
Tensor Tensor::expand(const Shape& s) const { return xg::expand(*this, s); }
Tensor Tensor::narrow(int a, std::size_t s, std::size_t l) const { return xg::narrow(*this, a, s, l); }
Tensor Tensor::slice(int a, std::ptrdiff_t s, std::ptrdiff_t e, std::ptrdiff_t st) const {
  return xg::slice(*this, a, s, e, st);
}
Tensor Tensor::index_select(int a, const std::vector<std::size_t>& i) const { return xg::index_select(*this, a, i); }
Tensor Tensor::index_select(int a, const Tensor& i) const { return xg::index_select(*this, a, i); }

}  // namespace xg
