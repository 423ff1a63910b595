// xgrad — hand-fused BatchNorm kernels: the two BatchNorm instances of the normalisation driver
// (kernels/norm_driver.h). xgrad/kernels/batchnorm.h has the API; docs/batchnorm-fused.md the derivation and the
// benchmark; batchnorm_reference.cpp the plain loops the tests compare against.
//
//   forward (train)  local sums: shifted two-pass moments per chunk -> Chan's combine -> finish: mean, invstd,
//                    running stats, y = (x - mean)*scale + shift
//   backward         local sums: sum dy, sum dy*xc, sum xc (xc = x - save_mean) -> addition -> finish: dweight,
//                    dbias, dx = k1*dy + (k2*xc + k3)
//   eval, normalise  the map alone
//
// Floating-point contraction OFF for this file (g++ contracts a*b + c into an FMA by default and decides per
// inlining context). The kernels ask for FMAs explicitly (vfma, std::fma); everything else must round the same
// way whichever schedule inlined it: that is what makes the results bit-identical for any thread count.
// Must precede every include.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

// GCC 12 reports a false -W(maybe-)uninitialized inside xsimd's AVX-512 hadd (_mm256_undefined_pd).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include "xgrad/kernels/batchnorm.h"

#include <cmath>
#include <stdexcept>
#include <vector>

#include "norm_driver.h"
#include "norm_terms.h"  // sum/moment/grad terms, NormalizeOp, DxOp, chunk_moments

namespace xg::kernels {
using namespace norm;

// Chan, Golub & LeVeque: the moments of two disjoint sets. n = na + nb, delta = mean_b - mean_a,
//   mean = mean_a + delta*nb/n,   M2 = M2_a + M2_b + delta^2 * na*nb/n   (delta^2: the spread between the sets).
BnMoments bn_combine(const BnMoments& a, const BnMoments& b) {
  if (a.count == 0) return b;
  if (b.count == 0) return a;
  const double n = a.count + b.count, delta = b.mean - a.mean, fb = b.count / n;
  return {n, a.mean + delta * fb, a.m2 + b.m2 + delta * delta * a.count * fb};
}

BnGradSums bn_grad_combine(const BnGradSums& a, const BnGradSums& b) {
  return {a.sum_dy + b.sum_dy, a.sum_dy_xc + b.sum_dy_xc, a.sum_xc + b.sum_xc};
}

namespace {

// Forward coefficients of one channel: var = M2/m (biased), invstd = 1/sqrt(var + eps), scale = w*invstd,
// shift = b - (mean - T(mean))*scale — the mean's rounding to T put back into the shift (for float data with
// mean 1e4 and std 1e-2 that rounding is 5% of a std; for a constant channel it is 0, so y == b exactly).
template <class T>
void affine_coefs(const BnMoments& mo, double invstd, double w, double b, const Coefs<T>& k, std::size_t c) {
  const T mean_t = T(mo.mean), scale = T(w * double(T(invstd)));  // from the ROUNDED invstd, as the backward sees
  k(0, c) = mean_t;
  k(1, c) = scale;
  k(2, c) = T(b - (mo.mean - double(mean_t)) * double(scale));
}

inline double invstd_of(const BnMoments& mo, double eps) { return 1.0 / std::sqrt(mo.m2 / mo.count + eps); }

// save_mean, save_invstd and the running statistics of one channel:
//   running_mean = (1-f)*running_mean + f*mean,  running_var = (1-f)*running_var + f*M2/(m-1) (unbiased).
template <class T>
void save_stats(const BnMoments& mo, std::size_t c, double invstd, double f, T* save_mean, T* save_invstd,
                T* running_mean, T* running_var) {
  if (save_mean) save_mean[c] = T(mo.mean);
  if (save_invstd) save_invstd[c] = T(invstd);
  if (running_mean) running_mean[c] = T((1.0 - f) * double(running_mean[c]) + f * mo.mean);
  if (running_var) running_var[c] = T((1.0 - f) * double(running_var[c]) + f * (mo.m2 / (mo.count - 1.0)));
}

template <class TT>
struct Forward {
  using T = TT;
  using Acc = BnMoments;
  static constexpr int K = 3;  // mean, scale, shift
  const T *x, *weight, *bias;
  T* y;
  T *save_mean, *save_invstd, *running_mean, *running_var;
  double eps, f;
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
    // [N, C]: the two passes with one lane per channel, then Chan's combine (as bn_combine, term for term) with
    // the block's channels side by side — every chunk has the same count for all of them, so it vectorises.
    const std::size_t c0 = unit_begin(b, u), cw = unit_width(b, d, u), r1 = group_end(b, d, g);
    alignas(kAlign) T sums[3][4 * kW<T>];
    alignas(kAlign) double gmean[4 * kW<T>], gm2[4 * kW<T>];
    double gn = 0;
    for (std::size_t r = group_begin(b, g); r < r1; r += b.k) {
      const std::size_t nr = std::min(b.k, r1 - r);
      const T* p = x + r * d.C + c0;
      chunk_cols<T, 1, 1>({p}, nr, d.C, cw, nullptr, sum_terms, sums);
      const T inv_n = T(1) / T(nr);
      for (std::size_t c = 0; c < cw; ++c) sums[0][c] *= inv_n;  // K per channel
      chunk_cols<T, 1, 2>({p}, nr, d.C, cw, sums[0], moment_terms, sums + 1);
      const double nb = double(nr), n = gn + nb, fb = nb / n;
      for (std::size_t c = 0; c < cw; ++c) {
        const double sd = sums[1][c], dmean = sd / nb, m2 = double(sums[2][c]) - sd * dmean;
        const double mean = double(sums[0][c]) + dmean, cm2 = m2 > 0.0 ? m2 : 0.0;
        if (gn == 0) {
          gmean[c] = mean;
          gm2[c] = cm2;
        } else {
          const double delta = mean - gmean[c];
          gmean[c] = gmean[c] + delta * fb;
          gm2[c] = gm2[c] + cm2 + delta * delta * gn * fb;
        }
      }
      gn = n;
    }
    for (std::size_t c = 0; c < cw; ++c) out[c] = {gn, gmean[c], gm2[c]};
  }

  // invstd for up to 64 channels at a time with SIMD sqrt and division: the same IEEE operations as invstd_of,
  // so the same bits (a division and a square root per channel were a third of a small [60, 100] forward).
  void finish(std::size_t c0, std::size_t n, const Acc* tot, const Coefs<T>& k) const {
    using VD = xsimd::batch<double>;
    constexpr std::size_t kB = 64;
    alignas(kAlign) double inv[kB];
    for (std::size_t j0 = 0; j0 < n; j0 += kB) {
      const std::size_t nb = std::min(kB, n - j0);
      for (std::size_t j = 0; j < nb; ++j) inv[j] = tot[j0 + j].m2 / tot[j0 + j].count + eps;
      std::size_t j = 0;
      for (; j + VD::size <= nb; j += VD::size) (VD(1.0) / xsimd::sqrt(VD::load_aligned(inv + j))).store_aligned(inv + j);
      for (; j < nb; ++j) inv[j] = 1.0 / std::sqrt(inv[j]);
      for (j = 0; j < nb; ++j) {
        const std::size_t i = j0 + j, c = c0 + i;
        save_stats(tot[i], c, inv[j], f, save_mean, save_invstd, running_mean, running_var);
        affine_coefs(tot[i], inv[j], weight ? double(weight[c]) : 1.0, bias ? double(bias[c]) : 0.0, k, i);
      }
    }
  }

  void map(std::size_t u, std::size_t r0, std::size_t r1, const Coefs<T>& k, bool stream, bool prefetch) const {
    map_unit<NormalizeOp, 3>(std::array<const T*, 1>{x}, y, d, b, u, r0, r1, k, stream, prefetch);
  }
  void map_rows(std::size_t r0, std::size_t r1, const Coefs<T>& k) const {
    norm::map_rows<NormalizeOp, 3>(std::array<const T*, 1>{x + r0 * d.C}, y + r0 * d.C, r1 - r0, d.C, k);
  }
};

// ---- backward ------------------------------------------------------------------------------------------------
// Finish of one channel from the sums over m values (xc = x - mean_T):
//   delta = mean(xc)                                  (mean_T's rounding error; xhat = (xc - delta)*invstd)
//   dbias = sum dy,   dweight = sum dy*xhat = invstd*(sum dy*xc - delta*sum dy)
//   dx = w*invstd*(dy - mean(dy) - xhat*mean(dy*xhat))
//      = k1*dy + k2*xc + k3,   k1 = w*invstd,  k2 = -k1*invstd*mean(dy*xhat),  k3 = -k1*mean(dy) - k2*delta
template <class TT>
struct Backward {
  using T = TT;
  using Acc = BnGradSums;
  static constexpr int K = 4;  // k1, k2, k3, mean
  const T *dy, *x, *weight, *save_mean, *save_invstd;
  T *dx, *dweight, *dbias;
  bool want_x;   // sum dy*xc and sum xc wanted (dx or dweight); otherwise x is not read
  double count;  // m: the values per channel over every process
  BnDims d;
  Blocking b;

  static Acc combine(const Acc& a, const Acc& c) { return bn_grad_combine(a, c); }

  template <class NV>
  Acc chunk(NV, std::size_t off, std::size_t nr, std::size_t len, std::size_t pf_off, std::size_t pf_rows,
            std::size_t c) const {
    const std::size_t stride = d.C * d.S;
    if (!want_x) return {chunk_runs<T, NV::value, 1, 1>({dy + off}, nr, stride, len, pf_off, pf_rows, T(0), sum_terms).sum(0), 0, 0};
    const auto s = chunk_runs<T, NV::value, 2, 3>({dy + off, x + off}, nr, stride, len, pf_off, pf_rows, save_mean[c],
                                                  grad_terms);
    return {s.sum(0), s.sum(1), s.sum(2)};
  }

  void group_sums(std::size_t u, std::size_t g, Acc* out) const {
    if (d.S > 1) return group_sums_runs(*this, d, b, u, g, out);
    const std::size_t c0 = unit_begin(b, u), cw = unit_width(b, d, u), r1 = group_end(b, d, g), C = d.C;
    for (std::size_t c = 0; c < cw; ++c) out[c] = Acc{};
    if (cw > 4 * kW<T>) {  // one unit of whole rows (backward_blocking): sums in a [3, C] buffer
      std::vector<T, xsimd::aligned_allocator<T, kAlign>> sums(3 * C);
      for (std::size_t r = group_begin(b, g); r < r1; r += b.k) {
        std::fill(sums.begin(), sums.end(), T(0));
        const std::size_t nr = std::min(b.k, r1 - r);
        if (want_x) chunk_rows<T, 2, 3>({dy + r * C, x + r * C}, nr, C, save_mean, grad_terms, sums.data());
        else chunk_rows<T, 1, 1>({dy + r * C}, nr, C, nullptr, sum_terms, sums.data());
        for (std::size_t c = 0; c < C; ++c) out[c] = combine(out[c], {double(sums[c]), double(sums[C + c]), double(sums[2 * C + c])});
      }
      return;
    }
    alignas(kAlign) T sums[3][4 * kW<T>] = {};
    for (std::size_t r = group_begin(b, g); r < r1; r += b.k) {
      const std::size_t nr = std::min(b.k, r1 - r), off = r * C + c0;
      if (want_x) chunk_cols<T, 2, 3>({dy + off, x + off}, nr, C, cw, save_mean + c0, grad_terms, sums);
      else chunk_cols<T, 1, 1>({dy + off}, nr, C, cw, nullptr, sum_terms, sums);
      for (std::size_t c = 0; c < cw; ++c) out[c] = combine(out[c], {double(sums[0][c]), double(sums[1][c]), double(sums[2][c])});
    }
  }

  void finish(std::size_t c0, std::size_t n, const Acc* tot, const Coefs<T>& k) const {
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t c = c0 + i;
      const double invstd = save_invstd[c], delta = tot[i].sum_xc / count;
      const double sum_dy_xhat = invstd * (tot[i].sum_dy_xc - delta * tot[i].sum_dy);
      if (dbias) dbias[c] = T(tot[i].sum_dy);
      if (dweight) dweight[c] = T(sum_dy_xhat);
      const double k1 = (weight ? double(weight[c]) : 1.0) * invstd, k2 = -k1 * invstd * (sum_dy_xhat / count);
      k(0, i) = T(k1);
      k(1, i) = T(k2);
      k(2, i) = T(-k1 * (tot[i].sum_dy / count) - k2 * delta);
      k(3, i) = save_mean[c];
    }
  }

  void map(std::size_t u, std::size_t r0, std::size_t r1, const Coefs<T>& k, bool stream, bool prefetch) const {
    map_unit<DxOp, 4>(std::array<const T*, 2>{dy, x}, dx, d, b, u, r0, r1, k, stream, prefetch);
  }
  void map_rows(std::size_t r0, std::size_t r1, const Coefs<T>& k) const {
    norm::map_rows<DxOp, 4>(std::array<const T*, 2>{dy + r0 * d.C, x + r0 * d.C}, dx + r0 * d.C, r1 - r0, d.C, k);
  }
};

// [N, C] rows of more than 2 KiB: one unit of whole rows (norm::chunk_rows) instead of column blocks, whose
// loads would sit 4 KiB apart down a column (about 10% slower on [256, 1024]). Same sums per channel, same bits.
template <class T>
Blocking backward_blocking(const BnDims& d, bool dx) {
  if (d.S > 1) return make_blocking<T>(d, static_cast<std::size_t>(get_num_threads()), dx ? 2 : 0);  // re-reads dy, x
  Blocking b = make_blocking<T>(d, 1);
  if (d.C * sizeof(T) > 2048) {
    b.cb = d.C;
    b.units = 1;
  }
  return b;
}

template <class T>
Backward<T> backward_policy(const T* dy, const T* x, const T* weight, const T* save_mean, const T* save_invstd, T* dx,
                            T* dweight, T* dbias, const BnDims& d, double count) {
  const bool want_x = dx || dweight;
  return {dy, want_x ? x : dy, weight, save_mean, save_invstd, dx, dweight, dbias, want_x, count, d,
          backward_blocking<T>(d, dx != nullptr)};
}

template <class T>
void check_train_dims(const BnDims& d, bool running_var) {
  if (d.C == 0) return;
  const std::size_t m = d.N * d.S;
  if (m == 0) throw std::invalid_argument("xg::kernels::batch_norm: no values per channel (N*S == 0)");
  if (m == 1 && running_var)
    throw std::invalid_argument(
        "xg::kernels::batch_norm: expected more than 1 value per channel when training (N*S == 1), "
        "the unbiased running variance is undefined; use a batch of at least 2 (drop_last) or eval mode");
}

// The map alone: y = (x - m)*a + sh with the given per-channel arrays (eval: m = 0).
template <class T>
void normalize_all(const T* x, T* y, const BnDims& d, const Coefs<T>& k, bool eval) {
  const Blocking b = make_blocking<T>(d, static_cast<std::size_t>(get_num_threads()));
  const Forward<T> p{x, nullptr, nullptr, y, nullptr, nullptr, nullptr, nullptr, 0, 0, d, b};
  map_all(p, d, b, k, use_stream(d.N * d.C * d.S, sizeof(T), x == y ? 1 : 2, eval));
}

}  // namespace

// =============================================================================================================
// Public entry points
// =============================================================================================================
template <class T>
void batch_norm_forward_train(const T* x, const T* weight, const T* bias, T* y, T* save_mean, T* save_invstd,
                              T* running_mean, T* running_var, BnDims d, double eps, double exp_avg_factor) {
  check_train_dims<T>(d, running_var != nullptr);
  if (d.C == 0 || d.N * d.S == 0) return;
  const Blocking b = d.S == 1 ? make_blocking<T>(d, 1) : make_blocking<T>(d, std::size_t(get_num_threads()), 1);
  const Forward<T> p{x, weight, bias, y, save_mean, save_invstd, running_mean, running_var, eps, exp_avg_factor, d, b};
  run(p, d, b, nullptr, true, d.S > 1 && use_stream(d.N * d.C * d.S, sizeof(T), 2, false));  // x, y
}

template <class T>
void batch_norm_forward_eval(const T* x, const T* weight, const T* bias, const T* running_mean,
                             const T* running_var, T* y, BnDims d, double eps) {
  // scale = w/sqrt(rv + eps), shift = b - rm*scale (in double), then y = (x - 0)*scale + shift.
  std::vector<T> coef(3 * coef_stride<T>(d.C), T(0));
  const Coefs<T> k{coef.data(), coef_stride<T>(d.C)};
  for (std::size_t c = 0; c < d.C; ++c) {
    const double s = (weight ? double(weight[c]) : 1.0) / std::sqrt(double(running_var[c]) + eps);
    k(1, c) = T(s);
    k(2, c) = T((bias ? double(bias[c]) : 0.0) - double(running_mean[c]) * s);
  }
  normalize_all(x, y, d, k, true);
}

template <class T>
void batch_norm_backward(const T* dy, const T* x, const T* weight, const T* save_mean, const T* save_invstd,
                         T* dx, T* dweight, T* dbias, BnDims d) {
  batch_norm_backward_finish(dy, x, weight, save_mean, save_invstd, nullptr, double(d.N) * double(d.S), dx, dweight,
                             dbias, d);
}

template <class T>
void batch_norm_local_moments(const T* x, BnDims d, BnMoments* out) {
  if (d.C == 0) return;
  if (d.N * d.S == 0) {
    for (std::size_t c = 0; c < d.C; ++c) out[c] = BnMoments{};
    return;
  }
  const Blocking b = make_blocking<T>(d, static_cast<std::size_t>(get_num_threads()));
  local_sums(Forward<T>{x, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 0, d, b}, d, b, out);
}

template <class T>
void batch_norm_finish_stats(const BnMoments* moments, std::size_t C, double eps, double exp_avg_factor,
                             T* save_mean, T* save_invstd, T* running_mean, T* running_var) {
  for (std::size_t c = 0; c < C; ++c) {
    if (moments[c].count == 0) throw std::invalid_argument("xg::kernels::batch_norm_finish_stats: count is 0");
    if (moments[c].count == 1 && running_var)
      throw std::invalid_argument("xg::kernels::batch_norm_finish_stats: count is 1, unbiased variance undefined");
  }
  for (std::size_t c = 0; c < C; ++c)
    save_stats<T>(moments[c], c, invstd_of(moments[c], eps), exp_avg_factor, save_mean, save_invstd, running_mean,
                  running_var);
}

template <class T>
void batch_norm_normalize(const T* x, const T* weight, const T* bias, const BnMoments* moments, double eps, T* y,
                          BnDims d) {
  std::vector<T> coef(3 * coef_stride<T>(d.C));  // the fused forward's coefficients, from the same moments
  const Coefs<T> k{coef.data(), coef_stride<T>(d.C)};
  for (std::size_t c = 0; c < d.C; ++c)
    affine_coefs(moments[c], invstd_of(moments[c], eps), weight ? double(weight[c]) : 1.0, bias ? double(bias[c]) : 0.0,
                 k, c);
  normalize_all(x, y, d, k, false);
}

template <class T>
void batch_norm_backward_local_sums(const T* dy, const T* x, const T* save_mean, BnDims d, BnGradSums* out) {
  if (d.C == 0) return;
  const Blocking b = backward_blocking<T>(d, false);
  local_sums(Backward<T>{dy, x, nullptr, save_mean, nullptr, nullptr, nullptr, nullptr, true, 0, d, b}, d, b, out);
}

template <class T>
void batch_norm_backward_finish(const T* dy, const T* x, const T* weight, const T* save_mean,
                                const T* save_invstd, const BnGradSums* sums, double count, T* dx, T* dweight,
                                T* dbias, BnDims d) {
  if (d.C == 0 || (!dx && !dweight && !dbias)) return;
  const Backward<T> p = backward_policy(dy, x, weight, save_mean, save_invstd, dx, dweight, dbias, d, count);
  run(p, d, p.b, sums, dx != nullptr, d.S > 1 && use_stream(d.N * d.C * d.S, sizeof(T), dx ? 3 : 2, false));
}

#define XG_BN_INSTANTIATE(T)                                                                                      \
  template void batch_norm_forward_train<T>(const T*, const T*, const T*, T*, T*, T*, T*, T*, BnDims, double,     \
                                            double);                                                             \
  template void batch_norm_forward_eval<T>(const T*, const T*, const T*, const T*, const T*, T*, BnDims, double); \
  template void batch_norm_backward<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, T*, BnDims);    \
  template void batch_norm_local_moments<T>(const T*, BnDims, BnMoments*);                                        \
  template void batch_norm_finish_stats<T>(const BnMoments*, std::size_t, double, double, T*, T*, T*, T*);        \
  template void batch_norm_normalize<T>(const T*, const T*, const T*, const BnMoments*, double, T*, BnDims);     \
  template void batch_norm_backward_local_sums<T>(const T*, const T*, const T*, BnDims, BnGradSums*);             \
  template void batch_norm_backward_finish<T>(const T*, const T*, const T*, const T*, const T*, const BnGradSums*, \
                                              double, T*, T*, T*, BnDims);

XG_BN_INSTANTIATE(float)
XG_BN_INSTANTIATE(double)

#undef XG_BN_INSTANTIATE

}  // namespace xg::kernels
