// matmul (2-d, numpy's 1-d rules, batched with broadcast batch axes) and linear: values against triple loops,
// gradchecks in float64, float32 through sgemm.
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
