// xg::dist in one process without mpirun (a world of one) and DistributedSampler's index arithmetic, checked
// against PyTorch's algorithm worked by hand.
#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>
#include <set>
#include <sstream>

#include "xgrad/dist.h"
#include "xgrad/dist/ddp.h"
#include "xgrad/dist/sync_batchnorm.h"
#include "xgrad/xgrad.h"

namespace dist = xg::dist;
using Idx = std::vector<std::size_t>;

TEST_CASE("without MPI: rank 0 of 1, collectives leave the data as it is") {
  CHECK_FALSE(dist::is_initialized());
  CHECK(dist::rank() == 0);
  CHECK(dist::world_size() == 1);
  xg::Tensor t = xg::from_vector({1.5, -2.0}, {2}, xg::kFloat64);
  dist::all_reduce(t, dist::ReduceOp::Mean);
  dist::broadcast(t);
  dist::barrier();
  CHECK(t.to_vector() == std::vector<double>{1.5, -2.0});
}

TEST_CASE("DistributedSampler: PyTorch's shards, padding and drop_last (no shuffle, worked by hand)") {
  auto shard = [](std::size_t n, int P, int r, bool drop_last) {
    return dist::DistributedSampler(n, dist::DistributedSampler::Options().num_replicas(P).rank(r).shuffle(false).drop_last(drop_last))
        .indices();
  };
  // n = 10, P = 3: num_samples = ceil(10/3) = 4, total 12: order 0..9 padded with 0, 1; rank r takes r, r+3, ...
  CHECK(shard(10, 3, 0, false) == Idx{0, 3, 6, 9});
  CHECK(shard(10, 3, 1, false) == Idx{1, 4, 7, 0});
  CHECK(shard(10, 3, 2, false) == Idx{2, 5, 8, 1});
  // drop_last: num_samples = ceil((10 - 3)/3) = 3, total 9: the tail (9) is dropped
  CHECK(shard(10, 3, 0, true) == Idx{0, 3, 6});
  CHECK(shard(10, 3, 2, true) == Idx{2, 5, 8});
  // padding longer than the dataset: n = 2, P = 5 -> order [0, 1] + [0, 1, 0] (repeated as often as needed)
  CHECK(shard(2, 5, 2, false) == Idx{0});
  CHECK(shard(2, 5, 3, false) == Idx{1});
  CHECK(shard(2, 5, 4, false) == Idx{0});
  CHECK_THROWS_WITH_AS(shard(10, 3, 3, false), doctest::Contains("invalid rank 3"), xg::Error);
}

TEST_CASE("DistributedSampler: shuffled shards are disjoint, reproducible, and change with set_epoch") {
  const std::size_t n = 30;
  auto opts = dist::DistributedSampler::Options().num_replicas(3).seed(4);
  std::set<std::size_t> all;
  for (int r = 0; r < 3; ++r) {
    dist::DistributedSampler s(n, opts.rank(r));
    s.set_epoch(2);
    const Idx a = s.indices();
    CHECK(a.size() == 10);
    CHECK(a == s.indices());  // reproducible
    all.insert(a.begin(), a.end());
    s.set_epoch(3);
    CHECK(s.indices() != a);  // reshuffled per epoch
  }
  CHECK(all.size() == n);  // disjoint and covering
}

TEST_CASE("SyncBatchNorm in a world of one is BatchNorm; convert_sync_batchnorm converts in place") {
  auto net = std::make_shared<xg::nn::Sequential>(xg::nn::Linear(3, 4), xg::nn::BatchNorm1d(4));
  net->to(xg::kFloat64);
  xg::Generator g(3);
  const xg::Tensor x = xg::uniform({7, 3}, -1, 1, xg::kFloat64, &g);
  const xg::Tensor y0 = net->forward(x);
  const auto w_before = net->parameters();
  CHECK(dist::convert_sync_batchnorm(net) == 1);
  CHECK(&net->parameters()[2].storage() == &w_before[2].storage());  // the same tensors: an optimizer keeps them
  const xg::Tensor y1 = net->forward(x);
  const auto a = y0.to_vector(), b = y1.to_vector();
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-12));
  std::ostringstream os;
  os << *net;
  CHECK(os.str().find("sync") != std::string::npos);
  dist::SyncBatchNorm sbn(xg::nn::BatchNormOptions(4));
  CHECK(sbn.name() == "SyncBatchNorm");
}
