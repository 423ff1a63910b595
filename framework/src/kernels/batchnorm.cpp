// xgrad — hand-fused BatchNorm kernels (see xgrad/kernels/batchnorm.h for the API and docs/batchnorm-fused.md
// for the derivation and the benchmark).
//
// Map of this file
//   1. SIMD helpers (xsimd 8.1 batches, streaming stores)
//   2. Blocking: the fixed, shape-only cut of each channel's N*S values into chunks and groups
//   3. Local sums of one chunk (forward: shifted two-pass moments; backward: sum dy, sum dy*xhat)
//   4. Combine (Chan) and finish (mean/invstd/running stats; backward coefficients)
//   5. Elementwise passes (normalise, eval affine, dx)
//   6. Drivers: fused per-channel path and batch-split path, both built from 3-5
//   7. Public entry points and explicit instantiations
//
// Two layouts share everything but the innermost loops:
//   S > 1  ("runs"): a channel is N strided runs of S contiguous values; vectorise along S.
//   S == 1 ("cols"): [N, C], channels are the contiguous axis; vectorise across a block of channels and
//                    reduce down the rows.
#include "xgrad/kernels/batchnorm.h"

// GCC 12 reports a false -Wmaybe-uninitialized inside xsimd's AVX-512 hadd (_mm256_undefined_pd) at every
// place it is inlined into this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "xgrad/parallel.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace xg::kernels {

// Combine (Chan, Golub & LeVeque): merge the moments of two disjoint sets of values.
//   n = na + nb,  delta = mean_b - mean_a,
//   mean = mean_a + delta*nb/n,   M2 = M2_a + M2_b + delta^2 * na*nb/n.
// Exact in real arithmetic; the delta^2 term is the spread *between* the two sets' means.
BnMoments bn_combine(const BnMoments& a, const BnMoments& b) {
  if (a.count == 0) return b;
  if (b.count == 0) return a;
  const double n = a.count + b.count;
  const double delta = b.mean - a.mean;
  const double fb = b.count / n;
  return {n, a.mean + delta * fb, a.m2 + b.m2 + delta * delta * a.count * fb};
}

namespace {

// =============================================================================================================
// 1. SIMD helpers
// =============================================================================================================
template <class T>
using V = xsimd::batch<T>;  // default arch from -march=native: 16 floats / 8 doubles with AVX-512

template <class T>
constexpr std::size_t kW = V<T>::size;

constexpr std::size_t kAlign = xsimd::default_arch::alignment();

// Non-temporal (streaming) store of one full batch to an aligned address: the line is written without being
// read first (no read-for-ownership), which saves a third of the DRAM traffic of a large output. xsimd 8.1
// has no streaming store, so this is the one place with raw intrinsics.
template <class T>
inline void store_stream(T* p, const V<T>& v) {
#if defined(__AVX512F__)
  if constexpr (sizeof(V<T>) == 64) {
    if constexpr (std::is_same_v<T, float>) _mm512_stream_ps(p, v); else _mm512_stream_pd(p, v);
    return;
  }
#endif
#if defined(__AVX__)
  if constexpr (sizeof(V<T>) == 32) {
    if constexpr (std::is_same_v<T, float>) _mm256_stream_ps(p, v); else _mm256_stream_pd(p, v);
    return;
  }
#endif
  v.store_aligned(p);
}

inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();  // order the weakly-ordered streaming stores before the thread reports completion
#endif
}

// Outputs at least this large are written with streaming stores: they cannot stay in cache anyway, and the
// caller's next reader would find them in DRAM either way. Smaller outputs stay cached for the next layer.
constexpr std::size_t kStreamBytes = std::size_t(4) << 20;

// Inputs below this many elements run on the calling thread only (waking a worker costs more).
constexpr std::size_t kMinParallelElems = std::size_t(1) << 15;

// =============================================================================================================
// 2. Blocking — fixed by the shape, never by the thread count.
//    A channel's N*S values are cut into CHUNKS of at most 16 KiB (k rows x `piece` values of S), small
//    enough that the second pass over a chunk hits L1. Consecutive chunk-rows form GROUPS (at most 64 per
//    channel): the unit of work when the batch is split across threads. Chunk -> group -> channel results
//    are always folded in index order, so the bits do not depend on who computed what.
// =============================================================================================================
constexpr std::size_t kChunkBytes = 16 * 1024;
constexpr std::size_t kMaxGroups = 64;

struct Blocking {
  std::size_t k = 1;       // rows per chunk
  std::size_t piece = 1;   // values of S per chunk (S > 1)
  std::size_t rpg = 1;     // rows per group (a multiple of k)
  std::size_t G = 1;       // groups along N
  std::size_t cb = 1;      // channels per column block (S == 1)
  std::size_t units = 0;   // work units along C: channels (S > 1) or column blocks (S == 1)
};

template <class T>
Blocking make_blocking(const BnDims& d) {
  Blocking b;
  const std::size_t lmax = kChunkBytes / sizeof(T);
  if (d.S == 1) {
    b.cb = 4 * kW<T>;                       // 4 vectors of channels per block
    b.units = (d.C + b.cb - 1) / b.cb;
    b.k = 64;                               // rows per chunk: each lane sums <= 64 values before going to double
  } else if (d.S <= lmax) {
    b.units = d.C;
    b.piece = d.S;
    b.k = std::max<std::size_t>(1, lmax / d.S);
  } else {
    b.units = d.C;
    const std::size_t npieces = (d.S + lmax - 1) / lmax;
    const std::size_t p = (d.S + npieces - 1) / npieces;
    b.piece = (p + kW<T> - 1) / kW<T> * kW<T>;
    b.k = 1;
  }
  b.k = std::max<std::size_t>(1, std::min(b.k, d.N));
  const std::size_t chunk_rows = (d.N + b.k - 1) / b.k;
  const std::size_t G0 = std::max<std::size_t>(1, std::min(chunk_rows, kMaxGroups));
  b.rpg = b.k * ((chunk_rows + G0 - 1) / G0);
  b.G = std::max<std::size_t>(1, (d.N + b.rpg - 1) / b.rpg);
  return b;
}

// =============================================================================================================
// 3. Local sums of one chunk
// =============================================================================================================

// Forward, S > 1. Chunk = nrows runs of len contiguous values, `stride` apart.
//   pass A: K = rough mean of the chunk (one sum in T lanes)
//   pass B: d = x - K (the chunk is in L1 now);  Sd = sum d,  Sdd = sum d^2
//   -> count n,  mean = K + Sd/n,  M2 = Sdd - Sd^2/n  (the shifted-data identity, exact in real arithmetic;
//      with K within a few std of the mean the subtraction loses nothing). A constant chunk gives d = x - K
//      exactly, hence mean == x exactly and M2 == 0.
template <class T>
BnMoments chunk_moments_runs(const T* p, std::size_t nrows, std::size_t stride, std::size_t len) {
  constexpr std::size_t w = kW<T>;
  const std::size_t vlen = len - len % w;
  V<T> a0(T(0)), a1(T(0));
  T at = 0;
  for (std::size_t r = 0; r < nrows; ++r) {
    const T* q = p + r * stride;
    std::size_t i = 0;
    for (; i + 2 * w <= vlen; i += 2 * w) {
      a0 += V<T>::load_unaligned(q + i);
      a1 += V<T>::load_unaligned(q + i + w);
    }
    if (i < vlen) a0 += V<T>::load_unaligned(q + i);
    for (i = vlen; i < len; ++i) at += q[i];
  }
  const double n = double(nrows) * double(len);
  const T K = T((double(xsimd::hadd(a0 + a1)) + double(at)) / n);

  const V<T> kv(K);
  V<T> s0(T(0)), s1(T(0)), q0(T(0)), q1(T(0));
  T st = 0, qt = 0;
  for (std::size_t r = 0; r < nrows; ++r) {
    const T* q = p + r * stride;
    std::size_t i = 0;
    for (; i + 2 * w <= vlen; i += 2 * w) {
      const V<T> d0 = V<T>::load_unaligned(q + i) - kv;
      const V<T> d1 = V<T>::load_unaligned(q + i + w) - kv;
      s0 += d0;
      s1 += d1;
      q0 = xsimd::fma(d0, d0, q0);
      q1 = xsimd::fma(d1, d1, q1);
    }
    if (i < vlen) {
      const V<T> d0 = V<T>::load_unaligned(q + i) - kv;
      s0 += d0;
      q0 = xsimd::fma(d0, d0, q0);
    }
    for (i = vlen; i < len; ++i) {
      const T dd = q[i] - K;
      st += dd;
      qt = std::fma(dd, dd, qt);
    }
  }
  const double sd = double(xsimd::hadd(s0 + s1)) + double(st);
  const double sdd = double(xsimd::hadd(q0 + q1)) + double(qt);
  return {n, double(K) + sd / n, std::max(0.0, sdd - sd * sd / n)};
}

// Forward, S == 1. Chunk = nrows rows x cw (<= 4 vectors + tail) channels starting at p, rows `stride`
// apart. Same two passes as above, one lane per channel.
template <class T, int NV>
void chunk_moments_cols_vec(const T* p, std::size_t nrows, std::size_t stride, BnMoments* out) {
  constexpr std::size_t w = kW<T>;
  V<T> a[NV];
  for (int j = 0; j < NV; ++j) a[j] = V<T>(T(0));
  for (std::size_t r = 0; r < nrows; ++r)
    for (int j = 0; j < NV; ++j) a[j] += V<T>::load_unaligned(p + r * stride + j * w);
  const V<T> inv_n(T(1) / T(nrows));
  V<T> K[NV], s[NV], q[NV];
  for (int j = 0; j < NV; ++j) {
    K[j] = a[j] * inv_n;
    s[j] = V<T>(T(0));
    q[j] = V<T>(T(0));
  }
  for (std::size_t r = 0; r < nrows; ++r)
    for (int j = 0; j < NV; ++j) {
      const V<T> dd = V<T>::load_unaligned(p + r * stride + j * w) - K[j];
      s[j] += dd;
      q[j] = xsimd::fma(dd, dd, q[j]);
    }
  alignas(kAlign) T kb[w], sb[w], qb[w];
  const double n = double(nrows);
  for (int j = 0; j < NV; ++j) {
    K[j].store_aligned(kb);
    s[j].store_aligned(sb);
    q[j].store_aligned(qb);
    for (std::size_t l = 0; l < w; ++l) {
      const double sd = sb[l], sdd = qb[l];
      out[j * w + l] = {n, double(kb[l]) + sd / n, std::max(0.0, sdd - sd * sd / n)};
    }
  }
}

template <class T>
void chunk_moments_cols(const T* p, std::size_t nrows, std::size_t stride, std::size_t cw, BnMoments* out) {
  constexpr std::size_t w = kW<T>;
  const std::size_t nv = cw / w;
  switch (nv) {
    case 4: chunk_moments_cols_vec<T, 4>(p, nrows, stride, out); break;
    case 3: chunk_moments_cols_vec<T, 3>(p, nrows, stride, out); break;
    case 2: chunk_moments_cols_vec<T, 2>(p, nrows, stride, out); break;
    case 1: chunk_moments_cols_vec<T, 1>(p, nrows, stride, out); break;
    default: break;
  }
  const T inv_n = T(1) / T(nrows);
  const double n = double(nrows);
  for (std::size_t c = nv * w; c < cw; ++c) {  // scalar tail: the same two passes, one channel at a time
    T a = 0;
    for (std::size_t r = 0; r < nrows; ++r) a += p[r * stride + c];
    const T K = a * inv_n;
    T s = 0, q = 0;
    for (std::size_t r = 0; r < nrows; ++r) {
      const T dd = p[r * stride + c] - K;
      s += dd;
      q = std::fma(dd, dd, q);
    }
    const double sd = s, sdd = q;
    out[c] = {n, double(K) + sd / n, std::max(0.0, sdd - sd * sd / n)};
  }
}

// Backward local sums of one chunk: sum dy and sum dy*xhat with xhat = (x - mean)*invstd, computed in the
// forward's operation order. With want_xhat == false only sum dy is formed (x is not read).
struct GradSums {
  double dy = 0;
  double dyx = 0;
};

template <class T>
GradSums chunk_grad_sums_runs(const T* dy, const T* x, std::size_t nrows, std::size_t stride, std::size_t len,
                              T mean, T invstd, bool want_xhat) {
  constexpr std::size_t w = kW<T>;
  const std::size_t vlen = len - len % w;
  V<T> s0(T(0)), s1(T(0)), t0(T(0)), t1(T(0));
  T st = 0, tt = 0;
  const V<T> mv(mean), iv(invstd);
  for (std::size_t r = 0; r < nrows; ++r) {
    const T* g = dy + r * stride;
    const T* q = x + r * stride;
    std::size_t i = 0;
    if (want_xhat) {
      for (; i + 2 * w <= vlen; i += 2 * w) {
        const V<T> g0 = V<T>::load_unaligned(g + i), g1 = V<T>::load_unaligned(g + i + w);
        const V<T> h0 = (V<T>::load_unaligned(q + i) - mv) * iv;
        const V<T> h1 = (V<T>::load_unaligned(q + i + w) - mv) * iv;
        s0 += g0;
        s1 += g1;
        t0 = xsimd::fma(g0, h0, t0);
        t1 = xsimd::fma(g1, h1, t1);
      }
      if (i < vlen) {
        const V<T> g0 = V<T>::load_unaligned(g + i);
        s0 += g0;
        t0 = xsimd::fma(g0, (V<T>::load_unaligned(q + i) - mv) * iv, t0);
      }
      for (i = vlen; i < len; ++i) {
        st += g[i];
        tt = std::fma(g[i], (q[i] - mean) * invstd, tt);
      }
    } else {
      for (; i + 2 * w <= vlen; i += 2 * w) {
        s0 += V<T>::load_unaligned(g + i);
        s1 += V<T>::load_unaligned(g + i + w);
      }
      if (i < vlen) s0 += V<T>::load_unaligned(g + i);
      for (i = vlen; i < len; ++i) st += g[i];
    }
  }
  return {double(xsimd::hadd(s0 + s1)) + double(st), double(xsimd::hadd(t0 + t1)) + double(tt)};
}

template <class T, int NV>
void chunk_grad_sums_cols_vec(const T* dy, const T* x, std::size_t nrows, std::size_t stride, const T* mean,
                              const T* invstd, bool want_xhat, GradSums* out) {
  constexpr std::size_t w = kW<T>;
  V<T> s[NV], t[NV], mv[NV], iv[NV];
  for (int j = 0; j < NV; ++j) {
    s[j] = V<T>(T(0));
    t[j] = V<T>(T(0));
    mv[j] = V<T>::load_unaligned(mean + j * w);
    iv[j] = V<T>::load_unaligned(invstd + j * w);
  }
  for (std::size_t r = 0; r < nrows; ++r)
    for (int j = 0; j < NV; ++j) {
      const V<T> g = V<T>::load_unaligned(dy + r * stride + j * w);
      s[j] += g;
      if (want_xhat) t[j] = xsimd::fma(g, (V<T>::load_unaligned(x + r * stride + j * w) - mv[j]) * iv[j], t[j]);
    }
  alignas(kAlign) T sb[w], tb[w];
  for (int j = 0; j < NV; ++j) {
    s[j].store_aligned(sb);
    t[j].store_aligned(tb);
    for (std::size_t l = 0; l < w; ++l) out[j * w + l] = {double(sb[l]), double(tb[l])};
  }
}

template <class T>
void chunk_grad_sums_cols(const T* dy, const T* x, std::size_t nrows, std::size_t stride, std::size_t cw,
                          const T* mean, const T* invstd, bool want_xhat, GradSums* out) {
  constexpr std::size_t w = kW<T>;
  const std::size_t nv = cw / w;
  switch (nv) {
    case 4: chunk_grad_sums_cols_vec<T, 4>(dy, x, nrows, stride, mean, invstd, want_xhat, out); break;
    case 3: chunk_grad_sums_cols_vec<T, 3>(dy, x, nrows, stride, mean, invstd, want_xhat, out); break;
    case 2: chunk_grad_sums_cols_vec<T, 2>(dy, x, nrows, stride, mean, invstd, want_xhat, out); break;
    case 1: chunk_grad_sums_cols_vec<T, 1>(dy, x, nrows, stride, mean, invstd, want_xhat, out); break;
    default: break;
  }
  for (std::size_t c = nv * w; c < cw; ++c) {
    T s = 0, t = 0;
    for (std::size_t r = 0; r < nrows; ++r) {
      const T g = dy[r * stride + c];
      s += g;
      if (want_xhat) t = std::fma(g, (x[r * stride + c] - mean[c]) * invstd[c], t);
    }
    out[c] = {double(s), double(t)};
  }
}

// =============================================================================================================
// 4. Finish
// =============================================================================================================

// Per-channel coefficients of the forward's elementwise pass y = (x - mean)*scale + shift.
template <class T>
struct Affine {
  T mean, scale, shift;
};

// Forward finish for one channel (after all chunks/groups are combined):
//   var = M2/m (biased)  invstd = 1/sqrt(var + eps)
//   running_mean = (1-f)*running_mean + f*mean,  running_var = (1-f)*running_var + f*M2/(m-1)
//   scale = w*invstd, shift = b   (y = (x - mean)*scale + shift)
template <class T>
Affine<T> finish_channel(const BnMoments& mo, std::size_t c, double eps, double f, const T* weight,
                         const T* bias, T* save_mean, T* save_invstd, T* running_mean, T* running_var) {
  const double var = mo.m2 / mo.count;
  const double invstd = 1.0 / std::sqrt(var + eps);
  if (save_mean) save_mean[c] = T(mo.mean);
  if (save_invstd) save_invstd[c] = T(invstd);
  if (running_mean) running_mean[c] = T((1.0 - f) * double(running_mean[c]) + f * mo.mean);
  if (running_var) running_var[c] = T((1.0 - f) * double(running_var[c]) + f * (mo.m2 / (mo.count - 1.0)));
  const double w = weight ? double(weight[c]) : 1.0;
  // scale from the ROUNDED invstd, so the split path (batch_norm_normalize from save_invstd) gives equal bits
  return {T(mo.mean), T(w * double(T(invstd))), bias ? bias[c] : T(0)};
}

// Backward finish for one channel, from the totals sum dy, sum dy*xhat over m values:
//   dbias = sum dy,  dweight = sum dy*xhat,
//   dx = w*invstd*(dy - mean(dy) - xhat*mean(dy*xhat))
//      = k1*dy + k2*(x - mean) + k3  with k1 = w*invstd, k2 = -k1*invstd*mean(dy*xhat), k3 = -k1*mean(dy)
// (x - mean is kept as a difference: folding mean into k3 would cancel catastrophically for large means).
template <class T>
struct DxCoef {
  T k1, k2, k3, mean;
};

template <class T>
DxCoef<T> finish_grad_channel(const GradSums& gs, double count, std::size_t c, const T* weight,
                              const T* save_mean, const T* save_invstd, T* dweight, T* dbias) {
  if (dbias) dbias[c] = T(gs.dy);
  if (dweight) dweight[c] = T(gs.dyx);
  const double w = weight ? double(weight[c]) : 1.0;
  const double invstd = save_invstd[c];
  const double k1 = w * invstd;
  return {T(k1), T(-k1 * invstd * (gs.dyx / count)), T(-k1 * (gs.dy / count)), save_mean[c]};
}

// =============================================================================================================
// 5. Elementwise passes
// =============================================================================================================

// y = (x - m)*a + b over len contiguous values. The forward normalise uses (mean, scale, shift); eval uses
// (0, scale, shift), i.e. y = x*scale + shift. Stream == true peels to an aligned y and streams the body.
template <class T, bool Stream>
void affine_run(const T* x, T* y, std::size_t len, T m, T a, T b) {
  constexpr std::size_t w = kW<T>;
  std::size_t i = 0;
  if constexpr (Stream) {
    while (i < len && (reinterpret_cast<std::uintptr_t>(y + i) % kAlign) != 0) {
      y[i] = std::fma(x[i] - m, a, b);
      ++i;
    }
  }
  const V<T> mv(m), av(a), bv(b);
  for (; i + w <= len; i += w) {
    const V<T> r = xsimd::fma(V<T>::load_unaligned(x + i) - mv, av, bv);
    if constexpr (Stream) store_stream(y + i, r); else r.store_unaligned(y + i);
  }
  for (; i < len; ++i) y[i] = std::fma(x[i] - m, a, b);
}

// S == 1: rows [0, nrows) of a column block of cw channels; per-channel m/a/b arrays (cw values).
template <class T>
void affine_cols(const T* x, T* y, std::size_t nrows, std::size_t stride, std::size_t cw, const T* m, const T* a,
                 const T* b) {
  constexpr std::size_t w = kW<T>;
  const std::size_t nv = cw / w;
  V<T> mv[4], av[4], bv[4];
  for (std::size_t j = 0; j < nv; ++j) {
    mv[j] = V<T>::load_unaligned(m + j * w);
    av[j] = V<T>::load_unaligned(a + j * w);
    bv[j] = V<T>::load_unaligned(b + j * w);
  }
  for (std::size_t r = 0; r < nrows; ++r) {
    const T* xr = x + r * stride;
    T* yr = y + r * stride;
    for (std::size_t j = 0; j < nv; ++j)
      xsimd::fma(V<T>::load_unaligned(xr + j * w) - mv[j], av[j], bv[j]).store_unaligned(yr + j * w);
    for (std::size_t c = nv * w; c < cw; ++c) yr[c] = std::fma(xr[c] - m[c], a[c], b[c]);
  }
}

// dx = k1*dy + (k2*(x - mean) + k3) over len contiguous values.
template <class T, bool Stream>
void dx_run(const T* dy, const T* x, T* dx, std::size_t len, const DxCoef<T>& k) {
  constexpr std::size_t w = kW<T>;
  std::size_t i = 0;
  if constexpr (Stream) {
    while (i < len && (reinterpret_cast<std::uintptr_t>(dx + i) % kAlign) != 0) {
      dx[i] = std::fma(k.k1, dy[i], std::fma(k.k2, x[i] - k.mean, k.k3));
      ++i;
    }
  }
  const V<T> k1(k.k1), k2(k.k2), k3(k.k3), mv(k.mean);
  for (; i + w <= len; i += w) {
    const V<T> r = xsimd::fma(k1, V<T>::load_unaligned(dy + i),
                              xsimd::fma(k2, V<T>::load_unaligned(x + i) - mv, k3));
    if constexpr (Stream) store_stream(dx + i, r); else r.store_unaligned(dx + i);
  }
  for (; i < len; ++i) dx[i] = std::fma(k.k1, dy[i], std::fma(k.k2, x[i] - k.mean, k.k3));
}

template <class T>
void dx_cols(const T* dy, const T* x, T* dx, std::size_t nrows, std::size_t stride, std::size_t cw,
             const DxCoef<T>* k) {
  alignas(kAlign) T k1[4 * kW<T>], k2[4 * kW<T>], k3[4 * kW<T>], mn[4 * kW<T>];
  for (std::size_t c = 0; c < cw; ++c) {
    k1[c] = k[c].k1;
    k2[c] = k[c].k2;
    k3[c] = k[c].k3;
    mn[c] = k[c].mean;
  }
  constexpr std::size_t w = kW<T>;
  const std::size_t nv = cw / w;
  for (std::size_t r = 0; r < nrows; ++r) {
    const T* g = dy + r * stride;
    const T* q = x + r * stride;
    T* o = dx + r * stride;
    for (std::size_t j = 0; j < nv; ++j) {
      const std::size_t o0 = j * w;
      xsimd::fma(V<T>::load_aligned(k1 + o0), V<T>::load_unaligned(g + o0),
                 xsimd::fma(V<T>::load_aligned(k2 + o0), V<T>::load_unaligned(q + o0) - V<T>::load_aligned(mn + o0),
                            V<T>::load_aligned(k3 + o0)))
          .store_unaligned(o + o0);
    }
    for (std::size_t c = nv * w; c < cw; ++c) o[c] = std::fma(k1[c], g[c], std::fma(k2[c], q[c] - mn[c], k3[c]));
  }
}

// =============================================================================================================
// 6. Drivers
// =============================================================================================================

// Rows of group g.
inline std::size_t group_begin(const Blocking& b, std::size_t g) { return g * b.rpg; }
inline std::size_t group_end(const Blocking& b, const BnDims& d, std::size_t g) {
  return std::min(d.N, (g + 1) * b.rpg);
}
// Channels of column block u (S == 1).
inline std::size_t block_begin(const Blocking& b, std::size_t u) { return u * b.cb; }
inline std::size_t block_width(const Blocking& b, const BnDims& d, std::size_t u) {
  return std::min(d.C, (u + 1) * b.cb) - u * b.cb;
}
// Number of channels in work unit u.
inline std::size_t unit_width(const Blocking& b, const BnDims& d, std::size_t u) {
  return d.S == 1 ? block_width(b, d, u) : 1;
}
inline std::size_t unit_first_channel(const Blocking& b, const BnDims& d, std::size_t u) {
  return d.S == 1 ? block_begin(b, u) : u;
}

// Local sums of unit u over group g, folded chunk by chunk in order: out[0 .. unit_width).
template <class T>
void group_moments(const T* x, const BnDims& d, const Blocking& b, std::size_t u, std::size_t g, BnMoments* out) {
  const std::size_t r0 = group_begin(b, g), r1 = group_end(b, d, g);
  if (d.S == 1) {
    const std::size_t c0 = block_begin(b, u), cw = block_width(b, d, u);
    BnMoments tmp[4 * kW<T>];
    for (std::size_t c = 0; c < cw; ++c) out[c] = BnMoments{};
    for (std::size_t r = r0; r < r1; r += b.k) {
      chunk_moments_cols(x + r * d.C + c0, std::min(b.k, r1 - r), d.C, cw, tmp);
      for (std::size_t c = 0; c < cw; ++c) out[c] = bn_combine(out[c], tmp[c]);
    }
  } else {
    const std::size_t stride = d.C * d.S;
    BnMoments acc;
    for (std::size_t r = r0; r < r1; r += b.k)
      for (std::size_t s0 = 0; s0 < d.S; s0 += b.piece)
        acc = bn_combine(acc, chunk_moments_runs(x + (r * d.C + u) * d.S + s0, std::min(b.k, r1 - r), stride,
                                                 std::min(b.piece, d.S - s0)));
    out[0] = acc;
  }
}

template <class T>
void group_grad_sums(const T* dy, const T* x, const BnDims& d, const Blocking& b, std::size_t u, std::size_t g,
                     const T* mean, const T* invstd, bool want_xhat, GradSums* out) {
  const std::size_t r0 = group_begin(b, g), r1 = group_end(b, d, g);
  if (d.S == 1) {
    const std::size_t c0 = block_begin(b, u), cw = block_width(b, d, u);
    GradSums tmp[4 * kW<T>];
    for (std::size_t c = 0; c < cw; ++c) out[c] = GradSums{};
    for (std::size_t r = r0; r < r1; r += b.k) {
      chunk_grad_sums_cols(dy + r * d.C + c0, x + r * d.C + c0, std::min(b.k, r1 - r), d.C, cw, mean + c0,
                           invstd + c0, want_xhat, tmp);
      for (std::size_t c = 0; c < cw; ++c) {
        out[c].dy += tmp[c].dy;
        out[c].dyx += tmp[c].dyx;
      }
    }
  } else {
    const std::size_t stride = d.C * d.S;
    GradSums acc;
    for (std::size_t r = r0; r < r1; r += b.k)
      for (std::size_t s0 = 0; s0 < d.S; s0 += b.piece) {
        const std::size_t off = (r * d.C + u) * d.S + s0;
        const GradSums t = chunk_grad_sums_runs(dy + off, x + off, std::min(b.k, r1 - r), stride,
                                                std::min(b.piece, d.S - s0), mean[u], invstd[u], want_xhat);
        acc.dy += t.dy;
        acc.dyx += t.dyx;
      }
    out[0] = acc;
  }
}

// Elementwise forward/eval over rows [r0, r1) of unit u with per-channel (m, a, b) for the unit's channels.
template <class T, bool Stream>
void affine_unit(const T* x, T* y, const BnDims& d, const Blocking& b, std::size_t u, std::size_t r0,
                 std::size_t r1, const T* m, const T* a, const T* sh) {
  if (d.S == 1) {
    const std::size_t c0 = block_begin(b, u);
    affine_cols(x + r0 * d.C + c0, y + r0 * d.C + c0, r1 - r0, d.C, block_width(b, d, u), m, a, sh);
  } else {
    for (std::size_t r = r0; r < r1; ++r) {
      const std::size_t off = (r * d.C + u) * d.S;
      affine_run<T, Stream>(x + off, y + off, d.S, m[0], a[0], sh[0]);
    }
  }
}

template <class T, bool Stream>
void dx_unit(const T* dy, const T* x, T* dx, const BnDims& d, const Blocking& b, std::size_t u, std::size_t r0,
             std::size_t r1, const DxCoef<T>* k) {
  if (d.S == 1) {
    const std::size_t off = r0 * d.C + block_begin(b, u);
    dx_cols(dy + off, x + off, dx + off, r1 - r0, d.C, block_width(b, d, u), k);
  } else {
    for (std::size_t r = r0; r < r1; ++r) {
      const std::size_t off = (r * d.C + u) * d.S;
      dx_run<T, Stream>(dy + off, x + off, dx + off, d.S, k[0]);
    }
  }
}

// Schedule. FUSED: threads split the units (channels / column blocks); each unit does
//   local sums -> combine -> finish -> elementwise
// back to back, so its slab is read from DRAM once and re-read from L2. SPLIT (few units for the threads):
// threads split (unit, group) pairs for the local sums, the caller combines and finishes, then threads split
// (unit, group) pairs again for the elementwise pass. Both run the identical arithmetic per (unit, group) and
// fold groups in the same order, so they produce the same bits.
enum class Schedule { Inline, Fused, Split };

inline Schedule choose_schedule(const BnDims& d, const Blocking& b) {
  const std::size_t numel = d.N * d.C * d.S;
  const std::size_t nt = static_cast<std::size_t>(get_num_threads());
  if (nt == 1 || numel < kMinParallelElems || in_parallel_region()) return Schedule::Inline;
  if (b.units % nt == 0 || b.units >= 4 * nt || b.G == 1) return Schedule::Fused;
  return Schedule::Split;
}

// Chunk of units per parallel_for piece so that each piece has at least ~kMinParallelElems/2 values.
inline std::size_t unit_grain(const BnDims& d, const Blocking& b) {
  const std::size_t per_unit = std::max<std::size_t>(1, d.N * d.S * (d.S == 1 ? b.cb : 1));
  return std::max<std::size_t>(1, (kMinParallelElems / 2) / per_unit);
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

template <class T>
void forward_train_impl(const T* x, const T* weight, const T* bias, T* y, T* save_mean, T* save_invstd,
                        T* running_mean, T* running_var, const BnDims& d, double eps, double f) {
  check_train_dims<T>(d, running_var != nullptr);
  if (d.C == 0 || d.N * d.S == 0) return;
  const Blocking b = make_blocking<T>(d);
  const bool stream = d.N * d.C * d.S * sizeof(T) >= kStreamBytes;
  const Schedule sched = choose_schedule(d, b);

  if (sched != Schedule::Split) {
    auto body = [&](std::size_t lo, std::size_t hi) {
      BnMoments part[4 * kW<T>], tot[4 * kW<T>];
      T m[4 * kW<T>], a[4 * kW<T>], sh[4 * kW<T>];
      for (std::size_t u = lo; u < hi; ++u) {
        const std::size_t cw = unit_width(b, d, u), c0 = unit_first_channel(b, d, u);
        for (std::size_t c = 0; c < cw; ++c) tot[c] = BnMoments{};
        for (std::size_t g = 0; g < b.G; ++g) {  // local sums + combine, groups in order
          group_moments(x, d, b, u, g, part);
          for (std::size_t c = 0; c < cw; ++c) tot[c] = bn_combine(tot[c], part[c]);
        }
        for (std::size_t c = 0; c < cw; ++c) {  // finish
          const Affine<T> af =
              finish_channel(tot[c], c0 + c, eps, f, weight, bias, save_mean, save_invstd, running_mean, running_var);
          m[c] = af.mean;
          a[c] = af.scale;
          sh[c] = af.shift;
        }
        if (stream) affine_unit<T, true>(x, y, d, b, u, 0, d.N, m, a, sh);  // normalise (slab still in L2)
        else affine_unit<T, false>(x, y, d, b, u, 0, d.N, m, a, sh);
      }
      if (stream) stream_fence();
    };
    if (sched == Schedule::Inline) body(0, b.units);
    else parallel_for(0, b.units, unit_grain(d, b), body);
    return;
  }

  // SPLIT: (unit, group) pairs.
  std::vector<BnMoments> part(b.G * d.C);  // part[g*C + c]
  parallel_for(0, b.units * b.G, 1, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t t = lo; t < hi; ++t) {
      const std::size_t u = t / b.G, g = t % b.G;
      group_moments(x, d, b, u, g, part.data() + g * d.C + unit_first_channel(b, d, u));
    }
  });
  std::vector<T> m(d.C), a(d.C), sh(d.C);
  for (std::size_t c = 0; c < d.C; ++c) {
    BnMoments tot;
    for (std::size_t g = 0; g < b.G; ++g) tot = bn_combine(tot, part[g * d.C + c]);
    const Affine<T> af = finish_channel(tot, c, eps, f, weight, bias, save_mean, save_invstd, running_mean, running_var);
    m[c] = af.mean;
    a[c] = af.scale;
    sh[c] = af.shift;
  }
  parallel_for(0, b.units * b.G, 1, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t t = lo; t < hi; ++t) {
      const std::size_t u = t / b.G, g = t % b.G, c0 = unit_first_channel(b, d, u);
      if (stream)
        affine_unit<T, true>(x, y, d, b, u, group_begin(b, g), group_end(b, d, g), &m[c0], &a[c0], &sh[c0]);
      else
        affine_unit<T, false>(x, y, d, b, u, group_begin(b, g), group_end(b, d, g), &m[c0], &a[c0], &sh[c0]);
    }
    if (stream) stream_fence();
  });
}

template <class T>
void backward_impl(const T* dy, const T* x, const T* weight, const T* save_mean, const T* save_invstd, T* dx,
                   T* dweight, T* dbias, const BnDims& d, const double* given_dy, const double* given_dyx,
                   double count) {
  if (d.C == 0) return;
  if (!dx && !dweight && !dbias) return;
  const bool want_xhat = dx || dweight;
  if (!want_xhat) x = dy;  // only dbias: x is never read (and may be nullptr)
  const bool have_sums = given_dy != nullptr;
  const Blocking b = make_blocking<T>(d);
  const bool stream = d.N * d.C * d.S * sizeof(T) >= kStreamBytes;
  const Schedule sched = choose_schedule(d, b);

  auto sums_of_unit = [&](std::size_t u, GradSums* tot) {
    const std::size_t cw = unit_width(b, d, u), c0 = unit_first_channel(b, d, u);
    if (have_sums) {
      for (std::size_t c = 0; c < cw; ++c) tot[c] = {given_dy[c0 + c], given_dyx[c0 + c]};
      return;
    }
    GradSums part[4 * kW<T>];
    for (std::size_t c = 0; c < cw; ++c) tot[c] = GradSums{};
    for (std::size_t g = 0; g < b.G; ++g) {  // local sums + combine, groups in order
      group_grad_sums(dy, x, d, b, u, g, save_mean, save_invstd, want_xhat, part);
      for (std::size_t c = 0; c < cw; ++c) {
        tot[c].dy += part[c].dy;
        tot[c].dyx += part[c].dyx;
      }
    }
  };

  if (sched != Schedule::Split || have_sums) {
    auto body = [&](std::size_t lo, std::size_t hi) {
      GradSums tot[4 * kW<T>];
      DxCoef<T> k[4 * kW<T>];
      for (std::size_t u = lo; u < hi; ++u) {
        const std::size_t cw = unit_width(b, d, u), c0 = unit_first_channel(b, d, u);
        sums_of_unit(u, tot);
        for (std::size_t c = 0; c < cw; ++c)  // finish
          k[c] = finish_grad_channel(tot[c], count, c0 + c, weight, save_mean, save_invstd, dweight, dbias);
        if (dx) {  // elementwise (slabs of dy and x still in L2)
          if (stream) dx_unit<T, true>(dy, x, dx, d, b, u, 0, d.N, k);
          else dx_unit<T, false>(dy, x, dx, d, b, u, 0, d.N, k);
        }
      }
      if (stream && dx) stream_fence();
    };
    if (sched == Schedule::Inline) body(0, b.units);
    else parallel_for(0, b.units, unit_grain(d, b), body);
    return;
  }

  // SPLIT: (unit, group) pairs.
  std::vector<GradSums> part(b.G * d.C);
  parallel_for(0, b.units * b.G, 1, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t t = lo; t < hi; ++t) {
      const std::size_t u = t / b.G, g = t % b.G;
      group_grad_sums(dy, x, d, b, u, g, save_mean, save_invstd, want_xhat,
                      part.data() + g * d.C + unit_first_channel(b, d, u));
    }
  });
  std::vector<DxCoef<T>> k(d.C);
  for (std::size_t c = 0; c < d.C; ++c) {
    GradSums tot;
    for (std::size_t g = 0; g < b.G; ++g) {
      tot.dy += part[g * d.C + c].dy;
      tot.dyx += part[g * d.C + c].dyx;
    }
    k[c] = finish_grad_channel(tot, count, c, weight, save_mean, save_invstd, dweight, dbias);
  }
  if (!dx) return;
  parallel_for(0, b.units * b.G, 1, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t t = lo; t < hi; ++t) {
      const std::size_t u = t / b.G, g = t % b.G, c0 = unit_first_channel(b, d, u);
      if (stream) dx_unit<T, true>(dy, x, dx, d, b, u, group_begin(b, g), group_end(b, d, g), &k[c0]);
      else dx_unit<T, false>(dy, x, dx, d, b, u, group_begin(b, g), group_end(b, d, g), &k[c0]);
    }
    if (stream) stream_fence();
  });
}

// Elementwise y = (x - m_c)*a_c + b_c for all channels, threads over (row, unit) pairs.
template <class T>
void affine_all(const T* x, T* y, const BnDims& d, const T* m, const T* a, const T* sh) {
  if (d.C == 0 || d.N * d.S == 0) return;
  const Blocking b = make_blocking<T>(d);
  const bool stream = d.N * d.C * d.S * sizeof(T) >= kStreamBytes;
  const std::size_t items = d.N * b.units;  // item t = (row r, unit u), in memory order
  const std::size_t per_item = d.S == 1 ? b.cb : d.S;
  const std::size_t numel = d.N * d.C * d.S;
  const std::size_t grain = numel < kMinParallelElems ? items : std::max<std::size_t>(1, 8192 / per_item);
  parallel_for(0, items, grain, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t t = lo; t < hi; ++t) {
      const std::size_t r = t / b.units, u = t % b.units, c0 = unit_first_channel(b, d, u);
      if (stream) affine_unit<T, true>(x, y, d, b, u, r, r + 1, m + c0, a + c0, sh + c0);
      else affine_unit<T, false>(x, y, d, b, u, r, r + 1, m + c0, a + c0, sh + c0);
    }
    if (stream) stream_fence();
  });
}

}  // namespace

// =============================================================================================================
// 7. Public entry points
// =============================================================================================================

template <class T>
void batch_norm_forward_train(const T* x, const T* weight, const T* bias, T* y, T* save_mean, T* save_invstd,
                              T* running_mean, T* running_var, BnDims d, double eps, double exp_avg_factor) {
  forward_train_impl(x, weight, bias, y, save_mean, save_invstd, running_mean, running_var, d, eps, exp_avg_factor);
}

template <class T>
void batch_norm_forward_eval(const T* x, const T* weight, const T* bias, const T* running_mean,
                             const T* running_var, T* y, BnDims d, double eps) {
  // scale = w/sqrt(rv + eps), shift = b - rm*scale (in double), then y = x*scale + shift.
  std::vector<T> zero(d.C, T(0)), scale(d.C), shift(d.C);
  for (std::size_t c = 0; c < d.C; ++c) {
    const double s = (weight ? double(weight[c]) : 1.0) / std::sqrt(double(running_var[c]) + eps);
    scale[c] = T(s);
    shift[c] = T((bias ? double(bias[c]) : 0.0) - double(running_mean[c]) * s);
  }
  affine_all(x, y, d, zero.data(), scale.data(), shift.data());
}

template <class T>
void batch_norm_backward(const T* dy, const T* x, const T* weight, const T* save_mean, const T* save_invstd,
                         T* dx, T* dweight, T* dbias, BnDims d) {
  backward_impl(dy, x, weight, save_mean, save_invstd, dx, dweight, dbias, d, nullptr, nullptr,
                double(d.N) * double(d.S));
}

template <class T>
void batch_norm_local_moments(const T* x, BnDims d, BnMoments* out) {
  if (d.C == 0) return;
  const Blocking b = make_blocking<T>(d);
  if (d.N * d.S == 0) {
    for (std::size_t c = 0; c < d.C; ++c) out[c] = BnMoments{};
    return;
  }
  std::vector<BnMoments> part(b.G * d.C);
  const bool inline_only = get_num_threads() == 1 || d.N * d.C * d.S < kMinParallelElems;
  parallel_for(0, b.units * b.G, inline_only ? b.units * b.G : 1, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t t = lo; t < hi; ++t) {
      const std::size_t u = t / b.G, g = t % b.G;
      group_moments(x, d, b, u, g, part.data() + g * d.C + unit_first_channel(b, d, u));
    }
  });
  for (std::size_t c = 0; c < d.C; ++c) {
    BnMoments tot;
    for (std::size_t g = 0; g < b.G; ++g) tot = bn_combine(tot, part[g * d.C + c]);
    out[c] = tot;
  }
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
    finish_channel<T>(moments[c], c, eps, exp_avg_factor, nullptr, nullptr, save_mean, save_invstd, running_mean,
                      running_var);
}

template <class T>
void batch_norm_normalize(const T* x, const T* weight, const T* bias, const T* mean, const T* invstd, T* y,
                          BnDims d) {
  // Same per-channel coefficients as the fused forward: scale = T(w*invstd) with invstd taken in double.
  std::vector<T> scale(d.C), shift(d.C);
  for (std::size_t c = 0; c < d.C; ++c) {
    scale[c] = T((weight ? double(weight[c]) : 1.0) * double(invstd[c]));
    shift[c] = bias ? bias[c] : T(0);
  }
  affine_all(x, y, d, mean, scale.data(), shift.data());
}

template <class T>
void batch_norm_backward_local_sums(const T* dy, const T* x, const T* save_mean, const T* save_invstd, BnDims d,
                                    double* sum_dy, double* sum_dy_xhat) {
  if (d.C == 0) return;
  const Blocking b = make_blocking<T>(d);
  std::vector<GradSums> part(b.G * d.C);
  const bool inline_only = get_num_threads() == 1 || d.N * d.C * d.S < kMinParallelElems;
  parallel_for(0, b.units * b.G, inline_only ? b.units * b.G : 1, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t t = lo; t < hi; ++t) {
      const std::size_t u = t / b.G, g = t % b.G;
      group_grad_sums(dy, x, d, b, u, g, save_mean, save_invstd, true,
                      part.data() + g * d.C + unit_first_channel(b, d, u));
    }
  });
  for (std::size_t c = 0; c < d.C; ++c) {
    GradSums tot;
    for (std::size_t g = 0; g < b.G; ++g) {
      tot.dy += part[g * d.C + c].dy;
      tot.dyx += part[g * d.C + c].dyx;
    }
    sum_dy[c] = tot.dy;
    sum_dy_xhat[c] = tot.dyx;
  }
}

template <class T>
void batch_norm_backward_finish(const T* dy, const T* x, const T* weight, const T* save_mean,
                                const T* save_invstd, const double* sum_dy, const double* sum_dy_xhat,
                                double count, T* dx, T* dweight, T* dbias, BnDims d) {
  backward_impl(dy, x, weight, save_mean, save_invstd, dx, dweight, dbias, d, sum_dy, sum_dy_xhat, count);
}

#define XG_BN_INSTANTIATE(T)                                                                                      \
  template void batch_norm_forward_train<T>(const T*, const T*, const T*, T*, T*, T*, T*, T*, BnDims, double,     \
                                            double);                                                             \
  template void batch_norm_forward_eval<T>(const T*, const T*, const T*, const T*, const T*, T*, BnDims, double); \
  template void batch_norm_backward<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, T*, BnDims);    \
  template void batch_norm_local_moments<T>(const T*, BnDims, BnMoments*);                                        \
  template void batch_norm_finish_stats<T>(const BnMoments*, std::size_t, double, double, T*, T*, T*, T*);        \
  template void batch_norm_normalize<T>(const T*, const T*, const T*, const T*, const T*, T*, BnDims);            \
  template void batch_norm_backward_local_sums<T>(const T*, const T*, const T*, const T*, BnDims, double*,        \
                                                  double*);                                                      \
  template void batch_norm_backward_finish<T>(const T*, const T*, const T*, const T*, const T*, const double*,    \
                                              const double*, double, T*, T*, T*, BnDims);

XG_BN_INSTANTIATE(float)
XG_BN_INSTANTIATE(double)

#undef XG_BN_INSTANTIATE

}  // namespace xg::kernels
