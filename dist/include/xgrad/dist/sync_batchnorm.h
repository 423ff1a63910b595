// xgrad/dist/sync_batchnorm.h — SyncBatchNorm: BatchNorm whose batch statistics are those of the whole batch
// spread over every rank (PyTorch's torch.nn.SyncBatchNorm, here on MPI and the CPU).
//
// With data parallelism each rank sees B/P samples; a plain BatchNorm normalises with the statistics of its own
// slice, which changes the model (its noise, its running statistics). SyncBatchNorm runs the fused kernel split
// in three (xgrad/kernels/batchnorm.h, docs/batchnorm-fused.md):
//
//   forward   local (count, mean, M2) per channel -> all-gather -> Chan's merge in rank order (never
//             E[x²] − E[x]²) -> finish (save_mean, save_invstd, running stats with the UNBIASED var of the global
//             count) -> normalise this rank's slice
//   backward  local (Σdy, Σdy·(x − mean), Σ(x − mean)) -> all-reduce (sum) -> dx from the global sums;
//             dweight, dbias from the LOCAL sums (DistributedDataParallel averages them over ranks, as PyTorch)
//
// Per-rank batch sizes may differ (even 1 on a rank); the statistics are those of all Σ N_r·S values. Running
// statistics come out bit-identical on every rank (every rank merges the same gathered moments in the same
// order). Eval uses the running statistics, with no communication. Every rank must run every forward and
// backward (each is a collective).
#pragma once

#include <memory>

#include "xgrad/nn/batchnorm.h"
#include "xgrad/nn/module.h"

namespace xg::dist {

namespace functional {
/// The synchronised training BatchNorm as one graph node (the fused kernels around two collectives).
///   input [N_r, C, *] on rank r; running_mean/var [C] updated (when defined) with the global statistics;
///   weight/bias [C] or undefined. Error (on every rank) if the global count Σ N_r·S is <= 1.
Tensor sync_batch_norm(const Tensor& input, Tensor running_mean, Tensor running_var, const Tensor& weight,
                       const Tensor& bias, double exponential_average_factor, double eps);

/// The same maths composed from tensor ops and functional::all_reduce (autograd derives the gradient; the
/// all-reduce's backward is the all-reduce of the gradient): the readable reference and the tests' oracle.
///   mean = all_reduce(Σx)/M;  var = all_reduce(Σ(x − mean)²)/M (two passes about the global mean);
///   y = (x − mean)/sqrt(var + eps)·weight + bias;  M = all_reduce(N_r·S).
Tensor sync_batch_norm_composed(const Tensor& input, Tensor running_mean, Tensor running_var, const Tensor& weight,
                                const Tensor& bias, double exponential_average_factor, double eps);
}  // namespace functional

/// SyncBatchNorm over [N, C, *] (any rank >= 2, as PyTorch's): BatchNormOptions as BatchNorm1d/2d; the
/// statistics modes of xgrad/nn/batchnorm.h apply unchanged (eval, freeze_statistics, NoStatsUpdateGuard).
/// `impl` Composed selects functional::sync_batch_norm_composed, Fused (the default) sync_batch_norm.
class SyncBatchNorm : public nn::BatchNormBase {
 public:
  explicit SyncBatchNorm(const nn::BatchNormOptions& options);

 private:
  void check_input_dim(const Tensor& input) const override;
};

/// Makes every BatchNorm1d/2d below `module` (and `module` itself) synchronise its batch statistics across
/// ranks — PyTorch's SyncBatchNorm.convert_sync_batchnorm, but IN PLACE: the layers keep their type, parameters
/// and buffers (an optimizer built before still holds the same tensors); their training forward with batch
/// statistics becomes functional::sync_batch_norm (printed as ", sync"). Returns how many layers it converted.
std::size_t convert_sync_batchnorm(const std::shared_ptr<nn::Module>& module);

}  // namespace xg::dist
