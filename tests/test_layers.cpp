// Layers against direct-loop references written here (forward and backward), gradchecks in float64,
// initialisation, Dropout determinism, and the layers' errors.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "xgrad/xgrad.h"

namespace nn = xg::nn;
namespace F = xg::nn::functional;
using xg::Shape;
using xg::Tensor;

namespace {

Tensor rnd(const Shape& s, xg::Dtype dt, std::uint64_t seed, bool grad = false) {
  xg::Generator g(seed);
  Tensor t = xg::randn(s, dt, &g);
  if (grad) t.requires_grad_();
  return t;
}

void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  REQUIRE(got.size() == want.size());
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::abs(got[i] - want[i]) / (1.0 + std::abs(want[i])));
  CHECK(worst <= tol);
}

// ---- convolution reference: the definition, as plain loops ------------------------------------------------
struct ConvCase {
  std::size_t N, C, H, W, O, kh, kw, sh, sw, ph, pw;
  bool bias;
};

struct ConvRef {
  std::vector<double> y, dx, dw, db;
};

// y[n,o,i,j] = b[o] + Σ_{c,p,q} w[o,c,p,q]·x[n,c,i·sh+p-ph, j·sw+q-pw]; and, for an upstream gradient G,
// dx/dw/db by accumulating every term's partial derivatives.
ConvRef conv_reference(const ConvCase& k, const std::vector<double>& x, const std::vector<double>& w,
                       const std::vector<double>& b, const std::vector<double>& G) {
  const std::size_t Ho = (k.H + 2 * k.ph - k.kh) / k.sh + 1, Wo = (k.W + 2 * k.pw - k.kw) / k.sw + 1;
  ConvRef r;
  r.y.assign(k.N * k.O * Ho * Wo, 0.0);
  r.dx.assign(x.size(), 0.0);
  r.dw.assign(w.size(), 0.0);
  r.db.assign(k.O, 0.0);
  for (std::size_t n = 0; n < k.N; ++n)
    for (std::size_t o = 0; o < k.O; ++o)
      for (std::size_t i = 0; i < Ho; ++i)
        for (std::size_t j = 0; j < Wo; ++j) {
          const std::size_t yi = ((n * k.O + o) * Ho + i) * Wo + j;
          double acc = k.bias ? b[o] : 0.0;
          if (k.bias) r.db[o] += G[yi];
          for (std::size_t c = 0; c < k.C; ++c)
            for (std::size_t p = 0; p < k.kh; ++p)
              for (std::size_t q = 0; q < k.kw; ++q) {
                const long ih = long(i * k.sh + p) - long(k.ph), iw = long(j * k.sw + q) - long(k.pw);
                if (ih < 0 || iw < 0 || ih >= long(k.H) || iw >= long(k.W)) continue;
                const std::size_t xi = ((n * k.C + c) * k.H + std::size_t(ih)) * k.W + std::size_t(iw);
                const std::size_t wi = ((o * k.C + c) * k.kh + p) * k.kw + q;
                acc += w[wi] * x[xi];
                r.dx[xi] += G[yi] * w[wi];
                r.dw[wi] += G[yi] * x[xi];
              }
          r.y[yi] = acc;
        }
  return r;
}

void check_conv_case(const ConvCase& k, xg::Dtype dt) {
  CAPTURE(k.N);
  CAPTURE(k.H);
  CAPTURE(k.W);
  CAPTURE(k.kh);
  CAPTURE(k.kw);
  CAPTURE(k.sh);
  CAPTURE(k.ph);
  Tensor x = rnd({k.N, k.C, k.H, k.W}, dt, 1, true);
  Tensor w = rnd({k.O, k.C, k.kh, k.kw}, dt, 2, true);
  Tensor b = k.bias ? rnd({k.O}, dt, 3, true) : Tensor();
  Tensor y = F::conv2d(x, w, b, {k.sh, k.sw}, {k.ph, k.pw});
  Tensor G = rnd(y.shape(), dt, 4);
  const ConvRef r =
      conv_reference(k, x.to_vector(), w.to_vector(), k.bias ? b.to_vector() : std::vector<double>{}, G.to_vector());
  const double tol = dt == xg::kFloat32 ? 2e-5 : 1e-12;
  CHECK(y.shape() == Shape{k.N, k.O, (k.H + 2 * k.ph - k.kh) / k.sh + 1, (k.W + 2 * k.pw - k.kw) / k.sw + 1});
  check_close(y.to_vector(), r.y, tol);
  y.backward(G);
  check_close(x.grad().to_vector(), r.dx, tol);
  check_close(w.grad().to_vector(), r.dw, tol);
  if (k.bias) check_close(b.grad().to_vector(), r.db, tol);
}

// ---- pooling references ---------------------------------------------------------------------------------
struct PoolCase {
  std::size_t N, C, H, W, kh, kw, sh, sw, ph, pw;
  bool count_include_pad = true;
};

// Forward and backward (for upstream G) of max or average pooling, by the definition.
std::pair<std::vector<double>, std::vector<double>> pool_reference(const PoolCase& k, bool is_max,
                                                                   const std::vector<double>& x,
                                                                   const std::vector<double>& G) {
  const std::size_t Ho = (k.H + 2 * k.ph - k.kh) / k.sh + 1, Wo = (k.W + 2 * k.pw - k.kw) / k.sw + 1;
  std::vector<double> y(k.N * k.C * Ho * Wo), dx(x.size(), 0.0);
  for (std::size_t pl = 0; pl < k.N * k.C; ++pl)
    for (std::size_t i = 0; i < Ho; ++i)
      for (std::size_t j = 0; j < Wo; ++j) {
        const std::size_t yi = (pl * Ho + i) * Wo + j;
        double best = -std::numeric_limits<double>::infinity(), sum = 0;
        std::size_t arg = 0, count = 0;
        std::vector<std::size_t> window;
        for (std::size_t p = 0; p < k.kh; ++p)
          for (std::size_t q = 0; q < k.kw; ++q) {
            const long ih = long(i * k.sh + p) - long(k.ph), iw = long(j * k.sw + q) - long(k.pw);
            if (ih < 0 || iw < 0 || ih >= long(k.H) || iw >= long(k.W)) continue;
            const std::size_t xi = (pl * k.H + std::size_t(ih)) * k.W + std::size_t(iw);
            window.push_back(xi);
            ++count;
            sum += x[xi];
            if (x[xi] > best) {
              best = x[xi];
              arg = xi;
            }
          }
        if (is_max) {
          y[yi] = best;
          dx[arg] += G[yi];
        } else {
          const double d = k.count_include_pad ? double(k.kh * k.kw) : double(count);
          y[yi] = sum / d;
          for (std::size_t xi : window) dx[xi] += G[yi] / d;
        }
      }
  return {y, dx};
}

void check_pool_case(const PoolCase& k, bool is_max, xg::Dtype dt) {
  Tensor x = rnd({k.N, k.C, k.H, k.W}, dt, 11, true);
  Tensor y = is_max ? F::max_pool2d(x, {k.kh, k.kw}, xg::nn::Size2(k.sh, k.sw), {k.ph, k.pw})
                    : F::avg_pool2d(x, {k.kh, k.kw}, xg::nn::Size2(k.sh, k.sw), {k.ph, k.pw}, k.count_include_pad);
  Tensor G = rnd(y.shape(), dt, 12);
  const auto [ry, rdx] = pool_reference(k, is_max, x.to_vector(), G.to_vector());
  const double tol = dt == xg::kFloat32 ? 1e-6 : 1e-14;
  check_close(y.to_vector(), ry, tol);
  y.backward(G);
  check_close(x.grad().to_vector(), rdx, tol);
}

}  // namespace

// ---- Linear --------------------------------------------------------------------------------------------------
TEST_CASE("Linear computes x·Wᵀ + b with PyTorch's [out, in] layout") {
  nn::Linear lin(3, 2);
  CHECK(lin.weight.shape() == Shape{2, 3});
  CHECK(lin.bias.shape() == Shape{2});
  Tensor x = rnd({4, 3}, xg::kFloat32, 5);
  const Tensor y = lin.forward(x);
  for (std::ptrdiff_t n = 0; n < 4; ++n)
    for (std::ptrdiff_t o = 0; o < 2; ++o) {
      double ref = lin.bias.at({o});
      for (std::ptrdiff_t i = 0; i < 3; ++i) ref += x.at({n, i}) * lin.weight.at({o, i});
      CHECK(y.at({n, o}) == doctest::Approx(ref).epsilon(1e-6));
    }
  nn::Linear nb(nn::LinearOptions(3, 2).bias(false));
  CHECK_FALSE(nb.bias.defined());
  CHECK(nb.parameters().size() == 1);
  CHECK(nb.state_dict().keys() == std::vector<std::string>{"weight"});
  CHECK_THROWS_WITH_AS(lin.forward(rnd({4, 5}, xg::kFloat32, 1)), doctest::Contains("must end in in_features = 3"),
                       xg::Error);
}

TEST_CASE("gradcheck: Linear with and without bias, batched input") {
  for (bool bias : {true, false}) {
    nn::Linear lin(nn::LinearOptions(4, 3).bias(bias));
    lin.to(xg::kFloat64);
    auto params = lin.parameters();
    std::vector<Tensor> inputs{rnd({2, 5, 4}, xg::kFloat64, 7, true)};
    inputs.insert(inputs.end(), params.begin(), params.end());
    auto r = xg::gradcheck([&](const std::vector<Tensor>&) { return lin.forward(inputs[0]); }, inputs);
    CHECK(r.ok);
  }
}

TEST_CASE("Linear and Conv2d default init is PyTorch's U(-1/sqrt(fan_in), 1/sqrt(fan_in)), seeded") {
  xg::manual_seed(42);
  nn::Linear a(50, 40);
  xg::manual_seed(42);
  nn::Linear b(50, 40);
  CHECK(a.weight.to_vector() == b.weight.to_vector());  // one seed, same weights
  CHECK(a.bias.to_vector() == b.bias.to_vector());
  const double bound = 1.0 / std::sqrt(50.0);
  double mx = 0, sum_sq = 0;
  for (double v : a.weight.to_vector()) {
    mx = std::max(mx, std::abs(v));
    sum_sq += v * v;
  }
  CHECK(mx <= bound);
  CHECK(mx > 0.95 * bound);
  // U(-b, b) has variance b²/3
  CHECK(sum_sq / 2000.0 == doctest::Approx(bound * bound / 3).epsilon(0.1));
  for (double v : a.bias.to_vector()) CHECK(std::abs(v) <= bound);

  nn::Conv2d conv(nn::Conv2dOptions(4, 6, {3, 2}));
  const double cb = 1.0 / std::sqrt(4.0 * 3 * 2);
  for (double v : conv.weight.to_vector()) CHECK(std::abs(v) <= cb);
  for (double v : conv.bias.to_vector()) CHECK(std::abs(v) <= cb);
  xg::Generator g1(9), g2(9);
  conv.reset_parameters(&g1);
  const auto w1 = conv.weight.to_vector();
  conv.reset_parameters(&g2);
  CHECK(conv.weight.to_vector() == w1);
}

// ---- Conv2d -------------------------------------------------------------------------------------------------
TEST_CASE("conv2d forward and backward match the direct loops (stride, padding, no bias, odd sizes)") {
  const std::vector<ConvCase> cases{
      {2, 3, 6, 6, 4, 3, 3, 1, 1, 1, 1, true},   // the CNN's 3x3 pad 1
      {1, 2, 7, 9, 3, 3, 2, 2, 2, 0, 0, true},   // odd sizes, rectangular kernel, stride 2
      {2, 1, 5, 5, 2, 3, 3, 1, 1, 0, 0, false},  // no bias
      {1, 3, 8, 5, 2, 5, 3, 2, 1, 2, 1, true},   // big kernel, padding, mixed strides
      {2, 4, 3, 3, 5, 1, 1, 1, 1, 0, 0, true},   // 1x1 (pointwise fast path)
      {1, 2, 4, 4, 2, 1, 1, 2, 2, 0, 0, false},  // 1x1 stride 2 (not pointwise)
      {1, 1, 2, 3, 1, 3, 3, 3, 3, 1, 1, true},   // kernel larger than the image, only padding makes it fit
      {2, 3, 5, 6, 2, 5, 3, 1, 1, 2, 1, true},   // "same" size, rectangular kernel (the shifted-plane path)
      {1, 2, 2, 2, 3, 7, 7, 1, 1, 3, 3, true},   // "same" size with padding wider than the image
  };
  for (const auto& k : cases) {
    check_conv_case(k, xg::kFloat64);
    check_conv_case(k, xg::kFloat32);
  }
}

TEST_CASE("gradcheck: Conv2d module w.r.t. input, weight and bias") {
  nn::Conv2d conv(nn::Conv2dOptions(2, 3, 3).stride(2).padding(1));
  conv.to(xg::kFloat64);
  std::vector<Tensor> in{rnd({2, 2, 5, 4}, xg::kFloat64, 3, true), conv.weight, conv.bias};
  CHECK(xg::gradcheck([&](const std::vector<Tensor>&) { return conv.forward(in[0]); }, in).ok);
  nn::Conv2d pw(nn::Conv2dOptions(3, 2, 1).bias(false));
  pw.to(xg::kFloat64);
  std::vector<Tensor> in2{rnd({2, 3, 3, 3}, xg::kFloat64, 4, true), pw.weight};
  CHECK(xg::gradcheck([&](const std::vector<Tensor>&) { return pw.forward(in2[0]); }, in2).ok);
}

TEST_CASE("conv2d with no output channels: empty output, zero input gradient") {
  Tensor x = xg::ones({2, 3, 4, 4}, xg::kFloat64);
  x.requires_grad_();
  for (std::size_t k : {1, 3}) {  // the pointwise and the same-size paths
    x.zero_grad(true);
    Tensor w = xg::zeros({0, 3, k, k}, xg::kFloat64);
    Tensor y = F::conv2d(x, w, Tensor(), 1, k / 2);
    CHECK(y.shape() == Shape{2, 0, 4, 4});
    y.backward(xg::zeros(y.shape(), xg::kFloat64));
    CHECK(x.grad().to_vector() == std::vector<double>(2 * 3 * 4 * 4, 0.0));
  }
}

TEST_CASE("conv2d errors name the shapes") {
  Tensor x = xg::zeros({2, 3, 5, 5});
  CHECK_THROWS_WITH_AS(F::conv2d(x, xg::zeros({4, 2, 3, 3})), doctest::Contains("input has 3 channels"), xg::Error);
  CHECK_THROWS_WITH_AS(F::conv2d(xg::zeros({3, 5, 5}), xg::zeros({4, 3, 3, 3})),
                       doctest::Contains("input must be [N, C, H, W], got shape [3,5,5]"), xg::Error);
  CHECK_THROWS_WITH_AS(F::conv2d(x, xg::zeros({4, 3, 7, 7})),
                       doctest::Contains("kernel 7x7 is larger than the padded input 5x5"), xg::Error);
  CHECK_THROWS_WITH_AS(F::conv2d(x, xg::zeros({4, 3, 3, 3}), xg::zeros({3})), doctest::Contains("bias must be [4]"),
                       xg::Error);
  CHECK_THROWS_WITH_AS(F::conv2d(x, xg::zeros({4, 3, 3, 3}, xg::kFloat64)),
                       doctest::Contains("input is float32 but weight is float64"), xg::Error);
  CHECK_THROWS_WITH_AS(F::conv2d(x, xg::zeros({4, 3, 3, 3}), Tensor(), 0), doctest::Contains("stride must be >= 1"),
                       xg::Error);
}

// ---- pooling -------------------------------------------------------------------------------------------------
TEST_CASE("max_pool2d and avg_pool2d match the direct loops, forward and backward") {
  const std::vector<PoolCase> cases{
      {2, 3, 6, 6, 2, 2, 2, 2, 0, 0},         // the CNN's 2x2
      {1, 2, 7, 5, 3, 3, 2, 2, 1, 1},         // odd sizes with padding
      {1, 1, 5, 6, 3, 2, 1, 2, 0, 1},         // overlapping windows, rectangular kernel
      {2, 2, 5, 5, 3, 3, 2, 2, 1, 1, false},  // average without counting the padding
      {1, 2, 5, 7, 2, 2, 2, 2, 0, 0},         // 2x2 on odd sizes: the fast forward, windows not tiling the plane
  };
  for (const auto& k : cases)
    for (bool is_max : {true, false})
      for (auto dt : {xg::kFloat32, xg::kFloat64}) check_pool_case(k, is_max, dt);
}

TEST_CASE("max_pool2d: ties go to the first maximum, NaN propagates") {
  Tensor x = xg::tensor({1, 5, 5, 2}).reshape({1, 1, 2, 2});
  x.requires_grad_();
  Tensor y = F::max_pool2d(x, 2);
  CHECK(y.item() == 5.0);
  y.sum().backward();
  CHECK(x.grad().to_vector() == std::vector<double>{0, 1, 0, 0});
  Tensor z = F::max_pool2d(xg::tensor({1, NAN, 3, 2}).reshape({1, 1, 2, 2}), 2);
  CHECK(std::isnan(z.item()));
}

TEST_CASE("gradcheck: pooling modules") {
  nn::MaxPool2d mp(nn::MaxPool2dOptions(3).stride(2).padding(1));
  nn::AvgPool2d ap(nn::AvgPool2dOptions({2, 3}).stride(xg::nn::Size2(1, 2)).padding({1, 1}).count_include_pad(false));
  std::vector<Tensor> in{rnd({2, 2, 5, 5}, xg::kFloat64, 21, true)};
  CHECK(xg::gradcheck([&](const std::vector<Tensor>& v) { return mp.forward(v[0]); }, in).ok);
  CHECK(xg::gradcheck([&](const std::vector<Tensor>& v) { return ap.forward(v[0]); }, in).ok);
  CHECK_THROWS_WITH_AS(mp.forward(xg::zeros({2, 5, 5})), doctest::Contains("input must be [N, C, H, W]"), xg::Error);
  CHECK_THROWS_WITH_AS(F::avg_pool2d(xg::zeros({1, 1, 2, 2}), 3), doctest::Contains("larger than the padded input"),
                       xg::Error);
}

// ---- activations, Flatten, Identity -------------------------------------------------------------------------
TEST_CASE("activation modules, Flatten and Identity") {
  Tensor x = xg::tensor({-2.0, -0.5, 0.0, 0.5, 3.0});
  const auto v = x.to_vector();
  const auto r = nn::ReLU().forward(x).to_vector(), s = nn::Sigmoid().forward(x).to_vector(),
             t = nn::Tanh().forward(x).to_vector();
  for (std::size_t i = 0; i < v.size(); ++i) {
    CHECK(r[i] == std::max(v[i], 0.0));
    CHECK(s[i] == doctest::Approx(1 / (1 + std::exp(-v[i]))).epsilon(1e-6));
    CHECK(t[i] == doctest::Approx(std::tanh(v[i])).epsilon(1e-6));
  }
  std::vector<Tensor> in{rnd({3, 4}, xg::kFloat64, 8, true)};
  CHECK(xg::gradcheck([](const std::vector<Tensor>& a) { return nn::Sigmoid().forward(a[0]); }, in).ok);
  CHECK(xg::gradcheck([](const std::vector<Tensor>& a) { return nn::Tanh().forward(a[0]); }, in).ok);
  CHECK(xg::gradcheck([](const std::vector<Tensor>& a) { return nn::ReLU().forward(a[0]); }, in).ok);

  Tensor img = rnd({2, 3, 4, 5}, xg::kFloat32, 9);
  CHECK(nn::Flatten().forward(img).shape() == Shape{2, 60});
  CHECK(nn::Flatten(nn::FlattenOptions().start_dim(2)).forward(img).shape() == Shape{2, 3, 20});
  CHECK(nn::Flatten().forward(img).to_vector() == img.to_vector());
  nn::Identity id;
  CHECK(id.forward(img).impl() == img.impl());
  CHECK(xg::gradcheck([&](const std::vector<Tensor>& a) { return id.forward(a[0]) * 3.0; }, in).ok);
  std::vector<Tensor> in4{rnd({2, 3, 2, 2}, xg::kFloat64, 10, true)};
  CHECK(xg::gradcheck([](const std::vector<Tensor>& a) { return nn::Flatten().forward(a[0]); }, in4).ok);
}

// ---- Dropout --------------------------------------------------------------------------------------------------
TEST_CASE("Dropout: inverted scaling, seeded masks, identity in eval") {
  Tensor x = xg::ones({100, 100});
  xg::Generator g1(5), g2(5), g3(6);
  const auto a = F::dropout(x, 0.3, true, &g1).to_vector();
  const auto b = F::dropout(x, 0.3, true, &g2).to_vector();
  const auto c = F::dropout(x, 0.3, true, &g3).to_vector();
  CHECK(a == b);  // same seed, same mask
  CHECK(a != c);
  std::size_t kept = 0;
  for (double v : a) {
    const bool ok = v == 0.0 || v == doctest::Approx(1 / 0.7).epsilon(1e-6);
    CHECK(ok);
    if (v != 0.0) ++kept;
  }
  CHECK(double(kept) / 10000.0 == doctest::Approx(0.7).epsilon(0.03));

  xg::Generator gm(1);
  nn::Dropout drop(nn::DropoutOptions(0.5).generator(&gm));
  drop.eval();
  CHECK(drop.forward(x).impl() == x.impl());  // eval: the input itself
  drop.train();
  Tensor xr = rnd({4, 6}, xg::kFloat32, 2, true);
  Tensor y = drop.forward(xr);
  y.sum().backward();
  // d y / d x is the mask itself: 0 or 1/(1-p)
  const auto yv = y.to_vector(), xv = xr.to_vector(), gv = xr.grad().to_vector();
  for (std::size_t i = 0; i < yv.size(); ++i) CHECK(yv[i] == doctest::Approx(xv[i] * gv[i]));
  CHECK(F::dropout(x, 0.0, true).impl() == x.impl());
  for (double v : F::dropout(x, 1.0, true).to_vector()) CHECK(v == 0.0);
  CHECK_THROWS_WITH_AS(F::dropout(x, -0.1), doctest::Contains("p must be in [0, 1], got -0.1"), xg::Error);

  // gradcheck with a mask that is the same on every evaluation (a fresh generator each time)
  std::vector<Tensor> in{rnd({3, 5}, xg::kFloat64, 3, true)};
  CHECK(xg::gradcheck(
            [](const std::vector<Tensor>& v) {
              xg::Generator g(77);
              return F::dropout(v[0], 0.4, true, &g);
            },
            in)
            .ok);
}

// ---- init -----------------------------------------------------------------------------------------------------
TEST_CASE("nn::init functions fill in place with the documented distributions") {
  namespace init = xg::nn::init;
  xg::Generator g(123);
  Tensor t = xg::zeros({200, 100});
  const auto impl = t.impl();
  init::uniform_(t, -2, 3, &g);
  CHECK(t.impl() == impl);
  double mn = 1e9, mx = -1e9, sum = 0, sq = 0;
  for (double v : t.to_vector()) {
    mn = std::min(mn, v);
    mx = std::max(mx, v);
  }
  CHECK(mn >= -2.0);
  CHECK(mx < 3.0);
  auto stats = [&](const Tensor& u) {
    sum = sq = 0;
    const auto v = u.to_vector();
    for (double e : v) sum += e;
    const double m = sum / double(v.size());
    for (double e : v) sq += (e - m) * (e - m);
    return std::pair{m, std::sqrt(sq / double(v.size()))};
  };
  init::normal_(t, 1.5, 0.5, &g);
  auto [m1, s1] = stats(t);
  CHECK(m1 == doctest::Approx(1.5).epsilon(0.01));
  CHECK(s1 == doctest::Approx(0.5).epsilon(0.02));
  // fan_in = 100, fan_out = 200
  init::xavier_uniform_(t, 2.0, &g);
  const double a = 2.0 * std::sqrt(6.0 / 300.0);
  for (double v : t.to_vector()) CHECK(std::abs(v) <= a);
  init::xavier_normal_(t, 1.0, &g);
  CHECK(stats(t).second == doctest::Approx(std::sqrt(2.0 / 300.0)).epsilon(0.02));
  init::kaiming_normal_(t, 0.0, init::FanMode::FanOut, init::Nonlinearity::ReLU, &g);
  CHECK(stats(t).second == doctest::Approx(std::sqrt(2.0) / std::sqrt(200.0)).epsilon(0.02));
  init::kaiming_uniform_(t, 0.0, init::FanMode::FanIn, init::Nonlinearity::ReLU, &g);
  const double kb = std::sqrt(2.0) * std::sqrt(3.0 / 100.0);
  for (double v : t.to_vector()) CHECK(std::abs(v) <= kb);
  CHECK(stats(t).second == doctest::Approx(kb / std::sqrt(3.0)).epsilon(0.02));
  init::constant_(t, 0.25);
  for (double v : t.to_vector()) CHECK(v == 0.25);
  init::ones_(t);
  CHECK(t.sum().item() == 20000.0);
  init::zeros_(t);
  CHECK(t.sum().item() == 0.0);
  CHECK(init::calculate_gain(init::Nonlinearity::Tanh) == doctest::Approx(5.0 / 3.0));
  CHECK(init::calculate_gain(init::Nonlinearity::LeakyReLU, std::sqrt(5.0)) == doctest::Approx(std::sqrt(1.0 / 3.0)));
  CHECK(init::calculate_fan_in_and_fan_out(xg::zeros({8, 3, 5, 5})) == std::pair<std::size_t, std::size_t>{75, 200});
  CHECK_THROWS_WITH_AS(init::xavier_uniform_(xg::zeros({5})), doctest::Contains("at least 2 dimensions, got shape [5]"),
                       xg::Error);
  CHECK_THROWS_WITH_AS(init::normal_(t, 0, -1), doctest::Contains("std must be >= 0"), xg::Error);
  // the same seed gives the same values
  xg::Generator h1(4), h2(4);
  Tensor u1 = xg::zeros({10, 10}), u2 = xg::zeros({10, 10});
  init::kaiming_uniform_(u1, std::sqrt(5.0), init::FanMode::FanIn, init::Nonlinearity::LeakyReLU, &h1);
  init::kaiming_uniform_(u2, std::sqrt(5.0), init::FanMode::FanIn, init::Nonlinearity::LeakyReLU, &h2);
  CHECK(u1.to_vector() == u2.to_vector());
}
