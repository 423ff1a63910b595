// GEMM: float64 through OpenBLAS's CBLAS (the call xtensor-blas makes too, without its 2-d-only wrappers),
// float32 through oneDNN's sgemm when built with it (see xgrad/blas.h for why), else OpenBLAS as well.
#include "xgrad/blas.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "xgrad/parallel.h"

#ifdef XGRAD_HAVE_ONEDNN
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#endif

namespace xg::blas {

namespace {

CBLAS_TRANSPOSE tr(bool t) { return t ? CblasTrans : CblasNoTrans; }

// C = beta · C, the product of an empty sum (k == 0); C is not read when beta == 0 (it may be unwritten memory).
template <class T>
void scale_only(std::size_t m, std::size_t n, T beta, T* c, std::size_t ldc) {
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
}

// -1: not chosen yet (resolved from XGRAD_SGEMM at the first product), else a SgemmBackend.
std::atomic<int> g_backend{-1};

SgemmBackend default_backend() {
  const char* env = std::getenv("XGRAD_SGEMM");
  if (!env || !*env) return have_onednn() ? SgemmBackend::OneDNN : SgemmBackend::OpenBLAS;
  const std::string_view v(env);
  if (v == "openblas") return SgemmBackend::OpenBLAS;
  if (v == "onednn") {
    if (!have_onednn())
      throw std::invalid_argument(
          "XGRAD_SGEMM=onednn, but this xgrad was built without oneDNN (XGRAD_ONEDNN=OFF); unset it or use "
          "XGRAD_SGEMM=openblas");
    return SgemmBackend::OneDNN;
  }
  throw std::invalid_argument("XGRAD_SGEMM must be 'onednn' or 'openblas', got '" + std::string(v) + "'");
}

SgemmBackend current_backend() {
  int b = g_backend.load(std::memory_order_relaxed);
  if (b < 0) {
    b = static_cast<int>(default_backend());
    g_backend.store(b, std::memory_order_relaxed);
  }
  return static_cast<SgemmBackend>(b);
}

#ifdef XGRAD_HAVE_ONEDNN
// One single-threaded oneDNN call. oneDNN's OpenMP team size is the calling thread's omp_get_max_threads():
// set to 1 around the call and restored, so a caller's own OpenMP setting is left as it was.
void onednn_sgemm(bool ta, bool tb, std::size_t m, std::size_t n, std::size_t k, float alpha, const float* a,
                  std::size_t lda, const float* b, std::size_t ldb, float beta, float* c, std::size_t ldc) {
  const int omp_threads = omp_get_max_threads();
  if (omp_threads != 1) omp_set_num_threads(1);
  const auto d = [](std::size_t v) { return static_cast<dnnl_dim_t>(v); };
  const dnnl_status_t st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', d(m), d(n), d(k), alpha, a, d(lda), b, d(ldb),
                                      beta, c, d(ldc));
  if (omp_threads != 1) omp_set_num_threads(omp_threads);
  if (st != dnnl_success)
    throw std::runtime_error("oneDNN sgemm failed (dnnl_status_t " + std::to_string(static_cast<int>(st)) +
                             ") for m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k) +
                             " lda=" + std::to_string(lda) + " ldb=" + std::to_string(ldb) +
                             " ldc=" + std::to_string(ldc));
}

// The product cut into pieces of C run by xgrad's pool. Each piece is C[rows, cols] = alpha · op(A)[rows, :] ·
// op(B)[:, cols] + beta · C[rows, cols] over the full k, so the pieces are independent.
//
// Determinism: oneDNN picks its kernel and its blocking of k from the shape of each call, and on AVX2 a call
// with 520 rows does not add the products in the order a call with 1030 rows does (on AVX-512 it happened to).
// So the pieces depend on the shape alone — never on the thread count — and with one thread the same pieces run
// one after the other: every value of C goes through the same oneDNN call whatever the thread count, on every
// ISA. Pieces: blocks of kCols = 16 columns when C is wide (n >= m or n >= 64), else blocks of kRows = 8 rows,
// grouped into at most kMaxPieces pieces of at least kMinPieceMacs multiply-adds each.
//
// Only products of at least kMinParallelMacs multiply-adds (≈ 0.2 ms on one core) are cut. Smaller ones
// run faster in a tight benchmark loop on two threads (a 60x100x784 product 1.2x, 64x784x288 1.6x), but in a
// training run, where other ops come between the products and the worker has gone to sleep, waking it cost
// more than it saved: in three alternating runs of xgrad-lab noisy-bn (MLP, batch 128, 100 units) on 2 threads
// on the 2-vCPU reference machine, a threshold of 2^20 took 2-10% longer than 2^25.
constexpr double kMinParallelMacs = double(1 << 25);
constexpr double kMinPieceMacs = double(1 << 23);
constexpr std::size_t kMaxPieces = 16, kCols = 16, kRows = 8;

// How a product is cut: `pieces` pieces of `step` columns (by_cols) or rows each, the last one shorter.
struct GemmCut {
  bool by_cols;
  std::size_t step, pieces;
};

GemmCut gemm_cut(std::size_t m, std::size_t n, std::size_t k) {
  const bool by_cols = n >= m || n >= 64;
  const std::size_t len = by_cols ? n : m, unit = by_cols ? kCols : kRows;
  const std::size_t units = (len + unit - 1) / unit;
  const double macs = double(m) * double(n) * double(k);
  const std::size_t want = std::clamp<std::size_t>(std::size_t(macs / kMinPieceMacs), 1, kMaxPieces);
  const std::size_t per = (units + std::min(want, units) - 1) / std::min(want, units);  // units per piece
  return {by_cols, per * unit, (len + per * unit - 1) / (per * unit)};
}

void onednn_sgemm_parallel(bool ta, bool tb, std::size_t m, std::size_t n, std::size_t k, float alpha,
                           const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
                           std::size_t ldc) {
  if (double(m) * double(n) * double(k) < kMinParallelMacs)
    return onednn_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  const GemmCut cut = gemm_cut(m, n, k);
  // grain 1: the pool hands out whole pieces; inside a parallel region parallel_for runs them inline, in order
  parallel_for(0, cut.pieces, 1, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t p = lo; p < hi; ++p) {
      if (cut.by_cols) {
        const std::size_t j0 = p * cut.step, j1 = std::min(n, j0 + cut.step);
        const float* bj = tb ? b + j0 * ldb : b + j0;  // op(B)[:, j0]: column j0 of B, or row j0 of a stored Bᵀ
        onednn_sgemm(ta, tb, m, j1 - j0, k, alpha, a, lda, bj, ldb, beta, c + j0, ldc);
      } else {
        const std::size_t i0 = p * cut.step, i1 = std::min(m, i0 + cut.step);
        const float* ai = ta ? a + i0 : a + i0 * lda;  // op(A)[i0, :]: row i0 of A, or column i0 of a stored Aᵀ
        onednn_sgemm(ta, tb, i1 - i0, n, k, alpha, ai, lda, b, ldb, beta, c + i0 * ldc, ldc);
      }
    }
  });
}
#endif

}  // namespace

bool have_onednn() {
#ifdef XGRAD_HAVE_ONEDNN
  return true;
#else
  return false;
#endif
}

void set_sgemm_backend(SgemmBackend backend) {
  if (backend == SgemmBackend::OneDNN && !have_onednn())
    throw std::invalid_argument(
        "xg::blas::set_sgemm_backend(OneDNN): this xgrad was built without oneDNN; reconfigure with "
        "-DXGRAD_ONEDNN=ON (Debian package libdnnl-dev) or keep SgemmBackend::OpenBLAS");
  g_backend.store(static_cast<int>(backend), std::memory_order_relaxed);
}

SgemmBackend sgemm_backend() { return current_backend(); }

std::string sgemm_backend_name() {
#ifdef XGRAD_HAVE_ONEDNN
  if (current_backend() == SgemmBackend::OneDNN) {
    const dnnl_version_t* v = dnnl_version();
    return "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
  }
#endif
  return "OpenBLAS";
}

void gemm(bool ta, bool tb, std::size_t m, std::size_t n, std::size_t k, float alpha, const float* a, std::size_t lda,
          const float* b, std::size_t ldb, float beta, float* c, std::size_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) return scale_only(m, n, beta, c, ldc);
#ifdef XGRAD_HAVE_ONEDNN
  if (current_backend() == SgemmBackend::OneDNN)
    return onednn_sgemm_parallel(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
  cblas_sgemm(CblasRowMajor, tr(ta), tr(tb), static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha,
              a, static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

void gemm(bool ta, bool tb, std::size_t m, std::size_t n, std::size_t k, double alpha, const double* a,
          std::size_t lda, const double* b, std::size_t ldb, double beta, double* c, std::size_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) return scale_only(m, n, beta, c, ldc);
  cblas_dgemm(CblasRowMajor, tr(ta), tr(tb), static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha,
              a, static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

std::string core_name() {
  const char* n = openblas_get_corename();
  return n ? std::string(n) : std::string();
}

}  // namespace xg::blas
