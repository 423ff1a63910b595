// Dropout: composed from a constant mask (mul), so autograd needs nothing new.
#include "xgrad/nn/dropout.h"

#include <ostream>

#include "xgrad/nn/functional.h"
#include "xgrad/ops.h"

namespace xg::nn {

namespace {
void check_p(const char* who, double p) {
  if (!(p >= 0.0 && p <= 1.0)) fail("{}: the drop probability p must be in [0, 1], got {}", who, p);
}
}  // namespace

namespace functional {

Tensor dropout(const Tensor& input, double p, bool training, Generator* gen) {
  check_p("dropout", p);
  if (!training || p == 0.0) return input;
  // mask = kept/(1-p) with kept ~ Bernoulli(1-p): the expected value of the output equals the input
  // ("inverted" dropout, so eval needs no rescaling). p = 1 drops everything (scale 0, not 1/0).
  Generator& g = gen ? *gen : default_generator();
  const double scale = p < 1.0 ? 1.0 / (1.0 - p) : 0.0;
  Tensor mask = zeros(input.shape(), input.dtype());
  dispatch(input.dtype(), [&](auto t) {
    using T = decltype(t);
    T* m = mask.data_ptr<T>();
    for (std::size_t i = 0, n = mask.numel(); i < n; ++i) m[i] = g.uniform() >= p ? static_cast<T>(scale) : T(0);
  });
  return mul(input, mask);  // d/dinput = mask
}

Tensor dropout(const Tensor& input, const Tensor& mask, double p) {
  if (!(p >= 0.0 && p < 1.0)) fail("dropout: p must be in [0, 1) with a given mask (1/(1-p) scales the kept values), got {}", p);
  if (!input.defined() || !mask.defined()) fail("dropout: the input or the mask is undefined");
  const Shape is = input.shape(), ms = mask.shape();
  bool fits = ms.size() <= is.size();  // right-aligned, each mask axis 1 or the input's size
  for (std::size_t i = 0; fits && i < ms.size(); ++i)
    fits = ms[i] == 1 || ms[i] == is[is.size() - ms.size() + i];
  if (!fits)
    fail("dropout: the mask of shape {} must broadcast to the input's shape {}", shape_str(mask.shape()),
         shape_str(input.shape()));
  if (!mask.is_floating_point() && mask.dtype() != kBool)
    fail("dropout: the mask must be bool (true = keep) or 0/1 floating point, got {}", mask.dtype());
  // input·mask/(1-p) with the mask in the input's dtype; d/dinput = mask/(1-p)
  const Tensor scaled = mul(mask.detach().to(input.dtype()), scalar(1.0 / (1.0 - p), input.dtype()));
  return mul(input, scaled);
}

}  // namespace functional

Dropout::Dropout(const DropoutOptions& options) : options_(options) { check_p("Dropout", options.p()); }

Tensor Dropout::forward(const Tensor& input) {
  return apply_forward_hooks(input, functional::dropout(input, options_.p(), is_training(), options_.generator()));
}

void Dropout::pretty_print(std::ostream& os) const { os << "Dropout(p=" << options_.p() << ")"; }

}  // namespace xg::nn
