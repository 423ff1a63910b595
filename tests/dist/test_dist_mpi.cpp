// xg::dist under mpirun (CTest runs it with -np 2 and -np 3): collectives, SyncBatchNorm against one process on
// the whole batch, DistributedDataParallel training equivalence, plain BatchNorm's visible difference, and a
// gradcheck of SyncBatchNorm across ranks. Every rank computes the one-process reference itself (same seeds),
// so each comparison is between two independent computations.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "xgrad/dist.h"
#include "xgrad/dist/ddp.h"
#include "xgrad/dist/sync_batchnorm.h"
#include "xgrad/xgrad.h"

using xg::Shape;
using xg::Tensor;
namespace dist = xg::dist;

namespace {

int P() { return dist::world_size(); }
int R() { return dist::rank(); }

Tensor rnd(const Shape& s, std::uint64_t seed, xg::Dtype dt = xg::kFloat64, double lo = -1, double hi = 1) {
  xg::Generator g(seed);
  return xg::uniform(s, lo, hi, dt, &g);
}

// max |a - b| / max(|b|, 1): relative for large values, absolute near 0
double rel_err(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  const auto va = a.to_vector(), vb = b.to_vector();
  double e = 0;
  for (std::size_t i = 0; i < va.size(); ++i) e = std::max(e, std::abs(va[i] - vb[i]) / std::max(std::abs(vb[i]), 1.0));
  return e;
}

// Uneven split of N rows over the ranks: rank r gets sizes[r] rows starting at offsets[r].
struct Split {
  std::vector<std::size_t> sizes, offsets;
};
Split uneven(std::size_t N) {
  // P = 2: {N/2 - 1, N/2 + 1}; P = 3: {2, N - 5, 3}; generally: rank r gets 1 + r-dependent share
  Split s;
  std::size_t left = N;
  for (int r = 0; r < P(); ++r) {
    const std::size_t n = r + 1 == P() ? left : std::max<std::size_t>(1, (N / P()) + (r % 2 ? 2 : 0) - 1);
    s.sizes.push_back(n);
    left -= n;
  }
  std::size_t off = 0;
  for (auto n : s.sizes) {
    s.offsets.push_back(off);
    off += n;
  }
  return s;
}

}  // namespace

TEST_CASE("collectives: all_reduce sum/mean, broadcast, all_gather, errors on every rank") {
  for (xg::Dtype dt : {xg::kFloat32, xg::kFloat64}) {
    Tensor t = xg::from_vector({double(R()), 1.0, double(R() * R())}, {3}, dt);
    dist::all_reduce(t);
    const double n = P(), sum_r = n * (n - 1) / 2, sum_r2 = (n - 1) * n * (2 * n - 1) / 6;
    CHECK(t.to_vector() == std::vector<double>{sum_r, n, sum_r2});
    Tensor m = xg::from_vector({double(R()) * 2.0}, {1}, dt);
    dist::all_reduce(m, dist::ReduceOp::Mean);
    CHECK(m.item() == doctest::Approx(n - 1));  // mean of 0, 2, 4, ... = P - 1
    Tensor b = xg::from_vector({double(R() + 7), -1.0}, {2}, dt);
    dist::broadcast(b, P() - 1);
    CHECK(b.to_vector() == std::vector<double>{double(P() - 1 + 7), -1.0});
  }
  const auto names = dist::all_gather(std::string(static_cast<std::size_t>(R() + 1), char('a' + R())));
  REQUIRE(names.size() == std::size_t(P()));
  for (int r = 0; r < P(); ++r) CHECK(names[r] == std::string(static_cast<std::size_t>(r + 1), char('a' + r)));
  // a size mismatch is an error on EVERY rank (not a hang, not a truncation)
  Tensor bad = xg::zeros({std::size_t(2 + R())}, xg::kFloat64);
  CHECK_THROWS_WITH_AS(dist::all_reduce(bad), doctest::Contains("the ranks disagree"), xg::Error);
  CHECK_THROWS_WITH_AS(dist::broadcast(bad, P()), doctest::Contains("not a rank"), xg::Error);
  dist::barrier();
}

TEST_CASE("functional::all_reduce: forward is the sum, backward the all-reduce of the gradient") {
  Tensor x = xg::from_vector({1.0 + R(), 2.0}, {2}, xg::kFloat64, true);
  // L_r = Σ (c_r · y) with y = Σ_s x_s and c_r = r + 1: dL/dx_r = Σ_s c_s on every rank (derived by hand)
  Tensor y = dist::functional::all_reduce(x);
  (y * double(R() + 1)).sum().backward();
  const double sum_c = double(P()) * (P() + 1) / 2;
  CHECK(x.grad().to_vector() == std::vector<double>{sum_c, sum_c});
  CHECK(y.to_vector()[1] == 2.0 * P());
}

// The statistics of the whole batch: SyncBN on a slice per rank == the fused BatchNorm of one process.
template <class T>
void check_sync_forward_backward(double tol, const Shape& full_shape, bool even) {
  const xg::Dtype dt = std::is_same_v<T, double> ? xg::kFloat64 : xg::kFloat32;
  const std::size_t N = full_shape[0], C = full_shape[1];
  const Tensor X = rnd(full_shape, 11, dt, -2, 3);
  const Tensor DY = rnd(full_shape, 12, dt);
  const Tensor W = rnd({C}, 13, dt, 0.5, 1.5), B = rnd({C}, 14, dt);
  Split s;
  if (even) {
    for (int r = 0; r < P(); ++r) {
      s.sizes.push_back(N / P());
      s.offsets.push_back(r * (N / P()));
    }
  } else {
    s = uneven(N);
  }
  INFO("rank ", R(), " of ", P(), " rows ", s.sizes[R()], " at ", s.offsets[R()], ", dtype ", dt);
  // one process, whole batch
  Tensor x1 = X.clone().requires_grad_(), w1 = W.clone().requires_grad_(), b1 = B.clone().requires_grad_();
  Tensor rm1 = xg::zeros({C}, dt), rv1 = xg::ones({C}, dt);
  Tensor y1 = xg::nn::functional::batch_norm_fused(x1, rm1, rv1, w1, b1, true, 0.1, 1e-5);
  (y1 * DY).sum().backward();
  // this rank's slice
  Tensor x = X.narrow(0, s.offsets[R()], s.sizes[R()]).requires_grad_(), w = W.clone().requires_grad_(),
         b = B.clone().requires_grad_();
  Tensor rm = xg::zeros({C}, dt), rv = xg::ones({C}, dt);
  Tensor y = dist::functional::sync_batch_norm(x, rm, rv, w, b, 0.1, 1e-5);
  (y * DY.narrow(0, s.offsets[R()], s.sizes[R()])).sum().backward();
  CHECK(rel_err(y, y1.narrow(0, s.offsets[R()], s.sizes[R()])) <= tol);
  CHECK(rel_err(x.grad(), x1.grad().narrow(0, s.offsets[R()], s.sizes[R()])) <= tol);
  CHECK(rel_err(rm, rm1) <= tol);
  CHECK(rel_err(rv, rv1) <= tol);  // unbiased with the GLOBAL count
  // dweight, dbias are this rank's share: their sum over ranks is the one-process gradient
  Tensor dw = w.grad().clone(), db = b.grad().clone();
  dist::all_reduce(dw);
  dist::all_reduce(db);
  CHECK(rel_err(dw, w1.grad()) <= tol);
  CHECK(rel_err(db, b1.grad()) <= tol);
  // running statistics bit-identical on every rank
  Tensor rv0 = rv.clone();
  dist::broadcast(rv0, 0);
  CHECK(rv0.to_vector() == rv.to_vector());
}

TEST_CASE("SyncBatchNorm fused: P slices == one process on the whole batch (forward, backward, running stats)") {
  const std::size_t N = 12;  // divisible by 2 and 3
  SUBCASE("float64 [N, C, H, W], even") { check_sync_forward_backward<double>(1e-12, {N, 3, 4, 5}, true); }
  SUBCASE("float64 [N, C, H, W], uneven") { check_sync_forward_backward<double>(1e-12, {N, 3, 4, 5}, false); }
  SUBCASE("float64 [N, C], uneven") { check_sync_forward_backward<double>(1e-12, {N, 37}, false); }
  SUBCASE("float32 [N, C, H, W], uneven (tolerance 2e-5)") {
    check_sync_forward_backward<float>(2e-5, {N, 3, 4, 5}, false);
  }
  SUBCASE("float32 [N, C], even (tolerance 2e-5)") { check_sync_forward_backward<float>(2e-5, {N, 37}, true); }
}

TEST_CASE("SyncBatchNorm: the composed reference agrees with the fused path (float64, uneven)") {
  const Split s = uneven(10);
  Tensor X = rnd({10, 4, 3}, 21, xg::kFloat64, 100, 101);  // a large mean: catches E[x²] − E[x]²
  Tensor DY = rnd({10, 4, 3}, 22);
  Tensor x = X.narrow(0, s.offsets[R()], s.sizes[R()]);
  Tensor dy = DY.narrow(0, s.offsets[R()], s.sizes[R()]);
  Tensor w = rnd({4}, 23), b = rnd({4}, 24);
  Tensor ys[2], gx[2], gw[2], rms[2], rvs[2];
  for (int k = 0; k < 2; ++k) {
    Tensor xi = x.clone().requires_grad_(), wi = w.clone().requires_grad_(), bi = b.clone().requires_grad_();
    rms[k] = xg::zeros({4}, xg::kFloat64);
    rvs[k] = xg::ones({4}, xg::kFloat64);
    ys[k] = k == 0 ? dist::functional::sync_batch_norm(xi, rms[k], rvs[k], wi, bi, 0.3, 1e-5)
                   : dist::functional::sync_batch_norm_composed(xi, rms[k], rvs[k], wi, bi, 0.3, 1e-5);
    (ys[k] * dy).sum().backward();
    gx[k] = xi.grad();
    gw[k] = wi.grad();
  }
  CHECK(rel_err(ys[0], ys[1]) <= 1e-12);
  CHECK(rel_err(gx[0], gx[1]) <= 1e-10);
  CHECK(rel_err(gw[0], gw[1]) <= 1e-10);
  CHECK(rel_err(rms[0], rms[1]) <= 1e-12);
  CHECK(rel_err(rvs[0], rvs[1]) <= 1e-12);
}

TEST_CASE("SyncBatchNorm: a global count of 1 is an error on every rank; a rank with one row is fine") {
  // every rank holds 1 row of [1, 2]: the global count is P >= 2, which is fine
  Tensor x = rnd({1, 2}, 30 + R());
  Tensor rm = xg::zeros({2}, xg::kFloat64), rv = xg::ones({2}, xg::kFloat64);
  Tensor y = dist::functional::sync_batch_norm(x, rm, rv, Tensor(), Tensor(), 0.1, 1e-5);
  CHECK(y.shape() == Shape{1, 2});
  // only rank 0 holds anything: count 1 in total
  Tensor x1 = R() == 0 ? rnd({1, 2}, 40) : xg::zeros({0, 2}, xg::kFloat64);
  CHECK_THROWS_WITH_AS(dist::functional::sync_batch_norm(x1, Tensor(), Tensor(), Tensor(), Tensor(), 0.1, 1e-5),
                       doctest::Contains("more than 1 value per channel over all"), xg::Error);
}

// gradcheck of SyncBatchNorm across ranks: `checker` runs xg::gradcheck on its inputs while the other ranks
// hold theirs fixed and follow every forward and backward (each is a collective) on command, seeding zeros as
// their output's gradient, so the checked Jacobian is d out_checker / d (x, w, b)_checker with the statistics
// over all ranks.
TEST_CASE("SyncBatchNorm: gradcheck across ranks (float64, every rank in turn, uneven sizes)") {
  enum Cmd { Forward = 1, Backward = 2, Done = 3 };
  const Shape local{std::size_t(2 + R()), 2, 3};
  for (int checker = 0; checker < P(); ++checker) {
    Tensor x = rnd(local, 50 + R()), w = rnd({2}, 60 + R(), xg::kFloat64, 0.5, 1.5), b = rnd({2}, 70 + R());
    auto command = [&](Cmd c) {
      double v = c;
      dist::broadcast(&v, 1, checker);
      return Cmd(int(v));
    };
    if (R() == checker) {
      auto f = [&](const std::vector<Tensor>& in) {
        command(Forward);
        Tensor y = dist::functional::sync_batch_norm(in[0], Tensor(), Tensor(), in[1], in[2], 0.0, 1e-5);
        // identity node whose backward tells the other ranks to run theirs (before this rank reaches the
        // SyncBN node's all-reduce)
        return xg::record_op("tap", y.detach().clone(), {y}, [&](const Tensor& g, const std::vector<bool>&) {
          command(Backward);
          return std::vector<Tensor>{g};
        });
      };
      xg::GradcheckOptions o;
      o.raise = false;
      const auto res = xg::gradcheck(f, {x.requires_grad_(), w.requires_grad_(), b.requires_grad_()}, o);
      command(Done);
      INFO("checker rank ", checker, ": ", res.report);
      CHECK(res.ok);
    } else {
      Tensor out;
      for (Cmd c = command(Forward); c != Done; c = command(Forward)) {  // the argument is ignored off-root
        if (c == Forward) {
          out = dist::functional::sync_batch_norm(x.requires_grad_(), Tensor(), Tensor(), w.requires_grad_(),
                                                  b.requires_grad_(), 0.0, 1e-5);
        } else {
          out.backward(xg::zeros(out.shape(), xg::kFloat64), /*retain_graph=*/true);
        }
      }
    }
    dist::barrier();
  }
}

// ---- DistributedDataParallel ---------------------------------------------------------------------------------
namespace {

std::shared_ptr<xg::nn::Sequential> make_net(xg::Dtype dt, std::uint64_t seed) {
  xg::manual_seed(seed);
  auto net = std::make_shared<xg::nn::Sequential>(xg::nn::Linear(6, 8), xg::nn::BatchNorm1d(8), xg::nn::ReLU(),
                                                  xg::nn::Linear(8, 4), xg::nn::BatchNorm1d(4), xg::nn::Linear(4, 3));
  net->to(dt);
  return net;
}

struct Run {
  std::vector<double> losses;
  xg::StateDict state;
};

// steps of SGD (momentum 0.9) on the batch X [B, 6], labels Y; distributed: this rank's rows only, DDP, and
// SyncBN if sync. The loss returned is the whole batch's (mean of the ranks' means: equal slices).
Run train(xg::Dtype dt, bool distributed, bool sync, int steps) {
  const std::size_t B = 12;
  const Tensor X = rnd({B, 6}, 81, dt, -1, 2);
  std::vector<std::size_t> Y(B);
  for (std::size_t i = 0; i < B; ++i) Y[i] = (i * 7) % 3;
  // rank r > 0 builds a different model: DDP's broadcast must make everyone start from rank 0's
  auto net = make_net(dt, distributed ? 5 + std::uint64_t(R()) : 5);
  std::shared_ptr<xg::nn::Module> model = net;
  std::shared_ptr<dist::DistributedDataParallel> ddp;
  Tensor x = X;
  std::vector<std::size_t> y = Y;
  if (distributed) {
    if (sync) CHECK(dist::convert_sync_batchnorm(net) == 2);
    ddp = std::make_shared<dist::DistributedDataParallel>(net);
    CHECK(ddp->num_buckets() == 1);
    model = ddp;
    const std::size_t n = B / P(), off = n * R();
    x = X.narrow(0, off, n);
    y.assign(Y.begin() + off, Y.begin() + off + n);
  }
  xg::optim::SGD opt(model->parameters(), xg::optim::SGDOptions(0.2).momentum(0.9));
  Run run;
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    Tensor loss = xg::nn::functional::cross_entropy(model->forward(x), y);
    if (ddp) {
      ddp->backward(loss);
      Tensor l = loss.detach().clone();
      dist::all_reduce(l, dist::ReduceOp::Mean);
      run.losses.push_back(l.item());
    } else {
      loss.backward();
      run.losses.push_back(loss.item());
    }
    opt.step();
  }
  run.state = net->state_dict();
  return run;
}

double max_state_err(const xg::StateDict& a, const xg::StateDict& b) {
  double e = 0;
  for (const auto& [k, t] : a) e = std::max(e, rel_err(t, b.at(k)));
  return e;
}

}  // namespace

TEST_CASE("DDP + SyncBatchNorm on P ranks x B/P == one process on B (losses, parameters, running stats)") {
  for (auto [dt, tol] : {std::pair{xg::kFloat64, 1e-12}, std::pair{xg::kFloat32, 1e-4}}) {
    INFO("dtype ", dt, ", tolerance ", tol);
    const Run one = train(dt, false, false, 6), many = train(dt, true, true, 6);
    REQUIRE(one.losses.size() == many.losses.size());
    for (std::size_t s = 0; s < one.losses.size(); ++s)
      CHECK(std::abs(one.losses[s] - many.losses[s]) <= tol * std::max(1.0, std::abs(one.losses[s])));
    CHECK(one.losses.back() < one.losses.front());  // it trained
    CHECK(max_state_err(many.state, one.state) <= tol);
    // identical on every rank, parameters and buffers alike
    for (const auto& [k, t] : many.state) {
      Tensor t0 = t.clone();
      dist::broadcast(t0, 0);
      INFO(k);
      CHECK(t0.to_vector() == t.to_vector());
    }
  }
}

TEST_CASE("plain BatchNorm under DDP does NOT match one process (each rank normalises its own slice)") {
  const Run one = train(xg::kFloat64, false, false, 6), plain = train(xg::kFloat64, true, false, 6);
  double dl = 0;
  for (std::size_t s = 0; s < one.losses.size(); ++s) dl = std::max(dl, std::abs(one.losses[s] - plain.losses[s]));
  CHECK(dl > 1e-3);
  CHECK(max_state_err(plain.state, one.state) > 1e-3);
}

TEST_CASE("DDP: buckets, unused parameters, model mismatch") {
  auto net = make_net(xg::kFloat64, 3);
  dist::DistributedDataParallel ddp(net, dist::DistributedDataParallelOptions().bucket_cap_mb(200.0 / (1 << 20)));
  // 200-byte buckets (25 doubles) over the parameters in reverse order, sizes 3 12 4 4 | 4 | 32 | 8 8 8 | 48:
  // a new bucket whenever the next parameter would pass 25 values
  CHECK(ddp.num_buckets() == 5);
  CHECK(ddp.gradient_numel() == 6 * 8 + 8 + 8 + 8 + 8 * 4 + 4 + 4 + 4 + 4 * 3 + 3);
  // gradients: rank r's are all r + 1 (and undefined on rank 0 for the last parameter): the mean arrives
  for (auto& p : net->parameters()) p.set_grad(xg::full(p.shape(), R() + 1.0, xg::kFloat64));
  auto ps = net->parameters();
  if (R() == 0) ps.back().zero_grad(true);
  ddp.sync_gradients();
  const double mean = (double(P()) + 1) / 2;
  CHECK(ps.front().grad().to_vector()[0] == doctest::Approx(mean));
  CHECK(ps.back().grad().to_vector()[0] == doctest::Approx((mean * P() - 1) / P()));
  // a rank with another model: an error on every rank
  auto other = R() == P() - 1 ? std::make_shared<xg::nn::Sequential>(xg::nn::Linear(6, 9)) : make_net(xg::kFloat64, 3);
  CHECK_THROWS_WITH_AS(dist::DistributedDataParallel{other}, doctest::Contains("differs from rank 0"), xg::Error);
}

TEST_CASE("DistributedSampler across the real ranks: disjoint shards covering the dataset") {
  const std::size_t n = 6 * 7;  // divisible by 2 and 3: no padding
  dist::DistributedSampler s(n, dist::DistributedSampler::Options().seed(9));
  s.set_epoch(3);
  const auto mine = s.indices();
  std::vector<double> mark(n, 0);
  for (auto i : mine) mark[i] += 1;
  dist::all_reduce(mark.data(), n);
  for (double m : mark) CHECK(m == 1);
}
