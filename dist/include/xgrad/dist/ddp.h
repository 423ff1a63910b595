// xgrad/dist/ddp.h — data parallelism: DistributedDataParallel (PyTorch's torch.nn.parallel.
// DistributedDataParallel) and DistributedSampler (torch.utils.data.distributed.DistributedSampler).
//
//   xg::dist::Session mpi(argc, argv);
//   auto net = make_net();                                  // same construction on every rank
//   xg::dist::convert_sync_batchnorm(net);                  // optional: SyncBatchNorm
//   auto ddp = std::make_shared<xg::dist::DistributedDataParallel>(net);   // rank 0's weights everywhere
//   xg::optim::SGD opt(ddp->parameters(), 0.1);
//   xg::dist::DistributedSampler sampler(train.size(), {});  // this rank's shard
//   for (epoch ...) { sampler.set_epoch(epoch); auto shard = train.subset(sampler.indices()); ...
//     opt.zero_grad(); auto loss = ce(ddp->forward(x), y); ddp->backward(loss); opt.step(); }
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "xgrad/nn/module.h"
#include "xgrad/tensor.h"

namespace xg::dist {

struct DistributedDataParallelOptions {
  /// Gradients are averaged in buckets of at most this many MiB (PyTorch's bucket_cap_mb, default 25): one
  /// MPI_Allreduce per bucket. A parameter larger than the cap gets a bucket of its own.
  XG_ARG(double, bucket_cap_mb) = 25.0;
  /// Broadcast rank 0's buffers (BatchNorm's running statistics) at the start of every forward, training or
  /// eval (PyTorch's broadcast_buffers, default true): per-rank BatchNorm then evaluates with rank 0's statistics.
  XG_ARG(bool, broadcast_buffers) = true;
};

/// Wraps `module` for data-parallel training. PyTorch's semantics:
///   * construction checks that every rank built the same parameters and buffers (names, shapes, dtypes;
///     a mismatch is an xg::Error on every rank), then broadcasts rank 0's parameters and buffers;
///   * forward(x) = module->forward(x) (after the buffer broadcast, if broadcast_buffers: every rank must call
///     it, in eval too — or evaluate through module() on one rank);
///   * the gradients are averaged over ranks after backward, in buckets filled in reverse parameter order
///     (the order backward produces them). One step makes ceil(parameter bytes / bucket cap) all-reduce calls
///     (+1 broadcast per forward with broadcast_buffers): 1 + 1 for every network of xgrad-lab.
/// Deviation: xgrad's engine has no post-backward callback, so the averaging is explicit: call backward(loss)
/// (= loss.backward(); sync_gradients()) or sync_gradients() yourself between backward and the optimizer step.
/// A parameter whose gradient is undefined on a rank counts as zeros there (PyTorch's find_unused_parameters).
/// The parameters are registered under "module." as in PyTorch (state_dict keys "module.0.weight").
class DistributedDataParallel : public nn::Module {
 public:
  explicit DistributedDataParallel(std::shared_ptr<nn::Module> module, DistributedDataParallelOptions options = {});

  Tensor forward(const Tensor& input) override;
  /// loss.backward(), then sync_gradients().
  void backward(const Tensor& loss);
  /// Averages every parameter's gradient over the ranks, bucket by bucket (num_buckets() all-reduce calls).
  void sync_gradients();
  /// Broadcasts rank 0's buffers to every rank (what forward does with broadcast_buffers).
  void broadcast_buffers();

  const std::shared_ptr<nn::Module>& module() const { return module_; }
  std::size_t num_buckets() const { return buckets_.size(); }
  /// Values all-reduced per step (the gradients of every parameter).
  std::size_t gradient_numel() const;
  const DistributedDataParallelOptions& options() const { return options_; }

 private:
  struct Bucket {
    Dtype dtype;
    std::vector<Tensor> params;  // in reverse registration order
    std::size_t numel = 0;
  };
  std::shared_ptr<nn::Module> module_;
  DistributedDataParallelOptions options_;
  std::vector<Bucket> buckets_;
};

/// Which samples this rank sees in each epoch: PyTorch's DistributedSampler, index for index except the
/// permutation itself (xgrad's generator, seeded with seed + epoch, not torch's):
///   num_samples = ceil(n / P), or with drop_last and n % P != 0, ceil((n − P) / P) = floor(n / P);
///   the epoch's order (a permutation, or 0..n-1 without shuffle) is padded to num_samples·P by repeating
///   its beginning (as often as needed) — or cut to num_samples·P with drop_last — and rank r takes
///   positions r, r + P, r + 2P, ... So the shards are disjoint except for the padding, and equal in size.
class DistributedSampler {
 public:
  struct Options {
    /// P; default world_size().
    XG_ARG(int, num_replicas) = -1;
    /// r; default rank().
    XG_ARG(int, rank) = -1;
    XG_ARG(bool, shuffle) = true;
    XG_ARG(std::uint64_t, seed) = 0;
    XG_ARG(bool, drop_last) = false;
  };
  DistributedSampler(std::size_t dataset_size, Options options);
  /// The epoch's order depends on seed + epoch: call it at the start of each epoch (as in PyTorch).
  void set_epoch(std::uint64_t epoch) { epoch_ = epoch; }
  std::uint64_t epoch() const { return epoch_; }
  /// This rank's indices for the current epoch (num_samples() of them).
  std::vector<std::size_t> indices() const;
  std::size_t num_samples() const { return num_samples_; }
  std::size_t total_size() const { return num_samples_ * static_cast<std::size_t>(P_); }
  int num_replicas() const { return P_; }
  int rank() const { return r_; }

 private:
  std::size_t n_;
  Options o_;
  int P_, r_;
  std::size_t num_samples_;
  std::uint64_t epoch_ = 0;
};

}  // namespace xg::dist
