// Shapes, dtypes and axis checks shared by every op.
#include "xgrad/common.h"

namespace xg {

std::string_view dtype_name(Dtype d) {
  switch (d) {
    case Dtype::Float32: return "float32";
    case Dtype::Float64: return "float64";
    case Dtype::Int64: return "int64";
    case Dtype::Int32: return "int32";
    case Dtype::Bool: return "bool";
  }
  return "?";
}
std::size_t dtype_size(Dtype d) {
  switch (d) {
    case Dtype::Float32: case Dtype::Int32: return 4;
    case Dtype::Float64: case Dtype::Int64: return 8;
    case Dtype::Bool: return 1;
  }
  return 0;
}

Dtype promote_types(Dtype a, Dtype b) {
  if (a == b) return a;
  auto category = [](Dtype d) { return is_floating_point(d) ? 2 : is_integral(d) ? 1 : 0; };
  const int ca = category(a), cb = category(b);
  if (ca != cb) return ca > cb ? a : b;  // the higher category wins with its own width: int64 ⊕ float32 = float32
  // same category, different widths: the wider one
  if (ca == 2) return kFloat64;
  return kInt64;  // int32 ⊕ int64
}

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
