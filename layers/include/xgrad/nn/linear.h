// xgrad/nn/linear.h — Linear, Flatten and Identity.
#pragma once

#include "xgrad/nn/module.h"
#include "xgrad/nn/options.h"
#include "xgrad/random.h"

namespace xg::nn {

/// Options of Linear: `LinearOptions(784, 100).bias(false)`.
struct LinearOptions {
  LinearOptions(std::size_t in_features, std::size_t out_features)
      : in_features_(in_features), out_features_(out_features) {}
  XG_ARG(std::size_t, in_features);
  XG_ARG(std::size_t, out_features);
  /// Whether to learn an additive bias.
  XG_ARG(bool, bias) = true;
};

/// y = x·Wᵀ + b (xg::linear).  x [..., in_features] -> y [..., out_features].
/// weight [out_features, in_features] (PyTorch's layout), bias [out_features]. Initialised as PyTorch:
/// weight kaiming_uniform_(a = √5), i.e. U(-1/√in, 1/√in), and bias U(-1/√in, 1/√in), from the default
/// generator (or reset_parameters(gen)).
class Linear : public Module {
 public:
  explicit Linear(const LinearOptions& options);
  Linear(std::size_t in_features, std::size_t out_features) : Linear(LinearOptions(in_features, out_features)) {}
  Tensor forward(const Tensor& input) override;
  /// Draws fresh initial values (PyTorch's default init) from `gen` (or the default generator).
  void reset_parameters(Generator* gen = nullptr);
  void pretty_print(std::ostream& os) const override;
  const LinearOptions& options() const { return options_; }

  Tensor weight;  // [out_features, in_features]
  Tensor bias;    // [out_features], undefined when options.bias() is false

 private:
  LinearOptions options_;
};

/// Options of Flatten: the axes to merge (PyTorch's defaults 1 and -1 keep the batch axis).
struct FlattenOptions {
  XG_ARG(int, start_dim) = 1;
  XG_ARG(int, end_dim) = -1;
};

/// Merges axes start_dim..end_dim into one: [N, C, H, W] -> [N, C·H·W] with the defaults.
class Flatten : public Module {
 public:
  explicit Flatten(const FlattenOptions& options = {}) : options_(options) {}
  Tensor forward(const Tensor& input) override;
  void pretty_print(std::ostream& os) const override;

 private:
  FlattenOptions options_;
};

/// Splits axis `dim` into `sizes` (PyTorch: nn.Unflatten(dim, sizes)): Unflatten(1, {16, 4, 4}) turns [N, 256]
/// into [N, 16, 4, 4]. One entry of sizes may be -1 (inferred).
class Unflatten : public Module {
 public:
  Unflatten(int dim, std::vector<std::ptrdiff_t> sizes) : dim_(dim), sizes_(std::move(sizes)) {}
  Tensor forward(const Tensor& input) override;
  void pretty_print(std::ostream& os) const override;

 private:
  int dim_;
  std::vector<std::ptrdiff_t> sizes_;
};

/// Returns its input unchanged (a placeholder, e.g. to switch BatchNorm off without changing the names).
class Identity : public Module {
 public:
  Identity() = default;
  Tensor forward(const Tensor& input) override;
};

}  // namespace xg::nn
