// xgrad/blas.h — the one GEMM entry point (row-major), for ops and kernels that need it.
//
// float64 products go through OpenBLAS's CBLAS. float32 products go through oneDNN's sgemm (Debian
// libdnnl-dev) when xgrad was built with it (XGRAD_ONEDNN=ON, the default), else through OpenBLAS too.
// Why two libraries: oneDNN's float32 kernels are JIT-generated for the CPU it runs on (AVX-512 where there is
// one) and ignore OPENBLAS_CORETYPE, which some environments pin to OpenBLAS's AVX2 kernels; on the reference
// machine (docs/benchmarks.md) they are about 2x faster than OpenBLAS's for the convolutions' products.
// oneDNN has no float64 GEMM.
//
// Threads: a float32 product on oneDNN of at least 2^25 multiply-adds is cut into blocks of C's columns (or
// rows) run by xgrad's own pool (xg::parallel_for), each block one single-threaded oneDNN call over the full k,
// so oneDNN never starts OpenMP threads of its own and the bits do not depend on the thread count; smaller
// products run whole on the calling thread. OpenBLAS uses its own threads (xg::set_num_threads sets their
// number too).
#pragma once

#include <cstddef>
#include <string>

namespace xg::blas {

/// C[m,n] = alpha · op(A)[m,k] · op(B)[k,n] + beta · C, row-major; op(X) = Xᵀ when the flag is set.
/// lda/ldb/ldc are the row strides of A, B and C as stored. With beta == 0, C's old values are not read (C may
/// be unwritten memory, as from xg::empty), also when k == 0, where C = beta · C.
void gemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, float alpha, const float* a,
          std::size_t lda, const float* b, std::size_t ldb, float beta, float* c, std::size_t ldc);
void gemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, double alpha, const double* a,
          std::size_t lda, const double* b, std::size_t ldb, double beta, double* c, std::size_t ldc);

/// The library that runs float32 products.
enum class SgemmBackend { OneDNN, OpenBLAS };

/// True when xgrad was built with oneDNN (CMake option XGRAD_ONEDNN).
bool have_onednn();

/// Choose the float32 backend for the whole process. Default: OneDNN when built with it, else OpenBLAS; the
/// environment variable XGRAD_SGEMM=openblas|onednn, read at the first product, overrides the default.
/// Throws std::invalid_argument for OneDNN when xgrad was built without it. Not thread-safe against products
/// running at the same time: set it at start-up.
void set_sgemm_backend(SgemmBackend backend);
SgemmBackend sgemm_backend();

/// "oneDNN 2.6.3" or "OpenBLAS" — what runs float32 products now.
std::string sgemm_backend_name();

/// The kernel set OpenBLAS runs on this CPU (openblas_get_corename(): "Haswell", "SkylakeX", "Zen", ...).
/// OpenBLAS picks it when it loads; the environment variable OPENBLAS_CORETYPE overrides the pick.
std::string core_name();

}  // namespace xg::blas
