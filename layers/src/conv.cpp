// The Conv2d module; the op it calls, functional::conv2d = xg::conv2d (im2col + GEMM), is in
// framework/src/core/ops_conv.cpp.
#include <cmath>
#include <ostream>

#include "xgrad/nn/conv.h"
#include "xgrad/nn/functional.h"
#include "xgrad/nn/init.h"

namespace xg::nn {

// ---- Conv2d ----------------------------------------------------------------------------------------------
Conv2d::Conv2d(const Conv2dOptions& o) : options_(o) {
  if (o.in_channels() == 0 || o.out_channels() == 0)
    fail("Conv2d: in_channels and out_channels must be > 0, got {} and {}", o.in_channels(), o.out_channels());
  if (o.kernel_size().h == 0 || o.kernel_size().w == 0)
    fail("Conv2d: kernel_size must be >= 1, got {}", to_string(o.kernel_size()));
  if (o.stride().h == 0 || o.stride().w == 0) fail("Conv2d: stride must be >= 1, got {}", to_string(o.stride()));
  weight = register_parameter(
      "weight", zeros({o.out_channels(), o.in_channels(), o.kernel_size().h, o.kernel_size().w}));
  bias = register_parameter("bias", o.bias() ? zeros({o.out_channels()}) : Tensor());
  reset_parameters();
}

void Conv2d::reset_parameters(Generator* gen) {
  // PyTorch's default, as for Linear: kaiming_uniform_(a = √5) = U(-1/√fan_in, 1/√fan_in), fan_in = C_in·kH·kW.
  init::kaiming_uniform_(weight, std::sqrt(5.0), init::FanMode::FanIn, init::Nonlinearity::LeakyReLU, gen);
  if (bias.defined()) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(init::calculate_fan_in_and_fan_out(weight).first));
    init::uniform_(bias, -bound, bound, gen);
  }
}

Tensor Conv2d::forward(const Tensor& input) {
  return apply_forward_hooks(input, functional::conv2d(input, weight, bias, options_.stride(), options_.padding()));
}

void Conv2d::pretty_print(std::ostream& os) const {
  os << "Conv2d(" << options_.in_channels() << ", " << options_.out_channels()
     << ", kernel_size=" << to_string(options_.kernel_size()) << ", stride=" << to_string(options_.stride());
  if (!(options_.padding() == Size2(0))) os << ", padding=" << to_string(options_.padding());
  if (!options_.bias()) os << ", bias=false";
  os << ")";
}

}  // namespace xg::nn
