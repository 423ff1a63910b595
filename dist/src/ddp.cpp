// DistributedDataParallel (bucketed gradient averaging, rank 0's state broadcast) and DistributedSampler.
#include "xgrad/dist/ddp.h"

#include <algorithm>
#include <cmath>

#include "xgrad/autograd.h"
#include "xgrad/dist.h"
#include "xgrad/random.h"

namespace xg::dist {

namespace {

// "name shape dtype" of every parameter and buffer: what every rank must agree on.
std::string signature(const nn::Module& m) {
  std::string s;
  for (const auto& [n, t] : m.named_parameters()) s += fmt::format("p {} {} {}\n", n, shape_str(t.shape()), t.dtype());
  for (const auto& [n, t] : m.named_buffers()) s += fmt::format("b {} {} {}\n", n, shape_str(t.shape()), t.dtype());
  return s;
}

void broadcast_tensors(const std::vector<Tensor>& ts) {
  for (Tensor t : ts)  // raw data, no autograd: the same storage the module holds
    dispatch(t.dtype(), [&](auto tag) { broadcast(t.data_ptr<decltype(tag)>(), t.numel(), 0); });
}

}  // namespace

DistributedDataParallel::DistributedDataParallel(std::shared_ptr<nn::Module> module,
                                                 DistributedDataParallelOptions options)
    : Module("DistributedDataParallel"), module_(std::move(module)), options_(options) {
  if (!module_) fail("DistributedDataParallel: the module is null");
  if (!(options_.bucket_cap_mb() > 0))
    fail("DistributedDataParallel: bucket_cap_mb must be > 0, got {}", options_.bucket_cap_mb());
  register_module("module", module_);
  // 1. every rank built the same model
  const std::string sig = signature(*module_);
  const auto all = all_gather(sig);
  for (std::size_t r = 1; r < all.size(); ++r)
    if (all[r] != all[0])
      fail("DistributedDataParallel: rank {}'s model differs from rank 0's (parameter/buffer names, shapes or "
           "dtypes; rank 0 has {} lines, rank {} has {}): build the same model on every rank",
           r, std::count(all[0].begin(), all[0].end(), '\n'), r, std::count(all[r].begin(), all[r].end(), '\n'));
  // 2. rank 0's parameters and buffers everywhere
  broadcast_tensors(module_->parameters());
  broadcast_tensors(module_->buffers());
  // 3. buckets: reverse registration order (the order backward finishes the gradients), one dtype per bucket
  const auto params = module_->parameters();
  const double cap = options_.bucket_cap_mb() * 1024 * 1024;
  for (auto it = params.rbegin(); it != params.rend(); ++it) {
    const std::size_t bytes = it->numel() * (it->dtype() == kFloat64 ? 8 : 4);
    if (buckets_.empty() || buckets_.back().dtype != it->dtype() ||
        (buckets_.back().numel > 0 &&
         double(buckets_.back().numel * (it->dtype() == kFloat64 ? 8 : 4) + bytes) > cap))
      buckets_.push_back(Bucket{it->dtype(), {}, 0});
    buckets_.back().params.push_back(*it);
    buckets_.back().numel += it->numel();
  }
}

Tensor DistributedDataParallel::forward(const Tensor& input) {
  if (options_.broadcast_buffers()) broadcast_buffers();  // every forward, as PyTorch (eval too)
  return module_->forward(input);
}

void DistributedDataParallel::broadcast_buffers() { broadcast_tensors(module_->buffers()); }

void DistributedDataParallel::backward(const Tensor& loss) {
  loss.backward();
  sync_gradients();
}

std::size_t DistributedDataParallel::gradient_numel() const {
  std::size_t n = 0;
  for (const auto& b : buckets_) n += b.numel;
  return n;
}

void DistributedDataParallel::sync_gradients() {
  for (Bucket& b : buckets_)
    dispatch(b.dtype, [&](auto tag) {
      using T = decltype(tag);
      // pack (an undefined gradient is zeros), one all-reduce (mean), unpack into the gradients
      std::vector<T> flat(b.numel, T(0));
      std::size_t off = 0;
      for (const Tensor& p : b.params) {
        const Tensor g = p.grad();
        if (g.defined()) std::copy_n(g.data_ptr<T>(), p.numel(), flat.data() + off);
        off += p.numel();
      }
      all_reduce(flat.data(), flat.size(), ReduceOp::Mean);
      off = 0;
      for (Tensor p : b.params) {
        Tensor g = p.grad();
        if (!g.defined()) {
          g = zeros(p.shape(), p.dtype());
          p.set_grad(g);
          g = p.grad();
        }
        std::copy_n(flat.data() + off, p.numel(), g.data_ptr<T>());
        off += p.numel();
      }
    });
}

// ---- DistributedSampler ----------------------------------------------------------------------------------
DistributedSampler::DistributedSampler(std::size_t dataset_size, Options options)
    : n_(dataset_size), o_(options), P_(options.num_replicas() < 0 ? world_size() : options.num_replicas()),
      r_(options.rank() < 0 ? dist::rank() : options.rank()) {
  if (P_ <= 0) fail("DistributedSampler: num_replicas must be >= 1, got {}", P_);
  if (r_ < 0 || r_ >= P_)
    fail("DistributedSampler: invalid rank {}, rank should be in the interval [0, {}]", r_, P_ - 1);
  const std::size_t P = static_cast<std::size_t>(P_);
  if (o_.drop_last() && n_ % P != 0)
    num_samples_ = n_ / P;  // PyTorch: ceil((n - P) / P), the same as floor(n / P) for n % P != 0
  else
    num_samples_ = (n_ + P - 1) / P;
  if (n_ == 0) fail("DistributedSampler: the dataset is empty");
}

std::vector<std::size_t> DistributedSampler::indices() const {
  std::vector<std::size_t> order;
  if (o_.shuffle()) {
    Generator g(o_.seed() + epoch_);  // deterministic on every rank: the same permutation everywhere
    order = randperm(n_, &g);
  } else {
    order.resize(n_);
    for (std::size_t i = 0; i < n_; ++i) order[i] = i;
  }
  const std::size_t total = total_size();
  if (order.size() < total) {  // pad by repeating the order from its start, as often as needed
    const std::size_t n = order.size();
    for (std::size_t i = 0; order.size() < total; ++i) order.push_back(order[i % n]);
  } else {
    order.resize(total);  // drop_last: cut the tail
  }
  std::vector<std::size_t> mine;
  mine.reserve(num_samples_);
  for (std::size_t i = static_cast<std::size_t>(r_); i < total; i += static_cast<std::size_t>(P_))
    mine.push_back(order[i]);
  return mine;
}

}  // namespace xg::dist
