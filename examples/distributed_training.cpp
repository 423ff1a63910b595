// distributed_training.cpp — data-parallel training with DistributedDataParallel and SyncBatchNorm on MPI
// (docs/distributed.md). Synthetic data (two Gaussian blobs per class), so it runs anywhere:
//
//   mpirun --allow-run-as-root -np 2 build/bin/distributed_training
//   build/bin/distributed_training            # one process: the same code, a world of one
#include <cstdio>

#include "xgrad/dist.h"
#include "xgrad/dist/ddp.h"
#include "xgrad/dist/sync_batchnorm.h"
#include "xgrad/xgrad.h"

int main(int argc, char** argv) {
  // [setup]
  xg::dist::Session mpi(argc, argv);  // MPI_Init; MPI_Finalize at the end of main
  const int rank = xg::dist::rank(), world = xg::dist::world_size();
  // [/setup]

  // 4096 samples of 16 features, 4 classes; every rank generates the same set from one seed
  const std::size_t n = 4096, features = 16, classes = 4;
  xg::Generator g(42);
  const xg::Tensor data = xg::randn({n, features}, xg::kFloat32, &g);
  std::vector<std::size_t> labels(n);
  xg::Tensor shifted = data.clone();
  for (std::size_t i = 0; i < n; ++i) {
    labels[i] = i % classes;
    shifted.set({std::ptrdiff_t(i), std::ptrdiff_t(labels[i])}, data.at({std::ptrdiff_t(i), std::ptrdiff_t(labels[i])}) + 2.0);
  }

  // [model]
  xg::manual_seed(1);  // every rank builds the model; DDP then copies rank 0's weights to all
  auto net = std::make_shared<xg::nn::Sequential>(
      xg::nn::Linear(xg::nn::LinearOptions(16, 64).bias(false)), xg::nn::BatchNorm1d(64), xg::nn::ReLU(),
      xg::nn::Linear(64, 4));
  xg::dist::convert_sync_batchnorm(net);  // batch statistics over all ranks' samples
  auto ddp = std::make_shared<xg::dist::DistributedDataParallel>(net);
  xg::optim::SGD opt(ddp->parameters(), xg::optim::SGDOptions(0.1).momentum(0.9));
  // [/model]

  // [loop]
  const std::size_t global_batch = 128, local = global_batch / world;  // each rank: its slice of the batch
  xg::dist::DistributedSampler sampler(n, xg::dist::DistributedSampler::Options().seed(7).drop_last(true));
  for (std::uint64_t epoch = 0; epoch < 3; ++epoch) {
    sampler.set_epoch(epoch);  // a new shuffle, the same on every rank
    const std::vector<std::size_t> shard = sampler.indices();  // this rank's samples, disjoint from the others'
    double loss_sum = 0;
    std::size_t steps = 0;
    for (std::size_t k = 0; k + local <= shard.size(); k += local, ++steps) {
      const std::vector<std::size_t> rows(shard.begin() + k, shard.begin() + k + local);
      std::vector<std::size_t> y;
      for (auto r : rows) y.push_back(labels[r]);
      const xg::Tensor x = xg::index_select(shifted, 0, rows);
      opt.zero_grad();
      xg::Tensor loss = xg::nn::functional::cross_entropy(ddp->forward(x), y);
      ddp->backward(loss);  // backward, then the gradients averaged over the ranks (one all-reduce here)
      opt.step();
      loss_sum += loss.item();
    }
    xg::Tensor mean = xg::scalar(loss_sum / double(steps), xg::kFloat64);
    xg::dist::all_reduce(mean, xg::dist::ReduceOp::Mean);
    if (rank == 0) std::printf("epoch %llu: mean training loss %.4f (%d rank(s))\n", (unsigned long long)epoch, mean.item(), world);
  }
  // [/loop]
  return 0;
}
