// matmul (2-d, numpy's 1-d rules, batched with broadcast batch axes) and linear: values against triple loops,
// gradchecks in float64, float32 through sgemm.
#include <cmath>
#include <cstdlib>
#include <string>

#include "testing.h"

using namespace xgt;
using xg::kFloat32;
using xg::kFloat64;

namespace {
// Reference matmul with numpy semantics, written out: promote 1-d operands, broadcast batch axes, triple loop.
std::vector<double> ref_matmul(const Tensor& a, const Tensor& b, Shape* out_shape) {
  Shape as = a.shape(), bs = b.shape();
  const bool a1 = as.size() == 1, b1 = bs.size() == 1;
  if (a1) as.insert(as.begin(), 1);
  if (b1) bs.push_back(1);
  const std::size_t n = as[as.size() - 2], k = as.back(), m = bs.back();
  const Shape ba(as.begin(), as.end() - 2), bb(bs.begin(), bs.end() - 2);
  const Shape batch = ref_broadcast_shape(ba, bb);
  const auto va = a.to_vector(), vb = b.to_vector();
  std::vector<double> out;
  for (std::size_t t = 0; t < xg::numel_of(batch); ++t) {
    const auto bi = unravel(t, batch);
    const std::size_t oa = broadcast_offset(bi, ba) * n * k, ob = broadcast_offset(bi, bb) * k * m;
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < m; ++j) {
        double s = 0;
        for (std::size_t q = 0; q < k; ++q) s += va[oa + i * k + q] * vb[ob + q * m + j];
        out.push_back(s);
      }
  }
  Shape os = batch;
  if (!a1) os.push_back(n);
  if (!b1) os.push_back(m);
  *out_shape = os;
  return out;
}
}  // namespace

TEST_CASE("matmul: values and gradcheck for 2-d, 1-d and batched operands") {
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{3, 4}, {4, 5}},       {{1, 1}, {1, 1}},    {{4}, {4, 2}},          {{3, 4}, {4}},
      {{4}, {4}},             {{2, 3, 4}, {2, 4, 5}}, {{2, 1, 3, 4}, {5, 4, 2}}, {{3, 4}, {2, 4, 5}},
      {{2, 3, 4}, {4}},       {{4}, {2, 4, 3}},    {{1, 3, 4}, {2, 4, 1}},
  };
  for (const auto& [sa, sb] : cases) {
    CAPTURE(xg::shape_str(sa));
    CAPTURE(xg::shape_str(sb));
    const Tensor a = rnd(sa, 81), b = rnd(sb, 82);
    Shape os;
    const auto want = ref_matmul(a, b, &os);
    check_values(xg::matmul(a, b), os, want, 1e-13);
    check_values(a.matmul(b), os, want, 1e-13);
    const Tensor af = a.detach().to(kFloat32), bf = b.detach().to(kFloat32);
    Shape osf;
    check_values(xg::matmul(af, bf), os, ref_matmul(af, bf, &osf), 1e-5);
    check_grad("matmul", [](auto& in) { return xg::matmul(in[0], in[1]); }, {a, b});
  }
}

TEST_CASE("matmul: the gradient of one operand only, and an empty inner dimension") {
  Tensor a = rnd({2, 3}, 83);
  const Tensor b = rnd({3, 2}, 84, -1, 1, false);
  xg::matmul(a, b).sum().backward();
  // d/da sum(A·B)[i,q] = sum_j B[q,j]
  std::vector<double> want;
  for (int i = 0; i < 2; ++i)
    for (int q = 0; q < 3; ++q) want.push_back(b.at({q, 0}) + b.at({q, 1}));
  check_values(a.grad(), {2, 3}, want, 1e-14);
  check_values(xg::matmul(xg::zeros({2, 0}), xg::zeros({0, 3})), {2, 3}, std::vector<double>(6, 0.0));
}

TEST_CASE("linear: y = x·Wᵀ + b with PyTorch's layout; values and gradcheck") {
  const Tensor w = rnd({3, 4}, 85), bias = rnd({3}, 86);
  for (const Shape& xs : {Shape{5, 4}, Shape{4}, Shape{2, 5, 4}, Shape{1, 4}}) {
    CAPTURE(xg::shape_str(xs));
    const Tensor x = rnd(xs, 87);
    const auto vx = x.to_vector();
    const std::size_t rows = vx.size() / 4;
    std::vector<double> want, want_nb;
    for (std::size_t r = 0; r < rows; ++r)
      for (int o = 0; o < 3; ++o) {
        double s = 0;
        for (int i = 0; i < 4; ++i) s += vx[r * 4 + i] * w.at({o, i});
        want_nb.push_back(s);
        want.push_back(s + bias.at({o}));
      }
    Shape ys = xs;
    ys.back() = 3;
    check_values(xg::linear(x, w, bias), ys, want, 1e-13);
    check_values(xg::linear(x, w), ys, want_nb, 1e-13);
    check_grad("linear", [](auto& in) { return xg::linear(in[0], in[1], in[2]); }, {x, w, bias});
    check_grad("linear", [](auto& in) { return xg::linear(in[0], in[1]); }, {x, w});
  }
  // Only the weight requires grad (a frozen input): dW = Gᵀ·x.
  const Tensor x = rnd({2, 4}, 88, -1, 1, false);
  check_grad("linear", [&](auto& in) { return xg::linear(x, in[0], in[1]); }, {w, bias});
  // float32 goes through sgemm.
  const Tensor y32 = xg::linear(x.to(kFloat32), w.detach().to(kFloat32), bias.detach().to(kFloat32));
  check_values(y32, {2, 3}, xg::linear(x, w, bias).to_vector(), 1e-5);
}

TEST_CASE("blas::core_name names the kernel set OpenBLAS runs") {
  const std::string core = xg::blas::core_name();
  CHECK_FALSE(core.empty());
  if (const char* env = std::getenv("OPENBLAS_CORETYPE")) CHECK(core == env);  // set and valid: OpenBLAS obeys
}

// xg::blas::gemm in float32 on both backends (oneDNN's sgemm when built with it, OpenBLAS's) against a float64
// triple loop: every transpose combination, row strides wider than the rows, alpha/beta (beta = 0 must not
// read C), k = 0, and products big enough to be cut into pieces for the thread pool (1, 2 and 3 threads; on
// oneDNN all give the same bits, because the pieces depend on the shape alone — scripts/test.sh runs this with
// oneDNN free and held to AVX2, whose kernels differ), among them the CNN benchmark's convolution products.
namespace {
struct GemmCase {
  bool ta, tb;
  std::size_t m, n, k;
  float alpha, beta;
};

// Stored A is [m, k] (or [k, m] when transposed), B is [k, n] (or [n, k]); each row padded by 3 entries.
void check_gemm(const GemmCase& t, std::uint64_t seed) {
  xg::Generator g(seed);
  const std::size_t ar = t.ta ? t.k : t.m, ac = t.ta ? t.m : t.k, br = t.tb ? t.n : t.k, bc = t.tb ? t.k : t.n;
  const std::size_t lda = ac + 3, ldb = bc + 3, ldc = t.n + 3;
  std::vector<float> a(ar * lda), b(br * ldb), c(t.m * ldc);
  for (auto& v : a) v = static_cast<float>(g.uniform() * 2 - 1);
  for (auto& v : b) v = static_cast<float>(g.uniform() * 2 - 1);
  for (auto& v : c) v = static_cast<float>(g.uniform() * 2 - 1);
  if (t.beta == 0.0f)  // C's old values must not be read: a NaN there would show
    for (std::size_t i = 0; i < t.m; ++i) c[i * ldc] = std::nanf("");
  const auto A = [&](std::size_t i, std::size_t q) { return double(t.ta ? a[q * lda + i] : a[i * lda + q]); };
  const auto B = [&](std::size_t q, std::size_t j) { return double(t.tb ? b[j * ldb + q] : b[q * ldb + j]); };
  std::vector<double> want(t.m * t.n);
  for (std::size_t i = 0; i < t.m; ++i)
    for (std::size_t j = 0; j < t.n; ++j) {
      double s = 0;
      for (std::size_t q = 0; q < t.k; ++q) s += A(i, q) * B(q, j);
      want[i * t.n + j] = t.alpha * s + (t.beta == 0.0f ? 0.0 : t.beta * double(c[i * ldc + j]));
    }
  const double tol = 1e-6 * (double(t.k) + 4);  // float32 rounding of k products of values in [-1, 1]
  for (const auto backend : {xg::blas::SgemmBackend::OneDNN, xg::blas::SgemmBackend::OpenBLAS}) {
    if (backend == xg::blas::SgemmBackend::OneDNN && !xg::blas::have_onednn()) continue;
    xg::blas::set_sgemm_backend(backend);
    std::vector<float> one_thread;
    for (int threads : {1, 2, 3}) {
      xg::set_num_threads(threads);
      std::vector<float> got = c;
      xg::blas::gemm(t.ta, t.tb, t.m, t.n, t.k, t.alpha, a.data(), lda, b.data(), ldb, t.beta, got.data(), ldc);
      INFO(xg::blas::sgemm_backend_name(), ", ", threads, " thread(s), ta=", t.ta, " tb=", t.tb, " m=", t.m,
           " n=", t.n, " k=", t.k, " alpha=", t.alpha, " beta=", t.beta);
      double worst = 0;
      for (std::size_t i = 0; i < t.m; ++i)
        for (std::size_t j = 0; j < t.n; ++j)
          worst = std::max(worst, std::abs(double(got[i * ldc + j]) - want[i * t.n + j]));
      CHECK(worst <= tol);
      // the padding between rows of C is never written
      for (std::size_t i = 0; i < t.m; ++i)
        for (std::size_t j = t.n; j < ldc; ++j) CHECK(got[i * ldc + j] == c[i * ldc + j]);
      // oneDNN's pieces are fixed by the shape and run over the full k: any thread count gives the same bits
      if (threads == 1) one_thread = got;
      else if (backend == xg::blas::SgemmBackend::OneDNN) CHECK(got == one_thread);
    }
  }
}
}  // namespace

TEST_CASE("blas::gemm float32: oneDNN and OpenBLAS against a float64 triple loop") {
  const auto backend = xg::blas::sgemm_backend();
  const int threads = xg::get_num_threads();
  std::uint64_t seed = 500;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      check_gemm({ta, tb, 5, 7, 3, 1.0f, 0.0f}, seed++);
      check_gemm({ta, tb, 17, 33, 20, 0.5f, 1.0f}, seed++);
      check_gemm({ta, tb, 1, 1, 1, 2.0f, -1.0f}, seed++);
      check_gemm({ta, tb, 4, 3, 0, 1.0f, 0.5f}, seed++);       // k = 0: C = beta · C
      // at least 2^25 multiply-adds: on 2 threads, cut into blocks of columns (wide C) or rows (narrow C)
      check_gemm({ta, tb, 128, 1030, 256, 1.0f, 0.0f}, seed++);
      check_gemm({ta, tb, 1030, 40, 1024, 1.0f, 1.0f}, seed++);
    }
  // conv2 of bench_training_step's CNN, one image: forward w·col, dW += dy·colᵀ, dcol = wᵀ·dy
  check_gemm({false, false, 64, 784, 288, 1.0f, 0.0f}, seed++);
  check_gemm({false, true, 64, 288, 784, 1.0f, 1.0f}, seed++);
  check_gemm({true, false, 288, 784, 64, 1.0f, 0.0f}, seed++);
  xg::blas::set_sgemm_backend(backend);
  xg::set_num_threads(threads);
}

TEST_CASE("blas: the float32 backend can be chosen and names itself") {
  const auto before = xg::blas::sgemm_backend();
  xg::blas::set_sgemm_backend(xg::blas::SgemmBackend::OpenBLAS);
  CHECK(xg::blas::sgemm_backend() == xg::blas::SgemmBackend::OpenBLAS);
  CHECK(xg::blas::sgemm_backend_name() == "OpenBLAS");
  if (xg::blas::have_onednn()) {
    xg::blas::set_sgemm_backend(xg::blas::SgemmBackend::OneDNN);
    CHECK(xg::blas::sgemm_backend_name().rfind("oneDNN ", 0) == 0);
  } else {
    CHECK_THROWS_WITH_AS(xg::blas::set_sgemm_backend(xg::blas::SgemmBackend::OneDNN),
                         doctest::Contains("built without oneDNN"), std::invalid_argument);
  }
  xg::blas::set_sgemm_backend(before);
}

TEST_CASE("blas::gemm: k = 0 with beta = 0 writes zeros without reading C, in both dtypes") {
  float cf[4] = {std::nanf(""), std::nanf(""), 5.0f, std::nanf("")};
  xg::blas::gemm(false, false, 2, 1, 0, 1.0f, nullptr, 1, nullptr, 1, 0.0f, cf, 2);  // rows 0 and 1, column 0
  CHECK(cf[0] == 0.0f);
  CHECK(cf[2] == 0.0f);
  CHECK(std::isnan(cf[1]));  // outside C (ldc = 2, n = 1): untouched
  double cd[2] = {std::nan(""), 4.0};
  xg::blas::gemm(false, false, 1, 2, 0, 1.0, nullptr, 1, nullptr, 2, 0.0, cd, 2);
  CHECK(cd[0] == 0.0);
  CHECK(cd[1] == 0.0);
  double ce[2] = {3.0, -1.0};  // beta = 2: C = 2·C
  xg::blas::gemm(false, false, 1, 2, 0, 1.0, nullptr, 1, nullptr, 2, 2.0, ce, 2);
  CHECK(ce[0] == 6.0);
  CHECK(ce[1] == -2.0);
}
