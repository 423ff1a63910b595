// xgrad/nn/options.h — small vocabulary shared by the layer options: the XG_ARG builder macro, and Size2 for
// (height, width) pairs and the loss Reduction (both from xgrad/ops.h).
#pragma once

#include "xgrad/ops.h"

/// Declares an option with a builder setter and two getters, as libtorch's TORCH_ARG:
///   struct FooOptions { XG_ARG(double, eps) = 1e-5; };
///   auto o = FooOptions().eps(1e-3);   // setters return *this, so calls chain
///   double e = o.eps();
#define XG_ARG(T, name)                                    \
 public:                                                   \
  auto& name(T const& new_##name) {                        \
    this->name##_ = new_##name;                            \
    return *this;                                          \
  }                                                        \
  T const& name() const noexcept { return this->name##_; } \
  T& name() noexcept { return this->name##_; }             \
                                                           \
 private:                                                  \
  T name##_

namespace xg::nn {

/// Size2 (a (height, width) pair: kernel sizes, strides, paddings) and the loss Reduction belong to the
/// framework's ops (xgrad/ops.h: xg::conv2d, xg::nll_loss, ...); the layer options use the same types.
using xg::Reduction;
using xg::Size2;
using xg::to_string;

}  // namespace xg::nn
