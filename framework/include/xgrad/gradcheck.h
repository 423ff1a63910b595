// xgrad/gradcheck.h — checks analytic gradients against central finite differences, in float64.
//
//   auto r = xg::gradcheck([](const std::vector<xg::Tensor>& in) { return (in[0] * in[1]).sum(); },
//                          {a, b});   // a, b: float64 tensors with requires_grad
//   CHECK(r.ok);  // or let it throw: options.raise = true (the default) throws xg::Error with the report
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "xgrad/tensor.h"

namespace xg {

struct GradcheckOptions {
  double eps = 1e-6;   // finite-difference step
  double atol = 1e-5;  // pass if |analytic - numeric| <= atol + rtol·|numeric| (PyTorch's rule and defaults)
  double rtol = 1e-3;
  bool raise = true;   // throw xg::Error with the report on failure (otherwise just return it)
  std::size_t full_jacobian_max_outputs = 256;  // above this, check 3 random vector-Jacobian products instead
};

struct GradcheckResult {
  bool ok = true;
  std::string op;               // grad_fn name of the checked output
  double max_abs_error = 0;     // worst |analytic - numeric|
  double max_rel_error = 0;     // worst |analytic - numeric| / max(|numeric|, 1e-12)
  std::size_t worst_input = 0;  // where the worst element is: input index ...
  std::size_t worst_element = 0;  // ... flat element index within it ...
  std::size_t worst_output = 0;   // ... and output element (or projection) index
  double analytic = 0, numeric = 0;
  std::string report;           // one-paragraph human-readable summary
};

using GradcheckFn = std::function<Tensor(const std::vector<Tensor>& inputs)>;

/// Compares d f / d inputs from backward with central differences. Inputs must be float64; those with
/// requires_grad are checked, the others held constant. `f` may return any shape.
GradcheckResult gradcheck(const GradcheckFn& f, const std::vector<Tensor>& inputs, const GradcheckOptions& opts = {});

}  // namespace xg
