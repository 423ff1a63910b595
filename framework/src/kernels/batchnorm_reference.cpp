// xgrad — BatchNorm as plain loops (xgrad/kernels/batchnorm.h, "reference"): what the fused kernels compute,
// written as directly as possible. x[(n*C + c)*S + s]; statistics over the m = N*S values of each channel.
#include <cmath>
#include <cstddef>

#include "xgrad/kernels/batchnorm.h"

namespace xg::kernels {

template <class T>
void batch_norm_forward_reference(const T* x, const T* weight, const T* bias, T* y, T* save_mean, T* save_invstd,
                                  T* running_mean, T* running_var, BnDims d, double eps, double f) {
  const double m = double(d.N) * double(d.S);
  for (std::size_t c = 0; c < d.C; ++c) {
    double sum = 0;  // pass 1: the mean
    for (std::size_t n = 0; n < d.N; ++n)
      for (std::size_t s = 0; s < d.S; ++s) sum += x[(n * d.C + c) * d.S + s];
    const double mean = sum / m;
    double ssq = 0;  // pass 2: the biased variance about it
    for (std::size_t n = 0; n < d.N; ++n)
      for (std::size_t s = 0; s < d.S; ++s) {
        const double xc = x[(n * d.C + c) * d.S + s] - mean;
        ssq += xc * xc;
      }
    const double invstd = 1.0 / std::sqrt(ssq / m + eps);
    const double w = weight ? double(weight[c]) : 1.0, b = bias ? double(bias[c]) : 0.0;
    for (std::size_t n = 0; n < d.N; ++n)  // pass 3: y = w * xhat + b
      for (std::size_t s = 0; s < d.S; ++s) {
        const std::size_t i = (n * d.C + c) * d.S + s;
        y[i] = T(w * (x[i] - mean) * invstd + b);
      }
    if (save_mean) save_mean[c] = T(mean);
    if (save_invstd) save_invstd[c] = T(invstd);
    if (running_mean) running_mean[c] = T((1 - f) * running_mean[c] + f * mean);
    if (running_var) running_var[c] = T((1 - f) * running_var[c] + f * ssq / (m - 1));  // unbiased
  }
}

template <class T>
void batch_norm_backward_reference(const T* dy, const T* x, const T* weight, [[maybe_unused]] const T* save_mean,
                                   const T* save_invstd, T* dx, T* dweight, T* dbias, BnDims d) {
  const double m = double(d.N) * double(d.S);
  for (std::size_t c = 0; c < d.C; ++c) {
    double sum = 0;  // the exact batch mean (save_mean is only its rounding to T)
    for (std::size_t n = 0; n < d.N; ++n)
      for (std::size_t s = 0; s < d.S; ++s) sum += x[(n * d.C + c) * d.S + s];
    const double mean = sum / m, invstd = save_invstd[c];
    double sum_dy = 0, sum_dy_xhat = 0;  // dbias, dweight
    for (std::size_t n = 0; n < d.N; ++n)
      for (std::size_t s = 0; s < d.S; ++s) {
        const std::size_t i = (n * d.C + c) * d.S + s;
        sum_dy += dy[i];
        sum_dy_xhat += dy[i] * (x[i] - mean) * invstd;
      }
    if (dbias) dbias[c] = T(sum_dy);
    if (dweight) dweight[c] = T(sum_dy_xhat);
    if (!dx) continue;
    const double w = weight ? double(weight[c]) : 1.0;
    for (std::size_t n = 0; n < d.N; ++n)  // dx = w*invstd*(dy - mean(dy) - xhat*mean(dy*xhat))
      for (std::size_t s = 0; s < d.S; ++s) {
        const std::size_t i = (n * d.C + c) * d.S + s;
        const double xhat = (x[i] - mean) * invstd;
        dx[i] = T(w * invstd * (dy[i] - sum_dy / m - xhat * sum_dy_xhat / m));
      }
  }
}

#define XG_BN_REFERENCE(T)                                                                                        \
  template void batch_norm_forward_reference<T>(const T*, const T*, const T*, T*, T*, T*, T*, T*, BnDims, double, \
                                                double);                                                         \
  template void batch_norm_backward_reference<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, T*, BnDims);
XG_BN_REFERENCE(float)
XG_BN_REFERENCE(double)
#undef XG_BN_REFERENCE

}  // namespace xg::kernels
