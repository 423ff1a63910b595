// xgrad/nn/conv.h — Conv2d.
#pragma once

#include "xgrad/nn/module.h"
#include "xgrad/nn/options.h"
#include "xgrad/random.h"

namespace xg::nn {

/// Options of Conv2d: `Conv2dOptions(1, 32, 3).padding(1).bias(false)`. Only zero padding, no dilation or
/// groups (not needed by xgrad's models; PyTorch has them).
struct Conv2dOptions {
  Conv2dOptions(std::size_t in_channels, std::size_t out_channels, Size2 kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  XG_ARG(std::size_t, in_channels);
  XG_ARG(std::size_t, out_channels);
  XG_ARG(Size2, kernel_size);
  XG_ARG(Size2, stride) = 1;
  /// Zeros added on each side of the input (ph rows top and bottom, pw columns left and right).
  XG_ARG(Size2, padding) = 0;
  XG_ARG(bool, bias) = true;
};

/// 2-d convolution (functional::conv2d): [N, C_in, H, W] -> [N, C_out, H_out, W_out].
/// weight [C_out, C_in, kH, kW] (PyTorch's layout), bias [C_out]. Initialised as PyTorch: U(-1/√fan_in,
/// 1/√fan_in) for both, fan_in = C_in·kH·kW.
class Conv2d : public Module {
 public:
  explicit Conv2d(const Conv2dOptions& options);
  Conv2d(std::size_t in_channels, std::size_t out_channels, Size2 kernel_size)
      : Conv2d(Conv2dOptions(in_channels, out_channels, kernel_size)) {}
  Tensor forward(const Tensor& input) override;
  void reset_parameters(Generator* gen = nullptr);
  void pretty_print(std::ostream& os) const override;
  const Conv2dOptions& options() const { return options_; }

  Tensor weight;  // [C_out, C_in, kH, kW]
  Tensor bias;    // [C_out], undefined when options.bias() is false

 private:
  Conv2dOptions options_;
};

}  // namespace xg::nn
