// The MaxPool2d and AvgPool2d modules; the ops they call, functional::max_pool2d = xg::max_pool2d and
// functional::avg_pool2d = xg::avg_pool2d, are in framework/src/core/ops_pool.cpp.
#include <ostream>

#include "xgrad/nn/functional.h"
#include "xgrad/nn/pooling.h"

namespace xg::nn {

// ---- modules -----------------------------------------------------------------------------------------------
namespace {
void check_pool_options(const char* who, const Pool2dOptions& o) {
  const Size2 k = o.kernel_size(), s = o.stride().value_or(k), p = o.padding();
  if (k.h == 0 || k.w == 0) fail("{}: kernel_size must be >= 1, got {}", who, to_string(k));
  if (s.h == 0 || s.w == 0) fail("{}: stride must be >= 1, got {}", who, to_string(s));
  if (2 * p.h > k.h || 2 * p.w > k.w)
    fail("{}: padding {} must be at most half the kernel size {}", who, to_string(p), to_string(k));
}

void print_pool(std::ostream& os, const char* who, const Pool2dOptions& o, bool avg, const char* extra = "") {
  os << who << "(kernel_size=" << to_string(o.kernel_size())
     << ", stride=" << to_string(o.stride().value_or(o.kernel_size())) << ", padding=" << to_string(o.padding());
  if (avg && !o.count_include_pad()) os << ", count_include_pad=false";
  os << extra << ")";
}
}  // namespace

MaxPool2d::MaxPool2d(const MaxPool2dOptions& options) : options_(options) { check_pool_options("MaxPool2d", options); }

Tensor MaxPool2d::forward(const Tensor& input) {
  return apply_forward_hooks(
      input, functional::max_pool2d(input, options_.kernel_size(), options_.stride(), options_.padding()));
}

std::pair<Tensor, Tensor> MaxPool2d::forward_with_indices(const Tensor& input) {
  auto [values, indices] =
      functional::max_pool2d_with_indices(input, options_.kernel_size(), options_.stride(), options_.padding());
  return {apply_forward_hooks(input, values), indices};
}

void MaxPool2d::pretty_print(std::ostream& os) const {
  print_pool(os, "MaxPool2d", options_, false, options_.return_indices() ? ", return_indices=true" : "");
}

Tensor MaxUnpool2d::forward(const Tensor& input, const Tensor& indices, std::optional<Size2> output_size) {
  return functional::max_unpool2d(input, indices, options_.kernel_size(), options_.stride(), options_.padding(),
                                  output_size);
}

void MaxUnpool2d::pretty_print(std::ostream& os) const { print_pool(os, "MaxUnpool2d", options_, false); }

Tensor AdaptiveAvgPool2d::forward(const Tensor& input) {
  return apply_forward_hooks(input, functional::adaptive_avg_pool2d(input, output_size_));
}

void AdaptiveAvgPool2d::pretty_print(std::ostream& os) const {
  os << "AdaptiveAvgPool2d(output_size=" << to_string(output_size_) << ")";
}

AvgPool2d::AvgPool2d(const AvgPool2dOptions& options) : options_(options) { check_pool_options("AvgPool2d", options); }

Tensor AvgPool2d::forward(const Tensor& input) {
  return apply_forward_hooks(input, functional::avg_pool2d(input, options_.kernel_size(), options_.stride(),
                                                           options_.padding(), options_.count_include_pad()));
}

void AvgPool2d::pretty_print(std::ostream& os) const { print_pool(os, "AvgPool2d", options_, true); }

}  // namespace xg::nn
