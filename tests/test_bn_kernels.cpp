// Tests of the hand-fused BatchNorm kernels (xgrad/kernels/batchnorm.h) and of xg::parallel_for.
//
// Every expected value comes from a naive reference written below in long double loops (two-pass statistics,
// the textbook formulas) on the same inputs; nothing is hard-coded. Tolerances (max-norm relative error,
// max|got - ref| / max|ref|): float64 1e-10, float32 1e-4 (see docs/batchnorm-fused.md).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "xgrad/kernels/batchnorm.h"
#include "xgrad/parallel.h"

using xg::kernels::BnDims;
using LD = long double;

namespace {

// ----------------------------------------------------------------------------------------------- reference
struct RefFwd {
  std::vector<LD> y, mean, invstd, rm, rv;
};

// x, w, b, rm0, rv0 as given (w/b may be empty: affine=false). m = N*S values per channel.
template <class T>
RefFwd ref_forward_train(const std::vector<T>& x, const std::vector<T>& w, const std::vector<T>& b,
                         const std::vector<T>& rm0, const std::vector<T>& rv0, BnDims d, double eps, double f) {
  RefFwd r;
  r.y.assign(x.size(), 0);
  r.mean.assign(d.C, 0);
  r.invstd.assign(d.C, 0);
  r.rm.assign(d.C, 0);
  r.rv.assign(d.C, 0);
  const LD m = LD(d.N * d.S);
  for (std::size_t c = 0; c < d.C; ++c) {
    LD s = 0;
    for (std::size_t n = 0; n < d.N; ++n)
      for (std::size_t k = 0; k < d.S; ++k) s += x[(n * d.C + c) * d.S + k];
    const LD mean = s / m;
    LD q = 0;
    for (std::size_t n = 0; n < d.N; ++n)
      for (std::size_t k = 0; k < d.S; ++k) {
        const LD dd = x[(n * d.C + c) * d.S + k] - mean;
        q += dd * dd;
      }
    const LD var = q / m;
    const LD invstd = 1.0L / std::sqrt(var + LD(eps));
    const LD wc = w.empty() ? 1.0L : LD(w[c]), bc = b.empty() ? 0.0L : LD(b[c]);
    for (std::size_t n = 0; n < d.N; ++n)
      for (std::size_t k = 0; k < d.S; ++k) {
        const std::size_t i = (n * d.C + c) * d.S + k;
        r.y[i] = (x[i] - mean) * invstd * wc + bc;
      }
    r.mean[c] = mean;
    r.invstd[c] = invstd;
    if (!rm0.empty()) r.rm[c] = (1 - LD(f)) * rm0[c] + LD(f) * mean;
    if (!rv0.empty()) r.rv[c] = (1 - LD(f)) * rv0[c] + LD(f) * (m > 1 ? q / (m - 1) : 0);
  }
  return r;
}

template <class T>
std::vector<LD> ref_forward_eval(const std::vector<T>& x, const std::vector<T>& w, const std::vector<T>& b,
                                 const std::vector<T>& rm, const std::vector<T>& rv, BnDims d, double eps) {
  std::vector<LD> y(x.size());
  for (std::size_t n = 0; n < d.N; ++n)
    for (std::size_t c = 0; c < d.C; ++c)
      for (std::size_t k = 0; k < d.S; ++k) {
        const std::size_t i = (n * d.C + c) * d.S + k;
        const LD wc = w.empty() ? 1.0L : LD(w[c]), bc = b.empty() ? 0.0L : LD(b[c]);
        y[i] = (x[i] - LD(rm[c])) / std::sqrt(LD(rv[c]) + LD(eps)) * wc + bc;
      }
  return y;
}

struct RefBwd {
  std::vector<LD> dx, dw, db;
};

// Backward from the given (saved) mean/invstd: xhat = (x-mean)*invstd, db = sum dy, dw = sum dy*xhat,
// dx = w*invstd*(dy - mean(dy) - xhat*mean(dy*xhat)).
template <class T>
RefBwd ref_backward(const std::vector<T>& dy, const std::vector<T>& x, const std::vector<T>& w,
                    const std::vector<T>& mean, const std::vector<T>& invstd, BnDims d) {
  RefBwd r;
  r.dx.assign(x.size(), 0);
  r.dw.assign(d.C, 0);
  r.db.assign(d.C, 0);
  const LD m = LD(d.N * d.S);
  for (std::size_t c = 0; c < d.C; ++c) {
    LD sdy = 0, sdyx = 0;
    for (std::size_t n = 0; n < d.N; ++n)
      for (std::size_t k = 0; k < d.S; ++k) {
        const std::size_t i = (n * d.C + c) * d.S + k;
        sdy += dy[i];
        sdyx += LD(dy[i]) * (LD(x[i]) - mean[c]) * LD(invstd[c]);
      }
    r.db[c] = sdy;
    r.dw[c] = sdyx;
    const LD wc = w.empty() ? 1.0L : LD(w[c]);
    for (std::size_t n = 0; n < d.N; ++n)
      for (std::size_t k = 0; k < d.S; ++k) {
        const std::size_t i = (n * d.C + c) * d.S + k;
        const LD xhat = (LD(x[i]) - mean[c]) * LD(invstd[c]);
        r.dx[i] = wc * LD(invstd[c]) * (LD(dy[i]) - sdy / m - xhat * sdyx / m);
      }
  }
  return r;
}

// ----------------------------------------------------------------------------------------------- helpers
// max|got - ref| / max(max|ref|, floor). The floor is for outputs that cancel to ~0 (dx of a 2-value
// channel): their error is judged against the size of the terms that cancelled.
template <class T>
double max_rel_err(const std::vector<T>& got, const std::vector<LD>& ref, LD floor = 0) {
  REQUIRE(got.size() == ref.size());
  LD scale = floor, err = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    scale = std::max(scale, std::fabs(ref[i]));
    const LD e = std::fabs(LD(got[i]) - ref[i]);
    if (!(e <= err)) err = e;  // NaN-propagating max
  }
  return double(scale > 0 ? err / scale : err);
}

// Tolerances relative to each output's scale. float32: docs/ops.md ("Accuracy of reductions") bounds every float32
// partial sum of the kernels' statistics by 300 additions, i.e. 300 u_f relative to the chunk's sums, for any
// vector width; mean, invstd (through 1/sqrt: half the relative error of var) and y = (x - mean) * invstd * w + b
// each add at most that much again plus a few roundings, so 4 * 300 u_f (7.2e-5) covers every output. float64:
// the same reasoning with u_d gives ~1e-13; 1e-10 leaves room for the reference's own long-double rounding.
template <class T>
double tol() {
  return sizeof(T) == 8 ? 1e-10 : 4 * 300 * 0x1p-24;
}

template <class T>
std::vector<T> randn(std::size_t n, std::mt19937& g, double mean = 0, double sd = 1) {
  std::normal_distribution<double> dist(mean, sd);
  std::vector<T> v(n);
  for (auto& e : v) e = T(dist(g));
  return v;
}

// Input with a different mean/std per channel, so channel mix-ups show.
template <class T>
std::vector<T> make_input(BnDims d, std::mt19937& g) {
  std::vector<T> x(d.N * d.C * d.S);
  std::normal_distribution<double> dist(0, 1);
  for (std::size_t n = 0; n < d.N; ++n)
    for (std::size_t c = 0; c < d.C; ++c)
      for (std::size_t k = 0; k < d.S; ++k)
        x[(n * d.C + c) * d.S + k] = T(0.5 * double(c % 7) - 1.0 + (0.5 + 0.25 * double(c % 5)) * dist(g));
  return x;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

struct ThreadsGuard {  // restores the thread count a test changed
  int saved = xg::get_num_threads();
  ~ThreadsGuard() { xg::set_num_threads(saved); }
};

std::string shape_str(BnDims d) {
  return std::to_string(d.N) + "x" + std::to_string(d.C) + "x" + std::to_string(d.S);
}

// Shapes: tiny, channels not a multiple of the SIMD width (16 floats / 8 doubles), odd S, S beyond one
// 16 KiB chunk, many rows (several chunks and groups), N = 1 with S > 1.
const std::vector<BnDims> kShapes = {
    {2, 1, 1},  {2, 3, 1},   {60, 100, 1}, {5, 17, 1},   {7, 33, 1},    {300, 3, 1},  {1000, 70, 1},
    {3, 17, 5}, {4, 3, 7},   {2, 5, 33},   {1, 3, 31},   {6, 2, 1031},  {3, 2, 5003}, {257, 3, 9},
    {64, 4, 64}, {2, 1, 2},  {33, 1, 1},   {129, 65, 1}, {2, 70000, 1}, {200, 2, 100},
};

// ----------------------------------------------------------------------------------------------- checks
template <class T>
void check_forward_train(BnDims d, bool affine, bool running, std::uint32_t seed) {
  CAPTURE(shape_str(d));
  CAPTURE(affine);
  CAPTURE(running);
  std::mt19937 g(seed);
  const auto x = make_input<T>(d, g);
  std::vector<T> w, b, rm, rv;
  if (affine) {
    w = randn<T>(d.C, g, 1.0, 0.5);
    b = randn<T>(d.C, g);
  }
  if (running) {
    rm = randn<T>(d.C, g);
    rv = randn<T>(d.C, g, 2.0, 0.1);
  }
  const double eps = 1e-5, f = 0.1;
  const RefFwd ref = ref_forward_train(x, w, b, rm, rv, d, eps, f);
  std::vector<T> y(x.size()), mean(d.C), invstd(d.C);
  xg::kernels::batch_norm_forward_train(x.data(), affine ? w.data() : nullptr, affine ? b.data() : nullptr,
                                        y.data(), mean.data(), invstd.data(), running ? rm.data() : nullptr,
                                        running ? rv.data() : nullptr, d, eps, f);
  CHECK(max_rel_err(y, ref.y) <= tol<T>());
  CHECK(max_rel_err(mean, ref.mean) <= tol<T>());
  CHECK(max_rel_err(invstd, ref.invstd) <= tol<T>());
  if (running) {
    CHECK(max_rel_err(rm, ref.rm) <= tol<T>());
    CHECK(max_rel_err(rv, ref.rv) <= tol<T>());
  }
}

template <class T>
void check_eval(BnDims d, bool affine, std::uint32_t seed) {
  CAPTURE(shape_str(d));
  std::mt19937 g(seed);
  const auto x = make_input<T>(d, g);
  std::vector<T> w, b;
  if (affine) {
    w = randn<T>(d.C, g, 1.0, 0.5);
    b = randn<T>(d.C, g);
  }
  const auto rm = randn<T>(d.C, g);
  const auto rv = randn<T>(d.C, g, 2.0, 0.3);
  const double eps = 1e-3;
  const auto ref = ref_forward_eval(x, w, b, rm, rv, d, eps);
  std::vector<T> y(x.size());
  xg::kernels::batch_norm_forward_eval(x.data(), affine ? w.data() : nullptr, affine ? b.data() : nullptr,
                                       rm.data(), rv.data(), y.data(), d, eps);
  CHECK(max_rel_err(y, ref) <= tol<T>());
  // in place gives the same bits
  std::vector<T> z = x;
  xg::kernels::batch_norm_forward_eval(z.data(), affine ? w.data() : nullptr, affine ? b.data() : nullptr,
                                       rm.data(), rv.data(), z.data(), d, eps);
  CHECK(same_bits(z, y));
}

// mask bit 0: dx, bit 1: dweight, bit 2: dbias
template <class T>
void check_backward(BnDims d, bool affine, int mask, std::uint32_t seed) {
  CAPTURE(shape_str(d));
  CAPTURE(affine);
  CAPTURE(mask);
  std::mt19937 g(seed);
  const auto x = make_input<T>(d, g);
  const auto dy = randn<T>(x.size(), g);
  std::vector<T> w;
  if (affine) w = randn<T>(d.C, g, 1.0, 0.5);
  // saved statistics from the reference forward, rounded to T (isolates the backward)
  const RefFwd fw = ref_forward_train(x, std::vector<T>{}, std::vector<T>{}, std::vector<T>{}, std::vector<T>{}, d,
                                      1e-5, 0.1);
  std::vector<T> mean(d.C), invstd(d.C);
  for (std::size_t c = 0; c < d.C; ++c) {
    mean[c] = T(fw.mean[c]);
    invstd[c] = T(fw.invstd[c]);
  }
  const RefBwd ref = ref_backward(dy, x, w, mean, invstd, d);
  const T sentinel = T(-12345.5);
  std::vector<T> dx(x.size(), sentinel), dw(d.C, sentinel), db(d.C, sentinel);
  const bool want_dx = mask & 1, want_dw = mask & 2, want_db = mask & 4;
  // only dbias needs no x at all: pass nullptr to prove it is not read
  const T* xp = (want_dx || want_dw) ? x.data() : nullptr;
  xg::kernels::batch_norm_backward(dy.data(), xp, affine ? w.data() : nullptr, mean.data(), invstd.data(),
                                   want_dx ? dx.data() : nullptr, want_dw ? dw.data() : nullptr,
                                   want_db ? db.data() : nullptr, d);
  LD term = 0;  // largest term of dx: |w*invstd*dy|
  for (std::size_t i = 0; i < x.size(); ++i) {
    const std::size_t c = (i / d.S) % d.C;
    term = std::max(term, std::fabs((w.empty() ? 1.0L : LD(w[c])) * LD(invstd[c]) * LD(dy[i])));
  }
  if (want_dx) CHECK(max_rel_err(dx, ref.dx, term) <= tol<T>());
  else CHECK(std::all_of(dx.begin(), dx.end(), [&](T v) { return v == sentinel; }));
  if (want_dw) CHECK(max_rel_err(dw, ref.dw) <= tol<T>());
  else CHECK(std::all_of(dw.begin(), dw.end(), [&](T v) { return v == sentinel; }));
  if (want_db) CHECK(max_rel_err(db, ref.db) <= tol<T>());
  else CHECK(std::all_of(db.begin(), db.end(), [&](T v) { return v == sentinel; }));
}

// All outputs of forward-train, eval and backward for one thread count.
template <class T>
struct AllOut {
  std::vector<T> y, mean, invstd, rm, rv, ye, dx, dw, db;
};

template <class T>
AllOut<T> run_all(BnDims d, int threads, std::uint32_t seed) {
  xg::set_num_threads(threads);
  std::mt19937 g(seed);
  const auto x = make_input<T>(d, g);
  const auto dy = randn<T>(x.size(), g);
  const auto w = randn<T>(d.C, g, 1.0, 0.5), b = randn<T>(d.C, g);
  AllOut<T> o;
  o.rm = randn<T>(d.C, g);
  o.rv = randn<T>(d.C, g, 2.0, 0.1);
  o.y.resize(x.size());
  o.ye.resize(x.size());
  o.dx.resize(x.size());
  o.mean.resize(d.C);
  o.invstd.resize(d.C);
  o.dw.resize(d.C);
  o.db.resize(d.C);
  xg::kernels::batch_norm_forward_train(x.data(), w.data(), b.data(), o.y.data(), o.mean.data(), o.invstd.data(),
                                        o.rm.data(), o.rv.data(), d, 1e-5, 0.1);
  xg::kernels::batch_norm_forward_eval(x.data(), w.data(), b.data(), o.rm.data(), o.rv.data(), o.ye.data(), d, 1e-5);
  xg::kernels::batch_norm_backward(dy.data(), x.data(), w.data(), o.mean.data(), o.invstd.data(), o.dx.data(),
                                   o.dw.data(), o.db.data(), d);
  return o;
}

template <class T>
void check_thread_determinism(BnDims d) {
  CAPTURE(shape_str(d));
  ThreadsGuard guard;
  const AllOut<T> a = run_all<T>(d, 1, 99);
  for (int t : {2, 3}) {
    CAPTURE(t);
    const AllOut<T> b = run_all<T>(d, t, 99);
    CHECK(same_bits(a.y, b.y));
    CHECK(same_bits(a.mean, b.mean));
    CHECK(same_bits(a.invstd, b.invstd));
    CHECK(same_bits(a.rm, b.rm));
    CHECK(same_bits(a.rv, b.rv));
    CHECK(same_bits(a.ye, b.ye));
    CHECK(same_bits(a.dx, b.dx));
    CHECK(same_bits(a.dw, b.dw));
    CHECK(same_bits(a.db, b.db));
  }
}

template <class T>
void check_offset_channel(BnDims d) {
  // mean 1e4, std 1e-2: E[x^2] - E[x]^2 would lose every digit in float; the shifted two-pass must not.
  CAPTURE(shape_str(d));
  std::mt19937 g(7);
  const auto x = randn<T>(d.N * d.C * d.S, g, 1e4, 1e-2);
  const double eps = 1e-12;  // tiny, so the normalised output must have unit variance
  const RefFwd ref = ref_forward_train(x, std::vector<T>{}, std::vector<T>{}, std::vector<T>(d.C, T(0)),
                                       std::vector<T>(d.C, T(1)), d, eps, 0.1);
  std::vector<T> y(x.size()), mean(d.C), invstd(d.C), rm(d.C, T(0)), rv(d.C, T(1));
  xg::kernels::batch_norm_forward_train(x.data(), static_cast<const T*>(nullptr), static_cast<const T*>(nullptr),
                                        y.data(), mean.data(), invstd.data(), rm.data(), rv.data(), d, eps, 0.1);
  const LD m = LD(d.N * d.S);
  for (std::size_t c = 0; c < d.C; ++c) {
    CAPTURE(c);
    const LD var_ref = 1.0L / (ref.invstd[c] * ref.invstd[c]);
    const LD var_got = 1.0L / (LD(invstd[c]) * LD(invstd[c]));
    CHECK(double(std::fabs(var_got / var_ref - 1)) <= 1e-4);  // relative error of the variance
    // save_mean is within one ulp of the exact mean in float (the double mean, rounded), within a few ulps in
    // double (rounding of the chunk combines; 16 ulps = 4e-15 relative)
    const LD ulp = LD(std::nextafter(mean[c], std::numeric_limits<T>::infinity()) - mean[c]);
    CHECK(double(std::fabs(LD(mean[c]) - ref.mean[c])) <= double((sizeof(T) == 4 ? 1 : 16) * ulp));
    // running_var got f * unbiased var (+ 0.9 * 1): compare the increment
    const LD rv_inc_ref = ref.rv[c] - 0.9L, rv_inc_got = LD(rv[c]) - 0.9L;
    CHECK(double(std::fabs(rv_inc_got / rv_inc_ref - 1)) <= 1e-2);  // float rounding of 0.9 + 1e-5 limits this
    LD s = 0, q = 0;
    for (std::size_t n = 0; n < d.N; ++n)
      for (std::size_t k = 0; k < d.S; ++k) s += y[(n * d.C + c) * d.S + k];
    const LD ym = s / m;
    for (std::size_t n = 0; n < d.N; ++n)
      for (std::size_t k = 0; k < d.S; ++k) {
        const LD e = y[(n * d.C + c) * d.S + k] - ym;
        q += e * e;
      }
    CHECK(double(std::fabs(q / m - 1)) <= 1e-3);  // normalised output has unit variance
    CHECK(double(std::fabs(ym)) <= 1e-3);
  }
  CHECK(max_rel_err(y, ref.y) <= 1e-3);

  // Backward from the kernel's own (T-rounded) saved statistics against the exact long-double gradient:
  // the kernel re-centres on the exact batch mean, so the mean's rounding (5% of a std here) does not leak.
  std::mt19937 g2(8);
  const auto dy = randn<T>(x.size(), g2);
  std::vector<T> ms(d.C), is(d.C);
  for (std::size_t c = 0; c < d.C; ++c) {
    ms[c] = T(ref.mean[c]);
    is[c] = T(ref.invstd[c]);
  }
  RefBwd exact;
  {
    // reference with the exact mean/invstd: ref_backward with long-double statistics
    exact.dx.assign(x.size(), 0);
    exact.dw.assign(d.C, 0);
    exact.db.assign(d.C, 0);
    for (std::size_t c = 0; c < d.C; ++c) {
      LD sdy = 0, sdyx = 0;
      for (std::size_t n = 0; n < d.N; ++n)
        for (std::size_t k = 0; k < d.S; ++k) {
          const std::size_t i = (n * d.C + c) * d.S + k;
          sdy += dy[i];
          sdyx += LD(dy[i]) * (LD(x[i]) - ref.mean[c]) * ref.invstd[c];
        }
      exact.db[c] = sdy;
      exact.dw[c] = sdyx;
      for (std::size_t n = 0; n < d.N; ++n)
        for (std::size_t k = 0; k < d.S; ++k) {
          const std::size_t i = (n * d.C + c) * d.S + k;
          const LD xhat = (LD(x[i]) - ref.mean[c]) * ref.invstd[c];
          exact.dx[i] = ref.invstd[c] * (LD(dy[i]) - sdy / m - xhat * sdyx / m);
        }
    }
  }
  std::vector<T> dx(x.size()), dw(d.C), db(d.C);
  xg::kernels::batch_norm_backward(dy.data(), x.data(), static_cast<const T*>(nullptr), ms.data(), is.data(),
                                   dx.data(), dw.data(), db.data(), d);
  CHECK(max_rel_err(dx, exact.dx) <= tol<T>());
  CHECK(max_rel_err(dw, exact.dw, std::sqrt(m)) <= tol<T>());  // dw ~ sqrt(m) for random dy
  CHECK(max_rel_err(db, exact.db, std::sqrt(m)) <= tol<T>());
}

template <class T>
void check_constant_channel(BnDims d, T value) {
  CAPTURE(shape_str(d));
  CAPTURE(double(value));
  std::mt19937 g(11);
  auto x = make_input<T>(d, g);
  const std::size_t cc = d.C / 2;  // this channel is constant
  for (std::size_t n = 0; n < d.N; ++n)
    for (std::size_t k = 0; k < d.S; ++k) x[(n * d.C + cc) * d.S + k] = value;
  const auto w = randn<T>(d.C, g, 1.0, 0.5), b = randn<T>(d.C, g);
  std::vector<T> y(x.size()), mean(d.C), invstd(d.C), rm(d.C, T(0)), rv(d.C, T(1));
  xg::kernels::batch_norm_forward_train(x.data(), w.data(), b.data(), y.data(), mean.data(), invstd.data(),
                                        rm.data(), rv.data(), d, 1e-5, 0.1);
  CHECK(mean[cc] == value);
  bool all_bias = true;
  for (std::size_t n = 0; n < d.N; ++n)
    for (std::size_t k = 0; k < d.S; ++k) all_bias = all_bias && (y[(n * d.C + cc) * d.S + k] == b[cc]);
  CHECK(all_bias);
  CHECK(double(rv[cc]) == doctest::Approx(0.9).epsilon(1e-6));  // zero batch variance: 0.9*1 + 0.1*0
  // backward of a constant channel: xhat == 0, so dweight == 0 exactly
  const auto dy = randn<T>(x.size(), g);
  std::vector<T> dx(x.size()), dw(d.C), db(d.C);
  xg::kernels::batch_norm_backward(dy.data(), x.data(), w.data(), mean.data(), invstd.data(), dx.data(), dw.data(),
                                   db.data(), d);
  CHECK(dw[cc] == T(0));
}

}  // namespace

// =========================================================================================== parallel_for
TEST_CASE("parallel_for covers the range exactly once") {
  ThreadsGuard guard;
  for (int t : {1, 2, 3}) {
    xg::set_num_threads(t);
    CHECK(xg::get_num_threads() == t);
    for (std::size_t begin : {0u, 5u})
      for (std::size_t len : {0u, 1u, 2u, 3u, 7u, 100u, 1001u})
        for (std::size_t grain : {0u, 1u, 4u, 1000u}) {
          CAPTURE(t);
          CAPTURE(begin);
          CAPTURE(len);
          CAPTURE(grain);
          std::vector<std::atomic<int>> hits(begin + len + 1);
          std::atomic<int> calls{0};
          xg::parallel_for(begin, begin + len, grain, [&](std::size_t lo, std::size_t hi) {
            CHECK(lo < hi);
            CHECK(lo >= begin);
            CHECK(hi <= begin + len);
            calls.fetch_add(1);
            for (std::size_t i = lo; i < hi; ++i) hits[i].fetch_add(1);
          });
          int bad = 0;
          for (std::size_t i = 0; i < hits.size(); ++i) bad += hits[i].load() != ((i >= begin && i < begin + len) ? 1 : 0);
          CHECK(bad == 0);
          CHECK(calls.load() <= t);
          if (len > 0 && (t == 1 || len <= std::max<std::size_t>(grain, 1))) CHECK(calls.load() == 1);
        }
  }
}

TEST_CASE("parallel_for uses the workers and rethrows their exceptions") {
  ThreadsGuard guard;
  xg::set_num_threads(2);
  std::atomic<int> pieces{0};
  xg::parallel_for(0, 1000, 1, [&](std::size_t, std::size_t) { pieces.fetch_add(1); });
  CHECK(pieces.load() == 2);
  // the second piece (normally run by the worker): its exception must reach the caller
  CHECK_THROWS_AS(xg::parallel_for(0, 1000, 1,
                                   [&](std::size_t lo, std::size_t) {
                                     if (lo > 0) throw std::runtime_error("worker piece failed");
                                   }),
                  std::runtime_error);
  CHECK_THROWS_AS(xg::parallel_for(0, 1000, 1,
                                   [&](std::size_t lo, std::size_t) {
                                     if (lo == 0) throw std::logic_error("caller piece failed");
                                   }),
                  std::logic_error);
  // the pool still works afterwards
  std::atomic<long> sum{0};
  xg::parallel_for(0, 1000, 1, [&](std::size_t lo, std::size_t hi) {
    long s = 0;
    for (std::size_t i = lo; i < hi; ++i) s += long(i);
    sum.fetch_add(s);
  });
  CHECK(sum.load() == 999L * 1000L / 2);
  CHECK_THROWS_AS(xg::set_num_threads(0), std::invalid_argument);
}

TEST_CASE("nested parallel_for runs inline without deadlock") {
  ThreadsGuard guard;
  xg::set_num_threads(2);
  std::vector<std::atomic<int>> hits(64 * 64);
  xg::parallel_for(0, 64, 1, [&](std::size_t lo, std::size_t hi) {
    CHECK(xg::in_parallel_region());
    for (std::size_t i = lo; i < hi; ++i) {
      int inner_calls = 0;
      xg::parallel_for(0, 64, 1, [&](std::size_t a, std::size_t b) {
        ++inner_calls;  // inline: one call, on this thread, no race on the plain int
        for (std::size_t j = a; j < b; ++j) hits[i * 64 + j].fetch_add(1);
      });
      CHECK(inner_calls == 1);
    }
  });
  CHECK(!xg::in_parallel_region());
  CHECK(std::all_of(hits.begin(), hits.end(), [](const std::atomic<int>& h) { return h.load() == 1; }));
}

// ========================================================================================== BN kernels
TEST_CASE_TEMPLATE("bn forward train matches the long-double reference", T, float, double) {
  std::uint32_t seed = 1;
  for (const BnDims& d : kShapes)
    for (bool affine : {true, false}) check_forward_train<T>(d, affine, true, seed++);
  check_forward_train<T>({8, 5, 3}, true, false, 77);   // running stats not tracked
  check_forward_train<T>({1, 4, 1}, true, false, 78);   // one value per channel: fine without running_var
}

// The plain-loop reference of the kernel header (batchnorm_reference.cpp, double accumulation): first checked
// against this file's long-double one, then used as the oracle of the fused kernels.
TEST_CASE_TEMPLATE("bn: the plain-loop reference agrees with the long-double one, and the fused kernels with it", T,
                   float, double) {
  std::uint32_t seed = 900;
  const double tight = sizeof(T) == 8 ? 1e-12 : 1e-6;  // double accumulation, one rounding to T per output
  // the backward references differ by design: ref_backward centres on the saved (rounded) mean, the plain loops
  // on the exact one — an extra (mean - T(mean))*invstd*sum dy in dweight, which a channel of two close values
  // (large invstd) makes visible in float; so dweight is compared tightly in double only
  const auto L = [](const std::vector<T>& v) { return std::vector<LD>(v.begin(), v.end()); };
  for (const BnDims& d : kShapes) {
    CAPTURE(shape_str(d));
    std::mt19937 g(seed++);
    const auto x = make_input<T>(d, g);
    const auto dy = randn<T>(x.size(), g);
    auto w = randn<T>(d.C, g, 1.0, 0.5), b = randn<T>(d.C, g), rm = randn<T>(d.C, g), rv = randn<T>(d.C, g, 2.0, 0.1);
    const RefFwd ld = ref_forward_train(x, w, b, rm, rv, d, 1e-5, 0.1);
    std::vector<T> y(x.size()), mean(d.C), invstd(d.C), rm2 = rm, rv2 = rv;
    xg::kernels::batch_norm_forward_reference(x.data(), w.data(), b.data(), y.data(), mean.data(), invstd.data(),
                                              rm2.data(), rv2.data(), d, 1e-5, 0.1);
    CHECK(max_rel_err(y, ld.y) <= tight);
    CHECK(max_rel_err(mean, ld.mean) <= tight);
    CHECK(max_rel_err(invstd, ld.invstd) <= tight);
    CHECK(max_rel_err(rv2, ld.rv) <= tight);
    std::vector<T> yf(x.size()), meanf(d.C), invstdf(d.C), rmf = rm, rvf = rv;
    xg::kernels::batch_norm_forward_train(x.data(), w.data(), b.data(), yf.data(), meanf.data(), invstdf.data(),
                                          rmf.data(), rvf.data(), d, 1e-5, 0.1);
    CHECK(max_rel_err(yf, L(y)) <= tol<T>());
    CHECK(max_rel_err(meanf, L(mean)) <= tol<T>());
    CHECK(max_rel_err(invstdf, L(invstd)) <= tol<T>());
    CHECK(max_rel_err(rmf, L(rm2)) <= tol<T>());
    CHECK(max_rel_err(rvf, L(rv2)) <= tol<T>());
    const RefBwd lb = ref_backward(dy, x, w, meanf, invstdf, d);
    std::vector<T> dx(x.size()), dw(d.C), db(d.C), dxf(x.size()), dwf(d.C), dbf(d.C);
    xg::kernels::batch_norm_backward_reference(dy.data(), x.data(), w.data(), meanf.data(), invstdf.data(), dx.data(),
                                               dw.data(), db.data(), d);
    xg::kernels::batch_norm_backward(dy.data(), x.data(), w.data(), meanf.data(), invstdf.data(), dxf.data(),
                                     dwf.data(), dbf.data(), d);
    const double m = double(d.N * d.S);
    if (sizeof(T) == 8) CHECK(max_rel_err(dw, lb.dw, std::sqrt(m)) <= tight);
    CHECK(max_rel_err(db, lb.db, std::sqrt(m)) <= tight);
    LD term = 0;  // largest term of dx, |w*invstd*dy|: the scale of dx where it cancels (m = 2)
    for (std::size_t i = 0; i < x.size(); ++i) term = std::max(term, std::fabs(LD(w[(i / d.S) % d.C]) * LD(invstdf[(i / d.S) % d.C]) * LD(dy[i])));
    CHECK(max_rel_err(dxf, L(dx), term) <= tol<T>());
    CHECK(max_rel_err(dwf, L(dw), std::sqrt(m)) <= tol<T>());
    CHECK(max_rel_err(dbf, L(db), std::sqrt(m)) <= tol<T>());
  }
}

TEST_CASE_TEMPLATE("bn forward eval matches the reference", T, float, double) {
  std::uint32_t seed = 100;
  for (const BnDims& d : kShapes)
    for (bool affine : {true, false}) check_eval<T>(d, affine, seed++);
}

TEST_CASE_TEMPLATE("bn backward matches the reference for every subset of outputs", T, float, double) {
  std::uint32_t seed = 200;
  for (const BnDims& d : kShapes)
    for (int mask = 1; mask < 8; ++mask) check_backward<T>(d, /*affine=*/mask != 5, mask, seed++);
  // nothing requested: nothing touched, no crash (null x and dy too)
  xg::kernels::batch_norm_backward<T>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                      BnDims{4, 3, 2});
}

TEST_CASE_TEMPLATE("bn large tensors with unaligned pointers (streaming stores, pieces of S)", T, float, double) {
  // >= 4 MiB outputs take the streaming-store path with alignment peeling; offset pointers by one element.
  const BnDims d{5, 3, sizeof(T) == 4 ? 70001u : 35001u};
  std::mt19937 g(5);
  std::vector<T> xs(d.N * d.C * d.S + 1), ys(xs.size()), dys(xs.size()), dxs(xs.size());
  const auto x0 = make_input<T>(d, g);
  std::copy(x0.begin(), x0.end(), xs.begin() + 1);
  const auto dy0 = randn<T>(x0.size(), g);
  std::copy(dy0.begin(), dy0.end(), dys.begin() + 1);
  const auto w = randn<T>(d.C, g, 1.0, 0.5), b = randn<T>(d.C, g);
  std::vector<T> mean(d.C), invstd(d.C), dw(d.C), db(d.C);
  xg::kernels::batch_norm_forward_train(xs.data() + 1, w.data(), b.data(), ys.data() + 1, mean.data(), invstd.data(),
                                        static_cast<T*>(nullptr), static_cast<T*>(nullptr), d, 1e-5, 0.1);
  const RefFwd ref = ref_forward_train(x0, w, b, std::vector<T>{}, std::vector<T>{}, d, 1e-5, 0.1);
  CHECK(max_rel_err(std::vector<T>(ys.begin() + 1, ys.end()), ref.y) <= tol<T>());
  CHECK(ys[0] == T(0));
  xg::kernels::batch_norm_backward(dys.data() + 1, xs.data() + 1, w.data(), mean.data(), invstd.data(),
                                   dxs.data() + 1, dw.data(), db.data(), d);
  const RefBwd rb = ref_backward(dy0, x0, w, mean, invstd, d);
  CHECK(max_rel_err(std::vector<T>(dxs.begin() + 1, dxs.end()), rb.dx) <= tol<T>());
  CHECK(max_rel_err(dw, rb.dw) <= tol<T>());
  CHECK(max_rel_err(db, rb.db) <= tol<T>());
  CHECK(dxs[0] == T(0));
}

TEST_CASE_TEMPLATE("bn statistics survive mean 1e4, std 1e-2", T, float, double) {
  for (const BnDims& d : {BnDims{64, 3, 256}, BnDims{4096, 20, 1}, BnDims{3, 2, 20000}}) check_offset_channel<T>(d);
}

TEST_CASE_TEMPLATE("bn constant channel gives exactly bias", T, float, double) {
  for (const BnDims& d : {BnDims{2, 3, 1}, BnDims{300, 37, 1}, BnDims{5, 3, 7}, BnDims{8, 4, 1024},
                          BnDims{3, 3, 5000}})
    for (T v : {T(0), T(3.7), T(-0.1), T(1e4 + 0.1), T(1e-3)}) check_constant_channel<T>(d, v);
}

TEST_CASE_TEMPLATE("bn results are bit-identical for 1, 2 and 3 threads", T, float, double) {
  // Shapes large enough to be threaded; C=3 and C=1 take the batch-split schedule with 2 threads,
  // the others split channels. {512, 16, 64} and {64, 8, 1024} are big enough per channel (128 / 256 KiB
  // of floats) that the fused schedule shrinks its channel blocks to fit L2, differently in the forward
  // (re-reads x) and the backward (re-reads dy and x) and for 1, 2 and 3 threads.
  for (const BnDims& d : {BnDims{16, 64, 256}, BnDims{512, 3, 64}, BnDims{8, 1, 9000}, BnDims{4096, 3, 1},
                          BnDims{512, 100, 1}, BnDims{256, 1024, 1}, BnDims{32, 5, 784}, BnDims{60, 100, 1},
                          BnDims{512, 16, 64}, BnDims{64, 8, 1024}})
    check_thread_determinism<T>(d);
}

TEST_CASE_TEMPLATE("bn split steps (local sums -> combine -> finish) equal the fused kernels", T, float, double) {
  ThreadsGuard guard;
  for (int t : {1, 2})
    for (const BnDims& d : {BnDims{40, 6, 49}, BnDims{300, 37, 1}, BnDims{9, 2, 5000}}) {
      CAPTURE(shape_str(d));
      xg::set_num_threads(t);
      std::mt19937 g(3);
      const auto x = make_input<T>(d, g);
      const auto dy = randn<T>(x.size(), g);
      const auto w = randn<T>(d.C, g, 1.0, 0.5), b = randn<T>(d.C, g);
      std::vector<T> y(x.size()), mean(d.C), invstd(d.C), rm(d.C, T(0.5)), rv(d.C, T(2));
      xg::kernels::batch_norm_forward_train(x.data(), w.data(), b.data(), y.data(), mean.data(), invstd.data(),
                                            rm.data(), rv.data(), d, 1e-5, 0.1);
      // the same computation as two "processes", each holding half of the batch, combined with Chan's formula
      const std::size_t n0 = d.N / 2;
      const BnDims d0{n0, d.C, d.S}, d1{d.N - n0, d.C, d.S};
      const std::size_t off1 = n0 * d.C * d.S;
      std::vector<xg::kernels::BnMoments> m0(d.C), m1(d.C), mt(d.C);
      xg::kernels::batch_norm_local_moments(x.data(), d0, m0.data());
      xg::kernels::batch_norm_local_moments(x.data() + off1, d1, m1.data());
      for (std::size_t c = 0; c < d.C; ++c) mt[c] = xg::kernels::bn_combine(m0[c], m1[c]);
      std::vector<T> mean2(d.C), invstd2(d.C), rm2(d.C, T(0.5)), rv2(d.C, T(2)), y2(x.size());
      xg::kernels::batch_norm_finish_stats(mt.data(), d.C, 1e-5, 0.1, mean2.data(), invstd2.data(), rm2.data(),
                                           rv2.data());
      xg::kernels::batch_norm_normalize(x.data(), w.data(), b.data(), mt.data(), 1e-5, y2.data(), d0);
      xg::kernels::batch_norm_normalize(x.data() + off1, w.data(), b.data(), mt.data(), 1e-5, y2.data() + off1, d1);
      // two halves regroup the chunks, so equal to rounding, not to the bit
      const RefFwd ref = ref_forward_train(x, w, b, std::vector<T>(d.C, T(0.5)), std::vector<T>(d.C, T(2)), d,
                                           1e-5, 0.1);
      CHECK(max_rel_err(mean2, ref.mean) <= tol<T>());
      CHECK(max_rel_err(invstd2, ref.invstd) <= tol<T>());
      CHECK(max_rel_err(rv2, ref.rv) <= tol<T>());
      CHECK(max_rel_err(y2, ref.y) <= tol<T>());
      // one "process" holding everything: the split path is the fused kernel, bit for bit
      xg::kernels::batch_norm_local_moments(x.data(), d, mt.data());
      std::vector<T> rm3(d.C, T(0.5)), rv3(d.C, T(2));
      xg::kernels::batch_norm_finish_stats(mt.data(), d.C, 1e-5, 0.1, mean2.data(), invstd2.data(), rm3.data(),
                                           rv3.data());
      xg::kernels::batch_norm_normalize(x.data(), w.data(), b.data(), mt.data(), 1e-5, y2.data(), d);
      CHECK(same_bits(mean2, mean));
      CHECK(same_bits(invstd2, invstd));
      CHECK(same_bits(rm3, rm));
      CHECK(same_bits(rv3, rv));
      CHECK(same_bits(y2, y));
      // backward: local sums -> combine -> finish, in one piece (bit-identical) and in two halves (rounding)
      std::vector<T> dx(x.size()), dw(d.C), db(d.C), dx2(x.size()), dw2(d.C), db2(d.C);
      xg::kernels::batch_norm_backward(dy.data(), x.data(), w.data(), mean.data(), invstd.data(), dx.data(),
                                       dw.data(), db.data(), d);
      std::vector<xg::kernels::BnGradSums> gs(d.C), g0(d.C), g1(d.C);
      xg::kernels::batch_norm_backward_local_sums(dy.data(), x.data(), mean.data(), d, gs.data());
      xg::kernels::batch_norm_backward_finish(dy.data(), x.data(), w.data(), mean.data(), invstd.data(), gs.data(),
                                              double(d.N * d.S), dx2.data(), dw2.data(), db2.data(), d);
      CHECK(same_bits(dx2, dx));
      CHECK(same_bits(dw2, dw));
      CHECK(same_bits(db2, db));
      xg::kernels::batch_norm_backward_local_sums(dy.data(), x.data(), mean.data(), d0, g0.data());
      xg::kernels::batch_norm_backward_local_sums(dy.data() + off1, x.data() + off1, mean.data(), d1, g1.data());
      for (std::size_t c = 0; c < d.C; ++c) gs[c] = xg::kernels::bn_grad_combine(g0[c], g1[c]);
      xg::kernels::batch_norm_backward_finish(dy.data(), x.data(), w.data(), mean.data(), invstd.data(), gs.data(),
                                              double(d.N * d.S), dx2.data(), dw2.data(), db2.data(), d0);
      xg::kernels::batch_norm_backward_finish(dy.data() + off1, x.data() + off1, w.data(), mean.data(),
                                              invstd.data(), gs.data(), double(d.N * d.S), dx2.data() + off1,
                                              dw2.data(), db2.data(), d1);
      const RefBwd rb = ref_backward(dy, x, w, mean, invstd, d);
      CHECK(max_rel_err(dx2, rb.dx) <= tol<T>());
      CHECK(max_rel_err(dw2, rb.dw) <= tol<T>());
      CHECK(max_rel_err(db2, rb.db) <= tol<T>());
    }
}

TEST_CASE("bn rejects batches without a variance") {
  std::vector<float> x(6, 1.f), y(6), m(6), s(6), rm(6, 0.f), rv(6, 1.f);
  CHECK_THROWS_AS(xg::kernels::batch_norm_forward_train(x.data(), static_cast<const float*>(nullptr),
                                                        static_cast<const float*>(nullptr), y.data(), m.data(),
                                                        s.data(), rm.data(), rv.data(), BnDims{1, 6, 1}, 1e-5, 0.1),
                  std::invalid_argument);
  CHECK_THROWS_AS(xg::kernels::batch_norm_forward_train(x.data(), static_cast<const float*>(nullptr),
                                                        static_cast<const float*>(nullptr), y.data(), m.data(),
                                                        s.data(), rm.data(), rv.data(), BnDims{0, 6, 1}, 1e-5, 0.1),
                  std::invalid_argument);
  CHECK(rm[0] == 0.f);  // nothing was updated
}
