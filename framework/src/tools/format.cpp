// Printing tensors the way PyTorch does: tensor([[1.0000, 2.0000], ...], shape=[2,2], grad_fn=<mul>).
#include <cmath>
#include <ostream>

#include "xgrad/autograd.h"
#include "xgrad/tensor.h"

namespace xg {

namespace {
constexpr std::size_t kSummariseAbove = 1000;  // PyTorch's default threshold
constexpr std::size_t kEdgeItems = 3;

struct NumberStyle {
  enum Kind { Integer, Fixed, Scientific, Int, Bool } kind = Fixed;  // Int, Bool: integer and bool dtypes
  std::size_t width = 0;
};

std::string format_number(double v, const NumberStyle& s) {
  if (s.kind == NumberStyle::Bool) return v != 0 ? "True" : "False";    // PyTorch: tensor([ True, False])
  if (s.kind == NumberStyle::Int) return fmt::format("{}", static_cast<long long>(v));  // tensor([1, 2])
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  switch (s.kind) {
    case NumberStyle::Integer: return fmt::format("{:.0f}.", v);
    case NumberStyle::Scientific: return fmt::format("{:.4e}", v);
    default: return fmt::format("{:.4f}", v);
  }
}

// Which elements are shown along one axis: all, or the first and last kEdgeItems.
std::vector<std::ptrdiff_t> shown(std::size_t n, bool summarise) {
  std::vector<std::ptrdiff_t> idx;
  if (!summarise || n <= 2 * kEdgeItems) {
    for (std::size_t i = 0; i < n; ++i) idx.push_back(static_cast<std::ptrdiff_t>(i));
  } else {
    for (std::size_t i = 0; i < kEdgeItems; ++i) idx.push_back(static_cast<std::ptrdiff_t>(i));
    idx.push_back(-1);  // "..."
    for (std::size_t i = n - kEdgeItems; i < n; ++i) idx.push_back(static_cast<std::ptrdiff_t>(i));
  }
  return idx;
}

// The values a summarised print shows: the first and last kEdgeItems along every axis.
void collect_shown(std::vector<double>& out, const std::vector<double>& v, const Shape& shape, std::size_t axis,
                   std::size_t offset) {
  std::size_t stride = 1;
  for (std::size_t i = axis + 1; i < shape.size(); ++i) stride *= shape[i];
  for (auto i : shown(shape[axis], true)) {
    if (i < 0) continue;
    const std::size_t off = offset + static_cast<std::size_t>(i) * stride;
    if (axis + 1 == shape.size())
      out.push_back(v[off]);
    else
      collect_shown(out, v, shape, axis + 1, off);
  }
}

void format_axis(std::string& out, const std::vector<double>& v, const Shape& shape, std::size_t axis,
                 std::size_t offset, const NumberStyle& style, bool summarise, std::size_t indent) {
  std::size_t stride = 1;
  for (std::size_t i = axis + 1; i < shape.size(); ++i) stride *= shape[i];
  out += '[';
  const auto idx = shown(shape[axis], summarise);
  for (std::size_t k = 0; k < idx.size(); ++k) {
    if (k > 0) {
      out += ',';
      if (axis + 1 == shape.size()) {
        out += ' ';
      } else {
        out.append(shape.size() - axis - 1, '\n');
        out.append(indent + axis + 1, ' ');
      }
    }
    if (idx[k] < 0) {
      out += axis + 1 == shape.size() ? " ..." : "...";  // PyTorch: "2.,  ..., 7." within a row
      continue;
    }
    const std::size_t off = offset + static_cast<std::size_t>(idx[k]) * stride;
    if (axis + 1 == shape.size()) {
      std::string s = format_number(v[off], style);
      if (s.size() < style.width) out.append(style.width - s.size(), ' ');
      out += s;
    } else {
      format_axis(out, v, shape, axis + 1, off, style, summarise, indent);
    }
  }
  out += ']';
}
}  // namespace

std::string to_string(const Tensor& t) {
  if (!t.defined()) return "tensor(undefined)";
  const Shape shape = t.shape();
  const std::vector<double> v = t.to_vector();
  const bool summarise = v.size() > kSummariseAbove;

  // The number style is chosen from the elements that will be printed (PyTorch's rule):
  // integers -> "3."; else scientific if max/min of the nonzero |values| > 1000, max > 1e8 or min < 1e-4;
  // else fixed with 4 decimals. All are right-aligned to the widest.
  std::vector<double> printed;
  if (summarise)
    collect_shown(printed, v, shape, 0, 0);
  else
    printed = v;
  NumberStyle style;
  bool all_int = true;
  double max_abs = 0, min_abs = INFINITY;
  for (double x : printed) {
    if (!std::isfinite(x)) continue;
    if (x != std::round(x)) all_int = false;
    if (x == 0) continue;
    max_abs = std::max(max_abs, std::abs(x));
    min_abs = std::min(min_abs, std::abs(x));
  }
  if (t.dtype() == kBool)
    style.kind = NumberStyle::Bool;
  else if (is_integral(t.dtype()))
    style.kind = NumberStyle::Int;
  else if (all_int)
    style.kind = max_abs > 1e8 ? NumberStyle::Scientific : NumberStyle::Integer;
  else if (max_abs > 1e8 || min_abs < 1e-4 || max_abs / min_abs > 1e3)
    style.kind = NumberStyle::Scientific;
  for (double x : printed) style.width = std::max(style.width, format_number(x, style).size());

  std::string out = "tensor(";
  if (shape.empty()) {
    out += format_number(v[0], style);
  } else if (v.empty()) {
    out += "[]";
  } else {
    format_axis(out, v, shape, 0, 0, style, summarise, 7);
  }
  out += fmt::format(", shape={}", shape_str(shape));
  if (t.dtype() != kFloat32) out += fmt::format(", dtype={}", t.dtype());
  if (auto fn = t.grad_fn())
    out += fmt::format(", grad_fn=<{}>", fn->name);
  else if (t.requires_grad())
    out += ", requires_grad=true";
  out += ')';
  return out;
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << to_string(t); }

}  // namespace xg
