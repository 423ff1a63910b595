// xgrad — the per-element terms and elementwise maps the normalisation policies share (BatchNorm in
// batchnorm.cpp, GroupNorm/LayerNorm in group_norm.cpp). Each is called with vectors (V<T>) in the bodies and
// with scalars (T) in the tails of norm_driver.h's loops, and uses vfma for every fused multiply-add (the files
// that include this header compile with floating-point contraction off, so a value gets the same bits in a
// body or a tail and in every schedule).
#pragma once

#include <algorithm>
#include <cstddef>

#include "norm_driver.h"

namespace xg::kernels::norm {

// ---- the terms each element adds (see chunk_runs) -----------------------------------------------------------
// sum x
inline constexpr auto sum_terms = [](auto* s, const auto&, const auto* x) { s[0] += x[0]; };
// shifted moments about K: d = x - K;  sum d, sum d^2
inline constexpr auto moment_terms = [](auto* s, const auto& K, const auto* x) {
  const auto d = x[0] - K;
  s[0] += d;
  s[1] = vfma(d, d, s[1]);
};
// backward, x[] = {dy, x}, xc = x - mean:  sum dy, sum dy*xc, sum xc
inline constexpr auto grad_terms = [](auto* s, const auto& mean, const auto* x) {
  const auto xc = x[1] - mean;
  s[0] += x[0];
  s[1] = vfma(x[0], xc, s[1]);
  s[2] += xc;
};

// ---- the elementwise maps -----------------------------------------------------------------------------------
// forward and eval: y = (x - mean)*scale + shift (eval: mean = 0)
template <class X>
struct NormalizeOp {
  X mean, scale, shift;
  X operator()(const X* x) const { return vfma(x[0] - mean, scale, shift); }
};
// backward: dx = k1*dy + (k2*(x - mean) + k3)  (xc kept as a difference: folding the mean into k3 would cancel
// catastrophically for large means)
template <class X>
struct DxOp {
  X k1, k2, k3, mean;
  X operator()(const X* x) const { return vfma(k1, x[0], vfma(k2, x[1] - mean, k3)); }
};

// One chunk's moments (S > 1), two passes: pass A a rough mean K (one sum in T), pass B (the chunk is in L1 now)
// the shifted sums Sd = sum (x - K), Sdd = sum (x - K)^2, so
//   mean = K + Sd/n,   M2 = Sdd - Sd^2/n   (exact in real arithmetic; with K within a few std of the mean the
//   subtraction loses nothing, and a constant chunk gives d = 0 exactly: mean == x, M2 == 0).
template <class T, int NV>
BnMoments chunk_moments(const T* p, std::size_t nrows, std::size_t stride, std::size_t len, std::size_t pf_off,
                        std::size_t pf_rows) {
  const auto a = chunk_runs<T, NV, 1, 1>({p}, nrows, stride, len, pf_off, pf_rows, T(0), sum_terms);
  const double n = double(nrows) * double(len);
  const T K = (a.vec[0] + a.tail[0]) * (T(1) / T(n));  // any K near the mean works: a float multiply will do
  const auto s = chunk_runs<T, NV, 1, 2>({p}, nrows, stride, len, 0, 0, K, moment_terms);
  const double sd = s.sum(0), dmean = sd / n;  // mean - K
  return {n, double(K) + dmean, std::max(0.0, s.sum(1) - sd * dmean)};
}

}  // namespace xg::kernels::norm
