// Internal helpers shared by the op implementations (not installed).
#pragma once

#include <optional>
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

/// How `small` broadcasts against `big` when it varies along one block of axes only — the [1, C, 1, 1] of a
/// per-channel parameter against [N, C, H, W], a row [C] against [N, C], a column [N, 1] against [N, C]:
/// right-aligned, small equals big on axes [first, last] and is 1 elsewhere. big is then [outer, mid, inner]
/// and small is [mid]. Nothing for other broadcasts, and for a small of one element (the scalar case).
struct BlockBroadcast {
  std::size_t outer, mid, inner;
};
std::optional<BlockBroadcast> block_broadcast(const Shape& big, const Shape& small);

/// A new (unrecorded) tensor with a copy of t's data under another shape of the same size.
Tensor reshaped_copy(const Tensor& t, const Shape& shape);

/// Wraps a computed xtensor expression/array into a new tensor.
template <class T, class E>
Tensor wrap(E&& e) {
  return Tensor(xt::xarray<T>(std::forward<E>(e)));
}

/// A tensor's data for a kernel argument that may be absent: nullptr for an undefined tensor (optional weight,
/// bias, running statistics, gradients that are not needed).
template <class T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}
template <class T>
T* mut_ptr_or_null(Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

}  // namespace xg::detail
