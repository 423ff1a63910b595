// xgrad/nn/options.h — small vocabulary shared by the layer options: the XG_ARG builder macro, Size2 for
// (height, width) pairs, and the loss Reduction.
#pragma once

#include <cstddef>
#include <string>

#include <fmt/format.h>

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

/// A (height, width) pair for kernel sizes, strides and paddings. One number means both:
/// `Size2(3)` == `Size2(3, 3)`; braces give two: `{3, 5}`. (libtorch: ExpandingArray<2>.)
struct Size2 {
  std::size_t h = 0;
  std::size_t w = 0;
  Size2(std::size_t both) : h(both), w(both) {}  // NOLINT: implicit on purpose, as libtorch
  Size2(std::size_t height, std::size_t width) : h(height), w(width) {}
  bool operator==(const Size2&) const = default;
};
inline std::string to_string(const Size2& s) { return fmt::format("({}, {})", s.h, s.w); }

/// How a loss reduces its per-element values: keep them (None), average (Mean, the default) or add (Sum).
enum class Reduction { None, Mean, Sum };
inline const char* to_string(Reduction r) {
  return r == Reduction::None ? "none" : r == Reduction::Mean ? "mean" : "sum";
}

}  // namespace xg::nn
