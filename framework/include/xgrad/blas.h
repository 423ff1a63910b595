// xgrad/blas.h — the one GEMM entry point (OpenBLAS's CBLAS, row-major), for ops and kernels that need it.
#pragma once

#include <cstddef>
#include <string>

namespace xg::blas {

/// C[m,n] = alpha · op(A)[m,k] · op(B)[k,n] + beta · C, row-major; op(X) = Xᵀ when the flag is set.
/// lda/ldb/ldc are the row strides of A, B and C as stored.
void gemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, float alpha, const float* a,
          std::size_t lda, const float* b, std::size_t ldb, float beta, float* c, std::size_t ldc);
void gemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, double alpha, const double* a,
          std::size_t lda, const double* b, std::size_t ldb, double beta, double* c, std::size_t ldc);

/// The kernel set OpenBLAS runs on this CPU (openblas_get_corename(): "Haswell", "SkylakeX", "Zen", ...).
/// OpenBLAS picks it when it loads; the environment variable OPENBLAS_CORETYPE overrides the pick.
std::string core_name();

}  // namespace xg::blas
