// xgrad — hand-fused GroupNorm and LayerNorm: two policies of the normalisation driver (norm_driver.h) over the
// view (1, N*G, L), L = (C/G)*S, in which each (sample, group) row is one of the driver's "channels". The driver
// supplies the blocking, the chunked shifted two-pass local sums, Chan's combine and the schedules; this file
// supplies what differs from BatchNorm: the per-row finish and a map whose affine coefficients change along the
// row (per channel run of S values for GroupNorm, per element for LayerNorm). xgrad/kernels/group_norm.h has the
// API, docs/normalization.md the derivation.
//
// Floating-point contraction OFF, as in batchnorm.cpp (same bits in every schedule; FMAs are explicit).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

#include "xgrad/kernels/group_norm.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "norm_driver.h"
#include "norm_terms.h"
#include "xgrad/kernels/batchnorm.h"

namespace xg::kernels {
using namespace norm;

namespace {

// backward with an elementwise weight, x[] = {dy, x, w}: g = dy*w, xc = x - mean:  sum g, sum g*xc, sum xc
constexpr auto wgrad_terms = [](auto* s, const auto& mean, const auto* x) {
  const auto g = x[0] * x[2];
  const auto xc = x[1] - mean;
  s[0] += g;
  s[1] = vfma(g, xc, s[1]);
  s[2] += xc;
};

// The GroupNorm geometry and the driver's view of it: row R = n*G + g holds L = P*S contiguous values, P = C/G
// channels of S values; channel c of the input is channel c % P of row (n, c / P).
struct Rows {
  GnDims g;
  std::size_t P, L;
  BnDims view;  // (1, N*G, L)
  std::size_t first_channel(std::size_t R) const { return (R % g.G) * P; }
};

Rows rows_of(const GnDims& g) {
  if (g.G == 0 || g.C % g.G != 0)
    throw std::invalid_argument("xg::kernels::group_norm: C = " + std::to_string(g.C) +
                                " channels cannot be split into G = " + std::to_string(g.G) + " equal groups");
  const std::size_t P = g.C / g.G;
  return {g, P, P * g.S, BnDims{1, g.N * g.G, P * g.S}};
}

// ---- forward ---------------------------------------------------------------------------------------------------
// Per row: mean, invstd = 1/sqrt(M2/L + eps) from the driver's moments; then, per channel c of the row,
//   y = (x - mean_T)*a_c + (b_c - rnd*a_c),   a_c = w_c*invstd,  rnd = mean - mean_T
// (the mean's rounding to T put back in the shift, as BatchNorm's affine_coefs does).
template <class TT>
struct GnForward {
  using T = TT;
  using Acc = BnMoments;
  static constexpr int K = 3;  // mean_T, invstd, rnd (per row)
  const T *x, *weight, *bias;
  T* y;
  T *save_mean, *save_invstd;
  double eps;
  Rows r;
  BnDims d;
  Blocking b;

  static Acc combine(const Acc& a, const Acc& c) { return bn_combine(a, c); }

  template <class NV>
  Acc chunk(NV, std::size_t off, std::size_t nr, std::size_t len, std::size_t pf_off, std::size_t pf_rows,
            std::size_t) const {
    return chunk_moments<T, NV::value>(x + off, nr, d.C * d.S, len, pf_off, pf_rows);
  }

  void group_sums(std::size_t u, std::size_t g, Acc* out) const {
    if (d.S > 1) return group_sums_runs(*this, d, b, u, g, out);
    for (std::size_t c = 0; c < unit_width(b, d, u); ++c) out[c] = {1.0, double(x[unit_begin(b, u) + c]), 0.0};  // L == 1
  }

  void finish(std::size_t c0, std::size_t n, const Acc* tot, const Coefs<T>& k) const {
    for (std::size_t i = 0; i < n; ++i) {
      const double invstd = 1.0 / std::sqrt(tot[i].m2 / tot[i].count + eps);
      const T mean_t = T(tot[i].mean);
      if (save_mean) save_mean[c0 + i] = mean_t;
      if (save_invstd) save_invstd[c0 + i] = T(invstd);
      k(0, i) = mean_t;
      k(1, i) = T(invstd);
      k(2, i) = T(tot[i].mean - double(mean_t));
    }
  }

  void map_row(std::size_t R, T mean, T inv, T rnd, std::vector<T>& buf) const {
    const T* xr = x + R * r.L;
    T* yr = y + R * r.L;
    const std::size_t c0 = r.first_channel(R);
    if (r.g.S == 1) {  // LayerNorm: the affine changes every element
      const V<T> vm(mean), vi(inv), vr(-rnd);
      visit_run<T, 0>(
          r.P,
          [&](std::size_t i, auto) {
            const V<T> a = weight ? V<T>::load_unaligned(weight + c0 + i) * vi : vi;
            const V<T> sh = vfma(vr, a, bias ? V<T>::load_unaligned(bias + c0 + i) : V<T>(T(0)));
            vfma(V<T>::load_unaligned(xr + i) - vm, a, sh).store_unaligned(yr + i);
          },
          [&](std::size_t i) {
            const T a = weight ? weight[c0 + i] * inv : inv;
            const T sh = vfma(-rnd, a, bias ? bias[c0 + i] : T(0));
            yr[i] = vfma(xr[i] - mean, a, sh);
          });
      return;
    }
    // GroupNorm: P runs of S values, each with its channel's (mean, a_c, shift_c) — BatchNorm's map_block
    const std::size_t P = r.P;
    for (std::size_t p = 0; p < P; ++p) {
      const T a = weight ? T(double(weight[c0 + p]) * double(inv)) : inv;
      buf[p] = mean;
      buf[P + p] = a;
      buf[2 * P + p] = T((bias ? double(bias[c0 + p]) : 0.0) - double(rnd) * double(a));
    }
    const Coefs<T> kc{buf.data(), P};
    dispatch_nv<T>(r.g.S, [&](auto nv) {
      map_block<NormalizeOp, 3, T, false, false, decltype(nv)::value>(std::array<const T*, 1>{xr}, yr, 1, r.L, r.g.S,
                                                                        P, kc, 0);
    });
  }

  void map(std::size_t u, std::size_t, std::size_t, const Coefs<T>& k, bool, bool) const {
    std::vector<T> buf(r.g.S > 1 ? 3 * r.P : 0);
    for (std::size_t c = 0; c < unit_width(b, d, u); ++c) map_row(unit_begin(b, u) + c, k(0, c), k(1, c), k(2, c), buf);
  }
  void map_rows(std::size_t, std::size_t, const Coefs<T>& k) const {  // L == 1: one value per row
    std::vector<T> buf;
    for (std::size_t R = 0; R < d.C; ++R) map_row(R, k(0, R), k(1, R), k(2, R), buf);
  }
};

// ---- backward --------------------------------------------------------------------------------------------------
// Per row, with g = dy*w_c, xc = x - mean_T and the driver's sums Sg = sum g, Sgx = sum g*xc, Sx = sum xc over L:
//   delta = Sx/L (mean_T's rounding; xhat = (xc - delta)*invstd),   sgx = sum g*xhat = invstd*(Sgx - delta*Sg)
//   dx = invstd*(g - Sg/L - xhat*sgx/L) = k1_c*dy + k2*xc + k3,
//   k1_c = w_c*invstd,  k2 = -invstd^2*sgx/L,  k3 = -invstd*Sg/L - k2*delta.
// GroupNorm (S > 1) also keeps, per (n, c), sum dy and sum dy*xc of the channel's run (ch_sums): then
//   dbias_c = sum_n sum dy,   dweight_c = sum_n invstd*(sum dy*xc - delta*sum dy).
// LayerNorm (S == 1) gets dweight, dbias from a column pass over [N, C] (column_grads).
template <class TT>
struct GnBackward {
  using T = TT;
  using Acc = BnGradSums;
  static constexpr int K = 4;  // invstd, k2, k3, mean_T (per row)
  const T *dy, *x, *weight, *save_mean, *save_invstd;
  T* dx;
  double* ch_sums;    // [2][N*C] (S > 1): sum dy, sum dy*xc per (n, c); zeroed by the caller
  double* row_delta;  // [N*G]: delta of each row, written by finish
  Rows r;
  BnDims d;
  Blocking b;

  static Acc combine(const Acc& a, const Acc& c) { return bn_grad_combine(a, c); }

  template <class NV>
  Acc chunk(NV, std::size_t off, std::size_t nr, std::size_t len, std::size_t pf_off, std::size_t pf_rows,
            std::size_t R) const {
    const T mean = save_mean[R];
    const std::size_t s0 = off - R * r.L, c0 = r.first_channel(R), stride = d.C * d.S;
    if (r.g.S == 1) {  // LayerNorm: the weight is a third input stream, element for element
      if (!weight) {
        const auto s = chunk_runs<T, NV::value, 2, 3>({dy + off, x + off}, nr, stride, len, pf_off, pf_rows, mean, grad_terms);
        return {s.sum(0), s.sum(1), s.sum(2)};
      }
      const auto s = chunk_runs<T, NV::value, 3, 3>({dy + off, x + off, weight + c0 + s0}, nr, stride, len, pf_off,
                                                    pf_rows, mean, wgrad_terms);
      return {s.sum(0), s.sum(1), s.sum(2)};
    }
    // GroupNorm: the chunk [s0, s0 + len) of the row, cut at channel boundaries; BatchNorm's sums per run, times w_c
    Acc acc{};
    const std::size_t S = r.g.S, NC = r.g.N * r.g.C, nc0 = (R / r.g.G) * r.g.C + c0;
    for (std::size_t a = s0; a < s0 + len;) {
      const std::size_t p = a / S, e = std::min(s0 + len, (p + 1) * S);
      Partial<T, 3> s;
      dispatch_nv<T>(e - a, [&](auto nv) {
        s = chunk_runs<T, decltype(nv)::value, 2, 3>({dy + R * r.L + a, x + R * r.L + a}, 1, stride, e - a, 0, 0, mean,
                                                     grad_terms);
      });
      const double w = weight ? double(weight[c0 + p]) : 1.0, sdy = s.sum(0), sdyxc = s.sum(1);
      acc = combine(acc, {w * sdy, w * sdyxc, s.sum(2)});
      ch_sums[nc0 + p] += sdy;
      ch_sums[NC + nc0 + p] += sdyxc;
      a = e;
    }
    return acc;
  }

  void group_sums(std::size_t u, std::size_t g, Acc* out) const {
    if (d.S > 1) return group_sums_runs(*this, d, b, u, g, out);
    for (std::size_t c = 0; c < unit_width(b, d, u); ++c) {  // L == 1: one value per row
      const std::size_t R = unit_begin(b, u) + c;
      const double w = weight ? double(weight[r.first_channel(R)]) : 1.0, xc = double(x[R] - save_mean[R]);
      out[c] = {w * double(dy[R]), w * double(dy[R]) * xc, xc};
    }
  }

  void finish(std::size_t c0, std::size_t n, const Acc* tot, const Coefs<T>& k) const {
    const double L = double(r.L);
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t R = c0 + i;
      const double invstd = save_invstd[R], delta = tot[i].sum_xc / L;
      const double sgx = invstd * (tot[i].sum_dy_xc - delta * tot[i].sum_dy);
      const double k2 = -invstd * invstd * (sgx / L);
      row_delta[R] = delta;
      k(0, i) = T(invstd);
      k(1, i) = T(k2);
      k(2, i) = T(-invstd * (tot[i].sum_dy / L) - k2 * delta);
      k(3, i) = save_mean[R];
    }
  }

  void map_row(std::size_t R, T inv, T k2, T k3, T mean, std::vector<T>& buf) const {
    const T *dyr = dy + R * r.L, *xr = x + R * r.L;
    T* dxr = dx + R * r.L;
    const std::size_t c0 = r.first_channel(R);
    if (r.g.S == 1) {
      const V<T> vi(inv), v2(k2), v3(k3), vm(mean);
      visit_run<T, 0>(
          r.P,
          [&](std::size_t i, auto) {
            const V<T> k1 = weight ? V<T>::load_unaligned(weight + c0 + i) * vi : vi;
            const V<T> v = V<T>::load_unaligned(xr + i) - vm;
            vfma(k1, V<T>::load_unaligned(dyr + i), vfma(v2, v, v3)).store_unaligned(dxr + i);
          },
          [&](std::size_t i) {
            const T k1 = weight ? weight[c0 + i] * inv : inv;
            dxr[i] = vfma(k1, dyr[i], vfma(k2, xr[i] - mean, k3));
          });
      return;
    }
    const std::size_t P = r.P;
    for (std::size_t p = 0; p < P; ++p) {
      buf[p] = weight ? T(double(weight[c0 + p]) * double(inv)) : inv;
      buf[P + p] = k2;
      buf[2 * P + p] = k3;
      buf[3 * P + p] = mean;
    }
    const Coefs<T> kc{buf.data(), P};
    dispatch_nv<T>(r.g.S, [&](auto nv) {
      map_block<DxOp, 4, T, false, false, decltype(nv)::value>(std::array<const T*, 2>{dyr, xr}, dxr, 1, r.L, r.g.S, P,
                                                                 kc, 0);
    });
  }

  void map(std::size_t u, std::size_t, std::size_t, const Coefs<T>& k, bool, bool) const {
    std::vector<T> buf(r.g.S > 1 ? 4 * r.P : 0);
    for (std::size_t c = 0; c < unit_width(b, d, u); ++c)
      map_row(unit_begin(b, u) + c, k(0, c), k(1, c), k(2, c), k(3, c), buf);
  }
  void map_rows(std::size_t, std::size_t, const Coefs<T>& k) const {
    std::vector<T> buf;
    for (std::size_t R = 0; R < d.C; ++R) map_row(R, k(0, R), k(1, R), k(2, R), k(3, R), buf);
  }
};

// S == 1 (LayerNorm): dbias_c = sum_n dy[n, c], dweight_c = sum_n dy*xhat with xhat = ((x - mean_R) - delta_R)*invstd_R,
// R = n*G + c/P. Columns in fixed blocks of kCols (threads split the blocks), rows in chunks of 64 summed in T per
// column, chunk results added in double in row order: the bits do not depend on the thread count.
template <class T>
void column_grads(const T* dy, const T* x, const T* save_mean, const T* save_invstd, const double* row_delta,
                  const Rows& r, T* dweight, T* dbias) {
  constexpr std::size_t kCols = 256, kRows = 64;
  const std::size_t N = r.g.N, C = r.g.C, blocks = (C + kCols - 1) / kCols;
  const bool one = N * C < kMinParallelElems;
  parallel_for(0, blocks, one ? blocks : 1, [&](std::size_t lo, std::size_t hi) {
    alignas(kAlign) T tb[kCols], tg[kCols];
    double ab[kCols], ag[kCols];
    for (std::size_t blk = lo; blk < hi; ++blk) {
      const std::size_t c0 = blk * kCols, cw = std::min(kCols, C - c0);
      std::fill(ab, ab + cw, 0.0);
      std::fill(ag, ag + cw, 0.0);
      for (std::size_t n0 = 0; n0 < N; n0 += kRows) {
        std::fill(tb, tb + cw, T(0));
        std::fill(tg, tg + cw, T(0));
        for (std::size_t n = n0; n < std::min(N, n0 + kRows); ++n)
          for (std::size_t a = c0; a < c0 + cw;) {  // segments of one group: same row statistics
            const std::size_t R = n * r.g.G + a / r.P, e = std::min(c0 + cw, (a / r.P + 1) * r.P);
            const T mean = save_mean[R], inv = save_invstd[R], del = T(row_delta[R]);
            const T *dyr = dy + n * C, *xr = x + n * C;
            const V<T> vm(mean), vi(inv), vd(del);
            visit_run<T, 0>(
                e - a,
                [&](std::size_t i, auto) {
                  const std::size_t j = a + i;
                  const V<T> g = V<T>::load_unaligned(dyr + j);
                  const V<T> xh = ((V<T>::load_unaligned(xr + j) - vm) - vd) * vi;
                  (V<T>::load_unaligned(tb + j - c0) + g).store_unaligned(tb + j - c0);
                  vfma(g, xh, V<T>::load_unaligned(tg + j - c0)).store_unaligned(tg + j - c0);
                },
                [&](std::size_t i) {
                  const std::size_t j = a + i;
                  tb[j - c0] += dyr[j];
                  tg[j - c0] = vfma(dyr[j], ((xr[j] - mean) - del) * inv, tg[j - c0]);
                });
            a = e;
          }
        for (std::size_t c = 0; c < cw; ++c) {
          ab[c] += double(tb[c]);
          ag[c] += double(tg[c]);
        }
      }
      for (std::size_t c = 0; c < cw; ++c) {
        if (dbias) dbias[c0 + c] = T(ab[c]);
        if (dweight) dweight[c0 + c] = T(ag[c]);
      }
    }
  });
}

}  // namespace

template <class T>
void group_norm_forward(const T* x, const T* weight, const T* bias, T* y, T* save_mean, T* save_invstd, GnDims g,
                        double eps) {
  const Rows r = rows_of(g);
  if (g.N * g.C * g.S == 0) return;
  const BnDims& d = r.view;
  const Blocking b = d.S == 1 ? make_blocking<T>(d, 1) : make_blocking<T>(d, std::size_t(get_num_threads()), 1);
  const GnForward<T> p{x, weight, bias, y, save_mean, save_invstd, eps, r, d, b};
  run(p, d, b, nullptr, true, false);
}

template <class T>
void group_norm_backward(const T* dy, const T* x, const T* weight, const T* save_mean, const T* save_invstd, T* dx,
                         T* dweight, T* dbias, GnDims g) {
  const Rows r = rows_of(g);
  if (!dx && !dweight && !dbias) return;
  if (g.N * g.C * g.S == 0) {
    for (std::size_t c = 0; c < g.C; ++c) {
      if (dweight) dweight[c] = T(0);
      if (dbias) dbias[c] = T(0);
    }
    return;
  }
  const BnDims& d = r.view;
  std::vector<double> ch_sums(g.S > 1 ? 2 * g.N * g.C : 0, 0.0), row_delta(d.C, 0.0);
  const Blocking b =
      d.S == 1 ? make_blocking<T>(d, 1) : make_blocking<T>(d, std::size_t(get_num_threads()), dx ? 2 : 0);
  const GnBackward<T> p{dy, x, weight, save_mean, save_invstd, dx, ch_sums.data(), row_delta.data(), r, d, b};
  run(p, d, b, nullptr, dx != nullptr, false);
  if (!dweight && !dbias) return;
  if (g.S == 1) return column_grads(dy, x, save_mean, save_invstd, row_delta.data(), r, dweight, dbias);
  const std::size_t NC = g.N * g.C;
  for (std::size_t c = 0; c < g.C; ++c) {
    double sb = 0, sw = 0;
    for (std::size_t n = 0; n < g.N; ++n) {
      const std::size_t R = n * g.G + c / r.P, i = n * g.C + c;
      sb += ch_sums[i];
      sw += double(save_invstd[R]) * (ch_sums[NC + i] - row_delta[R] * ch_sums[i]);
    }
    if (dbias) dbias[c] = T(sb);
    if (dweight) dweight[c] = T(sw);
  }
}

#define XG_GN_INSTANTIATE(T)                                                                            \
  template void group_norm_forward<T>(const T*, const T*, const T*, T*, T*, T*, GnDims, double);        \
  template void group_norm_backward<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, T*, GnDims);

XG_GN_INSTANTIATE(float)
XG_GN_INSTANTIATE(double)

#undef XG_GN_INSTANTIATE

}  // namespace xg::kernels
