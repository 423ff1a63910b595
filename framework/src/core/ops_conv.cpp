// conv2d as one recorded op: im2col + GEMM forward, GEMM + col2im backward (the Conv2d module is in layers/).
//
// Notation: input x [N, C, H, W], weight w [O, C, kH, kW], output y [N, O, Ho, Wo]. For one image, im2col
// lays the input patches out as a column matrix
//   col[K, P] with K = C·kH·kW rows (one per weight element) and P = Ho·Wo columns (one per output pixel):
//   col[(c·kH + p)·kW + q, i·Wo + j] = x[c, i·sh + p - ph, j·sw + q - pw]      (0 where that is padding)
// so that the convolution of the image is ONE matrix product with the weight viewed as [O, K]:
//   y_n[O, P] = w[O, K] · col_n[K, P] (+ b[o] on row o).
// Backward, with G_n = dL/dy_n [O, P]:
//   dw[O, K] = Σ_n G_n · col_nᵀ          dcol_n[K, P] = wᵀ · G_n      dx_n = col2im(dcol_n)
//   db[o]    = Σ_n Σ_P G_n[o, :]
// col2im is the adjoint of im2col: it adds every column entry back onto the input pixel it was copied from.
// The column buffer of one image (K·P values) is reused across images and recomputed in backward instead
// of being stored for the whole batch (memory N·K·P would be 58 MB for a 64×32×28×28 batch).
#include <algorithm>
#include <utility>
#include <vector>

#include "xgrad/autograd.h"
#include "xgrad/blas.h"
#include "xgrad/ops.h"

namespace xg {

namespace {

struct ConvGeometry {
  std::size_t N, C, H, W;  // input
  std::size_t O, kh, kw;   // weight
  std::size_t sh, sw, ph, pw;
  std::size_t Ho, Wo;      // output
  std::size_t K() const { return C * kh * kw; }  // rows of the column matrix
  std::size_t P() const { return Ho * Wo; }      // output pixels per channel
  /// A 1×1, stride-1, unpadded convolution: col IS the image, no im2col needed.
  bool pointwise() const { return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
  /// A stride-1 "same" convolution (output as large as the input, e.g. 3×3 with padding 1): every row of col
  /// is the whole image shifted by a constant offset, so im2col is one block copy per row plus fix-ups.
  bool same_size() const { return sh == 1 && sw == 1 && Ho == H && Wo == W; }
};

ConvGeometry conv_geometry(const Tensor& x, const Tensor& w, const Tensor& b, Size2 stride, Size2 padding) {
  if (!x.defined() || !w.defined()) fail("conv2d: input and weight must be defined tensors");
  const Shape xs = x.shape(), ws = w.shape();
  if (xs.size() != 4) fail("conv2d: input must be [N, C, H, W], got shape {}", shape_str(xs));
  if (ws.size() != 4) fail("conv2d: weight must be [C_out, C_in, kH, kW], got shape {}", shape_str(ws));
  if (x.dtype() != w.dtype())
    fail("conv2d: input is {} but weight is {}; convert one with .to()", x.dtype(), w.dtype());
  if (xs[1] != ws[1])
    fail("conv2d: input has {} channels (shape {}) but the weight expects C_in = {} (weight {})", xs[1],
         shape_str(xs), ws[1], shape_str(ws));
  if (b.defined() && (b.shape() != Shape{ws[0]} || b.dtype() != x.dtype()))
    fail("conv2d: bias must be [{}] of dtype {}, got {} of dtype {}", ws[0], x.dtype(), shape_str(b.shape()),
         b.dtype());
  if (stride.h == 0 || stride.w == 0) fail("conv2d: stride must be >= 1, got {}", to_string(stride));
  if (ws[2] == 0 || ws[3] == 0) fail("conv2d: kernel size must be >= 1, got weight {}", shape_str(ws));
  ConvGeometry g{xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3], stride.h, stride.w, padding.h, padding.w, 0, 0};
  if (g.H + 2 * g.ph < g.kh || g.W + 2 * g.pw < g.kw)
    fail("conv2d: the kernel {}x{} is larger than the padded input {}x{} (input {}, padding {})", g.kh, g.kw,
         g.H + 2 * g.ph, g.W + 2 * g.pw, shape_str(xs), to_string(padding));
  g.Ho = (g.H + 2 * g.ph - g.kh) / g.sh + 1;
  g.Wo = (g.W + 2 * g.pw - g.kw) / g.sw + 1;
  return g;
}

// The output positions j in [0, out_len) whose input position j·stride + offset - pad lies in [0, in_len):
// one contiguous range [lo, hi).
std::pair<std::size_t, std::size_t> valid_range(std::size_t out_len, std::size_t in_len, std::size_t stride,
                                                std::size_t pad, std::size_t offset) {
  const auto s = static_cast<std::ptrdiff_t>(stride);
  const std::ptrdiff_t shift = static_cast<std::ptrdiff_t>(offset) - static_cast<std::ptrdiff_t>(pad);
  // j·s + shift >= 0  <=>  j >= ceil(-shift / s)
  const std::ptrdiff_t lo = shift >= 0 ? 0 : (-shift + s - 1) / s;
  // j·s + shift < in_len  <=>  j < ceil((in_len - shift) / s)
  const std::ptrdiff_t room = static_cast<std::ptrdiff_t>(in_len) - shift;
  const std::ptrdiff_t hi =
      room <= 0 ? 0 : std::min<std::ptrdiff_t>(static_cast<std::ptrdiff_t>(out_len), (room + s - 1) / s);
  return {static_cast<std::size_t>(std::min(lo, hi)), static_cast<std::size_t>(hi)};
}

// For a same-size convolution (see ConvGeometry::same_size), row (c, p, q) of col is plane c of the image read
// at flat offset k + s, s = (p - ph)·W + (q - pw), for output positions k in [lo, hi) (outside: padding, 0).
// Reading a flat plane this way wraps around at the left/right edges: the first (pw - q) or the last (q - pw)
// columns of every row must be padding instead: [wrap_lo, wrap_hi).
struct ShiftedRow {
  std::ptrdiff_t shift;
  std::size_t lo, hi;          // valid output positions [lo, hi)
  std::size_t wrap_lo, wrap_hi;  // columns [wrap_lo, wrap_hi) of every row are padding
};

ShiftedRow shifted_row(const ConvGeometry& g, std::size_t p, std::size_t q) {
  const auto HW = static_cast<std::ptrdiff_t>(g.H * g.W);
  const std::ptrdiff_t dr = static_cast<std::ptrdiff_t>(p) - static_cast<std::ptrdiff_t>(g.ph);
  const std::ptrdiff_t dc = static_cast<std::ptrdiff_t>(q) - static_cast<std::ptrdiff_t>(g.pw);
  ShiftedRow r;
  r.shift = dr * static_cast<std::ptrdiff_t>(g.W) + dc;
  r.lo = static_cast<std::size_t>(std::clamp<std::ptrdiff_t>(-r.shift, 0, HW));
  r.hi = static_cast<std::size_t>(std::clamp<std::ptrdiff_t>(HW - r.shift, 0, HW));
  r.lo = std::min(r.lo, r.hi);
  const auto W = static_cast<std::ptrdiff_t>(g.W);
  r.wrap_lo = static_cast<std::size_t>(dc < 0 ? 0 : std::max<std::ptrdiff_t>(W - dc, 0));
  r.wrap_hi = static_cast<std::size_t>(dc < 0 ? std::min(-dc, W) : W);
  return r;
}

// Zeroes columns [wrap_lo, wrap_hi) of every image row of one col row (usually one column: a plain loop).
template <class T>
void zero_wrap_columns(T* row, const ConvGeometry& g, const ShiftedRow& r) {
  for (std::size_t i = 0; i < g.H; ++i)
    for (std::size_t j = r.wrap_lo; j < r.wrap_hi; ++j) row[i * g.W + j] = T(0);
}

template <class T>
void im2col_same_size(const T* x, const ConvGeometry& g, T* col) {
  const std::size_t P = g.P();
  for (std::size_t c = 0; c < g.C; ++c)
    for (std::size_t p = 0; p < g.kh; ++p)
      for (std::size_t q = 0; q < g.kw; ++q) {
        T* row = col + ((c * g.kh + p) * g.kw + q) * P;
        const ShiftedRow r = shifted_row(g, p, q);
        const T* plane = x + c * P;
        std::fill(row, row + r.lo, T(0));
        if (r.lo < r.hi) {
          const T* src = plane + (static_cast<std::ptrdiff_t>(r.lo) + r.shift);  // plane[k + s] for k = lo
          std::copy(src, src + (r.hi - r.lo), row + r.lo);
        }
        std::fill(row + r.hi, row + P, T(0));
        zero_wrap_columns(row, g, r);
      }
}

// The adjoint, written into dx (no zero fill needed): plane c = the centre tap's row (p, q) = (ph, pw), which
// has shift 0 and no padding (a same-size convolution has kh = 2·ph + 1, kw = 2·pw + 1), then plane c += every
// other row (c, p, q) read back at k + s. The padding entries of those rows are zeroed first (the row is
// scratch), so one contiguous add does the rest.
template <class T>
void col2im_same_size(T* col, const ConvGeometry& g, T* dx) {
  const std::size_t P = g.P();
  for (std::size_t c = 0; c < g.C; ++c) {
    T* plane = dx + c * P;
    const T* centre = col + ((c * g.kh + g.ph) * g.kw + g.pw) * P;
    std::copy(centre, centre + P, plane);
    for (std::size_t p = 0; p < g.kh; ++p)
      for (std::size_t q = 0; q < g.kw; ++q) {
        if (p == g.ph && q == g.pw) continue;
        T* row = col + ((c * g.kh + p) * g.kw + q) * P;
        const ShiftedRow r = shifted_row(g, p, q);
        if (r.lo >= r.hi) continue;  // the whole row is padding
        zero_wrap_columns(row, g, r);
        T* __restrict dst = plane + (static_cast<std::ptrdiff_t>(r.lo) + r.shift);
        const T* __restrict src = row + r.lo;
        for (std::size_t k = 0, n = r.hi - r.lo; k < n; ++k) dst[k] += src[k];
      }
  }
}

// col[K, P] from one image x[C, H, W] (see the top of the file). Rows are written contiguously; for stride 1
// each output row is one copy of an input row segment.
template <class T>
void im2col(const T* x, const ConvGeometry& g, T* col) {
  if (g.same_size()) return im2col_same_size(x, g, col);
  const std::size_t P = g.P();
  for (std::size_t c = 0; c < g.C; ++c)
    for (std::size_t p = 0; p < g.kh; ++p)
      for (std::size_t q = 0; q < g.kw; ++q) {
        T* row = col + ((c * g.kh + p) * g.kw + q) * P;
        const auto [jlo, jhi] = valid_range(g.Wo, g.W, g.sw, g.pw, q);
        for (std::size_t i = 0; i < g.Ho; ++i) {
          T* dst = row + i * g.Wo;
          const std::ptrdiff_t ih = static_cast<std::ptrdiff_t>(i * g.sh + p) - static_cast<std::ptrdiff_t>(g.ph);
          if (ih < 0 || ih >= static_cast<std::ptrdiff_t>(g.H)) {
            std::fill(dst, dst + g.Wo, T(0));
            continue;
          }
          std::fill(dst, dst + jlo, T(0));
          if (jlo < jhi) {
            // input column of output column j is j·sw + q - pw; src points at the one of j = jlo
            const T* src = x + (c * g.H + static_cast<std::size_t>(ih)) * g.W + (jlo * g.sw + q - g.pw);
            if (g.sw == 1)
              std::copy(src, src + (jhi - jlo), dst + jlo);
            else
              for (std::size_t j = jlo; j < jhi; ++j) dst[j] = src[(j - jlo) * g.sw];
          }
          std::fill(dst + jhi, dst + g.Wo, T(0));
        }
      }
}

// The adjoint of im2col: dx[C, H, W] = the sum of every entry of col[K, P] at the pixel it was read from
// (dx is overwritten; the same-size path also overwrites col's padding entries, so col is scratch).
template <class T>
void col2im(T* col, const ConvGeometry& g, T* dx) {
  if (g.same_size()) return col2im_same_size(col, g, dx);
  const std::size_t P = g.P();
  std::fill(dx, dx + g.C * g.H * g.W, T(0));
  for (std::size_t c = 0; c < g.C; ++c)
    for (std::size_t p = 0; p < g.kh; ++p)
      for (std::size_t q = 0; q < g.kw; ++q) {
        const T* row = col + ((c * g.kh + p) * g.kw + q) * P;
        const auto [jlo, jhi] = valid_range(g.Wo, g.W, g.sw, g.pw, q);
        for (std::size_t i = 0; i < g.Ho; ++i) {
          const std::ptrdiff_t ih = static_cast<std::ptrdiff_t>(i * g.sh + p) - static_cast<std::ptrdiff_t>(g.ph);
          if (ih < 0 || ih >= static_cast<std::ptrdiff_t>(g.H) || jlo >= jhi) continue;
          T* dst = dx + (c * g.H + static_cast<std::size_t>(ih)) * g.W + (jlo * g.sw + q - g.pw);
          const T* src = row + i * g.Wo + jlo;
          if (g.sw == 1)
            for (std::size_t j = 0; j < jhi - jlo; ++j) dst[j] += src[j];
          else
            for (std::size_t j = 0; j < jhi - jlo; ++j) dst[j * g.sw] += src[j];
        }
      }
}

// y = conv(x, w) + b for the whole batch, one GEMM per image.
template <class T>
void conv_forward(const T* x, const T* w, const T* b, T* y, const ConvGeometry& g) {
  const std::size_t K = g.K(), P = g.P();
  std::vector<T> col(g.pointwise() ? 0 : K * P);
  for (std::size_t n = 0; n < g.N; ++n) {
    const T* xn = x + n * g.C * g.H * g.W;
    T* yn = y + n * g.O * P;
    const T* cn = xn;  // a pointwise conv reads the image as its own column matrix
    if (!g.pointwise()) {
      im2col(xn, g, col.data());
      cn = col.data();
    }
    if (b)
      for (std::size_t o = 0; o < g.O; ++o) std::fill(yn + o * P, yn + (o + 1) * P, b[o]);
    blas::gemm(false, false, g.O, P, K, T(1), w, K, cn, P, T(b ? 1 : 0), yn, P);  // y_n (+)= w · col_n
  }
}

// dx, dw, db (each may be null = not needed) from dy. dw and db must be zero-filled; dx is overwritten.
template <class T>
void conv_backward(const T* x, const T* w, const T* dy, T* dx, T* dw, T* db, const ConvGeometry& g) {
  const std::size_t K = g.K(), P = g.P();
  std::vector<T> col(dw && !g.pointwise() ? K * P : 0);
  std::vector<T> dcol(dx && !g.pointwise() ? K * P : 0);
  if (dx && g.O == 0) {  // no output channels: nothing flows back (and a GEMM over 0 terms may not write dx)
    std::fill(dx, dx + g.N * g.C * g.H * g.W, T(0));
    dx = nullptr;
  }
  for (std::size_t n = 0; n < g.N; ++n) {
    const T* dyn = dy + n * g.O * P;
    if (dw) {  // dw += dy_n · col_nᵀ
      const T* xn = x + n * g.C * g.H * g.W;
      const T* cn = xn;
      if (!g.pointwise()) {
        im2col(xn, g, col.data());
        cn = col.data();
      }
      blas::gemm(false, true, g.O, K, P, T(1), dyn, P, cn, P, T(1), dw, K);
    }
    if (dx) {  // dcol = wᵀ · dy_n, then col2im sums it onto the image
      T* dxn = dx + n * g.C * g.H * g.W;
      if (g.pointwise()) {
        blas::gemm(true, false, K, P, g.O, T(1), w, K, dyn, P, T(0), dxn, P);
      } else {
        blas::gemm(true, false, K, P, g.O, T(1), w, K, dyn, P, T(0), dcol.data(), P);
        col2im(dcol.data(), g, dxn);
      }
    }
    if (db)  // db[o] += Σ_P dy_n[o, :]
      for (std::size_t o = 0; o < g.O; ++o) {
        T s = 0;
        for (std::size_t k = 0; k < P; ++k) s += dyn[o * P + k];
        db[o] += s;
      }
  }
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, Size2 stride, Size2 padding) {
  const ConvGeometry g = conv_geometry(x, w, b, stride, padding);
  Tensor y = empty({g.N, g.O, g.Ho, g.Wo}, x.dtype());
  dispatch(x.dtype(), [&](auto t) {
    using T = decltype(t);
    conv_forward<T>(x.data_ptr<T>(), w.data_ptr<T>(), b.defined() ? b.data_ptr<T>() : nullptr, y.data_ptr<T>(), g);
  });
  std::vector<Tensor> inputs{x, w};
  if (b.defined()) inputs.push_back(b);
  return record_op("conv2d", y, inputs,
                   [x = x.detach(), w = w.detach(), g](const Tensor& gy, const std::vector<bool>& needs) {
                     std::vector<Tensor> grads(needs.size());
                     // dx is overwritten image by image; dw and db accumulate over the images
                     if (needs[0]) grads[0] = empty(x.shape(), x.dtype());
                     for (std::size_t i = 1; i < needs.size(); ++i)
                       if (needs[i]) grads[i] = zeros(i == 1 ? w.shape() : Shape{g.O}, x.dtype());
                     dispatch(x.dtype(), [&](auto t) {
                       using T = decltype(t);
                       auto ptr = [&](std::size_t i) {
                         return grads[i].defined() ? grads[i].template data_ptr<T>() : nullptr;
                       };
                       conv_backward<T>(x.data_ptr<T>(), w.data_ptr<T>(), gy.data_ptr<T>(), ptr(0), ptr(1),
                                        needs.size() > 2 ? ptr(2) : nullptr, g);
                     });
                     return grads;
                   });
}

}  // namespace xg
