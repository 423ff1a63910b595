// max_pool2d and avg_pool2d as recorded ops with direct loops (their modules are in layers/).
//
// Output pixel (i, j) of a plane looks at the window of input rows i·sh - ph .. i·sh - ph + kH - 1 and
// columns j·sw - pw .. j·sw - pw + kW - 1, clipped to the image (the padding is -inf for max, 0 for mean).
//   max:  y = max over the window; backward sends dy to the position of the max (saved in forward).
//   mean: y = Σ window / d with d = kH·kW (count_include_pad) or the number of real pixels; backward adds
//         dy/d to every pixel of the window.
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

#include "xgrad/autograd.h"
#include "xgrad/ops.h"

namespace xg {

namespace {

struct PoolGeometry {
  std::size_t planes, H, W;  // planes = N·C
  std::size_t kh, kw, sh, sw, ph, pw;
  std::size_t Ho, Wo;
  // The clipped window of output pixel (i, j): rows [r0, r1), columns [c0, c1).
  std::size_t row_begin(std::size_t i) const { return i * sh >= ph ? i * sh - ph : 0; }
  std::size_t row_end(std::size_t i) const { return std::min(i * sh + kh - ph, H); }  // i·sh + kh > ph always
  std::size_t col_begin(std::size_t j) const { return j * sw >= pw ? j * sw - pw : 0; }
  std::size_t col_end(std::size_t j) const { return std::min(j * sw + kw - pw, W); }
};

PoolGeometry pool_geometry(const char* op, const Tensor& x, Size2 kernel, std::optional<Size2> stride_opt,
                           Size2 padding) {
  if (!x.defined()) fail("{}: the input is undefined", op);
  const Shape xs = x.shape();
  if (xs.size() != 4) fail("{}: input must be [N, C, H, W], got shape {}", op, shape_str(xs));
  const Size2 stride = stride_opt.value_or(kernel);
  if (kernel.h == 0 || kernel.w == 0) fail("{}: kernel_size must be >= 1, got {}", op, to_string(kernel));
  if (stride.h == 0 || stride.w == 0) fail("{}: stride must be >= 1, got {}", op, to_string(stride));
  if (2 * padding.h > kernel.h || 2 * padding.w > kernel.w)
    fail("{}: padding {} must be at most half the kernel size {}", op, to_string(padding), to_string(kernel));
  if (xs[2] + 2 * padding.h < kernel.h || xs[3] + 2 * padding.w < kernel.w)
    fail("{}: the kernel {} is larger than the padded input (input {}, padding {})", op, to_string(kernel),
         shape_str(xs), to_string(padding));
  PoolGeometry g{xs[0] * xs[1], xs[2], xs[3], kernel.h, kernel.w, stride.h, stride.w, padding.h, padding.w, 0, 0};
  g.Ho = (g.H + 2 * g.ph - g.kh) / g.sh + 1;
  g.Wo = (g.W + 2 * g.pw - g.kw) / g.sw + 1;
  return g;
}

Shape pooled_shape(const Tensor& x, const PoolGeometry& g) {
  const Shape xs = x.shape();
  return {xs[0], xs[1], g.Ho, g.Wo};
}

// y = window max, argmax[k] = flat index (r·W + c) inside the plane of the winner.
template <class T>
void max_pool_forward(const T* x, T* y, std::uint32_t* argmax, const PoolGeometry& g) {
  for (std::size_t pl = 0; pl < g.planes; ++pl) {
    const T* xp = x + pl * g.H * g.W;
    for (std::size_t i = 0; i < g.Ho; ++i)
      for (std::size_t j = 0; j < g.Wo; ++j) {
        const std::size_t r0 = g.row_begin(i), r1 = g.row_end(i), c0 = g.col_begin(j), c1 = g.col_end(j);
        std::size_t best = r0 * g.W + c0;
        T m = xp[best];
        for (std::size_t r = r0; r < r1; ++r)
          for (std::size_t c = c0; c < c1; ++c) {
            const T v = xp[r * g.W + c];
            if (v > m || std::isnan(v)) {  // strict >: the first max wins ties; NaN propagates (as PyTorch)
              m = v;
              best = r * g.W + c;
            }
          }
        const std::size_t k = (pl * g.Ho + i) * g.Wo + j;
        y[k] = m;
        argmax[k] = static_cast<std::uint32_t>(best);
      }
  }
}

// c ? a : b computed on the bits, without a branch. Written with ?: on floats, GCC emits branches, and in the
// 2×2 loops below which pixel wins is unpredictable on real data (the branchy loops were about 2× slower).
template <class T>
T select_bits(bool c, T a, T b) {
  using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  const U mask = U(0) - U(c);  // all ones if c
  return std::bit_cast<T>((std::bit_cast<U>(a) & mask) | (std::bit_cast<U>(b) & ~mask));
}

// One step of the max scan: candidate v at window offset `off` replaces the running max m (and its offset
// `at`) if v > m or v is NaN — the general loop's rule.
template <class T>
void max_pool_pick(T v, std::uint32_t off, T& m, std::uint32_t& at) {
  const bool wins = (v > m) | (v != v);  // v != v: NaN
  m = select_bits(wins, v, m);
  at = select_bits(wins, off, at);
}

// The common 2×2, stride-2, unpadded case (the CNN's pool) without the window bookkeeping: same results.
// One output row from input rows r0 (top) and r1, each window scanned in row-major order as the general loop
// scans it; the loop vectorises. `top` is the flat index of r0[0] in the plane.
template <class T>
void max_pool_row_2x2(const T* __restrict r0, const T* __restrict r1, T* __restrict yr, std::uint32_t* __restrict ar,
                      std::size_t Wo, std::uint32_t W, std::uint32_t top) {
  for (std::size_t j = 0; j < Wo; ++j) {
    T m = r0[2 * j];
    std::uint32_t at = 0;  // the winner's offset from the window's top-left pixel: 0, 1, W or W + 1
    max_pool_pick(r0[2 * j + 1], 1, m, at);
    max_pool_pick(r1[2 * j], W, m, at);
    max_pool_pick(r1[2 * j + 1], W + 1, m, at);
    yr[j] = m;
    ar[j] = top + 2 * static_cast<std::uint32_t>(j) + at;
  }
}

// Its backward when the windows tile the plane: writes both input rows r0, r1 of one output row completely.
template <class T>
void max_pool_backward_row_2x2(const T* __restrict dyr, const std::uint32_t* __restrict ar, T* __restrict r0,
                               T* __restrict r1, std::size_t Wo, std::uint32_t W, std::uint32_t top) {
  for (std::size_t j = 0; j < Wo; ++j) {
    const std::uint32_t at = ar[j] - top - 2 * static_cast<std::uint32_t>(j);  // 0, 1, W or W + 1
    const T d = dyr[j];
    r0[2 * j] = select_bits(at == 0, d, T(0));
    r0[2 * j + 1] = select_bits(at == 1, d, T(0));
    r1[2 * j] = select_bits(at == W, d, T(0));
    r1[2 * j + 1] = select_bits(at == W + 1, d, T(0));
  }
}

template <class T>
void max_pool_forward_2x2(const T* x, T* y, std::uint32_t* argmax, const PoolGeometry& g) {
  for (std::size_t pl = 0; pl < g.planes; ++pl) {
    const T* xp = x + pl * g.H * g.W;
    for (std::size_t i = 0; i < g.Ho; ++i) {
      const std::size_t out = (pl * g.Ho + i) * g.Wo;
      max_pool_row_2x2(xp + 2 * i * g.W, xp + (2 * i + 1) * g.W, y + out, argmax + out, g.Wo,
                       static_cast<std::uint32_t>(g.W), static_cast<std::uint32_t>(2 * i * g.W));
    }
  }
}

template <class T>
void avg_pool_forward(const T* x, T* y, const PoolGeometry& g, bool count_include_pad) {
  for (std::size_t pl = 0; pl < g.planes; ++pl) {
    const T* xp = x + pl * g.H * g.W;
    for (std::size_t i = 0; i < g.Ho; ++i)
      for (std::size_t j = 0; j < g.Wo; ++j) {
        const std::size_t r0 = g.row_begin(i), r1 = g.row_end(i), c0 = g.col_begin(j), c1 = g.col_end(j);
        T s = 0;
        for (std::size_t r = r0; r < r1; ++r)
          for (std::size_t c = c0; c < c1; ++c) s += xp[r * g.W + c];
        const std::size_t d = count_include_pad ? g.kh * g.kw : (r1 - r0) * (c1 - c0);
        y[(pl * g.Ho + i) * g.Wo + j] = s / static_cast<T>(d);
      }
  }
}

template <class T>
void avg_pool_backward(const T* dy, T* dx, const PoolGeometry& g, bool count_include_pad) {
  for (std::size_t pl = 0; pl < g.planes; ++pl) {
    T* dxp = dx + pl * g.H * g.W;
    for (std::size_t i = 0; i < g.Ho; ++i)
      for (std::size_t j = 0; j < g.Wo; ++j) {
        const std::size_t r0 = g.row_begin(i), r1 = g.row_end(i), c0 = g.col_begin(j), c1 = g.col_end(j);
        const std::size_t d = count_include_pad ? g.kh * g.kw : (r1 - r0) * (c1 - c0);
        const T share = dy[(pl * g.Ho + i) * g.Wo + j] / static_cast<T>(d);
        for (std::size_t r = r0; r < r1; ++r)
          for (std::size_t c = c0; c < c1; ++c) dxp[r * g.W + c] += share;
      }
  }
}

}  // namespace

namespace {
// max_pool2d's forward and node; `winners`, if given, receives the argmax array (plane-flat positions).
Tensor max_pool2d_impl(const Tensor& x, Size2 kernel, std::optional<Size2> stride, Size2 padding,
                       std::shared_ptr<std::uint32_t[]>* winners);
}  // namespace

Tensor max_pool2d(const Tensor& x, Size2 kernel, std::optional<Size2> stride, Size2 padding) {
  return max_pool2d_impl(x, kernel, stride, padding, nullptr);
}

std::pair<Tensor, Tensor> max_pool2d_with_indices(const Tensor& x, Size2 kernel, std::optional<Size2> stride,
                                                  Size2 padding) {
  std::shared_ptr<std::uint32_t[]> winners;
  Tensor y = max_pool2d_impl(x, kernel, stride, padding, &winners);
  auto idx = xt::xarray<std::int64_t>::from_shape(y.shape());
  for (std::size_t k = 0; k < idx.size(); ++k) idx.data()[k] = winners[k];  // the forward's own argmax
  return {y, Tensor(std::move(idx))};
}

Tensor max_unpool2d(const Tensor& x, const Tensor& indices, Size2 kernel, std::optional<Size2> stride_opt,
                    Size2 padding, std::optional<Size2> output_size) {
  const char* op = "max_unpool2d";
  if (!x.defined() || !indices.defined()) fail("{}: an input is undefined", op);
  const Shape xs = x.shape();
  if (xs.size() != 4) fail("{}: input must be [N, C, Ho, Wo], got shape {}", op, shape_str(xs));
  if (indices.shape() != xs)
    fail("{}: indices of shape {} must have the input's shape {}", op, shape_str(indices.shape()), shape_str(xs));
  if (indices.dtype() != kInt64)
    fail("{}: indices must be int64 (from max_pool2d_with_indices), got {}", op, indices.dtype());
  const Size2 stride = stride_opt.value_or(kernel);
  const Size2 out = output_size.value_or(Size2((xs[2] - 1) * stride.h + kernel.h - 2 * padding.h,
                                               (xs[3] - 1) * stride.w + kernel.w - 2 * padding.w));
  const std::size_t planes = xs[0] * xs[1], hw = out.h * out.w, per = xs[2] * xs[3];
  const std::int64_t* pi = indices.data_ptr<std::int64_t>();
  for (std::size_t k = 0; k < planes * per; ++k)
    if (pi[k] < 0 || static_cast<std::size_t>(pi[k]) >= hw)
      fail("{}: index {} (entry {}) is outside the output plane of {}x{} = {} pixels", op, pi[k], k, out.h, out.w, hw);
  Tensor y = zeros({xs[0], xs[1], out.h, out.w}, x.dtype());
  dispatch(x.dtype(), [&](auto t) {
    using T = decltype(t);
    const T* px = x.data_ptr<T>();
    T* py = y.data_ptr<T>();
    for (std::size_t pl = 0; pl < planes; ++pl)
      for (std::size_t k = 0; k < per; ++k) py[pl * hw + pi[pl * per + k]] = px[pl * per + k];
  });
  return record_op(op, y, {x}, [idx = indices, planes, hw, per, xs](const Tensor& g, const std::vector<bool>&) {
    // dx[pl, k] = G[pl].flat[indices[pl, k]]
    Tensor dx = empty(xs, g.dtype());
    dispatch(g.dtype(), [&](auto t) {
      using T = decltype(t);
      const T* pg = g.data_ptr<T>();
      const std::int64_t* pi = idx.data_ptr<std::int64_t>();
      T* pd = dx.data_ptr<T>();
      for (std::size_t pl = 0; pl < planes; ++pl)
        for (std::size_t k = 0; k < per; ++k) pd[pl * per + k] = pg[pl * hw + pi[pl * per + k]];
    });
    return std::vector<Tensor>{dx};
  });
}

namespace {
// Output pixel (i, j) of adaptive pooling averages input rows [floor(i·H/oh), ceil((i+1)·H/oh)) and the columns
// likewise (PyTorch's start_index / end_index). for_each calls f(out, base, r0, r1, c0, c1) for every output
// pixel: its flat index, the flat index of its input plane, and its window.
struct AdaptiveWindows {
  std::size_t planes, H, W, oh, ow;
  template <class F>
  void for_each(F f) const {
    for (std::size_t pl = 0; pl < planes; ++pl)
      for (std::size_t i = 0; i < oh; ++i)
        for (std::size_t j = 0; j < ow; ++j)
          f((pl * oh + i) * ow + j, pl * H * W, i * H / oh, ((i + 1) * H + oh - 1) / oh, j * W / ow,
            ((j + 1) * W + ow - 1) / ow);
  }
};
}  // namespace

Tensor adaptive_avg_pool2d(const Tensor& x, Size2 output_size) {
  const char* op = "adaptive_avg_pool2d";
  if (!x.defined()) fail("{}: the input is undefined", op);
  const Shape xs = x.shape();
  if (xs.size() != 4) fail("{}: input must be [N, C, H, W], got shape {}", op, shape_str(xs));
  if (output_size.h == 0 || output_size.w == 0)
    fail("{}: output_size must be >= 1, got {}", op, to_string(output_size));
  if (xs[2] == 0 || xs[3] == 0) fail("{}: the input {} has an empty plane", op, shape_str(xs));
  const AdaptiveWindows win{xs[0] * xs[1], xs[2], xs[3], output_size.h, output_size.w};
  Tensor y = empty({xs[0], xs[1], win.oh, win.ow}, x.dtype());
  dispatch(x.dtype(), [&](auto t) {  // y = Σ window / its pixel count
    using T = decltype(t);
    const T* px = x.data_ptr<T>();
    T* py = y.data_ptr<T>();
    win.for_each([&](std::size_t o, std::size_t base, std::size_t r0, std::size_t r1, std::size_t c0, std::size_t c1) {
      T s = 0;
      for (std::size_t r = r0; r < r1; ++r)
        for (std::size_t c = c0; c < c1; ++c) s += px[base + r * win.W + c];
      py[o] = s / static_cast<T>((r1 - r0) * (c1 - c0));
    });
  });
  return record_op(op, y, {x}, [xs, win](const Tensor& g, const std::vector<bool>&) {
    Tensor dx = zeros(xs, g.dtype());  // G / pixel count to every pixel of the window (overlaps add up)
    dispatch(g.dtype(), [&](auto t) {
      using T = decltype(t);
      const T* pg = g.data_ptr<T>();
      T* pd = dx.data_ptr<T>();
      win.for_each([&](std::size_t o, std::size_t base, std::size_t r0, std::size_t r1, std::size_t c0, std::size_t c1) {
        const T share = pg[o] / static_cast<T>((r1 - r0) * (c1 - c0));
        for (std::size_t r = r0; r < r1; ++r)
          for (std::size_t c = c0; c < c1; ++c) pd[base + r * win.W + c] += share;
      });
    });
    return std::vector<Tensor>{dx};
  });
}

namespace {
Tensor max_pool2d_impl(const Tensor& x, Size2 kernel, std::optional<Size2> stride, Size2 padding,
                       std::shared_ptr<std::uint32_t[]>* winners) {
  const PoolGeometry g = pool_geometry("max_pool2d", x, kernel, stride, padding);
  if (g.H * g.W > std::numeric_limits<std::uint32_t>::max())
    fail("max_pool2d: planes of more than 2^32 pixels are not supported (input {})", shape_str(x.shape()));
  Tensor y = empty(pooled_shape(x, g), x.dtype());
  // The winner of every window, saved for the backward (every entry is written by the forward).
  std::shared_ptr<std::uint32_t[]> argmax(new std::uint32_t[y.numel()]);
  const bool two_by_two = g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0;
  dispatch(x.dtype(), [&](auto t) {
    using T = decltype(t);
    if (two_by_two)
      max_pool_forward_2x2<T>(x.data_ptr<T>(), y.data_ptr<T>(), argmax.get(), g);
    else
      max_pool_forward<T>(x.data_ptr<T>(), y.data_ptr<T>(), argmax.get(), g);
  });
  if (winners) *winners = argmax;
  // With 2×2 windows tiling an even-sized plane, every input pixel lies in exactly one window.
  const bool tiles = two_by_two && g.H % 2 == 0 && g.W % 2 == 0;
  return record_op("max_pool2d", y, {x}, [argmax, g, tiles, xs = x.shape()](const Tensor& gy,
                                                                             const std::vector<bool>&) {
    // dx[plane, argmax] += dy: each output pixel sends its gradient to the input pixel that won, 0 elsewhere.
    // When the windows tile the plane, dx is written window by window (no separate zero fill).
    Tensor dx = tiles ? empty(xs, gy.dtype()) : zeros(xs, gy.dtype());
    dispatch(gy.dtype(), [&](auto t) {
      using T = decltype(t);
      const T* pdy = gy.data_ptr<T>();
      for (std::size_t pl = 0; pl < g.planes; ++pl) {
        T* plane = dx.data_ptr<T>() + pl * g.H * g.W;
        const std::size_t first = pl * g.Ho * g.Wo;
        if (tiles) {  // window by window: dy at the winner, 0 at the other three pixels
          for (std::size_t i = 0; i < g.Ho; ++i)
            max_pool_backward_row_2x2(pdy + first + i * g.Wo, argmax.get() + first + i * g.Wo,
                                      plane + 2 * i * g.W, plane + (2 * i + 1) * g.W, g.Wo,
                                      static_cast<std::uint32_t>(g.W), static_cast<std::uint32_t>(2 * i * g.W));
          continue;
        }
        for (std::size_t k = first; k < first + g.Ho * g.Wo; ++k) plane[argmax[k]] += pdy[k];
      }
    });
    return std::vector<Tensor>{dx};
  });
}
}  // namespace

Tensor avg_pool2d(const Tensor& x, Size2 kernel, std::optional<Size2> stride, Size2 padding, bool count_include_pad) {
  const PoolGeometry g = pool_geometry("avg_pool2d", x, kernel, stride, padding);
  Tensor y = empty(pooled_shape(x, g), x.dtype());
  dispatch(x.dtype(), [&](auto t) {
    using T = decltype(t);
    avg_pool_forward<T>(x.data_ptr<T>(), y.data_ptr<T>(), g, count_include_pad);
  });
  return record_op("avg_pool2d", y, {x},
                   [g, xs = x.shape(), count_include_pad](const Tensor& gy, const std::vector<bool>&) {
                     Tensor dx = zeros(xs, gy.dtype());
                     dispatch(gy.dtype(), [&](auto t) {
                       using T = decltype(t);
                       avg_pool_backward<T>(gy.data_ptr<T>(), dx.data_ptr<T>(), g, count_include_pad);
                     });
                     return std::vector<Tensor>{dx};
                   });
}

}  // namespace xg
