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
/// PyTorch's result_type of a binary op: promote_types of the dtypes, except that a 0-d tensor against a tensor
/// with axes only decides when its category (bool < integer < float) is higher: float32 [3] ⊕ float64 0-d is
/// float32, int64 [3] ⊕ float32 0-d is float32.
Dtype result_type(const Tensor& a, const Tensor& b);
/// Both defined and of different dtypes (then a binary op converts both to result_type first).
bool needs_promotion(const Tensor& a, const Tensor& b);
/// x itself if floating point, else x.to(kFloat32) (exp, log, sqrt, ... of an integer tensor, as in PyTorch).
Tensor as_floating(const Tensor& x);
/// The dtype of a C++ double scalar against t (t's if floating, else float32) and of a C++ integer scalar
/// (t's, or int64 for a bool t): PyTorch's rules for Python floats and ints.
Dtype float_scalar_dtype(const Tensor& t);
Dtype int_scalar_dtype(const Tensor& t);
/// "kFloat32" ... "kBool", for messages.
std::string_view dtype_constant(Dtype d);
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

/// A shape split around `axis` into [outer, axis, inner] sizes (row-major): the element (o, j, i) is at
/// (o·mid + j)·inner + i.
struct Split3 {
  std::size_t outer = 1, mid = 1, inner = 1;
};
inline Split3 split_at(const Shape& s, std::size_t axis) {
  Split3 r;
  for (std::size_t i = 0; i < axis; ++i) r.outer *= s[i];
  r.mid = s[axis];
  for (std::size_t i = axis + 1; i < s.size(); ++i) r.inner *= s[i];
  return r;
}

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
