// xgrad/nn/pooling.h — MaxPool2d and AvgPool2d.
#pragma once

#include <optional>

#include "xgrad/nn/module.h"
#include "xgrad/nn/options.h"

namespace xg::nn {

/// Options of MaxPool2d / AvgPool2d: `MaxPool2dOptions(2)`; stride defaults to the kernel size; padding must
/// be at most half the kernel (as PyTorch). No ceil_mode or dilation.
struct Pool2dOptions {
  Pool2dOptions(Size2 kernel_size) : kernel_size_(kernel_size) {}  // NOLINT: implicit, MaxPool2d(2)
  XG_ARG(Size2, kernel_size);
  XG_ARG(std::optional<Size2>, stride) = std::nullopt;
  XG_ARG(Size2, padding) = 0;
  /// AvgPool2d only: divide by kH·kW even where the window covers padding (PyTorch's default).
  XG_ARG(bool, count_include_pad) = true;
  /// MaxPool2d only: also compute the winners' positions, read with MaxPool2d::forward_with_indices (PyTorch's
  /// return_indices=True; forward() alone returns the values).
  XG_ARG(bool, return_indices) = false;
};
using MaxPool2dOptions = Pool2dOptions;
using AvgPool2dOptions = Pool2dOptions;

/// functional::max_pool2d as a module: [N, C, H, W] -> [N, C, H_out, W_out].
class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(const MaxPool2dOptions& options);
  explicit MaxPool2d(Size2 kernel_size) : MaxPool2d(MaxPool2dOptions(kernel_size)) {}
  Tensor forward(const Tensor& input) override;
  /// {values, indices (int64 [N, C, Ho, Wo], flat r·W + c in each plane)}: what MaxUnpool2d takes.
  std::pair<Tensor, Tensor> forward_with_indices(const Tensor& input);
  void pretty_print(std::ostream& os) const override;
  const Pool2dOptions& options() const { return options_; }

 private:
  Pool2dOptions options_;
};

/// functional::max_unpool2d as a module: forward(values, indices[, output_size]) -> [N, C, H, W], zeros except
/// at the indices (PyTorch: nn.MaxUnpool2d). Options as MaxPool2d's (kernel_size, stride, padding).
class MaxUnpool2d : public Module {
 public:
  explicit MaxUnpool2d(const Pool2dOptions& options) : options_(options) {}
  explicit MaxUnpool2d(Size2 kernel_size) : MaxUnpool2d(Pool2dOptions(kernel_size)) {}
  Tensor forward(const Tensor& input, const Tensor& indices, std::optional<Size2> output_size = std::nullopt);
  void pretty_print(std::ostream& os) const override;

 private:
  Pool2dOptions options_;
};

/// functional::adaptive_avg_pool2d as a module: any [N, C, H, W] -> [N, C, oh, ow] (PyTorch:
/// nn.AdaptiveAvgPool2d; AdaptiveAvgPool2d(1) is global average pooling).
class AdaptiveAvgPool2d : public Module {
 public:
  explicit AdaptiveAvgPool2d(Size2 output_size) : output_size_(output_size) {}
  Tensor forward(const Tensor& input) override;
  void pretty_print(std::ostream& os) const override;

 private:
  Size2 output_size_;
};

/// functional::avg_pool2d as a module.
class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(const AvgPool2dOptions& options);
  explicit AvgPool2d(Size2 kernel_size) : AvgPool2d(AvgPool2dOptions(kernel_size)) {}
  Tensor forward(const Tensor& input) override;
  void pretty_print(std::ostream& os) const override;

 private:
  Pool2dOptions options_;
};

}  // namespace xg::nn
