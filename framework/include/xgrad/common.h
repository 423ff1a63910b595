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
/// who need it. (PyTorch: torch.float32 / torch.float64.)
enum class Dtype { Float32, Float64 };
inline constexpr Dtype kFloat32 = Dtype::Float32;
inline constexpr Dtype kFloat64 = Dtype::Float64;

std::string_view dtype_name(Dtype d);  // "float32" / "float64"
std::size_t dtype_size(Dtype d);       // 4 / 8

template <class T> constexpr Dtype dtype_of();
template <> constexpr Dtype dtype_of<float>() { return Dtype::Float32; }
template <> constexpr Dtype dtype_of<double>() { return Dtype::Float64; }

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
