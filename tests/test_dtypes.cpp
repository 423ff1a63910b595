// Integer and bool dtypes: PyTorch's type promotion, comparisons giving bool, integer reductions, index tensors,
// arg-reductions, losses with int64 targets (ignore_index, label_smoothing), printing and .npy round trips.
// Every expected value is derived by hand in the comment beside it (PyTorch's documented rules).
#include <cmath>
#include <filesystem>
#include <limits>

#include "testing.h"

using namespace xgt;
using xg::kBool;
using xg::kFloat32;
using xg::kFloat64;
using xg::kInt32;
using xg::kInt64;
using doctest::Contains;

#define CHECK_ERROR(expr, text) CHECK_THROWS_WITH_AS(expr, Contains(text), xg::Error)

namespace {
Tensor i64(std::initializer_list<double> v) { return xg::tensor(v, kInt64); }
Tensor bools(std::initializer_list<double> v) { return xg::tensor(v, kBool); }

void check_exact(const Tensor& t, xg::Dtype dtype, const Shape& shape, const std::vector<double>& want) {
  CHECK(t.dtype() == dtype);
  CHECK(t.shape() == shape);
  CHECK(t.to_vector() == want);
}
}  // namespace

TEST_CASE("promote_types follows PyTorch's category order bool < integer < floating point") {
  CHECK(xg::promote_types(kInt64, kFloat32) == kFloat32);  // torch.promote_types(int64, float32) = float32
  CHECK(xg::promote_types(kFloat32, kInt64) == kFloat32);
  CHECK(xg::promote_types(kInt32, kInt64) == kInt64);
  CHECK(xg::promote_types(kBool, kInt32) == kInt32);
  CHECK(xg::promote_types(kBool, kFloat64) == kFloat64);
  CHECK(xg::promote_types(kFloat32, kFloat64) == kFloat64);
  CHECK(xg::promote_types(kBool, kBool) == kBool);
  CHECK(xg::dtype_name(kInt64) == "int64");
  CHECK(xg::dtype_size(kInt32) == 4);
  CHECK(xg::dtype_size(kBool) == 1);
  CHECK_FALSE(xg::is_floating_point(kInt64));
  CHECK(xg::is_integral(kInt32));
  CHECK_FALSE(xg::is_integral(kBool));
}

TEST_CASE("arithmetic: int ⊕ int stays integer, int ⊕ float is float, bool ⊕ int is int") {
  check_exact(i64({1, 2, 3}) + i64({4, 5, 6}), kInt64, {3}, {5, 7, 9});
  check_exact(xg::tensor({1, 2}, kInt32) + i64({10, 20}), kInt64, {2}, {11, 22});        // wider integer
  check_exact(bools({1, 0}) + xg::tensor({1, 1}, kInt32), kInt32, {2}, {2, 1});           // True + 1 = 2
  check_exact(i64({1, 2}) + xg::tensor({0.5, 0.25}, kFloat64), kFloat64, {2}, {1.5, 2.25});
  check_exact(i64({1, 2}) * xg::tensor({0.5, 0.5}), kFloat32, {2}, {0.5, 1.0});
  check_exact(i64({-3, 4}) - i64({1, 1}), kInt64, {2}, {-4, 3});
  // bool ⊕ bool: add is a logical or, mul a logical and (PyTorch); sub is refused
  check_exact(bools({1, 0, 0}) + bools({1, 1, 0}), kBool, {3}, {1, 1, 0});
  check_exact(bools({1, 0, 1}) * bools({1, 1, 0}), kBool, {3}, {1, 0, 0});
  CHECK_ERROR(bools({1}) - bools({1}), "sub: subtracting two bool tensors is not supported");
  check_exact(xg::maximum(i64({1, 5}), i64({3, 2})), kInt64, {2}, {3, 5});
}

TEST_CASE("scalars: a double is a Python float, a C++ integer a Python int") {
  check_exact(i64({1, 2, 3}) * 2.5, kFloat32, {3}, {2.5, 5.0, 7.5});  // int tensor * float -> float32
  check_exact(i64({1, 2, 3}) * 2, kInt64, {3}, {2, 4, 6});            // int tensor * int -> int64
  check_exact(xg::tensor({1, 2}, kInt32) + 1, kInt32, {2}, {2, 3});   // an int scalar does not widen int32
  check_exact(bools({1, 0}) * 3, kInt64, {2}, {3, 0});               // bool * int -> int64
  check_exact(bools({1, 0}) + 0.5, kFloat32, {2}, {1.5, 0.5});
  check_exact(2 - i64({5}), kInt64, {1}, {-3});
  const Tensor f64 = xg::tensor({1.5}, kFloat64);
  CHECK((f64 * 2).dtype() == kFloat64);    // a float tensor keeps its dtype against any scalar
  CHECK((f64 + 0.5).dtype() == kFloat64);
}

TEST_CASE("0-d tensors only decide the dtype when their category is higher") {
  const Tensor f32 = xg::tensor({1, 2}), i = i64({1, 2});
  CHECK((f32 + xg::scalar(1, kFloat64)).dtype() == kFloat32);  // same category: the tensor with axes wins
  CHECK((i + xg::scalar(1, kFloat64)).dtype() == kFloat64);    // higher category: the 0-d tensor's dtype
  CHECK((xg::tensor({1, 2}, kInt32) + xg::scalar(1, kInt64)).dtype() == kInt32);
  CHECK((xg::scalar(1, kInt32) + xg::scalar(1, kInt64)).dtype() == kInt64);  // both 0-d: promote_types
  CHECK((f32 + xg::tensor({1.0, 2.0}, kFloat64)).dtype() == kFloat64);         // both with axes: promote_types
}

TEST_CASE("true division: integers divide as float32") {
  check_exact(i64({7, -7, 1}) / i64({2, 2, 4}), kFloat32, {3}, {3.5, -3.5, 0.25});
  check_exact(i64({7}) / 2, kFloat32, {1}, {3.5});
  check_exact(bools({1, 0}) / 2.0, kFloat32, {2}, {0.5, 0.0});
  CHECK((xg::tensor({1.0}, kFloat64) / i64({4})).dtype() == kFloat64);
}

TEST_CASE("unary ops: exp/log/sqrt of integers are float32, neg/abs/clamp keep integers") {
  check_exact(xg::sqrt(i64({4, 9})), kFloat32, {2}, {2, 3});
  CHECK(xg::exp(i64({0})).item() == 1.0);
  check_exact(-i64({1, -2}), kInt64, {2}, {-1, 2});
  check_exact(xg::abs(xg::tensor({-3, 2}, kInt32)), kInt32, {2}, {3, 2});
  check_exact(xg::clamp(i64({-5, 0, 5}), -1, 1), kInt64, {3}, {-1, 0, 1});
  check_exact(xg::clamp(i64({-5, 0, 5}), -0.5, std::nullopt), kFloat32, {3}, {-0.5, 0, 5});  // fractional bound
  CHECK_ERROR(-bools({1}), "neg: negating a bool tensor is not supported");
}

TEST_CASE("comparisons give bool tensors after promotion") {
  check_exact(i64({1, 2, 3}) > 2.5, kBool, {3}, {0, 0, 1});  // compared in float32
  check_exact(xg::eq(i64({1, 2}), xg::tensor({1.0, 2.5})), kBool, {2}, {1, 0});
  check_exact(xg::le(xg::tensor({1, 2, 3}), 2.0), kBool, {3}, {1, 1, 0});
  check_exact(xg::ne(xg::tensor({{1, 2}, {3, 4}}, kInt32), i64({1, 4})), kBool, {2, 2}, {0, 1, 1, 0});  // broadcast
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  const Tensor x = xg::tensor({1.0, nan, inf, -inf});
  check_exact(xg::isnan(x), kBool, {4}, {0, 1, 0, 0});
  check_exact(xg::isinf(x), kBool, {4}, {0, 0, 1, 1});
  check_exact(xg::isfinite(x), kBool, {4}, {1, 0, 0, 0});
  check_exact(xg::isfinite(i64({1})), kBool, {1}, {1});
  check_exact(xg::logical_not(xg::tensor({0.0, 2.0})), kBool, {2}, {1, 0});
  check_exact(xg::logical_and(bools({1, 1, 0}), bools({1, 0, 0})), kBool, {3}, {1, 0, 0});
  check_exact(xg::logical_or(bools({1, 0, 0}), bools({0, 0, 1})), kBool, {3}, {1, 0, 1});
  check_exact(xg::logical_xor(bools({1, 1}), bools({1, 0})), kBool, {2}, {0, 1});
  // a comparison of a tensor that requires grad is not part of the graph
  const Tensor w = rnd({3}, 5);
  CHECK_FALSE((w > 0.0).requires_grad());
}

TEST_CASE("where, masked_fill and masked_select take bool masks") {
  check_exact(xg::where(bools({1, 0}), i64({1, 2}), xg::tensor({0.5, 0.5})), kFloat32, {2}, {1.0, 0.5});
  CHECK_ERROR(xg::where(xg::tensor({1.0, 0.0}), xg::tensor({1.0, 2.0}), xg::tensor({3.0, 4.0})),
              "where: the condition must be a bool tensor");
  const Tensor x = xg::tensor({{1, 2, 3}, {4, 5, 6}}, kFloat64);
  check_exact(xg::masked_fill(x, bools({1, 0, 1}), -1), kFloat64, {2, 3}, {-1, 2, -1, -1, 5, -1});
  check_exact(xg::masked_select(x, x > 2.5), kFloat64, {4}, {3, 4, 5, 6});
  check_exact(xg::masked_select(i64({7, 8, 9}), bools({0, 1, 1})), kInt64, {2}, {8, 9});
  CHECK_ERROR(xg::masked_fill(x, xg::tensor({1, 0, 1}), 0), "masked_fill: the mask must be a bool tensor");
  const Tensor mask = bools({1, 0, 1});
  check_grad("masked_fill", [&](auto& in) { return xg::masked_fill(in[0], mask, 3.0); }, {rnd({2, 3}, 1)});
  check_grad("masked_select", [&](auto& in) { return xg::masked_select(in[0], mask); }, {rnd({2, 3}, 2)});
}

TEST_CASE("reductions: sums of integers are int64, mean of integers is an error") {
  check_exact(xg::sum(xg::tensor({1, 2, 3}, kInt32)), kInt64, {}, {6});
  check_exact(xg::sum(bools({1, 0, 1, 1})), kInt64, {}, {3});  // counting true values
  check_exact(xg::sum(xg::tensor({{1, 2, 3}, {4, 5, 6}}, kInt64), {1}), kInt64, {2}, {6, 15});
  check_exact(xg::sum(xg::tensor({{1, 2, 3}, {4, 5, 6}}, kInt32), {0}, true), kInt64, {1, 3}, {5, 7, 9});
  // exact beyond float64's 2^53: (2^53 + 1) + 1 = 2^53 + 2
  const Tensor big = xg::from_vector(std::vector<std::int64_t>{(std::int64_t{1} << 53) + 1, 1}, {2});
  CHECK(xg::sum(big).item<std::int64_t>() == (std::int64_t{1} << 53) + 2);
  CHECK_ERROR(xg::mean(i64({1, 2})), "mean: the input is int64, and mean needs a floating-point tensor");
  CHECK_ERROR(xg::var(i64({1, 2})), "var: the input is int64");
  check_exact(xg::amax(i64({3, -7, 5})), kInt64, {}, {5});
  check_exact(xg::amin(xg::tensor({{3, -7}, {5, 1}}, kInt32), {1}), kInt32, {2}, {-7, 1});
  CHECK(xg::mean(i64({1, 2}).to(kFloat32)).item() == 1.5);
}

TEST_CASE("integer tensors never require grad") {
  CHECK_ERROR(xg::zeros({2}, kInt64, true), "only floating-point tensors can require gradients, and this one is int64");
  Tensor t = i64({1, 2});
  CHECK_ERROR(t.requires_grad_(), "requires_grad_(): only floating-point tensors can require gradients");
  CHECK_ERROR(xg::from_vector({1, 2}, {2}, kBool, true), "only floating-point tensors");
  const Tensor w = rnd({3}, 3);
  const Tensor k = w.to(kInt64);  // conversion to an integer dtype ends the graph (PyTorch)
  CHECK_FALSE(k.requires_grad());
  CHECK(k.is_leaf());
  CHECK_FALSE(w.argmax().requires_grad());
  CHECK_ERROR(xg::from_vector({1.5}, {1}, kInt64), "value 1.5 (index 0) is not an integer");
  CHECK_ERROR(xg::full({1}, std::numeric_limits<double>::infinity(), kInt32), "cannot fill an int32 tensor with inf");
  CHECK_ERROR(xg::matmul(i64({1, 2}), i64({1, 2})), "needs a floating-point tensor (float32 or float64) but got int64");
}

TEST_CASE("to(dtype), item<T>() and element access") {
  check_exact(xg::tensor({1.7, -1.7, 0.0, 2.0}).to(kInt64), kInt64, {4}, {1, -1, 0, 2});  // truncation toward 0
  check_exact(xg::tensor({0.0, 0.5, -2.0}).to(kBool), kBool, {3}, {0, 1, 1});               // != 0
  check_exact(bools({1, 0}).to(kFloat64), kFloat64, {2}, {1, 0});
  check_exact(i64({3}).to(kInt32), kInt32, {1}, {3});
  const std::int64_t v = (std::int64_t{1} << 53) + 1;  // not representable in double
  const Tensor big = xg::from_vector(std::vector<std::int64_t>{v}, {});
  CHECK(big.item<std::int64_t>() == v);
  CHECK(bools({1}).item<bool>());
  Tensor t = xg::zeros({2, 2}, kInt32);
  t.set({1, 0}, 7);
  CHECK(t.at({1, 0}) == 7);
  CHECK_ERROR(t.set({0, 0}, std::numeric_limits<double>::quiet_NaN()), "set: cannot store nan in an int32 tensor");
  check_exact(xg::arange(4, kInt64), kInt64, {4}, {0, 1, 2, 3});
  check_exact(xg::from_vector(std::vector<std::size_t>{4, 0, 2}, {3}), kInt64, {3}, {4, 0, 2});
  // shape ops work on every dtype
  const Tensor m = xg::tensor({{1, 2, 3}, {4, 5, 6}}, kInt64);
  check_exact(m.transpose(0, 1), kInt64, {3, 2}, {1, 4, 2, 5, 3, 6});
  check_exact(m.reshape({-1}).slice(0, 1, 6, 2), kInt64, {3}, {2, 4, 6});
  check_exact(xg::cat({bools({1}), bools({0, 1})}), kBool, {3}, {1, 0, 1});
  check_exact(xg::expand(bools({1, 0}), {2, 2}), kBool, {2, 2}, {1, 0, 1, 0});
  check_exact(xg::stack({i64({1}), i64({2})}), kInt64, {2, 1}, {1, 2});
}

TEST_CASE("printing integer and bool tensors as PyTorch does") {
  CHECK(fmt::format("{}", i64({1, -20, 3})) == "tensor([  1, -20,   3], shape=[3], dtype=int64)");
  CHECK(fmt::format("{}", bools({1, 0})) == "tensor([ True, False], shape=[2], dtype=bool)");
  CHECK(fmt::format("{}", xg::scalar(4, kInt32)) == "tensor(4, shape=[], dtype=int32)");
}

TEST_CASE("argmax / argmin: int64, first index on ties, NaN wins") {
  const Tensor x = xg::tensor({{1, 5, 5}, {7, 0, 7}});
  check_exact(x.argmax(1), kInt64, {2}, {1, 0});
  check_exact(x.argmin(1), kInt64, {2}, {0, 1});
  check_exact(x.argmax(0), kInt64, {3}, {1, 0, 1});  // columns: 1 vs 7, 5 vs 0, 5 vs 7
  check_exact(x.argmax(), kInt64, {}, {3});          // flattened [1,5,5,7,0,7]: first 7 at 3
  check_exact(x.argmax(1, true), kInt64, {2, 1}, {1, 0});
  const double nan = std::numeric_limits<double>::quiet_NaN();
  check_exact(xg::tensor({1.0, nan, 3.0}).argmax(), kInt64, {}, {1});
  check_exact(xg::tensor({1.0, nan, 0.0}).argmin(), kInt64, {}, {1});
  check_exact(i64({4, 9, 2}).argmax(), kInt64, {}, {1});
}

TEST_CASE("max(dim), topk, sort: values and int64 indices; the gradient goes to the index") {
  const Tensor x = xg::tensor({{1, 5, 5}, {7, 0, 7}}, kFloat64);
  auto [values, idx] = xg::max(x, 1);
  check_exact(values, kFloat64, {2}, {5, 7});
  check_exact(idx, kInt64, {2}, {1, 0});
  auto [mn, mi] = xg::min(x, 0, true);
  check_exact(mn, kFloat64, {1, 3}, {1, 0, 5});
  check_exact(mi, kInt64, {1, 3}, {0, 1, 0});
  Tensor w = x.detach().requires_grad_();
  xg::sum(xg::max(w, 1).first).backward();
  CHECK(w.grad().to_vector() == std::vector<double>{0, 1, 0, 1, 0, 0});  // ties: the first only (PyTorch)

  const Tensor v = xg::tensor({3, 1, 4, 1, 5});
  auto [tv, ti] = xg::topk(v, 2);
  check_exact(tv, kFloat32, {2}, {5, 4});
  check_exact(ti, kInt64, {2}, {4, 2});
  auto [sv, si] = xg::topk(v, 2, -1, /*largest=*/false);
  check_exact(sv, kFloat32, {2}, {1, 1});
  check_exact(si, kInt64, {2}, {1, 3});
  auto [av, ai] = xg::sort(v);
  check_exact(av, kFloat32, {5}, {1, 1, 3, 4, 5});
  check_exact(ai, kInt64, {5}, {1, 3, 0, 2, 4});  // stable: the two 1s keep their order
  check_exact(xg::argsort(v, -1, true), kInt64, {5}, {4, 2, 0, 1, 3});
  check_exact(xg::sort(xg::tensor({{2, 1}, {0, 3}}), 0).second, kInt64, {2, 2}, {1, 0, 0, 1});
  CHECK_ERROR(xg::topk(v, 6), "topk: k = 6 exceeds the size 5");
  check_grad("max", [](auto& in) { return xg::max(in[0], 1).first; }, {rnd({3, 4}, 7)});
  check_grad("topk", [](auto& in) { return xg::topk(in[0], 2, 0).first; }, {rnd({4, 3}, 8)});
  check_grad("sort", [](auto& in) { return xg::sort(in[0], -1, true).first; }, {rnd({2, 5}, 9)});
}

TEST_CASE("index_select, gather and scatter_add take int64 index tensors") {
  const Tensor x = xg::tensor({{1, 2}, {3, 4}, {5, 6}}, kFloat64);
  check_exact(xg::index_select(x, 0, i64({2, 0, 2})), kFloat64, {3, 2}, {5, 6, 1, 2, 5, 6});
  CHECK_ERROR(xg::index_select(x, 0, xg::tensor({0.0})), "index_select: the index must be an int64 (or int32) tensor");
  CHECK_ERROR(xg::index_select(x, 0, i64({-1})), "index -1 (entry 0) is negative");
  CHECK_ERROR(xg::index_select(x, 0, i64({3})), "index 3 is out of range for axis 0 of size 3");
  // torch.gather's documented example: [[1,2],[3,4]], dim 1, index [[0,0],[1,0]] -> [[1,1],[4,3]]
  const Tensor t = xg::tensor({{1, 2}, {3, 4}});
  const Tensor idx = xg::tensor({{0, 0}, {1, 0}}, kInt64);
  check_exact(xg::gather(t, 1, idx), kFloat32, {2, 2}, {1, 1, 4, 3});
  check_exact(xg::gather(t, 0, xg::tensor({{1, 0}}, kInt64)), kFloat32, {1, 2}, {3, 2});
  CHECK_ERROR(xg::gather(t, 1, xg::tensor({{2, 0}, {0, 0}}, kInt64)), "gather: index 2 is out of range for axis 1");
  CHECK_ERROR(xg::gather(t, 1, i64({0})), "gather: the index has 1 axes");
  check_grad("gather", [&](auto& in) { return xg::gather(in[0], 1, xg::tensor({{0, 0, 2}, {1, 1, 1}}, kInt64)); },
             {rnd({2, 3}, 11)});  // repeated indices: their gradients add up
  // scatter_add, dim 0: out[index[i][j]][j] += src[i][j]; index [[0,0,0],[0,1,0]], src [[1,2,3],[4,5,6]]:
  // column 0: 1 + 4 into row 0; column 1: 2 into row 0, 5 into row 1; column 2: 3 + 6 into row 0.
  const Tensor sidx = xg::tensor({{0, 0, 0}, {0, 1, 0}}, kInt64);
  const Tensor src = xg::tensor({{1, 2, 3}, {4, 5, 6}});
  check_exact(xg::scatter_add(xg::zeros({2, 3}), 0, sidx, src), kFloat32, {2, 3}, {5, 2, 9, 0, 5, 0});
  check_exact(xg::scatter_add(xg::ones({2, 3}, kInt64), 0, sidx, src.to(kInt64)), kInt64, {2, 3}, {6, 3, 10, 1, 6, 1});
  check_grad("scatter_add", [&](auto& in) { return xg::scatter_add(in[0], 0, sidx, in[1]); },
             {rnd({2, 3}, 12), rnd({2, 3}, 13)});
  check_grad("index_select", [&](auto& in) { return xg::index_select(in[0], 1, i64({1, 1, 0})); }, {rnd({2, 3}, 14)});
}

TEST_CASE("cross_entropy / nll_loss with int64 targets, ignore_index and label_smoothing (PyTorch's definitions)") {
  // row 0: logits [0, 0, 0] -> log p = -ln 3 each; row 1: logits [0, ln 2, 0] -> p = [1/4, 1/2, 1/4]
  const double ln2 = std::log(2.0), ln3 = std::log(3.0);
  const Tensor logits = xg::tensor({{0, 0, 0}, {0, ln2, 0}}, kFloat64);
  auto ce = [&](std::initializer_list<double> y, xg::Reduction r = xg::Reduction::Mean, std::int64_t ignore = -100,
                double eps = 0.0) { return xg::cross_entropy_loss(logits, i64(y), r, ignore, eps); };
  CHECK(ce({0, 1}).item() == doctest::Approx((ln3 + ln2) / 2).epsilon(1e-12));
  // ignore_index: the ignored target contributes 0 and the mean divides by the 1 target left
  CHECK(ce({0, -100}).item() == doctest::Approx(ln3).epsilon(1e-12));
  CHECK(ce({0, -100}, xg::Reduction::Sum).item() == doctest::Approx(ln3).epsilon(1e-12));
  check_values(ce({-100, 1}, xg::Reduction::None), {2}, {0.0, ln2});
  CHECK(std::isnan(ce({-100, -100}).item()));  // 0 / 0, as in PyTorch
  CHECK(ce({0, 1}, xg::Reduction::Mean, /*ignore_index=*/1).item() == doctest::Approx(ln3).epsilon(1e-12));
  // label_smoothing ε = 0.3: loss_n = 0.7·(-lp[y_n]) + 0.3·(-(1/3)·Σ_c lp[n,c]).
  // row 0: 0.7·ln 3 + 0.3·ln 3 = ln 3; row 1: -(1/3)(ln¼ + ln½ + ln¼) = 5 ln 2 / 3, so 0.7 ln 2 + 0.5 ln 2 = 1.2 ln 2
  CHECK(ce({0, 1}, xg::Reduction::Mean, -100, 0.3).item() == doctest::Approx((ln3 + 1.2 * ln2) / 2).epsilon(1e-12));
  CHECK(ce({0, 1}, xg::Reduction::Sum, -100, 0.3).item() == doctest::Approx(ln3 + 1.2 * ln2).epsilon(1e-12));
  // with an ignored row, both parts skip it and the mean divides by 1
  CHECK(ce({-100, 1}, xg::Reduction::Mean, -100, 0.3).item() == doctest::Approx(1.2 * ln2).epsilon(1e-12));
  check_values(ce({-100, 1}, xg::Reduction::None, -100, 0.3), {2}, {0.0, 1.2 * ln2}, 1e-12);
  CHECK_ERROR(ce({0, 1}, xg::Reduction::Mean, -100, 1.5), "label_smoothing must be in [0, 1], got 1.5");
  CHECK_ERROR(ce({0, 3}), "target 3 at position 1 is not a class index in 0..2");
  CHECK_ERROR(ce({0, -1}), "target -1 at position 1 is not a class index");
  // nll_loss on log-probabilities, ignore_index
  const Tensor lp = xg::log_softmax(logits, 1);
  CHECK(xg::nll_loss(lp, i64({2, -100})).item() == doctest::Approx(ln3).epsilon(1e-12));
  CHECK(xg::nll_loss(lp, i64({2, 0}), xg::Reduction::Mean, 0).item() == doctest::Approx(ln3).epsilon(1e-12));
  // the std::vector<std::size_t> labels still work and agree
  CHECK(xg::cross_entropy_loss(logits, std::vector<std::size_t>{0, 1}).item() == ce({0, 1}).item());
  const Tensor y = i64({2, -100, 0, 1});
  check_grad("cross_entropy_loss",
             [&](auto& in) { return xg::cross_entropy_loss(in[0], y, xg::Reduction::Mean, -100, 0.2); },
             {rnd({4, 3}, 15)});
  check_grad("nll_loss", [&](auto& in) { return xg::nll_loss(in[0], y, xg::Reduction::Sum); }, {rnd({4, 3}, 16)});
}

TEST_CASE("the data loader's Batch carries the labels as an int64 tensor") {
  xg::data::Dataset ds;
  ds.images = xg::zeros({3, 1, 2, 2});
  ds.labels = {2, 0, 1};
  xg::data::DataLoader loader(ds, xg::data::DataLoaderOptions(2).shuffle(false));
  const auto b = loader.next();
  check_exact(b.targets, kInt64, {2}, {2, 0});
  CHECK(b.labels == std::vector<std::size_t>{2, 0});
}

TEST_CASE(".npy keeps int64, int32 and bool") {
  const auto dir = std::filesystem::temp_directory_path() / "xgrad_test_dtypes";
  std::filesystem::create_directories(dir);
  const std::int64_t v = (std::int64_t{1} << 53) + 1;
  const Tensor a = xg::from_vector(std::vector<std::int64_t>{v, -3}, {2});
  xg::save_npy((dir / "a.npy").string(), a);
  const Tensor la = xg::load_npy((dir / "a.npy").string());
  CHECK(la.dtype() == kInt64);
  CHECK(la.data<std::int64_t>()(0) == v);
  CHECK(la.data<std::int64_t>()(1) == -3);
  xg::save_npy((dir / "b.npy").string(), bools({1, 0, 1}));
  check_exact(xg::load_npy((dir / "b.npy").string()), kBool, {3}, {1, 0, 1});
  xg::StateDict sd;
  sd.insert("i32", xg::tensor({{1, -2}}, kInt32));
  sd.insert("f", xg::tensor({0.5}));
  xg::save_npz((dir / "c.npz").string(), sd);
  const auto back = xg::load_npz((dir / "c.npz").string());
  check_exact(back.at("i32"), kInt32, {1, 2}, {1, -2});
  check_exact(back.at("f"), kFloat32, {1}, {0.5});
  std::filesystem::remove_all(dir);
}

TEST_CASE("docs/tensors.md: promotion at a glance") {
  // [promotion]
  xg::Tensor labels = xg::tensor({2, 0, 1}, xg::kInt64);
  xg::Tensor scores = xg::tensor({0.5, 1.5, 2.5});           // float32
  xg::Tensor a = labels + 1;                                  // int64 [3, 1, 2]: an int scalar keeps int64
  xg::Tensor b = labels * 0.5;                                // float32 [1, 0, 0.5]: a double makes it float
  xg::Tensor c = labels + scores;                             // float32 [2.5, 1.5, 3.5]
  xg::Tensor d = labels / 2;                                  // float32 [1, 0, 0.5]: true division
  xg::Tensor hit = xg::eq(labels, xg::tensor({2, 1, 1}, xg::kInt64));  // bool [true, false, true]
  xg::Tensor n = hit.sum();                                   // int64 2
  xg::Tensor acc = hit.to(xg::kFloat32).mean();               // float32 0.6667 (hit.mean() is an error)
  // [/promotion]
  check_exact(a, kInt64, {3}, {3, 1, 2});
  check_exact(b, kFloat32, {3}, {1, 0, 0.5});
  check_exact(c, kFloat32, {3}, {2.5, 1.5, 3.5});
  check_exact(d, kFloat32, {3}, {1, 0, 0.5});
  check_exact(hit, kBool, {3}, {1, 0, 1});
  check_exact(n, kInt64, {}, {2});
  CHECK(acc.item() == doctest::Approx(2.0 / 3.0));
  CHECK_ERROR(hit.mean(), "mean: the input is bool");
}

TEST_CASE("load_state_dict converts floats and exact integers, and refuses floats into an integer buffer") {
  xg::nn::Linear lin(2, 1);
  xg::StateDict sd;
  sd.insert("weight", xg::tensor({{1, 2}}, kInt64));  // integers a float32 holds exactly: converted
  sd.insert("bias", xg::tensor({0.5}, kFloat64));     // float64 -> float32: converted (PyTorch's copy_)
  lin.load_state_dict(sd);
  CHECK(lin.weight.dtype() == kFloat32);
  CHECK(lin.weight.to_vector() == std::vector<double>{1, 2});
  CHECK(lin.bias.item() == 0.5);
  xg::StateDict big;
  big.insert("weight", xg::from_vector(std::vector<std::int64_t>{(1 << 24) + 1, 0}, {1, 2}));  // float32 rounds it
  big.insert("bias", xg::tensor({0.0}));
  CHECK_ERROR(lin.load_state_dict(big), "dtype mismatch: weight (checkpoint int64 vs model float32)");
  CHECK(lin.weight.to_vector() == std::vector<double>{1, 2});  // nothing was loaded
}
