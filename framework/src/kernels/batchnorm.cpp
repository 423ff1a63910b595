// xgrad — hand-fused BatchNorm kernels (see xgrad/kernels/batchnorm.h for the API and docs/batchnorm-fused.md
// for the derivation and the benchmark).
//
// Map of this file
//   1. SIMD helpers (xsimd 8.1 batches; FMA and streaming stores, which xsimd 8.1 lacks for AVX-512)
//   2. Blocking: the fixed, shape-only cut of each channel's N*S values into chunks and groups
//   3. Local sums of one chunk (forward: shifted two-pass moments; backward: sum dy, sum dy*xc, sum xc)
//   4. Combine (Chan / addition) and finish (mean/invstd/running stats; backward coefficients)
//   5. Elementwise passes (normalise, eval affine, dx)
//   6. Drivers: fused per-block path and batch-split path, both built from 3-5
//   7. Public entry points and explicit instantiations
//
// Two layouts share everything but the innermost loops:
//   S > 1  ("runs"): a channel is N strided runs of S contiguous values; vectorise along S; work units are
//                    blocks of adjacent channels.
//   S == 1 ("cols"): [N, C], channels are the contiguous axis; the statistics vectorise across a block of
//                    64 (float) / 32 (double) channels and reduce down the rows; the elementwise pass walks
//                    whole rows.
// Floating-point contraction OFF for this file (g++ contracts a*b+c into an FMA by default, even in ISO
// mode, and decides per inlining context). The kernels ask for FMAs explicitly (vfma, std::fma), and
// everything else must round the same way whichever driver (fused / split / inline) inlined it: that is what
// makes the results bit-identical for any thread count. Must precede every include.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

#include "xgrad/kernels/batchnorm.h"

// GCC 12 reports a false -W(maybe-)uninitialized inside xsimd's AVX-512 hadd (_mm256_undefined_pd) at every
// place it is inlined into this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "xgrad/parallel.h"

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

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

// Combine for the backward sums: addition.
BnGradSums bn_grad_combine(const BnGradSums& a, const BnGradSums& b) {
  return {a.sum_dy + b.sum_dy, a.sum_dy_xc + b.sum_dy_xc, a.sum_xc + b.sum_xc};
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

// Fused multiply-add a*b + c with one rounding. xsimd 8.1 has no FMA kernel for AVX-512 (it computes a*b + c,
// which this file's fp-contract=off leaves as two roundings), so call the instruction; the scalar tails use
// std::fma, so a value gets the same bits whether it falls in a vector body or in a tail.
template <class T>
inline V<T> vfma(const V<T>& a, const V<T>& b, const V<T>& c) {
#if defined(__AVX512F__)
  if constexpr (sizeof(V<T>) == 64) {
    if constexpr (std::is_same_v<T, float>) return _mm512_fmadd_ps(a, b, c); else return _mm512_fmadd_pd(a, b, c);
  }
#endif
#if defined(__FMA__)
  if constexpr (sizeof(V<T>) == 32) {
    if constexpr (std::is_same_v<T, float>) return _mm256_fmadd_ps(a, b, c); else return _mm256_fmadd_pd(a, b, c);
  }
  if constexpr (sizeof(V<T>) == 16) {
    if constexpr (std::is_same_v<T, float>) return _mm_fmadd_ps(a, b, c); else return _mm_fmadd_pd(a, b, c);
  }
#endif
  return xsimd::fma(a, b, c);  // no FMA unit: a*b + c
}

// Software prefetch into L2 (one per 64-byte line = one batch). The runs of a channel sit C*S values apart —
// usually a multiple of 4 KiB, which the hardware prefetchers do not follow and which makes them collide in
// the same cache sets — so the kernels fetch ahead themselves: the next chunk during the statistics pass,
// the next row and the next channel block during the elementwise pass.
template <class T>
inline void prefetch_l2(const T* p) {
  __builtin_prefetch(p, 0, 2);
}
constexpr std::size_t kAheadBytes = 4096;  // statistics pass: prefetch distance along each row stream

// Non-temporal (streaming) store of one full batch to an aligned address: the line is written without being
// read first (no read-for-ownership), which saves a third of the DRAM traffic of a large output. xsimd 8.1
// has no streaming store, hence the intrinsics (as in vfma).
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

// Visit the len values of one run: full batches through vec(i, slot), where slot (0..3, a compile-time
// constant) picks one of four independent accumulators so consecutive batches do not wait on each other,
// then the last len % W values through tail(i). NV > 0 means len == NV*W is known at compile time: the loop
// is fully unrolled with no remainder (small spatial sizes — 8x8 — would otherwise pay a loop set-up per run
// of four batches). NV == 0 handles any len. The path taken depends on the shape only.
template <int J>
using Slot = std::integral_constant<int, J>;

template <class T, int NV, class Vec, class Tail>
[[gnu::always_inline]] inline void visit_run(std::size_t len, Vec&& vec, Tail&& tail) {
  constexpr std::size_t w = kW<T>;
  if constexpr (NV > 0) {
    [&]<std::size_t... J>(std::index_sequence<J...>) {
      (vec(J * w, Slot<int(J % 4)>{}), ...);
    }(std::make_index_sequence<NV>{});
  } else {
    const std::size_t vlen = len - len % w;
    std::size_t i = 0;
    for (; i + 4 * w <= vlen; i += 4 * w) {
      vec(i, Slot<0>{});
      vec(i + w, Slot<1>{});
      vec(i + 2 * w, Slot<2>{});
      vec(i + 3 * w, Slot<3>{});
    }
    for (; i < vlen; i += w) vec(i, Slot<0>{});
    for (; i < len; ++i) tail(i);
  }
}

// Call f(Slot<NV>) with the compile-time batch count of a run of len values (1, 2, 4 or 8 batches), or
// Slot<0> (generic loop) for any other length.
template <class T, class F>
[[gnu::always_inline]] inline void dispatch_nv(std::size_t len, F&& f) {
  if (len % kW<T> == 0) {
    switch (len / kW<T>) {
      case 1: f(Slot<1>{}); return;
      case 2: f(Slot<2>{}); return;
      case 4: f(Slot<4>{}); return;
      case 8: f(Slot<8>{}); return;
      default: break;
    }
  }
  f(Slot<0>{});
}

// Streaming stores or not. A kernel's working set ws = (tensors read + written) * numel * sizeof(T).
//   ws <= L3/2: everything stays in cache — for the next layer, and for the next call on the same tensors —
//               so store normally (streaming would push y/dx out to DRAM and make the next reader miss);
//   eval with >= 2 threads and ws <= L3: the same (two cores re-read a cached working set much faster than
//               DRAM delivers it; measured 2-3x on a 32 MiB L3);
//   otherwise:  the output cannot stay cached: stream it (saves the read-for-ownership, a third of the
//               DRAM traffic of the elementwise pass).
// Only the store instruction changes, never the arithmetic: the choice may depend on the thread count.
// A cache size in bytes from sysconf (level 2 or 3), or 0 when the system does not say.
inline std::size_t sysconf_cache_bytes([[maybe_unused]] int level) {
  long r = 0;
#if defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
  r = sysconf(level == 2 ? _SC_LEVEL2_CACHE_SIZE : _SC_LEVEL3_CACHE_SIZE);
#endif
  return r > 0 ? std::size_t(r) : 0;
}

// Unknown (VMs often say 0): 32 MiB. Capped at 32 MiB as well: a VM may report the sum over the host's core
// complexes (508 MiB seen on a 2-vCPU Zen 5 guest), while the cores a thread runs on share one complex's L3
// (32 MiB on Zen 5) with other tenants.
inline std::size_t l3_bytes() {
  static const std::size_t v = [] {
    const std::size_t b = sysconf_cache_bytes(3), cap = std::size_t(32) << 20;
    return b >= (std::size_t(1) << 20) ? std::min(b, cap) : cap;
  }();
  return v;
}

// Per-core L2 size (the fused schedule's re-read pass is sized to it); unknown: 1 MiB.
inline std::size_t l2_bytes() {
  static const std::size_t v = [] {
    const std::size_t b = sysconf_cache_bytes(2);
    return b >= (std::size_t(128) << 10) ? b : std::size_t(1) << 20;
  }();
  return v;
}

inline bool use_stream(std::size_t numel, std::size_t elem_bytes, std::size_t tensors, bool eval) {
  const std::size_t ws = numel * elem_bytes * tensors, l3 = l3_bytes();
  if (ws <= l3 / 2) return false;
  if (eval && get_num_threads() >= 2 && ws <= l3) return false;
  return true;
}

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
  std::size_t cb = 1;      // channels per work unit (a block of adjacent channels)
  std::size_t units = 0;   // work units along C: ceil(C / cb)
};

// nt (threads) and reread only shape the channel blocks of the S > 1 layout, which never changes any
// channel's arithmetic; everything that does (chunks, groups, and the S == 1 column blocks, whose lane
// positions matter) depends on the shape alone.
//
// reread > 0: the caller runs the FUSED schedule (statistics of a block, then its elementwise pass re-reading
// `reread` tensors of the block: x in the forward, dy and x in the backward). The block is then sized so that
// what the second pass re-reads stays in this core's L2 (at most 40% of it; the rest holds the output lines
// and the prefetched next block): DRAM is read once. Measured on Zen 5 (1 MiB L2), [64, 64, 32, 32]: one
// channel per block (256 KiB of x) makes the forward 1.45x and the backward 1.6x faster than four channels
// (1 MiB, re-read from L3). Blocks never go above what makes rows >= 4096 values long, as for reread == 0.
template <class T>
Blocking make_blocking(const BnDims& d, std::size_t nt, std::size_t reread = 0) {
  Blocking b;
  const std::size_t lmax = kChunkBytes / sizeof(T);
  if (d.S == 1) {
    b.cb = 4 * kW<T>;                       // 4 vectors of channels per block
    b.k = 64;                               // rows per chunk: each lane sums <= 64 values before going to double
  } else {
    // S > 1: blocks of adjacent channels, so a row of a block (cb*S values) is one contiguous stretch of
    // >= 4096 values: both passes then stream through memory (k rows = k sequential streams) instead of
    // hopping between short runs C*S apart, whose loads would also alias (4 KiB apart) the stores just made.
    // Capped so the threads get >= 4 blocks.
    const std::size_t want = (4096 + d.S - 1) / d.S;
    const std::size_t cap = std::max<std::size_t>(1, d.C / (4 * std::max<std::size_t>(1, nt)));
    b.cb = std::clamp<std::size_t>(std::min(want, cap), 1, 4 * kW<T>);
    if (reread > 0) {
      const std::size_t per_channel = d.N * d.S * sizeof(T) * reread;
      const std::size_t fit = std::max<std::size_t>(1, (l2_bytes() * 2 / 5) / std::max<std::size_t>(1, per_channel));
      b.cb = std::min(b.cb, fit);
    }
  }
  b.units = (d.C + b.cb - 1) / b.cb;
  if (d.S == 1) {
  } else if (d.S <= lmax) {
    b.piece = d.S;
    // at most 8 rows: runs sit C*S apart, often a multiple of 4 KiB, so all k runs of a chunk fall into the
    // same L1 sets; 8 rows keep the chunk within L1's 8 ways for pass B
    b.k = std::clamp<std::size_t>(lmax / d.S, 1, 8);
  } else {
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
// pf: where to prefetch during pass A (pf_rows runs of len, `stride` apart: the data that comes next), or
// nullptr.
template <class T, int NV>
BnMoments chunk_moments_runs(const T* p, std::size_t nrows, std::size_t stride, std::size_t len, const T* pf,
                             std::size_t pf_rows) {
  const V<T> zero(T(0));
  V<T> a[4] = {zero, zero, zero, zero};  // pass A: independent accumulators keep several first-touch loads in flight
  T at = 0;
  for (std::size_t r = 0; r < nrows; ++r) {
    const T* q = p + r * stride;
    const T* f = pf && r < pf_rows ? pf + r * stride : nullptr;
    visit_run<T, NV>(
        len,
        [&](std::size_t i, auto slot) {
          if (f) prefetch_l2(f + i);
          a[slot] += V<T>::load_unaligned(q + i);
        },
        [&](std::size_t i) { at += q[i]; });
  }
  const double n = double(nrows) * double(len);
  // any K near the mean works (the identities below are exact), so a float multiply is enough here
  const T K = (xsimd::hadd((a[0] + a[1]) + (a[2] + a[3])) + at) * (T(1) / T(n));

  const V<T> kv(K);  // pass B (the chunk is in L1 now): shifted sums
  V<T> sd[4] = {zero, zero, zero, zero}, sq[4] = {zero, zero, zero, zero};
  T st = 0, qt = 0;
  for (std::size_t r = 0; r < nrows; ++r) {
    const T* q = p + r * stride;
    visit_run<T, NV>(
        len,
        [&](std::size_t i, auto slot) {
          const V<T> dd = V<T>::load_unaligned(q + i) - kv;
          sd[slot] += dd;
          sq[slot] = vfma(dd, dd, sq[slot]);
        },
        [&](std::size_t i) {
          const T dd = q[i] - K;
          st += dd;
          qt = std::fma(dd, dd, qt);
        });
  }
  const double sdsum = double(xsimd::hadd((sd[0] + sd[1]) + (sd[2] + sd[3]))) + double(st);
  const double sqsum = double(xsimd::hadd((sq[0] + sq[1]) + (sq[2] + sq[3]))) + double(qt);
  const double dmean = sdsum / n;  // mean - K
  return {n, double(K) + dmean, std::max(0.0, sqsum - sdsum * dmean)};
}

// Forward, S == 1. Chunk = nrows rows x cw (<= 4 batches + tail) channels starting at p, rows `stride`
// apart. Same two passes as above, one lane per channel; the per-channel results (count = nrows for all)
// go to cmean[cw], cm2[cw] through plain loops over the lanes, which the compiler vectorises.
template <class T, int NV>
void chunk_cols_vec(const T* p, std::size_t nrows, std::size_t stride, T* kb, T* sb, T* qb) {
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
      q[j] = vfma(dd, dd, q[j]);
    }
  for (int j = 0; j < NV; ++j) {
    K[j].store_aligned(kb + j * w);
    s[j].store_aligned(sb + j * w);
    q[j].store_aligned(qb + j * w);
  }
}

template <class T>
void chunk_moments_cols(const T* p, std::size_t nrows, std::size_t stride, std::size_t cw, double* cmean,
                        double* cm2) {
  constexpr std::size_t w = kW<T>;
  alignas(kAlign) T kb[4 * w], sb[4 * w], qb[4 * w];
  const std::size_t nv = cw / w;
  switch (nv) {
    case 4: chunk_cols_vec<T, 4>(p, nrows, stride, kb, sb, qb); break;
    case 3: chunk_cols_vec<T, 3>(p, nrows, stride, kb, sb, qb); break;
    case 2: chunk_cols_vec<T, 2>(p, nrows, stride, kb, sb, qb); break;
    case 1: chunk_cols_vec<T, 1>(p, nrows, stride, kb, sb, qb); break;
    default: break;
  }
  const T inv_n = T(1) / T(nrows);
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
    kb[c] = K;
    sb[c] = s;
    qb[c] = q;
  }
  const double n = double(nrows);
  for (std::size_t c = 0; c < cw; ++c) {  // mean = K + Sd/n, M2 = Sdd - Sd^2/n
    const double sd = sb[c], dmean = sd / n, m2 = double(qb[c]) - sd * dmean;
    cmean[c] = double(kb[c]) + dmean;
    cm2[c] = m2 > 0.0 ? m2 : 0.0;
  }
}

// Backward local sums of one chunk, with xc = x - mean (mean = save_mean, rounded to T):
//   sum dy,  sum dy*xc,  sum xc
// (sum dy*xhat = invstd*(sum dy*xc - delta*sum dy) with delta = mean(xc) is formed in the finish step, after
// all chunks are combined; delta re-centres on the exact batch mean). With want_x == false only sum dy is
// formed and x is not read.
using GradSums = BnGradSums;

// pf_off: offset (in values) of the data that comes next, prefetched as we go (its first pf_rows runs), or 0.
template <class T, int NV>
GradSums chunk_grad_sums_runs(const T* dy, const T* x, std::size_t nrows, std::size_t stride, std::size_t len,
                              T mean, bool want_x, std::size_t pf_off, std::size_t pf_rows) {
  const V<T> zero(T(0)), mv(mean);
  V<T> s[4] = {zero, zero, zero, zero}, t[4] = {zero, zero, zero, zero}, u[4] = {zero, zero, zero, zero};
  T st = 0, tt = 0, ut = 0;
  for (std::size_t r = 0; r < nrows; ++r) {
    const T* g = dy + r * stride;
    const T* q = x + r * stride;
    const std::size_t pf = r < pf_rows ? pf_off : 0;
    if (want_x) {
      visit_run<T, NV>(
          len,
          [&](std::size_t i, auto slot) {
            if (pf) {
              prefetch_l2(g + pf + i);
              prefetch_l2(q + pf + i);
            }
            const V<T> gv = V<T>::load_unaligned(g + i), h = V<T>::load_unaligned(q + i) - mv;
            s[slot] += gv;
            t[slot] = vfma(gv, h, t[slot]);
            u[slot] += h;
          },
          [&](std::size_t i) {
            const T h = q[i] - mean;
            st += g[i];
            tt = std::fma(g[i], h, tt);
            ut += h;
          });
    } else {
      visit_run<T, NV>(
          len,
          [&](std::size_t i, auto slot) {
            if (pf) prefetch_l2(g + pf + i);
            s[slot] += V<T>::load_unaligned(g + i);
          },
          [&](std::size_t i) { st += g[i]; });
    }
  }
  return {double(xsimd::hadd((s[0] + s[1]) + (s[2] + s[3]))) + double(st),
          double(xsimd::hadd((t[0] + t[1]) + (t[2] + t[3]))) + double(tt),
          double(xsimd::hadd((u[0] + u[1]) + (u[2] + u[3]))) + double(ut)};
}

template <class T, int NV>
void chunk_grad_sums_cols_vec(const T* dy, const T* x, std::size_t nrows, std::size_t stride, const T* mean,
                              bool want_x, GradSums* out) {
  constexpr std::size_t w = kW<T>;
  V<T> s[NV], t[NV], u[NV], mv[NV];
  for (int j = 0; j < NV; ++j) {
    s[j] = V<T>(T(0));
    t[j] = V<T>(T(0));
    u[j] = V<T>(T(0));
    mv[j] = V<T>::load_unaligned(mean + j * w);
  }
  for (std::size_t r = 0; r < nrows; ++r)
    for (int j = 0; j < NV; ++j) {
      const V<T> g = V<T>::load_unaligned(dy + r * stride + j * w);
      s[j] += g;
      if (want_x) {
        const V<T> h = V<T>::load_unaligned(x + r * stride + j * w) - mv[j];
        t[j] = vfma(g, h, t[j]);
        u[j] += h;
      }
    }
  alignas(kAlign) T sb[w], tb[w], ub[w];
  for (int j = 0; j < NV; ++j) {
    s[j].store_aligned(sb);
    t[j].store_aligned(tb);
    u[j].store_aligned(ub);
    for (std::size_t l = 0; l < w; ++l) out[j * w + l] = {double(sb[l]), double(tb[l]), double(ub[l])};
  }
}

template <class T>
void chunk_grad_sums_cols(const T* dy, const T* x, std::size_t nrows, std::size_t stride, std::size_t cw,
                          const T* mean, bool want_x, GradSums* out) {
  constexpr std::size_t w = kW<T>;
  const std::size_t nv = cw / w;
  switch (nv) {
    case 4: chunk_grad_sums_cols_vec<T, 4>(dy, x, nrows, stride, mean, want_x, out); break;
    case 3: chunk_grad_sums_cols_vec<T, 3>(dy, x, nrows, stride, mean, want_x, out); break;
    case 2: chunk_grad_sums_cols_vec<T, 2>(dy, x, nrows, stride, mean, want_x, out); break;
    case 1: chunk_grad_sums_cols_vec<T, 1>(dy, x, nrows, stride, mean, want_x, out); break;
    default: break;
  }
  for (std::size_t c = nv * w; c < cw; ++c) {
    T s = 0, t = 0, u = 0;
    for (std::size_t r = 0; r < nrows; ++r) {
      const T g = dy[r * stride + c];
      s += g;
      if (want_x) {
        const T h = x[r * stride + c] - mean[c];
        t = std::fma(g, h, t);
        u += h;
      }
    }
    out[c] = {double(s), double(t), double(u)};
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

// Forward coefficients from a channel's combined moments:
//   var = M2/m (biased),  invstd = 1/sqrt(var + eps),  scale = w*invstd,
//   shift = b - (mean - T(mean))*scale   — the mean's rounding to T, put back into the shift. (For float data
//   with mean 1e4 and std 1e-2 that rounding is 5% of a std; for a constant channel it is exactly 0, so
//   x - T(mean) == 0 and y == b exactly.)
template <class T>
Affine<T> affine_from_moments(const BnMoments& mo, double invstd, double w, double b) {
  const T mean_t = T(mo.mean);
  const T scale = T(w * double(T(invstd)));  // from the ROUNDED invstd, the one the backward sees
  return {mean_t, scale, T(b - (mo.mean - double(mean_t)) * double(scale))};
}

inline double invstd_of(const BnMoments& mo, double eps) { return 1.0 / std::sqrt(mo.m2 / mo.count + eps); }

// Forward finish for one channel (after all chunks/groups are combined): save_mean, save_invstd,
//   running_mean = (1-f)*running_mean + f*mean,  running_var = (1-f)*running_var + f*M2/(m-1) (unbiased),
// and the elementwise coefficients.
template <class T>
Affine<T> finish_channel(const BnMoments& mo, std::size_t c, double invstd, double f, const T* weight,
                         const T* bias, T* save_mean, T* save_invstd, T* running_mean, T* running_var) {
  if (save_mean) save_mean[c] = T(mo.mean);
  if (save_invstd) save_invstd[c] = T(invstd);
  if (running_mean) running_mean[c] = T((1.0 - f) * double(running_mean[c]) + f * mo.mean);
  if (running_var) running_var[c] = T((1.0 - f) * double(running_var[c]) + f * (mo.m2 / (mo.count - 1.0)));
  return affine_from_moments<T>(mo, invstd, weight ? double(weight[c]) : 1.0, bias ? double(bias[c]) : 0.0);
}

// Forward finish for channels c0 .. c0+n from their combined moments tot[0 .. n): writes m/a/sh[0 .. n).
// invstd = 1/sqrt(M2/m + eps) is computed for up to 64 channels at a time with SIMD sqrt and division —
// the same IEEE operations as invstd_of, so the same bits, at a fraction of the cost (a division and a
// square root per channel were a third of the time of a small [60, 100] forward).
template <class T>
void finish_channels(const BnMoments* tot, std::size_t c0, std::size_t n, double eps, double f, const T* weight,
                     const T* bias, T* save_mean, T* save_invstd, T* running_mean, T* running_var, T* m, T* a,
                     T* sh) {
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
      const std::size_t k = j0 + j;
      const Affine<T> af =
          finish_channel(tot[k], c0 + k, inv[j], f, weight, bias, save_mean, save_invstd, running_mean, running_var);
      m[k] = af.mean;
      a[k] = af.scale;
      sh[k] = af.shift;
    }
  }
}

// Backward finish for one channel, from the combined sums over m values (xc = x - mean_T):
//   delta = mean(xc)                                  (mean_T's rounding error; xhat = (xc - delta)*invstd)
//   dbias = sum dy,   dweight = sum dy*xhat = invstd*(sum dy*xc - delta*sum dy)
//   dx = w*invstd*(dy - mean(dy) - xhat*mean(dy*xhat))                                   (term 1, 2, 3)
//      = k1*dy + k2*xc + k3,   k1 = w*invstd,  k2 = -k1*invstd*mean(dy*xhat),  k3 = -k1*mean(dy) - k2*delta
// (xc is kept as a difference: folding the mean into k3 would cancel catastrophically for large means).
template <class T>
struct DxCoef {
  T k1, k2, k3, mean;
};

template <class T>
DxCoef<T> finish_grad_channel(const GradSums& gs, double count, std::size_t c, const T* weight,
                              const T* save_mean, const T* save_invstd, T* dweight, T* dbias) {
  const double invstd = save_invstd[c];
  const double delta = gs.sum_xc / count;
  const double sum_dy_xhat = invstd * (gs.sum_dy_xc - delta * gs.sum_dy);
  if (dbias) dbias[c] = T(gs.sum_dy);
  if (dweight) dweight[c] = T(sum_dy_xhat);
  const double w = weight ? double(weight[c]) : 1.0;
  const double k1 = w * invstd;
  const double k2 = -k1 * invstd * (sum_dy_xhat / count);
  const double k3 = -k1 * (gs.sum_dy / count) - k2 * delta;
  return {T(k1), T(k2), T(k3), save_mean[c]};
}

// =============================================================================================================
// 5. Elementwise passes
// =============================================================================================================

// y = (x - m_c)*a_c + b_c over nrows rows of a block of cw channels: x, y point at (row r0, channel c0, 0),
// rows are `stride` apart, and within a row the block is cw runs of len values, one per channel, back to
// back — traversed in memory order. The forward normalise uses (mean, scale, shift); eval uses (0, scale,
// shift), i.e. y = x*scale + shift. Stream: streaming stores (NV == 0 peels each run to an aligned y; NV > 0
// requires aligned runs). Prefetch: prefetch x[cw*len ..] of each row, the next block's part of the row (whose
// first pf_cw runs exist).
template <class T, bool Stream, bool Prefetch, int NV>
void affine_block(const T* x, T* y, std::size_t nrows, std::size_t stride, std::size_t len, std::size_t cw,
                  const T* m, const T* a, const T* b, std::size_t pf_cw) {
  const std::size_t ahead = cw * len;
  for (std::size_t r = 0; r < nrows; ++r)
    for (std::size_t c = 0; c < cw; ++c) {
      const T* xr = x + r * stride + c * len;
      T* yr = y + r * stride + c * len;
      const T mc = m[c], ac = a[c], bc = b[c];
      std::size_t i0 = 0;
      if constexpr (Stream && NV == 0) {
        for (; i0 < len && (reinterpret_cast<std::uintptr_t>(yr + i0) % kAlign) != 0; ++i0)
          yr[i0] = std::fma(xr[i0] - mc, ac, bc);
      }
      const T* xs = xr + i0;
      T* ys = yr + i0;
      const V<T> mv(mc), av(ac), bv(bc);
      const bool next_row = r + 1 < nrows, next_block = c < pf_cw;
      visit_run<T, NV>(
          len - i0,
          [&](std::size_t i, auto) {
            if constexpr (Prefetch) {
              if (next_block) prefetch_l2(xs + ahead + i);
            }
            if (next_row) prefetch_l2(xs + stride + i);
            const V<T> v = vfma(V<T>::load_unaligned(xs + i) - mv, av, bv);
            if constexpr (Stream) store_stream(ys + i, v); else v.store_unaligned(ys + i);
          },
          [&](std::size_t i) { ys[i] = std::fma(xs[i] - mc, ac, bc); });
    }
}

// dx = k1*dy + (k2*(x - mean) + k3) over nrows rows of a block of cw channels (layout, Stream and Prefetch
// as in affine_block; the prefetch covers the next block's dy and x).
template <class T, bool Stream, bool Prefetch, int NV>
void dx_block(const T* dy, const T* x, T* dx, std::size_t nrows, std::size_t stride, std::size_t len,
              std::size_t cw, const DxCoef<T>* k, std::size_t pf_cw) {
  const std::size_t ahead = cw * len;
  for (std::size_t r = 0; r < nrows; ++r)
    for (std::size_t c = 0; c < cw; ++c) {
      const std::size_t off = r * stride + c * len;
      const T* gr = dy + off;
      const T* xr = x + off;
      T* orow = dx + off;
      const DxCoef<T> kc = k[c];
      std::size_t i0 = 0;
      if constexpr (Stream && NV == 0) {
        for (; i0 < len && (reinterpret_cast<std::uintptr_t>(orow + i0) % kAlign) != 0; ++i0)
          orow[i0] = std::fma(kc.k1, gr[i0], std::fma(kc.k2, xr[i0] - kc.mean, kc.k3));
      }
      const T* g = gr + i0;
      const T* q = xr + i0;
      T* o = orow + i0;
      const V<T> k1(kc.k1), k2(kc.k2), k3(kc.k3), mv(kc.mean);
      const bool next_row = r + 1 < nrows, next_block = c < pf_cw;
      visit_run<T, NV>(
          len - i0,
          [&](std::size_t i, auto) {
            if constexpr (Prefetch) {
              if (next_block) {
                prefetch_l2(g + ahead + i);
                prefetch_l2(q + ahead + i);
              }
            }
            if (next_row) {
              prefetch_l2(g + stride + i);
              prefetch_l2(q + stride + i);
            }
            const V<T> v = vfma(k1, V<T>::load_unaligned(g + i), vfma(k2, V<T>::load_unaligned(q + i) - mv, k3));
            if constexpr (Stream) store_stream(o + i, v); else v.store_unaligned(o + i);
          },
          [&](std::size_t i) { o[i] = std::fma(kc.k1, g[i], std::fma(kc.k2, q[i] - kc.mean, kc.k3)); });
    }
}

// S == 1, whole rows: y = (x - m_c)*a_c + b_c over rows [0, nrows) of all C channels, in memory order. The
// coefficient batches come from L1 each time; walking down a column block instead would put every load
// 4 KiB-aliased behind the previous row's stores (C = 1024 floats is exactly 4 KiB per row).
template <class T>
void affine_rows_s1(const T* x, T* y, std::size_t nrows, std::size_t C, const T* m, const T* a, const T* b) {
  constexpr std::size_t w = kW<T>;
  const std::size_t cv = C - C % w;
  for (std::size_t r = 0; r < nrows; ++r) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    for (std::size_t c = 0; c < cv; c += w)
      vfma(V<T>::load_unaligned(xr + c) - V<T>::load_unaligned(m + c), V<T>::load_unaligned(a + c),
           V<T>::load_unaligned(b + c))
          .store_unaligned(yr + c);
    for (std::size_t c = cv; c < C; ++c) yr[c] = std::fma(xr[c] - m[c], a[c], b[c]);
  }
}

// S == 1, whole rows: dx = k1*dy + (k2*(x - mean) + k3) with per-channel coefficient arrays.
template <class T>
void dx_rows_s1(const T* dy, const T* x, T* dx, std::size_t nrows, std::size_t C, const T* k1, const T* k2,
                const T* k3, const T* mn) {
  constexpr std::size_t w = kW<T>;
  const std::size_t cv = C - C % w;
  for (std::size_t r = 0; r < nrows; ++r) {
    const T* g = dy + r * C;
    const T* q = x + r * C;
    T* o = dx + r * C;
    for (std::size_t c = 0; c < cv; c += w)
      vfma(V<T>::load_unaligned(k1 + c), V<T>::load_unaligned(g + c),
           vfma(V<T>::load_unaligned(k2 + c), V<T>::load_unaligned(q + c) - V<T>::load_unaligned(mn + c),
                V<T>::load_unaligned(k3 + c)))
          .store_unaligned(o + c);
    for (std::size_t c = cv; c < C; ++c) o[c] = std::fma(k1[c], g[c], std::fma(k2[c], q[c] - mn[c], k3[c]));
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
// Number of channels in work unit u, and its first channel.
inline std::size_t unit_width(const Blocking& b, const BnDims& d, std::size_t u) { return block_width(b, d, u); }
inline std::size_t unit_first_channel(const Blocking& b, const BnDims&, std::size_t u) { return block_begin(b, u); }

// Local sums of one CHUNK ROW of unit u (S > 1): rows r .. r + min(k, r1 - r), r1 = the end of r's group,
// every piece of every channel of the block, folded into part[0 .. unit_width) in (row, piece) order per
// channel. The chunks are visited in memory order — across the block's channels — so the k rows are k
// sequential streams. Rows beyond r1 (up to `r_pf`) may be prefetched.
template <class T>
void chunk_row_moments(const T* x, const BnDims& d, const Blocking& b, std::size_t u, std::size_t r, std::size_t r1,
                       std::size_t r_pf, BnMoments* part) {
  const std::size_t stride = d.C * d.S, c0 = block_begin(b, u), cw = block_width(b, d, u), bw = cw * d.S;
  const std::size_t ahead = std::min(bw, std::max(b.piece, kAheadBytes / sizeof(T)));
  const std::size_t nr = std::min(b.k, r1 - r);
  const T* row = x + (r * d.C + c0) * d.S;
  for (std::size_t c = 0; c < cw; ++c)
    for (std::size_t s0 = 0; s0 < d.S; s0 += b.piece) {
      const std::size_t len = std::min(b.piece, d.S - s0), pos = c * d.S + s0;
      const T* p = row + pos;
      // prefetch `ahead` values further along the traversal (this chunk row, then the next one)
      const bool same = pos + ahead + len <= bw;
      const T* pf = same ? p + ahead : (r + b.k < r_pf && pos + ahead >= bw ? row + b.k * stride + (pos + ahead - bw) : nullptr);
      const std::size_t pf_rows = same ? nr : (pf ? std::min(b.k, r_pf - r - b.k) : 0);
      dispatch_nv<T>(len, [&](auto nv) {
        part[c] = bn_combine(part[c], chunk_moments_runs<T, nv>(p, nr, stride, len, pf, pf_rows));
      });
    }
}

// Local sums of unit u over group g, folded chunk by chunk in order: out[0 .. unit_width).
template <class T>
void group_moments(const T* x, const BnDims& d, const Blocking& b, std::size_t u, std::size_t g, BnMoments* out) {
  const std::size_t r0 = group_begin(b, g), r1 = group_end(b, d, g), cw = block_width(b, d, u);
  for (std::size_t c = 0; c < cw; ++c) out[c] = BnMoments{};
  if (d.S == 1) {
    // Chan's combine (as bn_combine, term for term) with the block's channels side by side: every channel
    // of a chunk has the same count, so the one division is shared and the loops vectorise.
    const std::size_t c0 = block_begin(b, u);
    alignas(kAlign) double cmean[4 * kW<T>], cm2[4 * kW<T>], gmean[4 * kW<T>], gm2[4 * kW<T>];
    double gn = 0;
    for (std::size_t r = r0; r < r1; r += b.k) {
      const std::size_t nr = std::min(b.k, r1 - r);
      chunk_moments_cols(x + r * d.C + c0, nr, d.C, cw, cmean, cm2);
      const double nb = double(nr);
      if (gn == 0) {
        for (std::size_t c = 0; c < cw; ++c) {
          gmean[c] = cmean[c];
          gm2[c] = cm2[c];
        }
      } else {
        const double n = gn + nb, fb = nb / n;
        for (std::size_t c = 0; c < cw; ++c) {
          const double delta = cmean[c] - gmean[c];
          gmean[c] = gmean[c] + delta * fb;
          gm2[c] = gm2[c] + cm2[c] + delta * delta * gn * fb;
        }
      }
      gn += nb;
    }
    for (std::size_t c = 0; c < cw; ++c) out[c] = {gn, gmean[c], gm2[c]};
  } else {
    for (std::size_t r = r0; r < r1; r += b.k) chunk_row_moments(x, d, b, u, r, r1, r1, out);
  }
}

// Backward local sums of one chunk row of unit u (S > 1), as chunk_row_moments.
template <class T>
void chunk_row_grad_sums(const T* dy, const T* x, const BnDims& d, const Blocking& b, std::size_t u, std::size_t r,
                         std::size_t r1, std::size_t r_pf, const T* mean, bool want_x, GradSums* part) {
  const std::size_t stride = d.C * d.S, c0 = block_begin(b, u), cw = block_width(b, d, u), bw = cw * d.S;
  const std::size_t ahead = std::min(bw, std::max(b.piece, kAheadBytes / sizeof(T)));
  const std::size_t nr = std::min(b.k, r1 - r);
  const std::size_t row = (r * d.C + c0) * d.S;
  for (std::size_t c = 0; c < cw; ++c)
    for (std::size_t s0 = 0; s0 < d.S; s0 += b.piece) {
      const std::size_t len = std::min(b.piece, d.S - s0), pos = c * d.S + s0, off = row + pos;
      const bool same = pos + ahead + len <= bw;
      const std::size_t pf_off = same ? ahead : (r + b.k < r_pf && pos + ahead >= bw ? b.k * stride + ahead - bw : 0);
      const std::size_t pf_rows = same ? nr : (pf_off ? std::min(b.k, r_pf - r - b.k) : 0);
      dispatch_nv<T>(len, [&](auto nv) {
        part[c] = bn_grad_combine(part[c], chunk_grad_sums_runs<T, nv>(dy + off, x + off, nr, stride, len, mean[c0 + c],
                                                                       want_x, pf_off, pf_rows));
      });
    }
}

template <class T>
void group_grad_sums(const T* dy, const T* x, const BnDims& d, const Blocking& b, std::size_t u, std::size_t g,
                     const T* mean, bool want_x, GradSums* out) {
  const std::size_t r0 = group_begin(b, g), r1 = group_end(b, d, g), cw = block_width(b, d, u);
  for (std::size_t c = 0; c < cw; ++c) out[c] = GradSums{};
  if (d.S == 1) {
    const std::size_t c0 = block_begin(b, u);
    GradSums tmp[4 * kW<T>];
    for (std::size_t r = r0; r < r1; r += b.k) {
      chunk_grad_sums_cols(dy + r * d.C + c0, x + r * d.C + c0, std::min(b.k, r1 - r), d.C, cw, mean + c0,
                           want_x, tmp);
      for (std::size_t c = 0; c < cw; ++c) out[c] = bn_grad_combine(out[c], tmp[c]);
    }
  } else {
    for (std::size_t r = r0; r < r1; r += b.k) chunk_row_grad_sums(dy, x, d, b, u, r, r1, r1, mean, want_x, out);
  }
}

// Backward local sums of group g for ALL channels of the [N, C] layout (S == 1), walking whole rows in memory
// order: per chunk of b.k rows, lane sums in T over the rows in order (sum dy, sum dy*xc, sum xc per channel,
// held in a 3*C buffer that stays in L1/L2), then folded into out[C] chunk by chunk. Per channel this is the
// arithmetic of chunk_grad_sums_cols (same chunks, same order; lanes never mix channels), but the loads are
// sequential: walking down a 64-channel column block instead puts every row 4 KiB (C = 1024 floats) after
// the previous one, all in the same L1 sets (about 10% slower on [256, 1024]).
template <class T>
void group_grad_sums_rows(const T* dy, const T* x, const BnDims& d, const Blocking& b, std::size_t g,
                          const T* mean, bool want_x, GradSums* out) {
  constexpr std::size_t w = kW<T>;
  const std::size_t C = d.C, cv = C - C % w, r0 = group_begin(b, g), r1 = group_end(b, d, g);
  std::vector<T, xsimd::aligned_allocator<T, kAlign>> acc(3 * C);
  T* sa = acc.data();
  T* ta = sa + C;
  T* ua = ta + C;
  for (std::size_t c = 0; c < C; ++c) out[c] = GradSums{};
  for (std::size_t r = r0; r < r1; r += b.k) {
    std::fill(acc.begin(), acc.end(), T(0));
    for (std::size_t i = r; i < std::min(r1, r + b.k); ++i) {
      const T* gr = dy + i * C;
      const T* xr = x + i * C;
      for (std::size_t c = 0; c < cv; c += w) {
        const V<T> gv = V<T>::load_unaligned(gr + c);
        (V<T>::load_unaligned(sa + c) + gv).store_unaligned(sa + c);
        if (want_x) {
          const V<T> h = V<T>::load_unaligned(xr + c) - V<T>::load_unaligned(mean + c);
          vfma(gv, h, V<T>::load_unaligned(ta + c)).store_unaligned(ta + c);
          (V<T>::load_unaligned(ua + c) + h).store_unaligned(ua + c);
        }
      }
      for (std::size_t c = cv; c < C; ++c) {
        sa[c] += gr[c];
        if (want_x) {
          const T h = xr[c] - mean[c];
          ta[c] = std::fma(gr[c], h, ta[c]);
          ua[c] += h;
        }
      }
    }
    for (std::size_t c = 0; c < C; ++c)
      out[c] = bn_grad_combine(out[c], GradSums{double(sa[c]), double(ta[c]), double(ua[c])});
  }
}

// Streaming stores need 64-byte aligned destinations: the fixed-length (NV > 0) paths stream only when every
// run is aligned, i.e. when the tensor is (runs are NV*64 bytes); otherwise they store normally.
inline bool aligned(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % kAlign == 0; }

// Elementwise forward/eval over rows [r0, r1) of unit u with per-channel (m, a, b) for the unit's channels.
// prefetch (S > 1): also prefetch the next block's part of each row.
template <class T>
void affine_unit(const T* x, T* y, const BnDims& d, const Blocking& b, std::size_t u, std::size_t r0,
                 std::size_t r1, const T* m, const T* a, const T* sh, bool stream, bool prefetch) {
  const std::size_t c0 = block_begin(b, u), cw = block_width(b, d, u);  // S > 1 (S == 1: affine_rows_s1)
  const std::size_t off = (r0 * d.C + c0) * d.S, stride = d.C * d.S, nr = r1 - r0;
  const std::size_t pf_cw = prefetch && u + 1 < b.units ? block_width(b, d, u + 1) : 0;
  dispatch_nv<T>(d.S, [&](auto nv) {
    constexpr int NV = decltype(nv)::value;
    const bool st = stream && (NV == 0 || aligned(y));
    if (st && prefetch) affine_block<T, true, true, NV>(x + off, y + off, nr, stride, d.S, cw, m, a, sh, pf_cw);
    else if (st) affine_block<T, true, false, NV>(x + off, y + off, nr, stride, d.S, cw, m, a, sh, pf_cw);
    else if (prefetch) affine_block<T, false, true, NV>(x + off, y + off, nr, stride, d.S, cw, m, a, sh, pf_cw);
    else affine_block<T, false, false, NV>(x + off, y + off, nr, stride, d.S, cw, m, a, sh, pf_cw);
  });
}

template <class T>
void dx_unit(const T* dy, const T* x, T* dx, const BnDims& d, const Blocking& b, std::size_t u, std::size_t r0,
             std::size_t r1, const DxCoef<T>* k, bool stream, bool prefetch) {
  const std::size_t c0 = block_begin(b, u), cw = block_width(b, d, u);  // S > 1 (S == 1: dx_rows_s1)
  const std::size_t off = (r0 * d.C + c0) * d.S, stride = d.C * d.S, nr = r1 - r0;
  const std::size_t pf_cw = prefetch && u + 1 < b.units ? block_width(b, d, u + 1) : 0;
  dispatch_nv<T>(d.S, [&](auto nv) {
    constexpr int NV = decltype(nv)::value;
    const bool st = stream && (NV == 0 || aligned(dx));
    if (st && prefetch) dx_block<T, true, true, NV>(dy + off, x + off, dx + off, nr, stride, d.S, cw, k, pf_cw);
    else if (st) dx_block<T, true, false, NV>(dy + off, x + off, dx + off, nr, stride, d.S, cw, k, pf_cw);
    else if (prefetch) dx_block<T, false, true, NV>(dy + off, x + off, dx + off, nr, stride, d.S, cw, k, pf_cw);
    else dx_block<T, false, false, NV>(dy + off, x + off, dx + off, nr, stride, d.S, cw, k, pf_cw);
  });
}

// Schedule (S > 1). FUSED: threads split the units (channel blocks); each unit does
//   local sums -> combine -> finish -> elementwise
// back to back, so its data is read from memory once and re-read from cache (L2/L3). SPLIT (too few units to
// share evenly): threads split (unit, group) pairs for the local sums, the caller combines and finishes,
// then threads split (unit, group) pairs again for the elementwise pass. Both run the identical arithmetic
// per (unit, group) and fold groups in the same order, so they produce the same bits. (S == 1 always runs
// the split structure: forward_train_s1.)
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
  const std::size_t per_unit = std::max<std::size_t>(1, d.N * d.S * b.cb);
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

// Grain (rows) for a whole-row pass of the [N, C] layout.
inline std::size_t row_grain(const BnDims& d, std::size_t numel) {
  return numel < kMinParallelElems ? d.N : std::max<std::size_t>(1, 8192 / std::max<std::size_t>(1, d.C));
}

// [N, C] layout (S == 1): local sums of (column block, group) pairs in parallel -> combine + finish per
// channel in parallel -> normalise whole rows in parallel. The data of a [N, C] batch is usually small
// enough to be re-read from cache; walking rows keeps the elementwise pass free of 4 KiB aliasing.
template <class T>
void forward_train_s1(const T* x, const T* weight, const T* bias, T* y, T* save_mean, T* save_invstd,
                      T* running_mean, T* running_var, const BnDims& d, double eps, double f) {
  const Blocking b = make_blocking<T>(d, 1);
  const std::size_t numel = d.N * d.C, pairs = b.units * b.G;
  const bool one = get_num_threads() == 1 || numel < kMinParallelElems || in_parallel_region();
  std::vector<BnMoments> part(b.G * d.C);  // part[g*C + c]
  parallel_for(0, pairs, one ? pairs : 1, [&](std::size_t lo, std::size_t hi) {  // local sums
    for (std::size_t t = lo; t < hi; ++t) {
      const std::size_t u = t / b.G, g = t % b.G;
      group_moments(x, d, b, u, g, part.data() + g * d.C + block_begin(b, u));
    }
  });
  std::vector<T> m(d.C), a(d.C), sh(d.C);
  parallel_for(0, d.C, one ? d.C : 1024, [&](std::size_t lo, std::size_t hi) {  // combine (into part[c]) + finish
    if (b.G > 1)
      for (std::size_t c = lo; c < hi; ++c)
        for (std::size_t g = 1; g < b.G; ++g) part[c] = bn_combine(part[c], part[g * d.C + c]);
    finish_channels(part.data() + lo, lo, hi - lo, eps, f, weight, bias, save_mean, save_invstd, running_mean,
                    running_var, m.data() + lo, a.data() + lo, sh.data() + lo);
  });
  parallel_for(0, d.N, one ? d.N : row_grain(d, numel), [&](std::size_t lo, std::size_t hi) {  // normalise
    affine_rows_s1(x + lo * d.C, y + lo * d.C, hi - lo, d.C, m.data(), a.data(), sh.data());
  });
}

template <class T>
void forward_train_impl(const T* x, const T* weight, const T* bias, T* y, T* save_mean, T* save_invstd,
                        T* running_mean, T* running_var, const BnDims& d, double eps, double f) {
  check_train_dims<T>(d, running_var != nullptr);
  if (d.C == 0 || d.N * d.S == 0) return;
  if (d.S == 1) {
    forward_train_s1(x, weight, bias, y, save_mean, save_invstd, running_mean, running_var, d, eps, f);
    return;
  }
  const Blocking b = make_blocking<T>(d, static_cast<std::size_t>(get_num_threads()), 1);  // re-reads x
  const bool stream = use_stream(d.N * d.C * d.S, sizeof(T), 2, false);  // x, y
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
        finish_channels(tot, c0, cw, eps, f, weight, bias, save_mean, save_invstd, running_mean, running_var, m, a,
                        sh);
        // normalise (re-reading the block from L2/L3) while prefetching the next block if it is ours
        affine_unit(x, y, d, b, u, 0, d.N, m, a, sh, stream, u + 1 < hi);
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
  for (std::size_t c = 0; c < d.C; ++c)  // combine into part[c]
    for (std::size_t g = 1; g < b.G; ++g) part[c] = bn_combine(part[c], part[g * d.C + c]);
  finish_channels(part.data(), 0, d.C, eps, f, weight, bias, save_mean, save_invstd, running_mean, running_var,
                  m.data(), a.data(), sh.data());
  parallel_for(0, b.units * b.G, 1, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t t = lo; t < hi; ++t) {
      const std::size_t u = t / b.G, g = t % b.G, c0 = unit_first_channel(b, d, u);
      affine_unit(x, y, d, b, u, group_begin(b, g), group_end(b, d, g), &m[c0], &a[c0], &sh[c0], stream, false);
    }
    if (stream) stream_fence();
  });
}

template <class T>
void backward_impl(const T* dy, const T* x, const T* weight, const T* save_mean, const T* save_invstd, T* dx,
                   T* dweight, T* dbias, const BnDims& d, const GradSums* given, double count) {
  if (d.C == 0) return;
  if (!dx && !dweight && !dbias) return;
  const bool want_x = dx || dweight;
  if (!want_x) x = dy;  // only dbias: x is never read (and may be nullptr)
  const bool have_sums = given != nullptr;
  if (d.S == 1) {  // [N, C]: as forward_train_s1
    const Blocking b = make_blocking<T>(d, 1);
    const std::size_t numel = d.N * d.C, pairs = b.units * b.G;
    const bool one = get_num_threads() == 1 || numel < kMinParallelElems || in_parallel_region();
    std::vector<GradSums> part(have_sums ? 0 : b.G * d.C);
    // Local sums. Rows of <= 2 KiB: (column block, group) pairs, whose lane sums stay in registers while
    // walking down the rows (no 4 KiB aliasing at this row length). Longer rows: whole rows per group
    // (group_grad_sums_rows). Both give the same bits per channel.
    if (!have_sums && d.C * sizeof(T) <= 2048)
      parallel_for(0, pairs, one ? pairs : 1, [&](std::size_t lo, std::size_t hi) {
        for (std::size_t t = lo; t < hi; ++t) {
          const std::size_t u = t / b.G, g = t % b.G;
          group_grad_sums(dy, x, d, b, u, g, save_mean, want_x, part.data() + g * d.C + block_begin(b, u));
        }
      });
    else if (!have_sums)
      parallel_for(0, b.G, one ? b.G : 1, [&](std::size_t lo, std::size_t hi) {  // per group
        for (std::size_t g = lo; g < hi; ++g) group_grad_sums_rows(dy, x, d, b, g, save_mean, want_x, part.data() + g * d.C);
      });
    std::vector<T> k1(d.C), k2(d.C), k3(d.C), mn(d.C);
    parallel_for(0, d.C, one ? d.C : 1024, [&](std::size_t lo, std::size_t hi) {  // combine + finish
      for (std::size_t c = lo; c < hi; ++c) {
        GradSums tot;
        if (have_sums) tot = given[c];
        else
          for (std::size_t g = 0; g < b.G; ++g) tot = bn_grad_combine(tot, part[g * d.C + c]);
        const DxCoef<T> k = finish_grad_channel(tot, count, c, weight, save_mean, save_invstd, dweight, dbias);
        k1[c] = k.k1;
        k2[c] = k.k2;
        k3[c] = k.k3;
        mn[c] = k.mean;
      }
    });
    if (dx)
      parallel_for(0, d.N, one ? d.N : row_grain(d, numel), [&](std::size_t lo, std::size_t hi) {  // dx
        dx_rows_s1(dy + lo * d.C, x + lo * d.C, dx + lo * d.C, hi - lo, d.C, k1.data(), k2.data(), k3.data(),
                   mn.data());
      });
    return;
  }
  const Blocking b = make_blocking<T>(d, static_cast<std::size_t>(get_num_threads()), dx ? 2 : 0);  // re-reads dy, x
  const bool stream = use_stream(d.N * d.C * d.S, sizeof(T), dx ? 3 : 2, false);  // dy, x, dx
  const Schedule sched = choose_schedule(d, b);

  auto sums_of_unit = [&](std::size_t u, GradSums* tot) {
    const std::size_t cw = unit_width(b, d, u), c0 = unit_first_channel(b, d, u);
    if (have_sums) {
      for (std::size_t c = 0; c < cw; ++c) tot[c] = given[c0 + c];
      return;
    }
    GradSums part[4 * kW<T>];
    for (std::size_t c = 0; c < cw; ++c) tot[c] = GradSums{};
    for (std::size_t g = 0; g < b.G; ++g) {  // local sums + combine, groups in order
      group_grad_sums(dy, x, d, b, u, g, save_mean, want_x, part);
      for (std::size_t c = 0; c < cw; ++c) tot[c] = bn_grad_combine(tot[c], part[c]);
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
        if (dx) {  // elementwise (re-reading dy and x from L2/L3), prefetching the next block if it is ours
          dx_unit(dy, x, dx, d, b, u, 0, d.N, k, stream, u + 1 < hi);
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
      group_grad_sums(dy, x, d, b, u, g, save_mean, want_x, part.data() + g * d.C + unit_first_channel(b, d, u));
    }
  });
  std::vector<DxCoef<T>> k(d.C);
  for (std::size_t c = 0; c < d.C; ++c) {
    GradSums tot;
    for (std::size_t g = 0; g < b.G; ++g) tot = bn_grad_combine(tot, part[g * d.C + c]);
    k[c] = finish_grad_channel(tot, count, c, weight, save_mean, save_invstd, dweight, dbias);
  }
  if (!dx) return;
  parallel_for(0, b.units * b.G, 1, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t t = lo; t < hi; ++t) {
      const std::size_t u = t / b.G, g = t % b.G, c0 = unit_first_channel(b, d, u);
      dx_unit(dy, x, dx, d, b, u, group_begin(b, g), group_end(b, d, g), &k[c0], stream, false);
    }
    if (stream) stream_fence();
  });
}

// Elementwise y = (x - m_c)*a_c + b_c for all channels. S > 1: threads over (row, block) items in memory
// order. S == 1: over whole rows.
template <class T>
void affine_all(const T* x, T* y, const BnDims& d, const T* m, const T* a, const T* sh, bool eval) {
  if (d.C == 0 || d.N * d.S == 0) return;
  const Blocking b = make_blocking<T>(d, static_cast<std::size_t>(get_num_threads()));
  const bool stream = use_stream(d.N * d.C * d.S, sizeof(T), x == y ? 1 : 2, eval);
  const std::size_t numel = d.N * d.C * d.S;
  if (d.S == 1) {
    parallel_for(0, d.N, row_grain(d, numel), [&](std::size_t lo, std::size_t hi) {
      affine_rows_s1(x + lo * d.C, y + lo * d.C, hi - lo, d.C, m, a, sh);
    });
    return;
  }
  const std::size_t items = d.N * b.units;  // item t = (row r, unit u), in memory order
  const std::size_t grain = numel < kMinParallelElems ? items : std::max<std::size_t>(1, 8192 / (b.cb * d.S));
  parallel_for(0, items, grain, [&](std::size_t lo, std::size_t hi) {
    std::size_t r = lo / b.units, u = lo % b.units;
    for (std::size_t t = lo; t < hi; ++t) {
      const std::size_t c0 = unit_first_channel(b, d, u);
      affine_unit(x, y, d, b, u, r, r + 1, m + c0, a + c0, sh + c0, stream, false);
      if (++u == b.units) {
        u = 0;
        ++r;
      }
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
  affine_all(x, y, d, zero.data(), scale.data(), shift.data(), true);
}

template <class T>
void batch_norm_backward(const T* dy, const T* x, const T* weight, const T* save_mean, const T* save_invstd,
                         T* dx, T* dweight, T* dbias, BnDims d) {
  backward_impl(dy, x, weight, save_mean, save_invstd, dx, dweight, dbias, d, nullptr, double(d.N) * double(d.S));
}

template <class T>
void batch_norm_local_moments(const T* x, BnDims d, BnMoments* out) {
  if (d.C == 0) return;
  const Blocking b = make_blocking<T>(d, static_cast<std::size_t>(get_num_threads()));
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
    finish_channel<T>(moments[c], c, invstd_of(moments[c], eps), exp_avg_factor, nullptr, nullptr, save_mean,
                      save_invstd, running_mean, running_var);
}

template <class T>
void batch_norm_normalize(const T* x, const T* weight, const T* bias, const BnMoments* moments, double eps, T* y,
                          BnDims d) {
  std::vector<T> m(d.C), a(d.C), sh(d.C);  // the fused forward's coefficients, from the same moments
  for (std::size_t c = 0; c < d.C; ++c) {
    const Affine<T> af = affine_from_moments<T>(moments[c], invstd_of(moments[c], eps), weight ? double(weight[c]) : 1.0,
                                                bias ? double(bias[c]) : 0.0);
    m[c] = af.mean;
    a[c] = af.scale;
    sh[c] = af.shift;
  }
  affine_all(x, y, d, m.data(), a.data(), sh.data(), false);
}

template <class T>
void batch_norm_backward_local_sums(const T* dy, const T* x, const T* save_mean, BnDims d, BnGradSums* out) {
  if (d.C == 0) return;
  const Blocking b = make_blocking<T>(d, static_cast<std::size_t>(get_num_threads()));
  std::vector<GradSums> part(b.G * d.C);
  const bool inline_only = get_num_threads() == 1 || d.N * d.C * d.S < kMinParallelElems;
  parallel_for(0, b.units * b.G, inline_only ? b.units * b.G : 1, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t t = lo; t < hi; ++t) {
      const std::size_t u = t / b.G, g = t % b.G;
      group_grad_sums(dy, x, d, b, u, g, save_mean, true, part.data() + g * d.C + unit_first_channel(b, d, u));
    }
  });
  for (std::size_t c = 0; c < d.C; ++c) {
    GradSums tot;
    for (std::size_t g = 0; g < b.G; ++g) tot = bn_grad_combine(tot, part[g * d.C + c]);
    out[c] = tot;
  }
}

template <class T>
void batch_norm_backward_finish(const T* dy, const T* x, const T* weight, const T* save_mean,
                                const T* save_invstd, const BnGradSums* sums, double count, T* dx, T* dweight,
                                T* dbias, BnDims d) {
  backward_impl(dy, x, weight, save_mean, save_invstd, dx, dweight, dbias, d, sums, count);
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
