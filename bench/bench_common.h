// bench_common.h — the pieces bench_batchnorm.cpp and bench_norm.cpp share: aligned random buffers, a tensor view of
// one, and oneDNN's OpenMP thread count.
#pragma once

#include <cstdint>
#include <random>
#include <utility>

#include <xsimd/xsimd.hpp>
#include <xtensor/xadapt.hpp>

#include "xgrad/tensor.h"

#if defined(XGRAD_HAVE_ONEDNN)
#include <dlfcn.h>
#endif

namespace bench {

// 64-byte aligned, like xtensor's storage (and oneDNN's and libtorch's allocations).
using Buf = std::vector<float, xsimd::aligned_allocator<float, 64>>;

inline Buf randn(std::size_t n, std::uint32_t seed, float mean = 0.f, float sd = 1.f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(mean, sd);
  Buf v(n);
  for (auto& e : v) e = d(g);
  return v;
}

// A tensor holding a copy of v with the given shape.
inline xg::Tensor tensor_of(const Buf& v, const xg::Shape& shape, bool requires_grad) {
  xt::xarray<float> a = xt::adapt(v.data(), v.size(), xt::no_ownership(), shape);
  return xg::Tensor(std::move(a), requires_grad);
}

#if defined(XGRAD_HAVE_ONEDNN)
// oneDNN (Debian build) threads with OpenMP; libgomp is loaded with libdnnl, so look it up at run time.
inline void omp_threads(int n) {
  using Fn = void (*)(int);
  static Fn fn = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (fn) fn(n);
}
#endif

}  // namespace bench
