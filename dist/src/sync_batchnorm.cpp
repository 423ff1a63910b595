// SyncBatchNorm: the fused BatchNorm kernels split into local sums -> collective -> finish
// (xgrad/kernels/batchnorm.h), and the composed reference on functional::all_reduce.
#include "xgrad/dist/sync_batchnorm.h"

#include <cmath>
#include <vector>

#include "xgrad/autograd.h"
#include "xgrad/dist.h"
#include "xgrad/kernels/batchnorm.h"
#include "xgrad/nn/functional.h"
#include "xgrad/ops.h"

namespace xg::dist {

namespace {

using kernels::BnDims;
using kernels::BnGradSums;
using kernels::BnMoments;

BnDims dims_of(const Shape& s) {
  std::size_t S = 1;
  for (std::size_t a = 2; a < s.size(); ++a) S *= s[a];
  return {s[0], s[1], S};
}

template <class T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}
template <class T>
T* mut_or_null(Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// Chan's merge, with an empty side allowed (a rank may hold no values of a channel).
BnMoments merge(const BnMoments& a, const BnMoments& b) {
  if (a.count == 0) return b;
  if (b.count == 0) return a;
  return kernels::bn_combine(a, b);
}

// Every rank's C moments gathered, then merged in rank order 0, 1, ..., P-1: the same bits on every rank.
std::vector<BnMoments> global_moments(const std::vector<BnMoments>& local) {
  const std::size_t C = local.size(), P = static_cast<std::size_t>(world_size());
  static_assert(sizeof(BnMoments) == 3 * sizeof(double));
  std::vector<BnMoments> all(C * P);
  all_gather(reinterpret_cast<const double*>(local.data()), 3 * C, reinterpret_cast<double*>(all.data()));
  std::vector<BnMoments> tot(C);
  for (std::size_t r = 0; r < P; ++r)
    for (std::size_t c = 0; c < C; ++c) tot[c] = merge(tot[c], all[r * C + c]);
  return tot;
}

void check_args(const Tensor& input, const Tensor& rm, const Tensor& rv, const Tensor& w, const Tensor& b,
                double factor, double eps) {
  if (!input.defined() || input.ndim() < 2)
    fail("sync_batch_norm: the input must be [N, C, ...] with at least 2 dimensions, got {}",
         input.defined() ? shape_str(input.shape()) : "an undefined tensor");
  if (input.dtype() != kFloat32 && input.dtype() != kFloat64)
    fail("sync_batch_norm: the input must be float32 or float64, got {}", input.dtype());
  const std::size_t C = input.shape()[1];
  const std::pair<const char*, const Tensor*> per_channel[] = {
      {"weight", &w}, {"bias", &b}, {"running_mean", &rm}, {"running_var", &rv}};
  for (const auto& [what, t] : per_channel)
    if (t->defined() && (t->shape() != Shape{C} || t->dtype() != input.dtype()))
      fail("sync_batch_norm: {} must be [{}] of dtype {} (one value per channel of the input {}), got {} of dtype {}",
           what, C, input.dtype(), shape_str(input.shape()), shape_str(t->shape()), t->dtype());
  if (!(eps > 0) || !std::isfinite(eps)) fail("sync_batch_norm: eps must be a finite number > 0, got {}", eps);
  if (!(factor >= 0 && factor <= 1))
    fail("sync_batch_norm: exponential_average_factor must be in [0, 1], got {}", factor);
}

// The global count M = Σ_r N_r·S after the merge; the same on every rank, so every rank fails together.
void check_count(double M, const Shape& local) {
  if (M <= 1)
    fail("sync_batch_norm: expected more than 1 value per channel over all {} ranks when training, got {} in "
         "total (this rank's input {}): batch statistics of one value are undefined",
         world_size(), M, shape_str(local));
}

}  // namespace

namespace functional {

Tensor sync_batch_norm(const Tensor& input, Tensor running_mean, Tensor running_var, const Tensor& weight,
                       const Tensor& bias, double exponential_average_factor, double eps) {
  check_args(input, running_mean, running_var, weight, bias, exponential_average_factor, eps);
  const BnDims d = dims_of(input.shape());
  const Dtype dt = input.dtype();
  Tensor y = empty(input.shape(), dt);
  Tensor save_mean = zeros({d.C}, dt), save_invstd = zeros({d.C}, dt);
  std::vector<BnMoments> local(d.C), tot;
  dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    // 1. local sums: this rank's (count, mean, M2) per channel
    kernels::batch_norm_local_moments<T>(input.data_ptr<T>(), d, local.data());
    // 2. the collective: gather every rank's moments, Chan's merge in rank order
    tot = global_moments(local);
    check_count(d.C ? tot[0].count : 0.0, input.shape());
    // 3. finish: saved mean/invstd and the running statistics (unbiased with the global count), then normalise
    kernels::batch_norm_finish_stats<T>(tot.data(), d.C, eps, exponential_average_factor, save_mean.data_ptr<T>(),
                                        save_invstd.data_ptr<T>(), mut_or_null<T>(running_mean),
                                        mut_or_null<T>(running_var));
    kernels::batch_norm_normalize<T>(input.data_ptr<T>(), ptr_or_null<T>(weight), ptr_or_null<T>(bias), tot.data(),
                                     eps, y.data_ptr<T>(), d);
  });
  const double M = d.C ? tot[0].count : 0.0;

  std::vector<Tensor> inputs{input};
  const bool has_w = weight.defined(), has_b = bias.defined();
  if (has_w) inputs.push_back(weight);
  if (has_b) inputs.push_back(bias);
  return record_op(
      "sync_batch_norm", y, inputs,
      [x = input.detach(), w = has_w ? weight.detach() : Tensor(), save_mean, save_invstd, d, M, has_w,
       has_b](const Tensor& g, const std::vector<bool>& needs) {
        const Dtype dt = g.dtype();
        Tensor dx = needs[0] ? empty(x.shape(), dt) : Tensor();
        Tensor dw = has_w && needs[1] ? zeros({d.C}, dt) : Tensor();
        Tensor db = has_b && needs[has_w ? 2 : 1] ? zeros({d.C}, dt) : Tensor();
        dispatch(dt, [&](auto tag) {
          using T = decltype(tag);
          // 1. local sums Σdy, Σdy·xc, Σxc (xc = x − save_mean) per channel
          std::vector<BnGradSums> local(d.C), glob(d.C);
          if (d.N * d.S > 0)
            kernels::batch_norm_backward_local_sums<T>(g.data_ptr<T>(), x.data_ptr<T>(), save_mean.data_ptr<T>(), d,
                                                       local.data());
          // 2. the collective (always, even if this rank needs no dx: the other ranks wait for it)
          static_assert(sizeof(BnGradSums) == 3 * sizeof(double));
          glob = local;
          dist::all_reduce(reinterpret_cast<double*>(glob.data()), 3 * d.C, ReduceOp::Sum);
          // 3. finish: dx = w·invstd·(dy − Σdy/M − x̂·Σdy·x̂/M) with the global sums and count
          if (dx.defined() && d.N * d.S > 0)
            kernels::batch_norm_backward_finish<T>(g.data_ptr<T>(), x.data_ptr<T>(), ptr_or_null<T>(w),
                                                   save_mean.data_ptr<T>(), save_invstd.data_ptr<T>(), glob.data(),
                                                   M, dx.data_ptr<T>(), nullptr, nullptr, d);
          // dbias = Σ_local dy, dweight = Σ_local dy·x̂ with x̂ about the GLOBAL mean: x − mean = xc − Σ_glob xc/M
          for (std::size_t c = 0; c < d.C; ++c) {
            const double delta = glob[c].sum_xc / M, invstd = save_invstd.data_ptr<T>()[c];
            if (db.defined()) db.data_ptr<T>()[c] = T(local[c].sum_dy);
            if (dw.defined()) dw.data_ptr<T>()[c] = T(invstd * (local[c].sum_dy_xc - delta * local[c].sum_dy));
          }
        });
        std::vector<Tensor> grads{dx};
        if (has_w) grads.push_back(dw);
        if (has_b) grads.push_back(db);
        return grads;
      });
}

Tensor sync_batch_norm_composed(const Tensor& input, Tensor running_mean, Tensor running_var, const Tensor& weight,
                                const Tensor& bias, double exponential_average_factor, double eps) {
  check_args(input, running_mean, running_var, weight, bias, exponential_average_factor, eps);
  const Shape shape = input.shape();
  const std::size_t nd = shape.size(), C = shape[1];
  const auto cshape = channel_view(C, nd);
  const Dims axes = non_channel_axes(nd);
  // M = Σ_r N_r·S, the values per channel over all ranks
  Tensor count = scalar(double(C ? input.numel() / C : 0), kFloat64);
  dist::all_reduce(count);
  const double M = count.item();
  check_count(M, shape);
  const Tensor mean = dist::functional::all_reduce(input.sum(axes, true)) / M;  // [1, C, 1, ...]
  const Tensor xc = input - mean;
  const Tensor var = dist::functional::all_reduce((xc * xc).sum(axes, true)) / M;  // biased, about the global mean
  Tensor y = xc * rsqrt(var + eps);
  if (weight.defined()) y = y * weight.reshape(cshape);
  if (bias.defined()) y = y + bias.reshape(cshape);
  NoGradGuard no_grad;  // the running averages are state, not graph
  const double f = exponential_average_factor;
  const std::vector<std::ptrdiff_t> c1{static_cast<std::ptrdiff_t>(C)};
  if (running_mean.defined()) running_mean.mul_(1.0 - f).add_(mean.reshape(c1), f);
  if (running_var.defined()) running_var.mul_(1.0 - f).add_(var.reshape(c1) * (M / (M - 1)), f);  // unbiased
  return y;
}

}  // namespace functional

namespace {
nn::BatchNormBase::BatchStatisticsFn sync_fn(std::optional<nn::BatchNormImpl> impl) {
  return [impl](const Tensor& x, const Tensor& rm, const Tensor& rv, const Tensor& w, const Tensor& b, double f,
                double eps) {
    const bool composed = impl.value_or(nn::default_batchnorm_impl()) == nn::BatchNormImpl::Composed;
    return composed ? functional::sync_batch_norm_composed(x, rm, rv, w, b, f, eps)
                    : functional::sync_batch_norm(x, rm, rv, w, b, f, eps);
  };
}
}  // namespace

SyncBatchNorm::SyncBatchNorm(const nn::BatchNormOptions& options) : BatchNormBase(options, "SyncBatchNorm") {
  set_batch_statistics_fn(sync_fn(options.impl()));
}

void SyncBatchNorm::check_input_dim(const Tensor& input) const {
  if (input.ndim() < 2)
    fail("SyncBatchNorm: expected an input [N, C, ...] of at least 2 dimensions, got shape {}",
         shape_str(input.shape()));
}

std::size_t convert_sync_batchnorm(const std::shared_ptr<nn::Module>& module) {
  if (!module) fail("convert_sync_batchnorm: the module is null");
  std::size_t n = 0;
  for (const auto& m : module->modules()) {
    auto bn = std::dynamic_pointer_cast<nn::BatchNormBase>(m);
    if (!bn || dynamic_cast<SyncBatchNorm*>(bn.get())) continue;
    bn->set_batch_statistics_fn(sync_fn(bn->options().impl()), "sync");
    ++n;
  }
  return n;
}

}  // namespace xg::dist
