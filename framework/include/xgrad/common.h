// xgrad/common.h — the small vocabulary every other header uses: dtypes, shapes, axes and errors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

namespace xg {

/// Element type of a tensor. float32 is the default everywhere; float64 is there for gradcheck and for users
/// who need it. int64 / int32 hold class labels and indices, bool holds masks (the results of comparisons).
/// (PyTorch: torch.float32, torch.float64, torch.int64, torch.int32, torch.bool.) Only floating-point tensors
/// take part in autograd: asking an integer or bool tensor to require grad is an error, as in PyTorch.
/// The order is that of Storage's alternatives (tensor.h).
enum class Dtype { Float32, Float64, Int64, Int32, Bool };
inline constexpr Dtype kFloat32 = Dtype::Float32;
inline constexpr Dtype kFloat64 = Dtype::Float64;
inline constexpr Dtype kInt64 = Dtype::Int64;
inline constexpr Dtype kInt32 = Dtype::Int32;
inline constexpr Dtype kBool = Dtype::Bool;

std::string_view dtype_name(Dtype d);  // "float32", "float64", "int64", "int32", "bool"
std::size_t dtype_size(Dtype d);       // 4, 8, 8, 4, 1

/// float32 or float64 (PyTorch: dtype.is_floating_point).
constexpr bool is_floating_point(Dtype d) { return d == Dtype::Float32 || d == Dtype::Float64; }
/// int64 or int32 (bool is not counted, as in PyTorch's is_integral(include_bool=false)).
constexpr bool is_integral(Dtype d) { return d == Dtype::Int64 || d == Dtype::Int32; }

/// PyTorch's torch.promote_types: the smallest dtype both values fit in, ordered by category
/// bool < integer < floating point and by width within a category (int32 < int64, float32 < float64).
/// Any integer with any float gives that float: int64 ⊕ float32 -> float32, as in PyTorch.
Dtype promote_types(Dtype a, Dtype b);

template <class T> constexpr Dtype dtype_of();
template <> constexpr Dtype dtype_of<float>() { return Dtype::Float32; }
template <> constexpr Dtype dtype_of<double>() { return Dtype::Float64; }
template <> constexpr Dtype dtype_of<std::int64_t>() { return Dtype::Int64; }
template <> constexpr Dtype dtype_of<std::int32_t>() { return Dtype::Int32; }
template <> constexpr Dtype dtype_of<bool>() { return Dtype::Bool; }

/// A tensor's shape: sizes of its axes, outermost first (row-major). `{}` is a 0-d scalar.
using Shape = std::vector<std::size_t>;
/// A list of axes; negative axes count from the end as in PyTorch (-1 is the last axis).
using Dims = std::vector<int>;

std::size_t numel_of(const Shape& s);
std::string shape_str(const Shape& s);  // "[64,10]"

/// Every error xgrad reports: a message naming what was wrong, the shapes/values involved and what to do.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Throws xg::Error with a fmt-formatted message.
template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

/// Normalises a possibly negative axis against `ndim`; throws "<op>: axis 3 is out of range for a tensor of
/// shape [2,3] (valid axes are -2..1)".
std::size_t normalize_axis(int axis, std::size_t ndim, std::string_view op, const Shape& shape);

}  // namespace xg

template <>
struct fmt::formatter<xg::Dtype> : fmt::formatter<std::string_view> {
  auto format(xg::Dtype d, fmt::format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(xg::dtype_name(d), ctx);
  }
};
