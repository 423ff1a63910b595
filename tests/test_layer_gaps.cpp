// The layers a PyTorch port reaches for: MaxPool2d's indices and MaxUnpool2d, AdaptiveAvgPool2d, dropout with a
// given mask, BatchNorm's last batch statistics, Softmax/LogSoftmax modules, Unflatten, accuracy. Expected values
// are worked out by hand beside each check; every new differentiable op is gradchecked in float64.
#include <cmath>
#include <sstream>

#include "testing.h"

using namespace xgt;
using doctest::Contains;
using xg::kBool;
using xg::kFloat64;
using xg::kInt64;
namespace nn = xg::nn;
namespace F = xg::nn::functional;

#define CHECK_ERROR(expr, text) CHECK_THROWS_WITH_AS(expr, Contains(text), xg::Error)

TEST_CASE("MaxPool2d with indices and MaxUnpool2d") {
  // windows of [[1, 5, 2, 0], [3, 4, 9, 9]]: {1, 5, 3, 4} -> 5 at (0, 1) = flat 1; {2, 0, 9, 9} -> the first 9, at
  // (1, 2) = flat 1·4 + 2 = 6
  const Tensor x = xg::from_vector({1, 5, 2, 0, 3, 4, 9, 9}, {1, 1, 2, 4}, kFloat64);
  nn::MaxPool2d pool(nn::MaxPool2dOptions(2).return_indices(true));
  auto [values, indices] = pool.forward_with_indices(x);
  check_values(values, {1, 1, 1, 2}, {5, 9});
  CHECK(indices.dtype() == kInt64);
  CHECK(indices.to_vector() == std::vector<double>{1, 6});
  CHECK(pool.forward(x).to_vector() == values.to_vector());
  // the default output size (1-1)·2 + 2 = 2 rows, (2-1)·2 + 2 = 4 columns
  nn::MaxUnpool2d unpool(2);
  check_values(unpool.forward(values, indices), {1, 1, 2, 4}, {0, 5, 0, 0, 0, 0, 9, 0});
  check_values(unpool.forward(values, indices, xg::Size2(3, 4)), {1, 1, 3, 4}, {0, 5, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0});
  CHECK_ERROR(unpool.forward(values, indices.to(xg::kInt32)), "max_unpool2d: indices must be int64");
  CHECK_ERROR(unpool.forward(values, xg::full({1, 1, 1, 2}, 8, kInt64)), "index 8 (entry 0) is outside the output plane");
  const Tensor idx = F::max_pool2d_with_indices(rnd({2, 2, 4, 4}, 1, -1, 1, false), 2).second;
  check_grad("max_unpool2d", [&](auto& in) { return F::max_unpool2d(in[0], idx, 2); }, {rnd({2, 2, 2, 2}, 2)});
  check_grad("max_pool2d_with_indices", [](auto& in) { return F::max_pool2d_with_indices(in[0], 2, 1).first; },
             {rnd({1, 2, 3, 3}, 3)});
}

TEST_CASE("AdaptiveAvgPool2d: PyTorch's floor/ceil windows") {
  // 3 -> 2: windows rows {0, 1} and {1, 2} (floor(i·3/2) .. ceil((i+1)·3/2) - 1), columns likewise; x = 1..9
  const Tensor x = xg::arange(1, 10, 1, kFloat64).reshape({1, 1, 3, 3});
  nn::AdaptiveAvgPool2d pool(2);
  check_values(pool.forward(x), {1, 1, 2, 2}, {3, 4, 6, 7});  // means of [[1,2],[4,5]], [[2,3],[5,6]], ...
  check_values(nn::AdaptiveAvgPool2d(1).forward(x), {1, 1, 1, 1}, {5});  // global average pooling
  check_values(F::adaptive_avg_pool2d(x, {1, 3}), {1, 1, 1, 3}, {4, 5, 6});
  check_grad("adaptive_avg_pool2d", [](auto& in) { return F::adaptive_avg_pool2d(in[0], {2, 3}); },
             {rnd({2, 1, 5, 4}, 4)});
  CHECK_ERROR(F::adaptive_avg_pool2d(x, {0, 1}), "adaptive_avg_pool2d: output_size must be >= 1");
}

TEST_CASE("dropout with a given mask") {
  const Tensor x = xg::tensor({1, 2, 3, 4}, kFloat64);
  const Tensor mask = xg::tensor({1, 0, 1, 1}, kBool);
  check_values(F::dropout(x, mask, 0.5), {4}, {2, 0, 6, 8});  // x·mask/(1-0.5)
  check_values(F::dropout(x, mask.to(kFloat64), 0.0), {4}, {1, 0, 3, 4});
  CHECK_ERROR(F::dropout(x, mask, 1.0), "dropout: p must be in [0, 1)");
  CHECK_ERROR(F::dropout(x, xg::tensor({1, 0}, kBool), 0.5), "dropout: the mask of shape [2] must broadcast");
  CHECK_ERROR(F::dropout(x, xg::tensor({1, 0, 1, 1}, kInt64), 0.5), "the mask must be bool");
  check_grad("dropout", [&](auto& in) { return F::dropout(in[0], mask, 0.25); }, {rnd({2, 4}, 5)});
}

TEST_CASE("BatchNorm exposes the last training batch's mean, biased var and count (both impls)") {
  // channel 0: 1, 2, 3, 4 -> mean 2.5, var (2.25 + 0.25 + 0.25 + 2.25)/4 = 1.25
  // channel 1: 0, 0, 0, 8 -> mean 2, var (4 + 4 + 4 + 36)/4 = 12
  const Tensor x = xg::tensor({{1, 0}, {2, 0}, {3, 0}, {4, 8}});
  for (auto impl : {nn::BatchNormImpl::Composed, nn::BatchNormImpl::Fused}) {
    CAPTURE(nn::to_string(impl));
    nn::BatchNorm1d bn(nn::BatchNormOptions(2).impl(impl));
    CHECK_FALSE(bn.last_batch_stats().mean.defined());
    bn.forward(x);
    const auto& s = bn.last_batch_stats();
    check_values(s.mean, {2}, {2.5, 2.0}, 1e-6);
    check_values(s.var, {2}, {1.25, 12.0}, 1e-5);
    CHECK(s.count == 4);
    CHECK_FALSE(s.mean.requires_grad());
    bn.eval();  // an eval forward normalises with the running stats and leaves the last batch's stats alone
    bn.forward(xg::zeros({3, 2}));
    check_values(bn.last_batch_stats().mean, {2}, {2.5, 2.0}, 1e-6);
  }
  nn::BatchNorm2d bn2(nn::BatchNormOptions(1).impl(nn::BatchNormImpl::Fused));
  bn2.forward(xg::arange(8).reshape({2, 1, 2, 2}));  // 0..7: mean 3.5
  check_values(bn2.last_batch_stats().mean, {1}, {3.5}, 1e-6);
  check_values(bn2.last_batch_stats().var, {1}, {5.25}, 1e-5);  // Σ(k-3.5)² = 42 over 8 values
  CHECK(bn2.last_batch_stats().count == 8);
}

TEST_CASE("Softmax / LogSoftmax modules end a Sequential; Unflatten; Identity") {
  const double ln3 = std::log(3.0);
  const Tensor z = xg::tensor({{0, ln3}}, kFloat64);
  check_values(nn::Softmax(1).forward(z), {1, 2}, {0.25, 0.75});  // e^0 : e^ln3 = 1 : 3
  check_values(nn::LogSoftmax(1).forward(z), {1, 2}, {std::log(0.25), std::log(0.75)});
  auto net = std::make_shared<nn::Sequential>();
  net->push_back(std::make_shared<nn::Flatten>());
  net->push_back(std::make_shared<nn::Unflatten>(1, std::vector<std::ptrdiff_t>{2, -1}));
  net->push_back(std::make_shared<nn::Identity>());
  const Tensor y = net->forward(xg::zeros({5, 3, 2}));
  CHECK(y.shape() == xg::Shape{5, 2, 3});
  CHECK_ERROR(nn::Unflatten(1, {4, -1}).forward(xg::zeros({2, 6})), "Unflatten: axis 1 of size 6");
  std::ostringstream os;
  nn::Softmax(1).pretty_print(os);
  CHECK(os.str() == "Softmax(dim=1)");
}

TEST_CASE("accuracy(logits, labels)") {
  // arg-max of each row: 1, 0, 2, 1 against labels 1, 0, 0, 1 -> 3 of 4
  const Tensor logits = xg::tensor({{1, 2, 0}, {3, 0, 0}, {0, 0, 1}, {0, 5, 0}});
  const Tensor acc = F::accuracy(logits, xg::tensor({1, 0, 0, 1}, kInt64));
  CHECK(acc.dtype() == kFloat64);
  CHECK(acc.item() == 0.75);
  CHECK(F::accuracy(logits, std::vector<std::size_t>{1, 0, 2, 1}).item() == 1.0);
  CHECK_ERROR(F::accuracy(logits, xg::tensor({1, 0, 0, 1})), "accuracy: labels must be an int64 tensor");
  CHECK_ERROR(F::accuracy(logits, xg::tensor({1, 0}, kInt64)), "accuracy: labels of shape [2] do not match");
}

TEST_CASE("CrossEntropyLoss module options: ignore_index and label_smoothing") {
  // the logits of tests/test_dtypes.cpp: row 0 uniform over 3 classes, row 1 p = [1/4, 1/2, 1/4]
  const double ln2 = std::log(2.0), ln3 = std::log(3.0);
  const Tensor logits = xg::tensor({{0, 0, 0}, {0, ln2, 0}}, kFloat64);
  const Tensor y = xg::tensor({0, 1}, kInt64);
  nn::CrossEntropyLoss smooth(nn::CrossEntropyLossOptions().label_smoothing(0.3));
  CHECK(smooth.forward(logits, y).item() == doctest::Approx((ln3 + 1.2 * ln2) / 2).epsilon(1e-12));
  CHECK(smooth.forward(logits, std::vector<std::size_t>{0, 1}).item() == smooth.forward(logits, y).item());
  nn::CrossEntropyLoss ignore(nn::CrossEntropyLossOptions().ignore_index(1));
  CHECK(ignore.forward(logits, y).item() == doctest::Approx(ln3).epsilon(1e-12));
  CHECK(nn::CrossEntropyLoss(nn::LossOptions().reduction(xg::Reduction::Sum)).forward(logits, y).item() ==
        doctest::Approx(ln3 + ln2).epsilon(1e-12));
  std::ostringstream os;
  ignore.pretty_print(os);
  CHECK(os.str() == "CrossEntropyLoss(reduction=mean, ignore_index=1)");
}
