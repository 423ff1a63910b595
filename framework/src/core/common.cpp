// Shapes, dtypes and axis checks shared by every op.
#include "xgrad/common.h"

namespace xg {

std::string_view dtype_name(Dtype d) { return d == Dtype::Float32 ? "float32" : "float64"; }
std::size_t dtype_size(Dtype d) { return d == Dtype::Float32 ? 4 : 8; }

std::size_t numel_of(const Shape& s) {
  std::size_t n = 1;
  for (auto v : s) n *= v;
  return n;
}

std::string shape_str(const Shape& s) { return fmt::format("[{}]", fmt::join(s, ",")); }

std::size_t normalize_axis(int axis, std::size_t ndim, std::string_view op, const Shape& shape) {
  const auto n = static_cast<int>(ndim);
  if (n == 0) {
    // A 0-d tensor accepts axis 0 / -1 the way PyTorch does (as if it had shape [1]).
    if (axis == 0 || axis == -1) return 0;
    fail("{}: axis {} is out of range for a 0-d tensor (valid axes are -1..0)", op, axis);
  }
  if (axis < -n || axis >= n)
    fail("{}: axis {} is out of range for a tensor of shape {} (valid axes are {}..{})", op, axis,
         shape_str(shape), -n, n - 1);
  return static_cast<std::size_t>(axis < 0 ? axis + n : axis);
}

}  // namespace xg
