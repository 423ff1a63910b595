// Gradient clipping (by total norm, by value) and the NaN/Inf gradient check.
#include "xgrad/optim/clip_grad.h"

#include <algorithm>
#include <cmath>

#include "xgrad/autograd.h"

namespace xg::optim {

namespace {
// The gradients that exist, as handles sharing the parameters' gradient storage (writes go to .grad()).
std::vector<Tensor> defined_grads(const std::vector<Tensor>& params, const char* who) {
  std::vector<Tensor> grads;
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (!params[i].defined()) fail("{}: parameter {} is an undefined Tensor", who, i);
    Tensor g = params[i].grad();
    if (g.defined()) grads.push_back(g);
  }
  return grads;
}
}  // namespace

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type, bool error_if_nonfinite) {
  if (!(max_norm >= 0)) fail("clip_grad_norm_: max_norm must be >= 0, got {}", max_norm);
  if (!(norm_type > 0)) fail("clip_grad_norm_: norm_type must be > 0 or infinity, got {}", norm_type);
  NoGradGuard no_grad;
  const auto grads = defined_grads(params, "clip_grad_norm_");
  const bool inf_norm = std::isinf(norm_type);

  // total = (sum |g|^p)^(1/p), or max |g| for p = inf; accumulated in double over all gradients.
  double acc = 0;
  bool saw_nan = false;
  for (const Tensor& g : grads) {
    dispatch(g.dtype(), [&](auto v) {
      using T = decltype(v);
      const T* x = g.data_ptr<T>();
      const std::size_t n = g.numel();
      if (inf_norm) {
        for (std::size_t i = 0; i < n; ++i) {
          const double a = std::abs(double(x[i]));
          saw_nan |= std::isnan(a);
          acc = std::max(acc, a);
        }
      } else if (norm_type == 2.0) {
        for (std::size_t i = 0; i < n; ++i) acc += double(x[i]) * double(x[i]);
      } else if (norm_type == 1.0) {
        for (std::size_t i = 0; i < n; ++i) acc += std::abs(double(x[i]));
      } else {
        for (std::size_t i = 0; i < n; ++i) acc += std::pow(std::abs(double(x[i])), norm_type);
      }
    });
  }
  double total = inf_norm           ? acc
                 : norm_type == 1.0 ? acc
                 : norm_type == 2.0 ? std::sqrt(acc)
                                    : std::pow(acc, 1.0 / norm_type);
  if (saw_nan) total = std::nan("");

  if (error_if_nonfinite && !std::isfinite(total))
    fail(
        "clip_grad_norm_: the total norm (order {}) of the gradients is {}, so they cannot be clipped; find where "
        "the non-finite gradient comes from (check_finite_grads, anomaly mode) or pass error_if_nonfinite=false",
        norm_type, total);

  // PyTorch 1.13 multiplies by clamp(coef, max=1): a no-op when coef >= 1, NaN everywhere when the norm is NaN.
  const double coef = max_norm / (total + 1e-6);
  const double clamped = std::isnan(coef) ? coef : std::min(coef, 1.0);
  if (clamped != 1.0) {
    for (Tensor g : grads) {
      dispatch(g.dtype(), [&](auto v) {
        using T = decltype(v);
        T* x = g.data_ptr<T>();
        const T c = static_cast<T>(clamped);
        for (std::size_t i = 0, n = g.numel(); i < n; ++i) x[i] *= c;
      });
    }
  }
  return total;
}

void clip_grad_value_(const std::vector<Tensor>& params, double clip_value) {
  if (!(clip_value >= 0)) fail("clip_grad_value_: clip_value must be >= 0, got {}", clip_value);
  NoGradGuard no_grad;
  for (Tensor g : defined_grads(params, "clip_grad_value_")) {
    dispatch(g.dtype(), [&](auto v) {
      using T = decltype(v);
      T* x = g.data_ptr<T>();
      const T hi = static_cast<T>(clip_value), lo = -hi;
      // Written with comparisons (not std::clamp) so that NaN stays NaN, as in torch.clamp.
      for (std::size_t i = 0, n = g.numel(); i < n; ++i) x[i] = x[i] < lo ? lo : (x[i] > hi ? hi : x[i]);
    });
  }
}

namespace detail {
void check_finite_grads(const std::vector<Tensor>& params, const std::vector<std::string>& names,
                        const std::string& who, const std::string& consequence) {
  if (!names.empty() && names.size() != params.size())
    fail("{}: got {} names for {} parameters; give one name per parameter", who, names.size(), params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (!params[i].defined()) fail("{}: parameter {} is an undefined Tensor", who, i);
    const Tensor g = params[i].grad();
    if (!g.defined()) continue;
    std::size_t bad = 0, first = 0;
    double first_value = 0;
    dispatch(g.dtype(), [&](auto v) {
      using T = decltype(v);
      const T* x = g.data_ptr<T>();
      for (std::size_t k = 0, n = g.numel(); k < n; ++k) {
        if (std::isfinite(x[k])) continue;
        if (bad++ == 0) {
          first = k;
          first_value = double(x[k]);
        }
      }
    });
    if (bad == 0) continue;
    const std::string& name = !names.empty() ? names[i] : params[i].label();
    fail(
        "{}: the gradient of parameter {}{} (shape {}, {}) has {} non-finite value{} (the first, at flat index {}, "
        "is {}){}. Find the op that produced it with anomaly mode, lower the learning rate, or clip the gradients",
        who, i, name.empty() ? "" : " '" + name + "'", shape_str(g.shape()), g.dtype(), bad, bad == 1 ? "" : "s", first,
        first_value, consequence.empty() ? "" : "; " + consequence);
  }
}
}  // namespace detail

void check_finite_grads(const std::vector<Tensor>& params, const std::vector<std::string>& names) {
  detail::check_finite_grads(params, names, "check_finite_grads", "");
}

}  // namespace xg::optim
