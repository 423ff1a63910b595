// xgrad — SIMD and cache helpers for the hand-written kernels (kernels/norm_driver.h, kernels/batchnorm.cpp).
//
// xsimd 8.1 batches of the build's widest vector type (-march: 16 floats with AVX-512, 8 with AVX2, 4 with
// SSE2), plus the few instructions xsimd 8.1 lacks (an FMA for AVX-512, streaming stores), software prefetch,
// the loop that visits one contiguous run with four independent accumulators, and the cache sizes the kernels
// block for. Nothing here knows about normalisation.
//
// Include only from sources compiled with floating-point contraction off (see batchnorm.cpp): vfma and std::fma
// are the only fused multiply-adds, so a value rounds the same way in a vector body, in a scalar tail and in
// whichever driver inlined it.
#pragma once

#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "xgrad/parallel.h"

namespace xg::kernels::simd {

template <class T>
using V = xsimd::batch<T>;  // the build's default architecture

template <class T>
constexpr std::size_t kW = V<T>::size;  // lanes

constexpr std::size_t kAlign = xsimd::default_arch::alignment();

// a*b + c with one rounding. xsimd 8.1 has no FMA kernel for AVX-512 (it computes a*b + c), so call the
// instruction; scalar code uses std::fma, so a value gets the same bits in a vector body or in a tail.
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
template <class T, std::enable_if_t<std::is_floating_point_v<T>, int> = 0>
inline T vfma(T a, T b, T c) {
  return std::fma(a, b, c);
}

// Software prefetch into L2. The runs of a channel sit C*S values apart — often a multiple of 4 KiB, which the
// hardware prefetchers do not follow — so the kernels fetch ahead themselves.
template <class T>
inline void prefetch_l2(const T* p) {
  __builtin_prefetch(p, 0, 2);
}
constexpr std::size_t kAheadBytes = 4096;  // statistics pass: prefetch distance along each row stream

// Streaming (non-temporal) store of a full batch to an aligned address: written without being read first,
// which saves a third of the DRAM traffic of a large output.
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

inline bool aligned(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % kAlign == 0; }

// Visit the len values of one run: full batches through vec(i, slot), where slot (0..3, a compile-time constant)
// picks one of four independent accumulators so consecutive batches do not wait on each other, then the last
// len % W values through tail(i). NV > 0: len == NV*W is known at compile time and the loop is unrolled (small
// spatial sizes such as 8x8 would otherwise pay a loop set-up per run). The path depends on the shape only.
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

// f(Slot<NV>) with the compile-time batch count of a run of len values (1, 2, 4 or 8), or Slot<0> (any length).
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

// ---- cache sizes ------------------------------------------------------------------------------------------------
// A cache size in bytes from sysconf (level 2 or 3), or 0 when the system does not say.
inline std::size_t sysconf_cache_bytes([[maybe_unused]] int level) {
  long r = 0;
#if defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
  r = sysconf(level == 2 ? _SC_LEVEL2_CACHE_SIZE : _SC_LEVEL3_CACHE_SIZE);
#endif
  return r > 0 ? std::size_t(r) : 0;
}

// L3: unknown (VMs often say 0) -> 32 MiB; capped at 32 MiB, since a VM may report the sum over the host's core
// complexes (508 MiB seen on a 2-vCPU Zen 5 guest) while a thread shares one complex's L3 with other tenants.
inline std::size_t l3_bytes() {
  static const std::size_t v = [] {
    const std::size_t b = sysconf_cache_bytes(3), cap = std::size_t(32) << 20;
    return b >= (std::size_t(1) << 20) ? std::min(b, cap) : cap;
  }();
  return v;
}

// Per-core L2 (the fused schedule's re-read pass is sized to it); unknown: 1 MiB.
inline std::size_t l2_bytes() {
  static const std::size_t v = [] {
    const std::size_t b = sysconf_cache_bytes(2);
    return b >= (std::size_t(128) << 10) ? b : std::size_t(1) << 20;
  }();
  return v;
}

// Streaming stores or not, for a kernel whose working set is ws = tensors * numel * elem_bytes:
//   ws <= L3/2: everything stays in cache (for the next layer too): store normally;
//   eval with >= 2 threads and ws <= L3: the same (two cores re-read a cached working set much faster than DRAM
//               delivers it; measured 2-3x on a 32 MiB L3);
//   otherwise:  stream the output (saves the read-for-ownership).
// Only the store instruction changes, never the arithmetic: the choice may depend on the thread count.
inline bool use_stream(std::size_t numel, std::size_t elem_bytes, std::size_t tensors, bool eval) {
  const std::size_t ws = numel * elem_bytes * tensors, l3 = l3_bytes();
  if (ws <= l3 / 2) return false;
  if (eval && get_num_threads() >= 2 && ws <= l3) return false;
  return true;
}

}  // namespace xg::kernels::simd
