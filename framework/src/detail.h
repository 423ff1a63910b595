// Internal helpers shared by the op implementations (not installed).
#pragma once

#include <string_view>
#include <vector>

#include "xgrad/autograd.h"
#include "xgrad/ops.h"
#include "xgrad/tensor.h"

namespace xg::detail {

using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;

/// Binary ops need equal dtypes: "add: dtype mismatch (float32 vs float64); convert one with .to(...)".
void check_same_dtype(const Tensor& a, const Tensor& b, std::string_view op);
/// A 0-d tensor holding `v` in `like`'s dtype.
Tensor scalar_like(double v, const Tensor& like);
/// Normalises a list of axes (negatives allowed, duplicates are an error); empty = all axes. Sorted.
std::vector<std::size_t> normalize_axes(const Dims& axes, const Shape& shape, std::string_view op);
/// The shape with the reduced axes kept as size 1.
Shape keepdim_shape(const Shape& shape, const std::vector<std::size_t>& axes);
/// The shape with the reduced axes removed.
Shape reduced_shape(const Shape& shape, const std::vector<std::size_t>& axes);

/// Tensor::backward without building vectors: runs the engine from one output.
void backward_one(const Tensor& output, const Tensor& gradient, bool retain_graph);

/// A new (unrecorded) tensor with a copy of t's data under another shape of the same size.
Tensor reshaped_copy(const Tensor& t, const Shape& shape);

/// Wraps a computed xtensor expression/array into a new tensor.
template <class T, class E>
Tensor wrap(E&& e) {
  return Tensor(xt::xarray<T>(std::forward<E>(e)));
}

}  // namespace xg::detail
