// xgrad — the normalisation driver: "local sums -> combine -> finish -> elementwise" over a [N, C, S] view.
//
// Every normalisation layer computes, per group of values, a few sums (local sums), merges partial sums
// (combine), turns them into per-group coefficients (finish) and applies them elementwise. They differ in
// which axes are reduced, which sums they gather and what the elementwise map is. The driver fixes the first:
// values are viewed as [N, C, S] (element (n, c, s) at ((n*C + c)*S + s)) and each c is reduced over N and S.
//   BatchNorm          x [N, C, *]          -> (N, C, S = prod(*))
//   LayerNorm          x [rows, D]          -> (1, rows, D)            (each row is a "channel")
//   GroupNorm          x [N, C, *], G groups-> (1, N*G, (C/G)*prod(*))
//   SyncBatchNorm      as BatchNorm; the all-reduce of the local sums goes between local_sums() and finish
// The statistics and the map come from a Policy (kernels/batchnorm.cpp has the two BatchNorm ones):
//
//   struct Policy {
//     using T = float | double;  using Acc = ...;      // one channel's partial sums (BnMoments, BnGradSums)
//     static constexpr int K = ...;                    // coefficients per channel for the map
//     static Acc combine(const Acc&, const Acc&);      // merge two partials (fixed order)
//     void group_sums(std::size_t u, std::size_t g, Acc* out) const;   // unit u's channels over group g
//     void finish(std::size_t c0, std::size_t n, const Acc* tot, Coefs<T> k) const;  // side outputs + k
//     void map(std::size_t u, std::size_t r0, std::size_t r1, Coefs<T> k, bool stream, bool prefetch) const;
//     void map_rows(std::size_t r0, std::size_t r1, Coefs<T> k) const;   // S == 1: whole rows
//   };
//
// Determinism: the blocking (chunks, groups, column blocks) depends on the shape alone and partials are folded
// in index order, so the bits do not depend on the thread count or on which schedule ran.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <utility>
#include <vector>

#include "simd.h"
#include "xgrad/kernels/batchnorm.h"  // BnDims
#include "xgrad/parallel.h"

namespace xg::kernels::norm {
using namespace simd;

// ================================================================================================================
// Blocking — fixed by the shape, never by the thread count.
//   A channel's N*S values are cut into CHUNKS of at most 16 KiB (k rows x `piece` values of S), small enough
//   that a second pass over a chunk hits L1 and that every partial sum in T adds a bounded number of values
//   (docs/ops.md, "Accuracy of reductions"). Consecutive chunk-rows form GROUPS (at most 64 per channel): the
//   unit of work when the batch is split across threads. Adjacent channels form UNITS (column blocks).
// ================================================================================================================
constexpr std::size_t kChunkBytes = 16 * 1024;
constexpr std::size_t kMaxGroups = 64;
constexpr std::size_t kMinParallelElems = std::size_t(1) << 15;  // below: the calling thread only

struct Blocking {
  std::size_t k = 1;      // rows per chunk
  std::size_t piece = 1;  // values of S per chunk (S > 1)
  std::size_t rpg = 1;    // rows per group (a multiple of k)
  std::size_t G = 1;      // groups along N
  std::size_t cb = 1;     // channels per unit
  std::size_t units = 0;  // ceil(C / cb)
};

// nt (threads) and reread only shape the S > 1 channel blocks, which never change a channel's arithmetic;
// chunks, groups and the S == 1 column blocks (whose lane positions matter) depend on the shape alone.
// reread > 0: the FUSED schedule re-reads `reread` tensors of a block in its elementwise pass, so the block is
// sized to stay in this core's L2 (at most 40% of it): DRAM is read once. (Zen 5, [64, 64, 32, 32]: one channel
// per block makes the forward 1.45x and the backward 1.6x faster than four.)
template <class T>
Blocking make_blocking(const BnDims& d, std::size_t nt, std::size_t reread = 0) {
  Blocking b;
  const std::size_t lmax = kChunkBytes / sizeof(T);
  if (d.S == 1) {
    b.cb = 4 * kW<T>;  // 4 vectors of channels per block
    b.k = 64;          // rows per chunk: each lane sums <= 64 values before going to double
  } else {
    // a block row (cb*S values) is one contiguous stretch of >= 4096 values, so both passes stream through
    // memory; capped so the threads get >= 4 blocks
    const std::size_t want = (4096 + d.S - 1) / d.S;
    const std::size_t cap = std::max<std::size_t>(1, d.C / (4 * std::max<std::size_t>(1, nt)));
    b.cb = std::clamp<std::size_t>(std::min(want, cap), 1, 4 * kW<T>);
    if (reread > 0) {
      const std::size_t per_channel = d.N * d.S * sizeof(T) * reread;
      b.cb = std::min(b.cb, std::max<std::size_t>(1, (l2_bytes() * 2 / 5) / std::max<std::size_t>(1, per_channel)));
    }
    if (d.S <= lmax) {
      b.piece = d.S;
      b.k = std::clamp<std::size_t>(lmax / d.S, 1, 8);  // <= 8 rows: 4 KiB-aliased runs stay within L1's ways
    } else {
      const std::size_t npieces = (d.S + lmax - 1) / lmax, p = (d.S + npieces - 1) / npieces;
      b.piece = (p + kW<T> - 1) / kW<T> * kW<T>;
      b.k = 1;
    }
  }
  b.units = (d.C + b.cb - 1) / b.cb;
  b.k = std::max<std::size_t>(1, std::min(b.k, d.N));
  const std::size_t chunk_rows = (d.N + b.k - 1) / b.k;
  const std::size_t G0 = std::max<std::size_t>(1, std::min(chunk_rows, kMaxGroups));
  b.rpg = b.k * ((chunk_rows + G0 - 1) / G0);
  b.G = std::max<std::size_t>(1, (d.N + b.rpg - 1) / b.rpg);
  return b;
}

inline std::size_t group_begin(const Blocking& b, std::size_t g) { return g * b.rpg; }
inline std::size_t group_end(const Blocking& b, const BnDims& d, std::size_t g) { return std::min(d.N, (g + 1) * b.rpg); }
inline std::size_t unit_begin(const Blocking& b, std::size_t u) { return u * b.cb; }
inline std::size_t unit_width(const Blocking& b, const BnDims& d, std::size_t u) {
  return std::min(d.C, (u + 1) * b.cb) - u * b.cb;
}

// K per-channel coefficient arrays of one stride: coefficient j of channel c is p[j*ld + c].
// coef_stride(C): C plus 64 bytes, so that the arrays do not sit a multiple of 4 KiB apart — with C = 1024 floats
// they would, and every coefficient load of the [N, C] map would 4K-alias the store just made to the row.
template <class T>
constexpr std::size_t coef_stride(std::size_t C) {
  return C + 64 / sizeof(T);
}
template <class T>
struct Coefs {
  T* p;
  std::size_t ld;
  T& operator()(int j, std::size_t c) const { return p[j * ld + c]; }
  Coefs from(std::size_t c0) const { return {p + c0, ld}; }
};

// ================================================================================================================
// Local sums of one chunk. acc(s, coef, x) adds one element's terms into the NS sums s[], given the NIN inputs
// x[] at that element and the channel's constant coef (a shift or a mean); it is called with vectors (V<T>) in
// the body and with scalars (T) in the tails, and must use vfma for any fused multiply-add.
// ================================================================================================================
template <class T, std::size_t NS>
struct Partial {
  T vec[NS];   // the horizontal sums of the four vector accumulators
  T tail[NS];  // the scalar tail
  double sum(std::size_t j) const { return double(vec[j]) + double(tail[j]); }
};

// S > 1: a chunk is nrows runs of len contiguous values, `stride` apart, in each of NIN inputs (same offsets).
// pf_off != 0: prefetch the inputs pf_off values ahead during the first pf_rows rows.
template <class T, int NV, std::size_t NIN, std::size_t NS, class Acc>
Partial<T, NS> chunk_runs(const std::array<const T*, NIN>& in, std::size_t nrows, std::size_t stride, std::size_t len,
                          std::size_t pf_off, std::size_t pf_rows, T coef, Acc&& acc) {
  V<T> s[4][NS];
  T st[NS];
  for (std::size_t j = 0; j < NS; ++j) {
    st[j] = T(0);
    for (int q = 0; q < 4; ++q) s[q][j] = V<T>(T(0));
  }
  const V<T> cv(coef);
  for (std::size_t r = 0; r < nrows; ++r) {
    const std::size_t row = r * stride, pf = r < pf_rows ? pf_off : 0;
    visit_run<T, NV>(
        len,
        [&](std::size_t i, auto slot) {
          V<T> x[NIN];
          for (std::size_t j = 0; j < NIN; ++j) {
            if (pf) prefetch_l2(in[j] + row + pf + i);
            x[j] = V<T>::load_unaligned(in[j] + row + i);
          }
          acc(s[slot], cv, x);
        },
        [&](std::size_t i) {
          T x[NIN];
          for (std::size_t j = 0; j < NIN; ++j) x[j] = in[j][row + i];
          acc(st, coef, x);
        });
  }
  Partial<T, NS> out;
  for (std::size_t j = 0; j < NS; ++j) {
    out.vec[j] = xsimd::hadd((s[0][j] + s[1][j]) + (s[2][j] + s[3][j]));
    out.tail[j] = st[j];
  }
  return out;
}

// S == 1: a chunk is nrows rows of cw <= 4*W adjacent channels (rows `stride` apart); one lane per channel, so a
// lane's sums never mix channels. coef[c] is each channel's constant; the sums go to out[j][c], in T.
template <class T, int NVEC, std::size_t NIN, std::size_t NS, class Acc>
void cols_vec(const std::array<const T*, NIN>& in, std::size_t nrows, std::size_t stride, const T* coef, Acc& acc,
              T (*out)[4 * kW<T>]) {
  constexpr std::size_t w = kW<T>;
  V<T> s[NVEC][NS], cv[NVEC];
  for (int v = 0; v < NVEC; ++v) {
    cv[v] = coef ? V<T>::load_unaligned(coef + v * w) : V<T>(T(0));
    for (std::size_t j = 0; j < NS; ++j) s[v][j] = V<T>(T(0));
  }
  for (std::size_t r = 0; r < nrows; ++r)
    for (int v = 0; v < NVEC; ++v) {
      V<T> x[NIN];
      for (std::size_t j = 0; j < NIN; ++j) x[j] = V<T>::load_unaligned(in[j] + r * stride + v * w);
      acc(s[v], cv[v], x);
    }
  for (int v = 0; v < NVEC; ++v)
    for (std::size_t j = 0; j < NS; ++j) s[v][j].store_unaligned(out[j] + v * w);
}

template <class T, std::size_t NIN, std::size_t NS, class Acc>
void chunk_cols(const std::array<const T*, NIN>& in, std::size_t nrows, std::size_t stride, std::size_t cw,
                const T* coef, Acc&& acc, T (*out)[4 * kW<T>]) {
  constexpr std::size_t w = kW<T>;
  const std::size_t nv = cw / w;
  switch (nv) {
    case 4: cols_vec<T, 4, NIN, NS>(in, nrows, stride, coef, acc, out); break;
    case 3: cols_vec<T, 3, NIN, NS>(in, nrows, stride, coef, acc, out); break;
    case 2: cols_vec<T, 2, NIN, NS>(in, nrows, stride, coef, acc, out); break;
    case 1: cols_vec<T, 1, NIN, NS>(in, nrows, stride, coef, acc, out); break;
    default: break;
  }
  for (std::size_t c = nv * w; c < cw; ++c) {  // scalar tail: the same terms, one channel at a time
    T s[NS], x[NIN];
    for (std::size_t j = 0; j < NS; ++j) s[j] = T(0);
    for (std::size_t r = 0; r < nrows; ++r) {
      for (std::size_t j = 0; j < NIN; ++j) x[j] = in[j][r * stride + c];
      acc(s, coef ? coef[c] : T(0), x);
    }
    for (std::size_t j = 0; j < NS; ++j) out[j][c] = s[j];
  }
}

// S == 1, long rows: the sums of nrows whole rows of all C channels, walking memory in order (walking down a
// 64-channel block would put every row 4 KiB — C = 1024 floats — after the previous one, all in the same L1
// sets). Per channel the arithmetic of chunk_cols: lanes never mix channels. sums[j*C + c] must start at 0.
template <class T, std::size_t NIN, std::size_t NS, class Acc>
void chunk_rows(const std::array<const T*, NIN>& in, std::size_t nrows, std::size_t C, const T* coef, Acc&& acc,
                T* sums) {
  constexpr std::size_t w = kW<T>;
  const std::size_t cv = C - C % w;
  const std::array<const T*, NIN> src = in;  // locals: see coef_ptrs
  for (std::size_t r = 0; r < nrows; ++r) {
    for (std::size_t c = 0; c < cv; c += w) {
      V<T> s[NS], x[NIN];
      for (std::size_t j = 0; j < NS; ++j) s[j] = V<T>::load_unaligned(sums + j * C + c);
      for (std::size_t j = 0; j < NIN; ++j) x[j] = V<T>::load_unaligned(src[j] + r * C + c);
      acc(s, coef ? V<T>::load_unaligned(coef + c) : V<T>(T(0)), x);
      for (std::size_t j = 0; j < NS; ++j) s[j].store_unaligned(sums + j * C + c);
    }
    for (std::size_t c = cv; c < C; ++c) {
      T x[NIN];
      for (std::size_t j = 0; j < NIN; ++j) x[j] = src[j][r * C + c];
      T s[NS];
      for (std::size_t j = 0; j < NS; ++j) s[j] = sums[j * C + c];
      acc(s, coef ? coef[c] : T(0), x);
      for (std::size_t j = 0; j < NS; ++j) sums[j * C + c] = s[j];
    }
  }
}

// S > 1: visit the chunks of one chunk row of unit u — rows r .. r + min(k, r1 - r), every piece of every channel
// of the unit — in memory order, so the k rows are k sequential streams. f(c, off, nrows, len, pf_off, pf_rows):
// channel c of the unit, the chunk at offset off, and what to prefetch (`ahead` values further along this chunk
// row, or the next chunk row's start if it is below r_pf).
template <class F>
void for_each_chunk(const BnDims& d, const Blocking& b, std::size_t elem_bytes, std::size_t u, std::size_t r,
                    std::size_t r1, std::size_t r_pf, F&& f) {
  const std::size_t stride = d.C * d.S, c0 = unit_begin(b, u), cw = unit_width(b, d, u), bw = cw * d.S;
  const std::size_t ahead = std::min(bw, std::max(b.piece, kAheadBytes / elem_bytes));
  const std::size_t nr = std::min(b.k, r1 - r), row = (r * d.C + c0) * d.S;
  for (std::size_t c = 0; c < cw; ++c)
    for (std::size_t s0 = 0; s0 < d.S; s0 += b.piece) {
      const std::size_t len = std::min(b.piece, d.S - s0), pos = c * d.S + s0;
      const bool same = pos + ahead + len <= bw;
      const std::size_t pf_off = same ? ahead : (r + b.k < r_pf && pos + ahead >= bw ? b.k * stride + ahead - bw : 0);
      const std::size_t pf_rows = same ? nr : (pf_off ? std::min(b.k, r_pf - r - b.k) : 0);
      f(c, row + pos, nr, len, pf_off, pf_rows);
    }
}

// ================================================================================================================
// Elementwise maps: out = op(in...) with Op<X>{coefficient 0, ..., K-1} built per channel (X = T or V<T>).
// ================================================================================================================
// The coefficient arrays as plain pointers: copied into locals before the loops, because xsimd's unaligned stores
// (intrinsics declared may_alias) would otherwise make the compiler reload every pointer after every store.
template <std::size_t K, class T>
std::array<const T*, K> coef_ptrs(const Coefs<T>& k) {
  std::array<const T*, K> p;
  for (std::size_t j = 0; j < K; ++j) p[j] = &k(int(j), 0);
  return p;
}
template <template <class> class Op, class X, class T, std::size_t K, std::size_t... J>
Op<X> make_op(const std::array<const T*, K>& kp, std::size_t c, std::index_sequence<J...>) {
  return Op<X>{X(kp[J][c])...};
}
template <template <class> class Op, class T, std::size_t K, std::size_t... J>
Op<V<T>> load_op(const std::array<const T*, K>& kp, std::size_t c, std::index_sequence<J...>) {
  return Op<V<T>>{V<T>::load_unaligned(kp[J] + c)...};
}

// S > 1: nrows rows of a unit of cw channels (in/out point at its first value; rows `stride` apart; within a row,
// cw runs of len values). Stream: streaming stores (NV == 0 peels each run to an aligned address; NV > 0 needs
// aligned runs). Prefetch: the next unit's part of each row (its first pf_cw runs); always the next row.
template <template <class> class Op, std::size_t K, class T, bool Stream, bool Prefetch, int NV, std::size_t NIN>
void map_block(const std::array<const T*, NIN>& in, T* out, std::size_t nrows, std::size_t stride, std::size_t len,
               std::size_t cw, const Coefs<T>& k, std::size_t pf_cw) {
  const std::size_t ahead = cw * len;
  const std::array<const T*, K> kp = coef_ptrs<K>(k);
  const std::array<const T*, NIN> src = in;  // locals: see coef_ptrs
  for (std::size_t r = 0; r < nrows; ++r)
    for (std::size_t c = 0; c < cw; ++c) {
      const std::size_t off = r * stride + c * len;
      const Op<T> os = make_op<Op, T>(kp, c, std::make_index_sequence<K>{});
      const Op<V<T>> ov = make_op<Op, V<T>>(kp, c, std::make_index_sequence<K>{});
      const auto scalar = [&](std::size_t i) {
        T x[NIN];
        for (std::size_t j = 0; j < NIN; ++j) x[j] = src[j][i];
        out[i] = os(x);
      };
      std::size_t i0 = 0;
      if constexpr (Stream && NV == 0)
        for (; i0 < len && !aligned(out + off + i0); ++i0) scalar(off + i0);
      const std::size_t base = off + i0;
      const bool next_row = r + 1 < nrows, next_block = c < pf_cw;
      visit_run<T, NV>(
          len - i0,
          [&](std::size_t i, auto) {
            V<T> x[NIN];
            for (std::size_t j = 0; j < NIN; ++j) {
              if constexpr (Prefetch)
                if (next_block) prefetch_l2(src[j] + base + ahead + i);
            }
            for (std::size_t j = 0; j < NIN; ++j) {
              if (next_row) prefetch_l2(src[j] + base + stride + i);
              x[j] = V<T>::load_unaligned(src[j] + base + i);
            }
            const V<T> v = ov(x);
            if constexpr (Stream) store_stream(out + base + i, v); else v.store_unaligned(out + base + i);
          },
          [&](std::size_t i) { scalar(base + i); });
    }
}

// map_block over rows [r0, r1) of unit u of the whole tensor (in/out: the tensors' first values).
template <template <class> class Op, std::size_t K, class T, std::size_t NIN>
void map_unit(const std::array<const T*, NIN>& in, T* out, const BnDims& d, const Blocking& b, std::size_t u,
              std::size_t r0, std::size_t r1, const Coefs<T>& k, bool stream, bool prefetch) {
  const std::size_t c0 = unit_begin(b, u), cw = unit_width(b, d, u);
  const std::size_t off = (r0 * d.C + c0) * d.S, stride = d.C * d.S, nr = r1 - r0;
  const std::size_t pf_cw = prefetch && u + 1 < b.units ? unit_width(b, d, u + 1) : 0;
  std::array<const T*, NIN> at;
  for (std::size_t j = 0; j < NIN; ++j) at[j] = in[j] + off;
  dispatch_nv<T>(d.S, [&](auto nv) {
    constexpr int NV = decltype(nv)::value;
    const bool st = stream && (NV == 0 || aligned(out));
    if (st && prefetch) map_block<Op, K, T, true, true, NV>(at, out + off, nr, stride, d.S, cw, k, pf_cw);
    else if (st) map_block<Op, K, T, true, false, NV>(at, out + off, nr, stride, d.S, cw, k, pf_cw);
    else if (prefetch) map_block<Op, K, T, false, true, NV>(at, out + off, nr, stride, d.S, cw, k, pf_cw);
    else map_block<Op, K, T, false, false, NV>(at, out + off, nr, stride, d.S, cw, k, pf_cw);
  });
}

// S == 1: rows [0, nrows) of all C channels in memory order (in/out at the first row); the coefficient vectors
// of each column block come from L1 every row.
template <template <class> class Op, std::size_t K, class T, std::size_t NIN>
void map_rows(const std::array<const T*, NIN>& in, T* out, std::size_t nrows, std::size_t C, const Coefs<T>& k) {
  constexpr std::size_t w = kW<T>;
  const std::size_t cv = C - C % w;
  const std::array<const T*, K> kp = coef_ptrs<K>(k);
  const std::array<const T*, NIN> src = in;  // locals: see coef_ptrs
  for (std::size_t r = 0; r < nrows; ++r) {
    for (std::size_t c = 0; c < cv; c += w) {
      V<T> x[NIN];
      for (std::size_t j = 0; j < NIN; ++j) x[j] = V<T>::load_unaligned(src[j] + r * C + c);
      load_op<Op>(kp, c, std::make_index_sequence<K>{})(x).store_unaligned(out + r * C + c);
    }
    for (std::size_t c = cv; c < C; ++c) {
      T x[NIN];
      for (std::size_t j = 0; j < NIN; ++j) x[j] = src[j][r * C + c];
      out[r * C + c] = make_op<Op, T>(kp, c, std::make_index_sequence<K>{})(x);
    }
  }
}

// ================================================================================================================
// Schedules and the driver
// ================================================================================================================
// S > 1. FUSED: threads split the units; each unit runs local sums -> combine -> finish -> map back to back, so
// its data is read from memory once and re-read from cache. SPLIT (too few units to share evenly): threads split
// (unit, group) pairs for the local sums, the caller combines and finishes, then threads split the pairs again
// for the map. Both fold groups in the same order: the same bits. INLINE: one thread, the fused order.
enum class Schedule { Inline, Fused, Split };

inline Schedule choose_schedule(const BnDims& d, const Blocking& b) {
  const std::size_t nt = static_cast<std::size_t>(get_num_threads());
  if (nt == 1 || d.N * d.C * d.S < kMinParallelElems || in_parallel_region()) return Schedule::Inline;
  if (b.units % nt == 0 || b.units >= 4 * nt || b.G == 1) return Schedule::Fused;
  return Schedule::Split;
}

inline bool one_thread(const BnDims& d) {
  return get_num_threads() == 1 || d.N * d.C * d.S < kMinParallelElems || in_parallel_region();
}
inline std::size_t unit_grain(const BnDims& d, const Blocking& b) {  // >= ~kMinParallelElems/2 values a piece
  return std::max<std::size_t>(1, (kMinParallelElems / 2) / std::max<std::size_t>(1, d.N * d.S * b.cb));
}
inline std::size_t row_grain(const BnDims& d) {  // a whole-row pass of the [N, C] layout
  return d.N * d.C < kMinParallelElems ? d.N : std::max<std::size_t>(1, 8192 / std::max<std::size_t>(1, d.C));
}

// S > 1 group sums of unit u over group g from the policy's chunk sums: out[c] for the unit's channels,
// chunk by chunk in order. P::chunk(nv, off, nrows, len, pf_off, pf_rows, channel) -> Acc.
template <class P>
void group_sums_runs(const P& p, const BnDims& d, const Blocking& b, std::size_t u, std::size_t g,
                     typename P::Acc* out) {
  using T = typename P::T;
  const std::size_t r1 = group_end(b, d, g), c0 = unit_begin(b, u);
  for (std::size_t c = 0; c < unit_width(b, d, u); ++c) out[c] = typename P::Acc{};
  for (std::size_t r = group_begin(b, g); r < r1; r += b.k)
    for_each_chunk(d, b, sizeof(T), u, r, r1, r1, [&](std::size_t c, std::size_t off, std::size_t nr, std::size_t len,
                                                      std::size_t pf_off, std::size_t pf_rows) {
      dispatch_nv<T>(len, [&](auto nv) { out[c] = P::combine(out[c], p.chunk(nv, off, nr, len, pf_off, pf_rows, c0 + c)); });
    });
}

// Local sums only (the first step of SyncBatchNorm's path): out[c], groups folded in order.
template <class P>
void local_sums(const P& p, const BnDims& d, const Blocking& b, typename P::Acc* out) {
  using Acc = typename P::Acc;
  std::vector<Acc> part(b.G * d.C);  // part[g*C + c]
  const std::size_t pairs = b.units * b.G;
  parallel_for(0, pairs, one_thread(d) ? pairs : 1, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t t = lo; t < hi; ++t)
      p.group_sums(t / b.G, t % b.G, part.data() + (t % b.G) * d.C + unit_begin(b, t / b.G));
  });
  for (std::size_t c = 0; c < d.C; ++c) {
    Acc tot{};
    for (std::size_t g = 0; g < b.G; ++g) tot = P::combine(tot, part[g * d.C + c]);
    out[c] = tot;
  }
}

// The whole kernel: local sums (or the `given` totals, e.g. all-reduced ones) -> combine -> finish -> map.
// do_map == false stops after finish (only side outputs wanted). stream: streaming stores in the map.
template <class P>
void run(const P& p, const BnDims& d, const Blocking& b, const typename P::Acc* given, bool do_map, bool stream) {
  using T = typename P::T;
  using Acc = typename P::Acc;
  constexpr int K = P::K;
  constexpr std::size_t kMaxCw = 4 * kW<T>;
  if (d.S == 1) {  // [N, C]: (column block, group) sums -> per-channel finish -> whole rows
    const bool one = one_thread(d);
    const std::size_t pairs = b.units * b.G;
    std::vector<Acc> part(given ? 0 : b.G * d.C);
    if (!given)
      parallel_for(0, pairs, one ? pairs : 1, [&](std::size_t lo, std::size_t hi) {
        for (std::size_t t = lo; t < hi; ++t)
          p.group_sums(t / b.G, t % b.G, part.data() + (t % b.G) * d.C + unit_begin(b, t / b.G));
      });
    std::vector<T> coef(std::size_t(K) * coef_stride<T>(d.C));
    const Coefs<T> k{coef.data(), coef_stride<T>(d.C)};
    parallel_for(0, d.C, one ? d.C : 1024, [&](std::size_t lo, std::size_t hi) {
      if (!given)  // combine into part[c]
        for (std::size_t c = lo; c < hi; ++c)
          for (std::size_t g = 1; g < b.G; ++g) part[c] = P::combine(part[c], part[g * d.C + c]);
      p.finish(lo, hi - lo, (given ? given : part.data()) + lo, k.from(lo));
    });
    if (do_map)
      parallel_for(0, d.N, one ? d.N : row_grain(d), [&](std::size_t lo, std::size_t hi) { p.map_rows(lo, hi, k); });
    return;
  }
  const Schedule sched = choose_schedule(d, b);
  if (sched != Schedule::Split || given) {
    using UnitAccs = std::array<Acc, kMaxCw>;                   // (named outside the lambda: GCC 12 fails on
    using UnitCoefs = std::array<T, std::size_t(K) * kMaxCw>;  //  array bounds of the enclosing template there)
    auto body = [&](std::size_t lo, std::size_t hi) {
      UnitAccs part, tot;
      alignas(kAlign) UnitCoefs coef;
      const Coefs<T> k{coef.data(), kMaxCw};
      for (std::size_t u = lo; u < hi; ++u) {
        const std::size_t cw = unit_width(b, d, u), c0 = unit_begin(b, u);
        for (std::size_t c = 0; c < cw; ++c) tot[c] = given ? given[c0 + c] : Acc{};
        for (std::size_t g = 0; !given && g < b.G; ++g) {  // local sums + combine, groups in order
          p.group_sums(u, g, part.data());
          for (std::size_t c = 0; c < cw; ++c) tot[c] = P::combine(tot[c], part[c]);
        }
        p.finish(c0, cw, tot.data(), k);
        if (do_map) p.map(u, 0, d.N, k, stream, u + 1 < hi);  // re-reads the unit from cache
      }
      if (stream && do_map) stream_fence();
    };
    if (sched == Schedule::Inline) body(0, b.units);
    else parallel_for(0, b.units, unit_grain(d, b), body);
    return;
  }
  // SPLIT: (unit, group) pairs
  std::vector<Acc> part(b.G * d.C);
  const std::size_t pairs = b.units * b.G;
  parallel_for(0, pairs, 1, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t t = lo; t < hi; ++t)
      p.group_sums(t / b.G, t % b.G, part.data() + (t % b.G) * d.C + unit_begin(b, t / b.G));
  });
  for (std::size_t c = 0; c < d.C; ++c)
    for (std::size_t g = 1; g < b.G; ++g) part[c] = P::combine(part[c], part[g * d.C + c]);
  std::vector<T> coef(std::size_t(K) * coef_stride<T>(d.C));
  const Coefs<T> k{coef.data(), coef_stride<T>(d.C)};
  p.finish(0, d.C, part.data(), k);
  if (!do_map) return;
  parallel_for(0, pairs, 1, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t t = lo; t < hi; ++t) {
      const std::size_t u = t / b.G, g = t % b.G;
      p.map(u, group_begin(b, g), group_end(b, d, g), k.from(unit_begin(b, u)), stream, false);
    }
    if (stream) stream_fence();
  });
}

// The map alone with given coefficients (eval, or normalise after an all-reduce). S > 1: (row, unit) items in
// memory order; S == 1: whole rows.
template <class P>
void map_all(const P& p, const BnDims& d, const Blocking& b, const Coefs<typename P::T>& k, bool stream) {
  if (d.C == 0 || d.N * d.S == 0) return;
  const std::size_t numel = d.N * d.C * d.S;
  if (d.S == 1) {
    parallel_for(0, d.N, row_grain(d), [&](std::size_t lo, std::size_t hi) { p.map_rows(lo, hi, k); });
    return;
  }
  const std::size_t items = d.N * b.units;  // item t = (row r, unit u)
  const std::size_t grain = numel < kMinParallelElems ? items : std::max<std::size_t>(1, 8192 / (b.cb * d.S));
  parallel_for(0, items, grain, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t t = lo; t < hi; ++t) {
      const std::size_t r = t / b.units, u = t % b.units;
      p.map(u, r, r + 1, k.from(unit_begin(b, u)), stream, false);
    }
    if (stream) stream_fence();
  });
}

}  // namespace xg::kernels::norm
