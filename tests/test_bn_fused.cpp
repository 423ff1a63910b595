// The fused BatchNorm (one graph node over the hand-written kernels) against the composed one (built from tensor
// ops, gradient by autograd): outputs, dx, dw, db and running statistics on 200+ randomised shapes and modes,
// gradcheck of the fused node, module modes with either impl, and ten training steps of the BN MLP.
//
// Tolerances (docs/batchnorm-fused.md): float64 ≤ 1e-10 and float32 ≤ 1e-4, relative to the largest magnitude
// of the reference tensor (so values near zero are held to the tensor's scale, not to their own).
#include <doctest/doctest.h>

#include <cmath>

#include <xgrad/xgrad.h>

#include "testing.h"

using namespace xg;
namespace F = xg::nn::functional;

namespace {

using xgt::rel_diff;  // testing.h

struct Case {
  Shape shape;
  Dtype dtype;
  bool affine, training, track;
  double offset, spread;
  bool constant_channel;
  double momentum;
};

struct Result {
  Tensor y, dx, dw, db, rm, rv;
};

Result run(const Case& c, const Tensor& x0, const Tensor& dy, const Tensor& w0, const Tensor& b0, bool fused) {
  const std::size_t C = c.shape[1];
  Tensor x = x0.detach().clone().requires_grad_();
  Tensor w = c.affine ? w0.detach().clone().requires_grad_() : Tensor();
  Tensor b = c.affine ? b0.detach().clone().requires_grad_() : Tensor();
  // running stats start from non-trivial values so that both the old and the new part of the update matter
  Tensor rm = c.track ? full({C}, 0.25, c.dtype) : Tensor();
  Tensor rv = c.track ? full({C}, 1.5, c.dtype) : Tensor();
  Tensor y = fused ? F::batch_norm_fused(x, rm, rv, w, b, c.training, c.momentum, 1e-5)
                   : F::batch_norm(x, rm, rv, w, b, c.training, c.momentum, 1e-5);
  (y * dy).sum().backward();
  return {y, x.grad(), c.affine ? w.grad() : Tensor(), c.affine ? b.grad() : Tensor(), rm, rv};
}

}  // namespace

TEST_CASE("fused BatchNorm agrees with the composed one on 240 randomised cases") {
  Generator gen(2024);
  int cases = 0;
  for (int i = 0; i < 240; ++i) {
    Case c;
    c.dtype = i % 2 ? kFloat64 : kFloat32;
    const std::size_t nd = 2 + gen.randint(3);            // [N,C], [N,C,L], [N,C,H,W]
    const std::size_t N = i % 7 == 0 ? 2 : 1 + gen.randint(9);  // N = 2 often, N = 1 with spatial > 1
    const std::size_t C = i % 11 == 0 ? 1 : 1 + gen.randint(37);  // C = 1, and C not a multiple of the SIMD width
    c.shape = {N, C};
    for (std::size_t a = 2; a < nd; ++a) c.shape.push_back(i % 13 == 0 ? 1 : 1 + gen.randint(9));  // H=W=1 too
    c.training = i % 5 != 4;  // eval mode in one case of five
    c.track = !c.training || i % 3 != 0;
    if (numel_of(c.shape) / C < 2 && c.training) c.shape[0] = 2;  // training needs > 1 value per channel
    c.affine = i % 4 != 3;
    c.offset = i % 6 == 0 ? 1e4 : (i % 6 == 1 ? -300.0 : 0.0);  // large mean offsets
    c.spread = i % 8 == 0 ? 1e-2 : 1.0 + gen.uniform();          // tiny variance
    c.constant_channel = i % 9 == 0;
    c.momentum = i % 10 == 0 ? 1.0 : 0.1;
    if (c.dtype == kFloat32 && c.offset == 1e4 && c.spread < 1) c.spread = 1e-2;

    Tensor x = normal(c.shape, c.offset, c.spread, kFloat64, &gen);
    if (c.constant_channel) {  // channel 0 holds one value
      double* p = x.data_ptr<double>();
      const std::size_t Nb = c.shape[0], S = numel_of(c.shape) / (Nb * C);
      for (std::size_t n = 0; n < Nb; ++n)
        for (std::size_t s = 0; s < S; ++s) p[(n * C) * S + s] = c.offset + 3.0;
    }
    x = x.to(c.dtype);
    const Tensor dy = randn(c.shape, c.dtype, &gen);
    const Tensor w = uniform({C}, 0.5, 1.5, c.dtype, &gen), b = randn({C}, c.dtype, &gen);

    const Result f = run(c, x, dy, w, b, true), r = run(c, x, dy, w, b, false);
    const double tol = c.dtype == kFloat64 ? 1e-10 : 1e-4;
    INFO("case ", i, " shape ", shape_str(c.shape), " ", c.dtype, " train=", c.training, " affine=", c.affine,
         " track=", c.track, " offset=", c.offset, " spread=", c.spread, " const=", c.constant_channel);
    CHECK(rel_diff(f.y, r.y) <= tol);
    // dx's natural scale: max |dy| · max_c |w_c|·invstd_c (float64 statistics of the same input)
    double dx_scale = 1e-30;
    if (c.training) {
      Dims axes{0};
      for (std::size_t a = 2; a < c.shape.size(); ++a) axes.push_back(static_cast<int>(a));
      const auto inv = rsqrt(var(x.to(kFloat64), axes, false) + 1e-5).to_vector();
      const auto wv = c.affine ? w.to_vector() : std::vector<double>(C, 1.0);
      double dy_max = 0;
      for (double v : dy.to_vector()) dy_max = std::max(dy_max, std::abs(v));
      for (std::size_t k = 0; k < C; ++k) dx_scale = std::max(dx_scale, std::abs(wv[k]) * inv[k] * dy_max);
    }
    CHECK(rel_diff(f.dx, r.dx, dx_scale) <= tol);
    if (c.affine) {
      CHECK(rel_diff(f.dw, r.dw) <= tol);
      CHECK(rel_diff(f.db, r.db) <= tol);
    }
    if (c.track) {
      CHECK(rel_diff(f.rm, r.rm) <= tol);
      CHECK(rel_diff(f.rv, r.rv) <= tol);
    }
    if (c.constant_channel && c.training) {  // a constant channel gives exactly beta
      const auto yv = f.y.to_vector();
      const double beta = c.affine ? b.to_vector()[0] : 0.0;
      CHECK(yv[0] == beta);
    }
    ++cases;
  }
  CHECK(cases == 240);
}

TEST_CASE("gradcheck of the fused BatchNorm node (float64)") {
  Generator gen(7);
  for (const Shape& s : {Shape{5, 3}, Shape{3, 2, 4}, Shape{2, 3, 2, 3}}) {
    const std::size_t C = s[1];
    Tensor x = randn(s, kFloat64, &gen).requires_grad_();
    Tensor w = uniform({C}, 0.5, 1.5, kFloat64, &gen).requires_grad_();
    Tensor b = randn({C}, kFloat64, &gen).requires_grad_();
    const Tensor dy = randn(s, kFloat64, &gen);
    INFO("shape ", shape_str(s));
    // training (batch statistics)
    CHECK(gradcheck([&](const std::vector<Tensor>& in) {
            return F::batch_norm_fused(in[0], Tensor(), Tensor(), in[1], in[2], true) * dy;
          }, {x, w, b}).ok);
    // without affine parameters
    CHECK(gradcheck([&](const std::vector<Tensor>& in) {
            return F::batch_norm_fused(in[0], Tensor(), Tensor(), Tensor(), Tensor(), true) * dy;
          }, {x}).ok);
    // eval (running statistics are constants)
    const Tensor rm = randn({C}, kFloat64, &gen), rv = uniform({C}, 0.5, 2.0, kFloat64, &gen);
    CHECK(gradcheck([&](const std::vector<Tensor>& in) {
            return F::batch_norm_fused(in[0], rm, rv, in[1], in[2], false) * dy;
          }, {x, w, b}).ok);
  }
}

TEST_CASE("BatchNorm modules give the same statistics with either impl, in every mode") {
  using nn::BatchNormImpl;
  auto make = [](BatchNormImpl impl, std::optional<double> momentum, bool track) {
    return std::make_shared<nn::BatchNorm2d>(
        nn::BatchNormOptions(3).impl(impl).momentum(momentum).track_running_stats(track));
  };
  for (std::optional<double> momentum : {std::optional<double>(0.1), std::optional<double>()}) {
    for (bool track : {true, false}) {
      auto fb = make(BatchNormImpl::Fused, momentum, track), cb = make(BatchNormImpl::Composed, momentum, track);
      Generator gen(3);
      for (int step = 0; step < 3; ++step) {
        const Tensor x = normal({4, 3, 2, 2}, 2.0, 3.0, kFloat32, &gen);
        CHECK(rel_diff(fb->forward(x), cb->forward(x)) <= 1e-5);
      }
      if (track) {
        CHECK(rel_diff(fb->running_mean, cb->running_mean) <= 1e-5);
        CHECK(rel_diff(fb->running_var, cb->running_var) <= 1e-5);
        CHECK(fb->num_batches_tracked.item() == 3);
        // the no-update mode: batch statistics, buffers untouched
        const auto before = fb->running_mean.to_vector();
        fb->set_update_running_stats(false);
        cb->set_update_running_stats(false);
        const Tensor x = randn({4, 3, 2, 2}, kFloat32, &gen);
        CHECK(rel_diff(fb->forward(x), cb->forward(x)) <= 1e-5);
        CHECK(fb->running_mean.to_vector() == before);
        // eval: the running statistics
        fb->eval();
        cb->eval();
        CHECK(rel_diff(fb->forward(x), cb->forward(x)) <= 1e-5);
        CHECK(fb->running_mean.to_vector() == before);
        // freeze_statistics survives train()
        fb->freeze_statistics();
        fb->train();
        cb->freeze_statistics();
        cb->train();
        CHECK(rel_diff(fb->forward(x), cb->forward(x)) <= 1e-5);
        CHECK(fb->running_mean.to_vector() == before);
      }
    }
  }
}

TEST_CASE("the fused impl is the default and reports errors like the composed one") {
  CHECK(nn::default_batchnorm_impl() == nn::BatchNormImpl::Fused);
  nn::BatchNorm1d bn(4);
  CHECK_THROWS_WITH_AS(bn.forward(randn({1, 4})), doctest::Contains("drop_last"), Error);
  CHECK_THROWS_WITH_AS(F::batch_norm_fused(randn({3, 4}), Tensor(), Tensor(), ones({5}), Tensor(), true),
                       doctest::Contains("weight must be [4]"), Error);
}

TEST_CASE("ten training steps of the BN MLP give the same losses with either impl") {
  auto losses = [](nn::BatchNormImpl impl) {
    manual_seed(11);
    auto mlp = std::make_shared<nn::Sequential>();
    mlp->push_back(nn::Linear(nn::LinearOptions(784, 100).bias(false)));
    mlp->push_back(nn::BatchNorm1d(nn::BatchNormOptions(100).impl(impl)));
    mlp->push_back(nn::Sigmoid());
    mlp->push_back(nn::Linear(nn::LinearOptions(100, 100).bias(false)));
    mlp->push_back(nn::BatchNorm1d(nn::BatchNormOptions(100).impl(impl)));
    mlp->push_back(nn::Sigmoid());
    mlp->push_back(nn::Linear(100, 10));
    Generator data(5);  // one fixed batch, trained on ten times: the loss must fall
    const Tensor x = rand({60, 784}, kFloat32, &data);
    std::vector<std::size_t> y(60);
    for (auto& v : y) v = data.randint(10);
    std::vector<double> out;
    for (int step = 0; step < 10; ++step) {
      mlp->zero_grad();
      Tensor loss = F::cross_entropy(mlp->forward(x), y);
      loss.backward();
      NoGradGuard no_grad;
      for (auto& p : mlp->parameters()) p.data<float>() -= 0.5f * p.grad().data<float>();
      out.push_back(loss.item());
    }
    return out;
  };
  const auto fused = losses(nn::BatchNormImpl::Fused), composed = losses(nn::BatchNormImpl::Composed);
  REQUIRE(fused.size() == 10);
  for (std::size_t i = 0; i < 10; ++i) {
    INFO("step ", i);
    CHECK(fused[i] == doctest::Approx(composed[i]).epsilon(1e-4));
  }
  CHECK(fused.back() < fused.front());  // and it learns
}
