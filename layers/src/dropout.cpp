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

}  // namespace functional

Dropout::Dropout(const DropoutOptions& options) : options_(options) { check_p("Dropout", options.p()); }

Tensor Dropout::forward(const Tensor& input) {
  return apply_forward_hooks(input, functional::dropout(input, options_.p(), is_training(), options_.generator()));
}

void Dropout::pretty_print(std::ostream& os) const { os << "Dropout(p=" << options_.p() << ")"; }

}  // namespace xg::nn
