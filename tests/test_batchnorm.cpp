// BatchNorm: gradchecks (train and eval, 1d and 2d), values against loops and hand-computed numbers, the
// statistics modes, numerically hard inputs, and every error — for the composed reference and, through the
// same layer, the fused kernels.
#include <doctest/doctest.h>

#include <cmath>

#include "xgrad/xgrad.h"

namespace nn = xg::nn;
namespace F = xg::nn::functional;
using xg::Shape;
using xg::Tensor;

namespace {

Tensor rnd(const Shape& s, xg::Dtype dt, std::uint64_t seed, double mean = 0.0, double stdev = 1.0) {
  xg::Generator g(seed);
  return xg::normal(s, mean, stdev, dt, &g);
}

// Per-channel statistics of x viewed as [N, C, S], by loops in double.
struct Stats {
  std::vector<double> mean, var_biased, var_unbiased;
};

Stats channel_stats(const Tensor& x) {
  const Shape s = x.shape();
  const std::size_t N = s[0], C = s[1], S = x.numel() / (N * C);
  const auto v = x.to_vector();
  Stats st{std::vector<double>(C, 0.0), std::vector<double>(C, 0.0), std::vector<double>(C, 0.0)};
  const double m = double(N * S);
  for (std::size_t c = 0; c < C; ++c) {
    double sum = 0;
    for (std::size_t n = 0; n < N; ++n)
      for (std::size_t k = 0; k < S; ++k) sum += v[(n * C + c) * S + k];
    const double mean = sum / m;
    double sq = 0;
    for (std::size_t n = 0; n < N; ++n)
      for (std::size_t k = 0; k < S; ++k) sq += (v[(n * C + c) * S + k] - mean) * (v[(n * C + c) * S + k] - mean);
    st.mean[c] = mean;
    st.var_biased[c] = sq / m;
    st.var_unbiased[c] = sq / (m - 1);
  }
  return st;
}

// y = (x - mean_c)/sqrt(var_c + eps)·w_c + b_c, by loops.
std::vector<double> normalize_ref(const Tensor& x, const std::vector<double>& mean, const std::vector<double>& var,
                                  const std::vector<double>& w, const std::vector<double>& b, double eps) {
  const Shape s = x.shape();
  const std::size_t N = s[0], C = s[1], S = x.numel() / (N * C);
  auto v = x.to_vector();
  for (std::size_t n = 0; n < N; ++n)
    for (std::size_t c = 0; c < C; ++c)
      for (std::size_t k = 0; k < S; ++k) {
        double& e = v[(n * C + c) * S + k];
        e = (e - mean[c]) / std::sqrt(var[c] + eps) * w[c] + b[c];
      }
  return v;
}

void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(tol).scale(1.0));
}

// Gives the affine parameters non-trivial values (init is 1 and 0, which would hide mistakes).
void randomize_affine(nn::BatchNormBase& bn, std::uint64_t seed) {
  const std::size_t C = bn.options().num_features();
  bn.load_state_dict(
      [&] {
        xg::StateDict d;
        for (const auto& [n, t] : bn.state_dict()) d.insert(n, t);
        d.set("weight", rnd({C}, bn.weight.dtype(), seed, 1.0, 0.5));
        d.set("bias", rnd({C}, bn.weight.dtype(), seed + 1));
        return d;
      }(),
      true);
}

// Runs `body` once per implementation — the composed reference and the fused kernels — with that one as the
// default for the layers it builds. Every behaviour below must hold for both.
template <class F>
void for_each_impl(F&& body) {
  const nn::BatchNormImpl previous = nn::default_batchnorm_impl();
  for (const auto impl : {nn::BatchNormImpl::Composed, nn::BatchNormImpl::Fused}) {
    const std::string impl_name = nn::to_string(impl);
    CAPTURE(impl_name);
    nn::set_default_batchnorm_impl(impl);
    try {
      body();
    } catch (...) {
      nn::set_default_batchnorm_impl(previous);
      throw;
    }
  }
  nn::set_default_batchnorm_impl(previous);
}

}  // namespace

TEST_CASE("gradcheck: BatchNorm in training mode w.r.t. input, weight and bias, 1d and 2d") {
  for_each_impl([&] {
    struct Case {
      Shape shape;
      bool two_d;
    };
    for (const Case& k : {Case{{5, 3}, false}, Case{{3, 2, 4}, false}, Case{{2, 3, 2, 3}, true}}) {
      const std::string shape = xg::shape_str(k.shape);
      CAPTURE(shape);
      std::shared_ptr<nn::BatchNormBase> bn;
      if (k.two_d)
        bn = std::make_shared<nn::BatchNorm2d>(k.shape[1]);
      else
        bn = std::make_shared<nn::BatchNorm1d>(k.shape[1]);
      bn->to(xg::kFloat64);
      randomize_affine(*bn, 3);
      Tensor x = rnd(k.shape, xg::kFloat64, 4).requires_grad_();
      std::vector<Tensor> in{x, bn->weight, bn->bias};
      auto r = xg::gradcheck([&](const std::vector<Tensor>&) { return bn->forward(x); }, in);
      CHECK(r.ok);
      // eval mode (running statistics) as well
      bn->eval();
      CHECK(xg::gradcheck([&](const std::vector<Tensor>&) { return bn->forward(x); }, in).ok);
      // and without affine parameters
      auto plain = std::make_shared<nn::BatchNorm1d>(nn::BatchNormOptions(k.shape[1]).affine(false));
      plain->to(xg::kFloat64);
      if (!k.two_d) {
        std::vector<Tensor> only_x{x};
        CHECK(xg::gradcheck([&](const std::vector<Tensor>&) { return plain->forward(x); }, only_x).ok);
      }
    }
  });
}

TEST_CASE("training output, running statistics after three steps, and eval output match loops") {
  for_each_impl([&] {
    for (auto dt : {xg::kFloat64, xg::kFloat32}) {
      nn::BatchNorm2d bn(3);
      bn.to(dt);
      randomize_affine(bn, 5);
      const auto w = bn.weight.to_vector(), b = bn.bias.to_vector();
      std::vector<double> rm(3, 0.0), rv(3, 1.0);
      const double tol = dt == xg::kFloat64 ? 1e-12 : 2e-5;
      for (int step = 0; step < 3; ++step) {
        Tensor x = rnd({2, 3, 2, 2}, dt, 10 + step, step, 1.0 + step);  // mean and spread change every step
        const Stats st = channel_stats(x);
        check_close(bn.forward(x).to_vector(), normalize_ref(x, st.mean, st.var_biased, w, b, 1e-5), tol);
        for (std::size_t c = 0; c < 3; ++c) {
          rm[c] = 0.9 * rm[c] + 0.1 * st.mean[c];
          rv[c] = 0.9 * rv[c] + 0.1 * st.var_unbiased[c];  // m/(m-1) = 8/7 here
        }
      }
      check_close(bn.running_mean.to_vector(), rm, tol);
      check_close(bn.running_var.to_vector(), rv, tol);
      CHECK(bn.num_batches_tracked.item() == 3.0);
      bn.eval();
      Tensor x = rnd({3, 3, 2, 1}, dt, 20);
      check_close(bn.forward(x).to_vector(), normalize_ref(x, rm, rv, w, b, 1e-5), tol);
    }
  });
}

TEST_CASE("BatchNorm1d over [N, C, L] uses N·L values per channel") {
  for_each_impl([&] {
    nn::BatchNorm1d bn(nn::BatchNormOptions(2).eps(1e-3).momentum(0.25));
    bn.to(xg::kFloat64);
    randomize_affine(bn, 8);
    Tensor x = rnd({3, 2, 5}, xg::kFloat64, 9, 2.0, 3.0);
    const Stats st = channel_stats(x);
    check_close(bn.forward(x).to_vector(),
                normalize_ref(x, st.mean, st.var_biased, bn.weight.to_vector(), bn.bias.to_vector(), 1e-3), 1e-12);
    CHECK(bn.running_var.to_vector()[1] == doctest::Approx(0.75 + 0.25 * st.var_unbiased[1]).epsilon(1e-12));  // m = 15
  });
}

TEST_CASE("N = 2: hand-computed values") {
  for_each_impl([&] {
    // channel 0: values 1, 3 -> mean 2, biased var 1, unbiased var 2
    // channel 1: values 10, 10.5 -> mean 10.25, biased var 0.0625, unbiased var 0.125
    nn::BatchNorm1d bn(2);
    bn.to(xg::kFloat64);
    Tensor x = xg::tensor({{1.0, 10.0}, {3.0, 10.5}}, xg::kFloat64);
    const auto y = bn.forward(x).to_vector();
    const double a = 1.0 / std::sqrt(1.0 + 1e-5), c = 0.25 / std::sqrt(0.0625 + 1e-5);
    check_close(y, {-a, -c, a, c}, 1e-14);
    check_close(bn.running_mean.to_vector(), {0.2, 1.025}, 1e-14);  // 0.1·mean
    check_close(bn.running_var.to_vector(), {1.1, 0.9125}, 1e-14);  // 0.9·1 + 0.1·unbiased
  });
}

TEST_CASE("a constant channel gives exactly beta") {
  for_each_impl([&] {
    for (auto dt : {xg::kFloat32, xg::kFloat64}) {
      nn::BatchNorm2d bn(2);
      bn.to(dt);
      randomize_affine(bn, 12);
      Tensor x = rnd({4, 2, 3, 3}, dt, 13);
      for (std::ptrdiff_t n = 0; n < 4; ++n)
        for (std::ptrdiff_t i = 0; i < 3; ++i)
          for (std::ptrdiff_t j = 0; j < 3; ++j) x.set({n, 0, i, j}, 1234.567);
      const Tensor y = bn.forward(x);
      const double beta = bn.bias.at({0});
      for (std::ptrdiff_t n = 0; n < 4; ++n)
        for (std::ptrdiff_t i = 0; i < 3; ++i)
          for (std::ptrdiff_t j = 0; j < 3; ++j) CHECK(y.at({n, 0, i, j}) == beta);  // exactly
      CHECK(bn.running_var.at({0}) == doctest::Approx(0.9));  // unbiased var 0 enters the average
    }
  });
}

TEST_CASE("float32 input with mean 1e4 and std 1e-2 still normalises to unit variance") {
  for_each_impl([&] {
    nn::BatchNorm1d bn(nn::BatchNormOptions(3).eps(1e-9));
    Tensor x = rnd({256, 3}, xg::kFloat32, 14, 1e4, 1e-2);
    const Tensor y = bn.forward(x);
    const Stats in = channel_stats(x), out = channel_stats(y);
    for (std::size_t c = 0; c < 3; ++c) {
      CHECK(std::abs(out.mean[c]) < 1e-3);
      CHECK(std::abs(out.var_biased[c] - 1.0) < 1e-3);
    }
    // and element by element against the double-precision formula
    const auto ref = normalize_ref(x, in.mean, in.var_biased, {1, 1, 1}, {0, 0, 0}, 1e-9);
    const auto got = y.to_vector();
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - ref[i]));
    CHECK(worst < 1e-3);
    CHECK(bn.running_mean.at({0}) == doctest::Approx(0.1 * in.mean[0]).epsilon(1e-6));
    // default eps: variance var/(var + eps) exactly as the formula says
    nn::BatchNorm2d bn2(2);
    Tensor x2 = rnd({8, 2, 4, 4}, xg::kFloat32, 15, 1e4, 1e-2);
    const Stats in2 = channel_stats(x2), out2 = channel_stats(bn2.forward(x2));
    for (std::size_t c = 0; c < 2; ++c)
      CHECK(out2.var_biased[c] == doctest::Approx(in2.var_biased[c] / (in2.var_biased[c] + 1e-5)).epsilon(1e-3));
  });
}

TEST_CASE("momentum = nullopt is a cumulative average over the batches seen") {
  for_each_impl([&] {
    nn::BatchNorm1d bn(nn::BatchNormOptions(2).momentum(std::nullopt));
    bn.to(xg::kFloat64);
    std::vector<double> sum_mean(2, 0.0), sum_var(2, 0.0);
    for (int k = 1; k <= 4; ++k) {
      Tensor x = rnd({5, 2}, xg::kFloat64, 30 + k, k, k);
      const Stats st = channel_stats(x);
      bn.forward(x);
      for (std::size_t c = 0; c < 2; ++c) {
        sum_mean[c] += st.mean[c];
        sum_var[c] += st.var_unbiased[c];
      }
      check_close(bn.running_mean.to_vector(), {sum_mean[0] / k, sum_mean[1] / k}, 1e-12);
      check_close(bn.running_var.to_vector(), {sum_var[0] / k, sum_var[1] / k}, 1e-12);
    }
    CHECK(bn.num_batches_tracked.item() == 4.0);
  });
}

TEST_CASE("track_running_stats = false: batch statistics always, no buffers in the state") {
  for_each_impl([&] {
    nn::BatchNorm2d bn(nn::BatchNormOptions(3).track_running_stats(false));
    CHECK_FALSE(bn.running_mean.defined());
    CHECK(bn.named_buffers().empty());
    CHECK(bn.state_dict().keys() == std::vector<std::string>{"weight", "bias"});
    Tensor x = rnd({2, 3, 3, 3}, xg::kFloat32, 40);
    const auto train_out = bn.forward(x).to_vector();
    bn.eval();
    CHECK(bn.forward(x).to_vector() == train_out);
    const Stats st = channel_stats(x);
    check_close(train_out, normalize_ref(x, st.mean, st.var_biased, {1, 1, 1}, {0, 0, 0}, 1e-5), 2e-5);
    CHECK_THROWS_WITH_AS(bn.freeze_statistics(), doctest::Contains("needs running statistics"), xg::Error);
  });
}

TEST_CASE("the no-update mode uses batch statistics and leaves every buffer alone") {
  for_each_impl([&] {
    nn::BatchNorm2d a(2), b(2);
    a.forward(rnd({4, 2, 2, 2}, xg::kFloat32, 50));  // give the buffers non-default values
    b.load_state_dict(a.state_dict());
    const auto rm = a.running_mean.to_vector(), rv = a.running_var.to_vector();
    Tensor x = rnd({3, 2, 2, 2}, xg::kFloat32, 51, 1.0, 2.0);
    const auto with_update = b.forward(x).to_vector();

    a.set_update_running_stats(false);
    CHECK(a.forward(x).to_vector() == with_update);  // same normalisation ...
    CHECK(a.running_mean.to_vector() == rm);         // ... but nothing moved
    CHECK(a.running_var.to_vector() == rv);
    CHECK(a.num_batches_tracked.item() == 1.0);
    a.set_update_running_stats(true);
    {
      nn::NoStatsUpdateGuard probe;  // the same for every BatchNorm, for one scope
      CHECK(nn::NoStatsUpdateGuard::active());
      CHECK(a.forward(x).to_vector() == with_update);
      CHECK(a.running_mean.to_vector() == rm);
      CHECK(a.num_batches_tracked.item() == 1.0);
    }
    CHECK_FALSE(nn::NoStatsUpdateGuard::active());
    a.forward(x);
    CHECK(a.num_batches_tracked.item() == 2.0);
    CHECK(a.running_mean.to_vector() == b.running_mean.to_vector());
  });
}

TEST_CASE("freeze_statistics survives a parent's train(); eval never changes the buffers") {
  for_each_impl([&] {
    auto model = std::make_shared<nn::Sequential>(nn::Linear(3, 4), nn::BatchNorm1d(4));
    auto bn = model->at<nn::BatchNorm1d>(1);
    model->forward(rnd({6, 3}, xg::kFloat32, 60));
    const auto rm = bn->running_mean.to_vector(), rv = bn->running_var.to_vector();
    Tensor x = rnd({5, 3}, xg::kFloat32, 61);

    model->eval();
    const auto eval_out = model->forward(x).to_vector();
    CHECK(bn->running_mean.to_vector() == rm);
    CHECK(bn->running_var.to_vector() == rv);
    CHECK(bn->num_batches_tracked.item() == 1.0);

    bn->freeze_statistics();
    model->train();  // a parent's train() ...
    CHECK(bn->is_training());
    CHECK(bn->statistics_frozen());                    // ... does not unfreeze
    CHECK(model->forward(x).to_vector() == eval_out);  // running statistics
    CHECK(bn->running_mean.to_vector() == rm);
    CHECK(bn->num_batches_tracked.item() == 1.0);
    bn->freeze_statistics(false);
    CHECK(model->forward(x).to_vector() != eval_out);
    CHECK(bn->num_batches_tracked.item() == 2.0);
  });
}

TEST_CASE("one value per channel in training is an error naming the shape and drop_last") {
  for_each_impl([&] {
    nn::BatchNorm1d bn1(4);
    CHECK_THROWS_WITH_AS(bn1.forward(xg::ones({1, 4})), doctest::Contains("input of shape [1,4] (1 value per channel)"),
                         xg::Error);
    CHECK_THROWS_WITH_AS(bn1.forward(xg::ones({1, 4, 1})), doctest::Contains("drop_last"), xg::Error);
    CHECK(bn1.num_batches_tracked.item() == 0.0);  // a failed forward counts nothing
    nn::BatchNorm2d bn2(3);
    CHECK_THROWS_WITH_AS(bn2.forward(xg::ones({1, 3, 1, 1})), doctest::Contains("[1,3,1,1]"), xg::Error);
    // one image with several pixels is fine (m = H·W), and eval handles a single sample
    CHECK(bn2.forward(rnd({1, 3, 2, 2}, xg::kFloat32, 1)).shape() == Shape{1, 3, 2, 2});
    bn1.eval();
    CHECK(bn1.forward(xg::ones({1, 4})).shape() == Shape{1, 4});
  });
}

TEST_CASE("BatchNorm errors: rank, channels, impl, functional misuse") {
  nn::BatchNorm1d bn1(4);
  nn::BatchNorm2d bn2(4);
  CHECK_THROWS_WITH_AS(bn1.forward(xg::ones({2, 4, 2, 2})),
                       doctest::Contains("expected a 2-d [N, C] or 3-d [N, C, L] input, got shape [2,4,2,2]"),
                       xg::Error);
  CHECK_THROWS_WITH_AS(bn2.forward(xg::ones({2, 4})), doctest::Contains("expected a 4-d [N, C, H, W] input"),
                       xg::Error);
  CHECK_THROWS_WITH_AS(
      bn2.forward(xg::ones({2, 3, 2, 2})),
      doctest::Contains(
          "input has 3 channels (axis 1 of shape [2,3,2,2]) but the layer was built for num_features = 4"),
      xg::Error);
  nn::BatchNorm1d fused(nn::BatchNormOptions(4).impl(nn::BatchNormImpl::Fused));
  CHECK(fused.impl() == nn::BatchNormImpl::Fused);
  CHECK_THROWS_WITH_AS(fused.forward(xg::ones({1, 4})), doctest::Contains("drop_last"), xg::Error);
  CHECK(bn1.impl() == nn::default_batchnorm_impl());
  CHECK_THROWS_WITH_AS(F::batch_norm(xg::ones({2, 4}), Tensor(), Tensor()),
                       doctest::Contains("evaluation (training = false) needs running_mean and running_var"),
                       xg::Error);
  CHECK_THROWS_WITH_AS(F::batch_norm(xg::ones({2, 4}), xg::zeros({3}), xg::ones({4})),
                       doctest::Contains("running_mean must be [4]"), xg::Error);
  CHECK_THROWS_WITH_AS(F::batch_norm(xg::ones({2, 4}), Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, 0.0),
                       doctest::Contains("eps must be a finite number > 0"), xg::Error);
  nn::BatchNorm1d d(4);
  d.to(xg::kFloat64);
  CHECK_THROWS_WITH_AS(d.forward(xg::ones({2, 4})), doctest::Contains("is float64 but the input is float32"),
                       xg::Error);
}

TEST_CASE("BatchNorm state: names, affine = false, reset") {
  nn::BatchNorm2d bn(3);
  CHECK(bn.state_dict().keys() ==
        std::vector<std::string>{"weight", "bias", "running_mean", "running_var", "num_batches_tracked"});
  CHECK(bn.parameters().size() == 2);
  nn::BatchNorm2d plain(nn::BatchNormOptions(3).affine(false));
  CHECK(plain.parameters().empty());
  CHECK(plain.state_dict().keys() == std::vector<std::string>{"running_mean", "running_var", "num_batches_tracked"});
  bn.forward(rnd({2, 3, 2, 2}, xg::kFloat32, 70, 3.0));
  const Tensor rm = bn.running_mean;
  bn.reset_running_stats();
  CHECK(rm.impl() == bn.running_mean.impl());
  CHECK(bn.running_mean.to_vector() == std::vector<double>{0, 0, 0});
  CHECK(bn.running_var.to_vector() == std::vector<double>{1, 1, 1});
  CHECK(bn.num_batches_tracked.item() == 0.0);
}
