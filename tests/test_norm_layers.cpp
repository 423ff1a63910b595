// LayerNorm and GroupNorm (composed and fused), Batch Renormalization and update_bn: values against hand-computed
// numbers (PyTorch's formulas), float64 gradchecks of both paths, the fused-vs-composed equivalence suite,
// thread-count determinism, r and d as constants in Batch Renorm's gradient, and update_bn's two statistics.
//
// Tolerances of the equivalence suite (as tests/test_bn_fused.cpp): float64 <= 1e-10, float32 <= 1e-4, relative
// to the largest magnitude of the reference (composed) tensor.
#include <doctest/doctest.h>

#include <cmath>

#include <xgrad/xgrad.h>

#include "testing.h"

using namespace xg;
namespace F = xg::nn::functional;

namespace {

using xgt::rel_diff;  // testing.h

// PyTorch's formula, written out in double: y = (x - mean)/sqrt(var_biased + eps)*w + b over groups of `len`
// consecutive values; w/b index = (i / stride) % nw.
std::vector<double> ref_norm(const std::vector<double>& x, std::size_t len, double eps, const std::vector<double>& w,
                             const std::vector<double>& b, std::size_t stride) {
  std::vector<double> y(x.size());
  for (std::size_t r0 = 0; r0 < x.size(); r0 += len) {
    double mean = 0, var = 0;
    for (std::size_t i = 0; i < len; ++i) mean += x[r0 + i];
    mean /= double(len);
    for (std::size_t i = 0; i < len; ++i) var += (x[r0 + i] - mean) * (x[r0 + i] - mean);
    var /= double(len);
    for (std::size_t i = 0; i < len; ++i) {
      const std::size_t j = ((r0 + i) / stride) % (w.empty() ? 1 : w.size());
      y[r0 + i] = (x[r0 + i] - mean) / std::sqrt(var + eps) * (w.empty() ? 1.0 : w[j]) + (b.empty() ? 0.0 : b[j]);
    }
  }
  return y;
}

void check_close(const Tensor& got, const std::vector<double>& want, double tol) {
  const auto g = got.to_vector();
  REQUIRE(g.size() == want.size());
  for (std::size_t i = 0; i < g.size(); ++i) CHECK(g[i] == doctest::Approx(want[i]).epsilon(tol));
}

}  // namespace

TEST_CASE("LayerNorm and GroupNorm: hand-checked values, both implementations") {
  for (auto impl : {nn::BatchNormImpl::Composed, nn::BatchNormImpl::Fused}) {
    INFO(nn::to_string(impl));
    // LayerNorm of [1, 2, 3, 4]: mean 2.5, biased var 1.25: y = (x - 2.5)/sqrt(1.25 + 1e-5)
    nn::LayerNorm ln(nn::LayerNormOptions({4}).impl(impl));
    const Tensor x = from_vector({1, 2, 3, 4, -2, 0, 2, 12}, {2, 4}, kFloat64);
    ln.to(kFloat64);
    const double s = 1.0 / std::sqrt(1.25 + 1e-5);
    const Tensor y = ln.forward(x);
    CHECK(y.to_vector()[0] == doctest::Approx(-1.5 * s).epsilon(1e-12));
    CHECK(y.to_vector()[3] == doctest::Approx(1.5 * s).epsilon(1e-12));
    // row 2: mean 3, var (25 + 9 + 1 + 81)/4 = 29
    CHECK(y.to_vector()[7] == doctest::Approx(9.0 / std::sqrt(29.0 + 1e-5)).epsilon(1e-12));
    {
      NoGradGuard ng;
      ln.weight.copy_(from_vector({1, 2, 3, 4}, {4}, kFloat64));
      ln.bias.copy_(from_vector({0.5, 0, -1, 2}, {4}, kFloat64));
    }
    const auto xv = x.to_vector();
    check_close(ln.forward(x), ref_norm(xv, 4, 1e-5, {1, 2, 3, 4}, {0.5, 0, -1, 2}, 1), 1e-12);

    // LayerNorm over the last two dims of [2, 3, 4] with a [3, 4] affine
    nn::LayerNorm ln2(nn::LayerNormOptions({3, 4}).eps(1e-3).impl(impl));
    ln2.to(kFloat64);
    Generator gen(3);
    const Tensor x2 = randn({2, 3, 4}, kFloat64, &gen);
    const Tensor w2 = randn({3, 4}, kFloat64, &gen), b2 = randn({3, 4}, kFloat64, &gen);
    {
      NoGradGuard ng;
      ln2.weight.copy_(w2);
      ln2.bias.copy_(b2);
    }
    check_close(ln2.forward(x2), ref_norm(x2.to_vector(), 12, 1e-3, w2.to_vector(), b2.to_vector(), 1), 1e-10);

    // GroupNorm, x [1, 4, 2] = 0..7, 2 groups: {0,1,2,3} mean 1.5 var 1.25, {4..7} mean 5.5 var 1.25;
    // weight per channel [1, 2, 3, 4], bias [0, 0, 1, 1]
    nn::GroupNorm gn(nn::GroupNormOptions(2, 4).impl(impl));
    gn.to(kFloat64);
    {
      NoGradGuard ng;
      gn.weight.copy_(from_vector({1, 2, 3, 4}, {4}, kFloat64));
      gn.bias.copy_(from_vector({0, 0, 1, 1}, {4}, kFloat64));
    }
    const Tensor xg = from_vector({0, 1, 2, 3, 4, 5, 6, 7}, {1, 4, 2}, kFloat64);
    const Tensor yg = gn.forward(xg);
    CHECK(yg.to_vector()[0] == doctest::Approx(-1.5 * s).epsilon(1e-12));          // channel 0, w 1
    CHECK(yg.to_vector()[3] == doctest::Approx(2 * 1.5 * s).epsilon(1e-12));       // channel 1, w 2
    CHECK(yg.to_vector()[4] == doctest::Approx(3 * -1.5 * s + 1).epsilon(1e-12));  // channel 2, w 3, b 1
    check_close(yg, ref_norm(xg.to_vector(), 4, 1e-5, {1, 2, 3, 4}, {0, 0, 1, 1}, 2), 1e-12);
    // train and eval compute the same (no running statistics), and a batch of one is fine
    gn.eval();
    CHECK(rel_diff(gn.forward(xg), yg) == 0.0);
    // G = C is InstanceNorm: every channel of every sample on its own
    nn::GroupNorm inst(nn::GroupNormOptions(4, 4).affine(false).impl(impl));
    check_close(inst.forward(xg.to(kFloat32)), ref_norm(xg.to_vector(), 2, 1e-5, {}, {}, 1), 1e-5);
  }
}

TEST_CASE("LayerNorm / GroupNorm gradcheck (float64), composed and fused") {
  Generator gen(11);
  for (int fused = 0; fused < 2; ++fused) {
    INFO("fused ", fused);
    const auto ln = fused ? F::layer_norm_fused : F::layer_norm;
    const auto gn = fused ? F::group_norm_fused : F::group_norm;
    for (const Shape& s : {Shape{3, 5}, Shape{2, 3, 4}}) {
      const Shape ns{s.back()};
      Tensor x = randn(s, kFloat64, &gen).requires_grad_();
      Tensor w = uniform(ns, 0.5, 1.5, kFloat64, &gen).requires_grad_(), b = randn(ns, kFloat64, &gen).requires_grad_();
      const Tensor dy = randn(s, kFloat64, &gen);
      CHECK(gradcheck([&](const std::vector<Tensor>& in) { return ln(in[0], ns, in[1], in[2], 1e-5) * dy; },
                      {x, w, b}).ok);
      CHECK(gradcheck([&](const std::vector<Tensor>& in) { return ln(in[0], ns, Tensor(), Tensor(), 1e-5) * dy; },
                      {x}).ok);
    }
    // LayerNorm over two dims
    {
      Tensor x = randn({2, 3, 2}, kFloat64, &gen).requires_grad_();
      Tensor w = randn({3, 2}, kFloat64, &gen).requires_grad_(), b = randn({3, 2}, kFloat64, &gen).requires_grad_();
      const Tensor dy = randn({2, 3, 2}, kFloat64, &gen);
      CHECK(gradcheck([&](const std::vector<Tensor>& in) { return ln(in[0], {3, 2}, in[1], in[2], 1e-5) * dy; },
                      {x, w, b}).ok);
    }
    for (const auto& [s, G] : {std::pair{Shape{2, 4, 3}, std::size_t(2)}, std::pair{Shape{3, 6}, std::size_t(3)},
                               std::pair{Shape{2, 4, 2, 3}, std::size_t(1)}, std::pair{Shape{2, 3, 2, 2}, std::size_t(3)}}) {
      INFO("GroupNorm ", shape_str(s), " G ", G);
      Tensor x = randn(s, kFloat64, &gen).requires_grad_();
      Tensor w = uniform({s[1]}, 0.5, 1.5, kFloat64, &gen).requires_grad_(), b = randn({s[1]}, kFloat64, &gen).requires_grad_();
      const Tensor dy = randn(s, kFloat64, &gen);
      const std::size_t g = G;
      CHECK(gradcheck([&](const std::vector<Tensor>& in) { return gn(in[0], g, in[1], in[2], 1e-5) * dy; }, {x, w, b}).ok);
      CHECK(gradcheck([&](const std::vector<Tensor>& in) { return gn(in[0], g, Tensor(), Tensor(), 1e-5) * dy; }, {x}).ok);
    }
  }
}

TEST_CASE("native_layer_norm / native_group_norm: the ops themselves, gradchecked (float64)") {
  Generator gen(12);
  const Tensor x = randn({3, 2, 4}, kFloat64, &gen).requires_grad_(), dy = randn({3, 2, 4}, kFloat64, &gen);
  const Tensor w = uniform({4}, 0.5, 1.5, kFloat64, &gen).requires_grad_(), b = randn({4}, kFloat64, &gen).requires_grad_();
  xgt::check_grad("native_layer_norm", [&](auto& in) { return xg::native_layer_norm(in[0], {4}, in[1], in[2], 1e-5) * dy; },
                  {x, w, b});
  xgt::check_grad("native_layer_norm", [&](auto& in) { return xg::native_layer_norm(in[0], {2, 4}, Tensor(), Tensor(), 1e-5) * dy; },
                  {x});
  const Tensor wc = uniform({2}, 0.5, 1.5, kFloat64, &gen).requires_grad_(), bc = randn({2}, kFloat64, &gen).requires_grad_();
  xgt::check_grad("native_group_norm", [&](auto& in) { return xg::native_group_norm(in[0], 2, in[1], in[2], 1e-5) * dy; },
                  {x, wc, bc});
  xgt::check_grad("native_group_norm", [&](auto& in) { return xg::native_group_norm(in[0], 1, Tensor(), Tensor(), 1e-5) * dy; },
                  {x});
}

namespace {
struct Out {
  Tensor y, dx, dw, db;
};
Out run_norm(bool layer, const Tensor& x0, const Shape& ns, std::size_t G, const Tensor& w0, const Tensor& b0,
             const Tensor& dy, bool fused) {
  Tensor x = x0.detach().clone().requires_grad_();
  Tensor w = w0.defined() ? w0.detach().clone().requires_grad_() : Tensor();
  Tensor b = b0.defined() ? b0.detach().clone().requires_grad_() : Tensor();
  Tensor y = layer ? (fused ? F::layer_norm_fused(x, ns, w, b) : F::layer_norm(x, ns, w, b))
                   : (fused ? F::group_norm_fused(x, G, w, b) : F::group_norm(x, G, w, b));
  (y * dy).sum().backward();
  return {y, x.grad(), w.defined() ? w.grad() : Tensor(), b.defined() ? b.grad() : Tensor()};
}
}  // namespace

TEST_CASE("fused LayerNorm / GroupNorm agree with the composed ones on 160 randomised cases") {
  Generator gen(99);
  for (int i = 0; i < 160; ++i) {
    const Dtype dt = i % 2 ? kFloat64 : kFloat32;
    const bool layer = i % 4 < 2, affine = i % 3 != 2;
    Shape s, ns;
    std::size_t G = 1;
    // sizes that are not multiples of the SIMD width, and rows beyond one 16 KiB chunk (4096 floats)
    const std::size_t big[] = {1, 3, 17, 33, 100, 1031, 5003};
    if (layer) {
      const std::size_t D = i % 16 == 0 ? big[gen.randint(7)] : 1 + gen.randint(70);
      s = {1 + gen.randint(9)};
      if (i % 5 == 0) s.push_back(1 + gen.randint(4));
      s.push_back(D);
      ns = {D};
      if (i % 7 == 0 && D % 1 == 0) {  // two normalised dims
        s.push_back(3);
        ns = {D, 3};
      }
    } else {
      G = 1 + gen.randint(4);
      const std::size_t P = 1 + gen.randint(6);
      s = {1 + gen.randint(6), G * P};
      const std::size_t nsp = gen.randint(3);
      for (std::size_t a = 0; a < nsp; ++a) s.push_back(i % 9 == 0 ? 1 : 1 + gen.randint(9));
      if (i % 16 == 1) s = {2, G * P, 37, 41};  // rows of P*1517 values: pieces cut channels
    }
    const double offset = i % 6 == 0 ? 1e4 : (i % 6 == 1 ? -300.0 : 0.0);
    const double spread = i % 8 == 0 || i % 8 == 2 ? 1e-2 : 1.0 + gen.uniform();  // LayerNorm and GroupNorm cases
    INFO("case ", i, (layer ? " LayerNorm " : " GroupNorm "), shape_str(s), " G ", G, " ", dt, " offset ", offset,
         " spread ", spread, " affine ", affine);
    const Tensor x = (randn(s, kFloat64, &gen) * spread + offset).to(dt);
    const Shape as = layer ? ns : Shape{s[1]};
    const Tensor w = affine ? uniform(as, 0.5, 1.5, dt, &gen) : Tensor();
    const Tensor b = affine ? randn(as, dt, &gen) : Tensor();
    const Tensor dy = randn(s, dt, &gen);
    const Out ref = run_norm(layer, x, ns, G, w, b, dy, false), got = run_norm(layer, x, ns, G, w, b, dy, true);
    const double tol = dt == kFloat64 ? 1e-10 : 1e-4;
    CHECK(rel_diff(got.y, ref.y) <= tol);
    // dx relative to max(max |dx|, max |w·invstd·dy|): rows of 1 or 2 values have dx = 0 or nearly so in exact
    // arithmetic (a row of one value: dx = invstd·(g − g) = 0), leaving rounding noise at the scale w·invstd·dy.
    const std::size_t len = layer ? numel_of(ns) : numel_of(s) / (s[0] * G);
    const auto xv = x.to_vector();
    double max_inv = 0;
    for (std::size_t r0 = 0; r0 < xv.size(); r0 += len) {
      double m = 0, v = 0;
      for (std::size_t k = 0; k < len; ++k) m += xv[r0 + k] / double(len);
      for (std::size_t k = 0; k < len; ++k) v += (xv[r0 + k] - m) * (xv[r0 + k] - m) / double(len);
      max_inv = std::max(max_inv, 1.0 / std::sqrt(v + 1e-5));
    }
    const double wmax = affine ? w.abs().max().item() : 1.0;
    CHECK(rel_diff(got.dx, ref.dx, dy.abs().max().item() * wmax * max_inv) <= tol);
    if (affine) {
      CHECK(rel_diff(got.dw, ref.dw, 1e-6) <= tol);
      CHECK(rel_diff(got.db, ref.db) <= tol);
    }
  }
}

TEST_CASE("fused LayerNorm / GroupNorm: the same bits for 1, 2 and 3 threads; constant rows give the bias") {
  Generator gen(5);
  struct C {
    bool layer;
    Shape s;
    std::size_t G;
  };
  for (const C& c : {C{true, {512, 1000}, 1}, C{true, {64, 5003}, 1}, C{false, {16, 64, 16, 16}, 8},
                     C{false, {4, 6, 70, 70}, 3}}) {
    const Tensor x = randn(c.s, kFloat32, &gen);
    const Shape as = c.layer ? Shape{c.s.back()} : Shape{c.s[1]};
    const Tensor w = uniform(as, 0.5, 1.5, kFloat32, &gen), b = randn(as, kFloat32, &gen), dy = randn(c.s, kFloat32, &gen);
    std::vector<Out> outs;
    for (int nt : {1, 2, 3}) {
      set_num_threads(nt);
      outs.push_back(run_norm(c.layer, x, {c.s.back()}, c.G, w, b, dy, true));
    }
    set_num_threads(2);
    for (int k = 1; k < 3; ++k) {
      CHECK(rel_diff(outs[k].y, outs[0].y) == 0.0);
      CHECK(rel_diff(outs[k].dx, outs[0].dx) == 0.0);
      CHECK(rel_diff(outs[k].dw, outs[0].dw) == 0.0);
      CHECK(rel_diff(outs[k].db, outs[0].db) == 0.0);
    }
  }
  // a constant row: mean == the value exactly, y == bias exactly
  const Tensor x = full({3, 37}, 1234.5, kFloat32);
  const Tensor b = randn({37}, kFloat32, &gen);
  CHECK(rel_diff(F::layer_norm_fused(x, {37}, uniform({37}, 0.5, 1.5, kFloat32, &gen), b), b.reshape({1, 37}).expand({3, 37})) == 0.0);
}

TEST_CASE("LayerNorm / GroupNorm: bad input is a clear error") {
  CHECK_THROWS_WITH_AS(nn::GroupNorm(nn::GroupNormOptions(3, 4)), doctest::Contains("multiple of num_groups"), Error);
  CHECK_THROWS_WITH_AS(F::group_norm(randn({2, 4, 3}), 3), doctest::Contains("cannot be split"), Error);
  CHECK_THROWS_WITH_AS(F::group_norm_fused(randn({2, 4, 3}), 3), doctest::Contains("cannot be split"), Error);
  CHECK_THROWS_WITH_AS(F::layer_norm(randn({2, 4, 3}), {4}), doctest::Contains("last 1 dimension"), Error);
  CHECK_THROWS_WITH_AS(F::layer_norm_fused(randn({2, 3}), {3}, randn({4})), doctest::Contains("weight"), Error);
  nn::GroupNorm gn(nn::GroupNormOptions(2, 4));
  CHECK_THROWS_WITH_AS(gn.forward(randn({2, 6, 3})), doctest::Contains("num_channels = 4"), Error);
  CHECK_THROWS_WITH_AS(nn::LayerNorm(nn::LayerNormOptions({4}).eps(0)), doctest::Contains("eps"), Error);
}

// ---- Batch Renormalization ---------------------------------------------------------------------------------
TEST_CASE("BatchRenorm: r and d by hand, the warm-up schedule, running statistics as BatchNorm's") {
  auto o = nn::BatchRenormOptions(2).warmup_steps(0).rmax_steps(0).dmax_steps(0).rmax(3).dmax(5);
  nn::BatchRenorm1d brn(o);
  brn.to(kFloat64);
  {
    NoGradGuard ng;
    brn.running_mean.copy_(from_vector({1.0, -10.0}, {2}, kFloat64));
    brn.running_var.copy_(from_vector({4.0, 0.01}, {2}, kFloat64));
  }
  // channel 0: {0, 2, 4, 6}: mean 3, biased var 5; channel 1: {0, 0, 0, 1}: mean 0.25, var 0.1875
  const Tensor x = from_vector({0, 0, 2, 0, 4, 0, 6, 1}, {4, 2}, kFloat64);
  const Tensor y = brn.forward(x);
  const double eps = 1e-5, sb0 = std::sqrt(5 + eps), s0 = std::sqrt(4 + eps);
  const double sb1 = std::sqrt(0.1875 + eps);
  CHECK(brn.last_r()[0] == doctest::Approx(sb0 / s0).epsilon(1e-12));          // 1.118: inside [1/3, 3]
  CHECK(brn.last_d()[0] == doctest::Approx((3.0 - 1.0) / s0).epsilon(1e-12));  // 1.0
  CHECK(brn.last_r()[1] == doctest::Approx(3.0));                              // 4.33 clipped to rmax
  CHECK(brn.last_d()[1] == doctest::Approx(5.0));                              // 102 clipped to dmax
  // y = ((x - mean_B)/sigma_B)*r + d  (weight 1, bias 0)
  CHECK(y.to_vector()[0] == doctest::Approx((0 - 3) / sb0 * (sb0 / s0) + 2 / s0).epsilon(1e-12));
  CHECK(y.to_vector()[7] == doctest::Approx((1 - 0.25) / sb1 * 3 + 5).epsilon(1e-12));
  // running statistics: BatchNorm's update, momentum 0.1, unbiased variance (5·4/3, 0.1875·4/3)
  CHECK(brn.running_mean.to_vector()[0] == doctest::Approx(0.9 * 1 + 0.1 * 3));
  CHECK(brn.running_var.to_vector()[0] == doctest::Approx(0.9 * 4 + 0.1 * 5 * 4 / 3.0));
  CHECK(brn.running_var.to_vector()[1] == doctest::Approx(0.9 * 0.01 + 0.1 * 0.1875 * 4 / 3.0));
  CHECK(brn.num_batches_tracked.item() == 1.0);
  // eval = BatchNorm's eval with the running statistics
  brn.eval();
  const Tensor ye = brn.forward(x);
  const double rm = 1.2, rv = 0.9 * 4 + 0.1 * 5 * 4 / 3.0;
  CHECK(ye.to_vector()[2] == doctest::Approx((2 - rm) / std::sqrt(rv + eps)).epsilon(1e-12));

  // the schedule: 1 / 0 during warm-up, linear ramps, then the final bounds
  nn::BatchRenorm2d s(nn::BatchRenormOptions(3).warmup_steps(100).rmax_steps(300).dmax_steps(200));
  CHECK(s.rmax_at(0) == 1.0);
  CHECK(s.dmax_at(99) == 0.0);
  CHECK(s.rmax_at(200) == doctest::Approx(2.0));   // halfway from 1 to 3
  CHECK(s.dmax_at(150) == doctest::Approx(2.5));   // halfway from 0 to 5
  CHECK(s.rmax_at(1e6) == 3.0);
  CHECK(s.dmax_at(1e6) == 5.0);
  CHECK_THROWS_WITH_AS(nn::BatchRenorm1d(nn::BatchRenormOptions(2).rmax(0.5)), doctest::Contains("rmax"), Error);
}

TEST_CASE("BatchRenorm: during warm-up it is BatchNorm; its gradient treats r and d as constants") {
  Generator gen(21);
  const Tensor x0 = randn({6, 3}, kFloat64, &gen) * 2.0 + 1.0;
  const Tensor w0 = uniform({3}, 0.5, 1.5, kFloat64, &gen), dy = randn({6, 3}, kFloat64, &gen);
  // warm-up (the default 5000 steps): r = 1, d = 0, output and gradient are BatchNorm's
  nn::BatchRenorm1d warm(nn::BatchRenormOptions(3));
  nn::BatchNorm1d bn(nn::BatchNormOptions(3).impl(nn::BatchNormImpl::Composed));
  warm.to(kFloat64);
  bn.to(kFloat64);
  {
    NoGradGuard ng;
    warm.weight.copy_(w0);
    bn.weight.copy_(w0);
  }
  Tensor xa = x0.clone().requires_grad_(), xb = x0.clone().requires_grad_();
  const Tensor ya = warm.forward(xa), yb = bn.forward(xb);
  CHECK(rel_diff(ya, yb) <= 1e-12);
  (ya * dy).sum().backward();
  (yb * dy).sum().backward();
  CHECK(rel_diff(xa.grad(), xb.grad()) <= 1e-12);

  // relaxed bounds and running statistics far from the batch's: r != 1, d != 0. The gradient is r times
  // BatchNorm's (d adds a constant): the paper's stop_gradient on r and d.
  auto relaxed = nn::BatchRenormOptions(3).warmup_steps(0).rmax_steps(0).dmax_steps(0).rmax(10).dmax(10);
  nn::BatchRenorm1d brn(relaxed);
  brn.to(kFloat64);
  auto set_state = [&](nn::BatchRenorm1d& m) {
    NoGradGuard ng;
    m.weight.copy_(w0);
    m.running_mean.copy_(from_vector({0.5, 1.0, 1.5}, {3}, kFloat64));
    m.running_var.copy_(from_vector({1.0, 2.0, 9.0}, {3}, kFloat64));
  };
  set_state(brn);
  Tensor xr = x0.clone().requires_grad_();
  const Tensor yr = brn.forward(xr);
  (yr * dy).sum().backward();
  const auto r = brn.last_r();
  for (std::size_t c = 0; c < 3; ++c) CHECK(std::abs(r[c] - 1.0) > 0.05);  // the correction is active
  const auto gr = xr.grad().to_vector(), gb = xb.grad().to_vector();
  for (std::size_t i = 0; i < gr.size(); ++i) CHECK(gr[i] == doctest::Approx(r[i % 3] * gb[i]).epsilon(1e-10));

  // Finite differences see r and d move with x (r = sigma_B/sigma depends on the batch), so gradcheck of the
  // unclipped layer must FAIL — the analytic gradient deliberately ignores that path ...
  auto unclipped = std::make_shared<nn::BatchRenorm1d>(relaxed);
  unclipped->to(kFloat64);
  GradcheckOptions quiet;
  quiet.raise = false;
  Tensor xg = x0.clone().requires_grad_();
  CHECK_FALSE(gradcheck(
                  [&](const std::vector<Tensor>& in) {
                    set_state(*unclipped);  // the same running statistics at every evaluation
                    return unclipped->forward(in[0]) * dy;
                  },
                  {xg}, quiet)
                  .ok);
  // ... while with r and d held at their clipping bounds (running var 100: sigma_B/sigma < 1/2 -> r = 1/rmax;
  // running mean 100: (mu_B - 100)/10 < -1 -> d = -dmax), r and d are constant near x and it passes.
  auto pinned = std::make_shared<nn::BatchRenorm1d>(
      nn::BatchRenormOptions(3).warmup_steps(0).rmax_steps(0).dmax_steps(0).rmax(2.0).dmax(1.0));
  pinned->to(kFloat64);
  auto set_far = [&] {
    NoGradGuard ng;
    pinned->weight.copy_(w0);
    pinned->running_mean.fill_(100.0);
    pinned->running_var.fill_(100.0);
  };
  CHECK(gradcheck(
            [&](const std::vector<Tensor>& in) {
              set_far();
              return pinned->forward(in[0]) * dy;
            },
            {xg})
            .ok);
  for (std::size_t c = 0; c < 3; ++c) {
    CHECK(pinned->last_r()[c] == 0.5);
    CHECK(pinned->last_d()[c] == -1.0);
  }
}

// ---- update_bn -------------------------------------------------------------------------------------------------
namespace {
// conv -> BN2d: the BN's input is the conv's output, which the test recomputes on its own
struct ConvBn : nn::Module {
  ConvBn() : nn::Module("ConvBn") {
    conv = register_module("conv", std::make_shared<nn::Conv2d>(1, 3, Size2(3)));
    bn = register_module("bn", std::make_shared<nn::BatchNorm2d>(nn::BatchNormOptions(3).momentum(0.3)));
  }
  Tensor forward(const Tensor& x) override { return bn->forward(conv->forward(x)); }
  std::shared_ptr<nn::Conv2d> conv;
  std::shared_ptr<nn::BatchNorm2d> bn;
};

data::Dataset toy_dataset(std::size_t n, Generator& gen) {
  // sample i has brightness offset 0.1·(i % 5): batches of a shuffled loader get different means, so the
  // average of the batch variances and the pooled variance differ
  std::vector<double> v;
  const auto u = uniform({n, 1, 6, 6}, 0.0, 1.0, kFloat64, &gen).to_vector();
  for (std::size_t i = 0; i < u.size(); ++i) v.push_back(u[i] + 0.1 * double((i / 36) % 5) * double((i / 36) % 3));
  data::Dataset ds;
  ds.images = from_vector(v, {n, 1, 6, 6}, kFloat32);
  ds.labels.assign(n, 0);
  return ds;
}
}  // namespace

TEST_CASE("update_bn: PyTorch's cumulative average or the exact population statistics; nothing else changes") {
  Generator gen(8);
  const data::Dataset ds = toy_dataset(50, gen);
  auto model = std::make_shared<ConvBn>();
  model->eval();
  const auto params_before = model->conv->weight.to_vector();
  data::DataLoader loader(ds, data::DataLoaderOptions(8).shuffle(true).seed(4));  // 6 batches of 8 and one of 2

  // the BN's inputs batch by batch, as the loader will deliver them (same seed: same order)
  Tensor feats;
  std::vector<std::vector<double>> bmean, bvar;  // per batch, per channel
  std::vector<double> all[3];
  {
    NoGradGuard ng;
    data::DataLoader replay(ds, data::DataLoaderOptions(8).shuffle(true).seed(4));
    for (const auto& b : replay) {
      const auto f = model->conv->forward(b.images).to_vector();  // [B, 3, 4, 4]
      const std::size_t B = b.size();
      std::vector<double> m(3, 0), var(3, 0);
      for (std::size_t c = 0; c < 3; ++c) {
        std::vector<double> vals;
        for (std::size_t n = 0; n < B; ++n)
          for (std::size_t k = 0; k < 16; ++k) vals.push_back(f[(n * 3 + c) * 16 + k]);
        for (double x : vals) m[c] += x / double(vals.size());
        for (double x : vals) var[c] += (x - m[c]) * (x - m[c]) / double(vals.size() - 1);  // unbiased
        all[c].insert(all[c].end(), vals.begin(), vals.end());
      }
      bmean.push_back(m);
      bvar.push_back(var);
    }
  }
  REQUIRE(bmean.size() == 7);

  SUBCASE("Cumulative = PyTorch's update_bn (momentum None)") {
    CHECK(nn::update_bn(loader, *model) == 7);
    for (std::size_t c = 0; c < 3; ++c) {
      double m = 0, v = 0;
      for (std::size_t b = 0; b < 7; ++b) {
        m += bmean[b][c] / 7;
        v += bvar[b][c] / 7;
      }
      CHECK(model->bn->running_mean.to_vector()[c] == doctest::Approx(m).epsilon(1e-5));
      CHECK(model->bn->running_var.to_vector()[c] == doctest::Approx(v).epsilon(1e-5));
    }
    CHECK(model->bn->num_batches_tracked.item() == 7.0);
    // the same numbers as a BatchNorm with momentum = None trained over the same batches from a reset
    nn::BatchNorm2d cum(nn::BatchNormOptions(3).momentum(std::nullopt));
    {
      NoGradGuard ng;
      data::DataLoader replay(ds, data::DataLoaderOptions(8).shuffle(true).seed(4));
      for (const auto& b : replay) cum.forward(model->conv->forward(b.images));
    }
    CHECK(rel_diff(model->bn->running_mean, cum.running_mean) <= 1e-5);
    CHECK(rel_diff(model->bn->running_var, cum.running_var) <= 1e-5);
  }
  SUBCASE("Population: the exact mean and unbiased variance of every value seen") {
    nn::update_bn(loader, *model, nn::BnStatistics::Population);
    for (std::size_t c = 0; c < 3; ++c) {
      double m = 0, v = 0;
      for (double x : all[c]) m += x / double(all[c].size());
      for (double x : all[c]) v += (x - m) * (x - m) / double(all[c].size() - 1);
      CHECK(model->bn->running_mean.to_vector()[c] == doctest::Approx(m).epsilon(1e-5));
      CHECK(model->bn->running_var.to_vector()[c] == doctest::Approx(v).epsilon(1e-5));
    }
  }
  // nothing else changed: the parameters, every module's mode, the BN's momentum
  CHECK(model->conv->weight.to_vector() == params_before);
  CHECK_FALSE(model->is_training());
  CHECK_FALSE(model->bn->is_training());
  CHECK(model->bn->options().momentum() == std::optional<double>(0.3));
  // a model without BatchNorm is an error
  nn::Conv2d conv(1, 2, Size2(3));
  CHECK_THROWS_WITH_AS(nn::update_bn(loader, conv), doctest::Contains("no BatchNorm"), Error);
}
