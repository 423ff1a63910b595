// native_group_norm and native_layer_norm: GroupNorm and LayerNorm as ONE graph node each over the hand-fused
// kernels of xgrad/kernels/group_norm.h (the composed forms, xg::nn::functional::group_norm / layer_norm, stay
// the readable reference and the test oracle).
#include <algorithm>
#include <utility>
#include <vector>

#include "detail.h"
#include "xgrad/autograd.h"
#include "xgrad/kernels/group_norm.h"
#include "xgrad/ops.h"

namespace xg {

namespace {

using detail::mut_ptr_or_null;  // core/detail.h
using detail::ptr_or_null;

// One node: forward on the kernels, the closed-form backward (xgrad/kernels/group_norm.h) in the closure.
// `affine_shape` is the shape weight and bias have (GroupNorm [C], LayerNorm normalized_shape).
Tensor norm_node(const char* name, const Tensor& input, const Tensor& weight, const Tensor& bias,
                 kernels::GnDims d, double eps) {
  const Dtype dt = input.dtype();
  Tensor y = empty(input.shape(), dt);
  Tensor save_mean = empty({d.N * d.G}, dt), save_invstd = empty({d.N * d.G}, dt);
  dispatch(dt, [&](auto t) {
    using T = decltype(t);
    kernels::group_norm_forward<T>(input.data_ptr<T>(), ptr_or_null<T>(weight), ptr_or_null<T>(bias), y.data_ptr<T>(),
                                   save_mean.data_ptr<T>(), save_invstd.data_ptr<T>(), d, eps);
  });
  std::vector<Tensor> inputs{input};
  if (weight.defined()) inputs.push_back(weight);
  if (bias.defined()) inputs.push_back(bias);
  const bool has_w = weight.defined(), has_b = bias.defined();
  const Shape affine_shape = has_w ? weight.shape() : has_b ? bias.shape() : Shape{};
  return record_op(
      name, y, inputs,
      [x = input.detach(), w = has_w ? weight.detach() : Tensor(), save_mean, save_invstd, d, has_w, has_b,
       affine_shape](const Tensor& g, const std::vector<bool>& needs) {
        // dx = invstd·(g − mean(g) − x̂·mean(g·x̂)) with g = dy·w, per (sample, group) row;
        // dw = Σ dy·x̂, db = Σ dy over the samples (and spatial positions) — only the ones asked for.
        const Dtype dt = g.dtype();
        Tensor dx = needs[0] ? empty(x.shape(), dt) : Tensor();
        Tensor dw = has_w && needs[1] ? empty(affine_shape, dt) : Tensor();
        Tensor db = has_b && needs[has_w ? 2 : 1] ? empty(affine_shape, dt) : Tensor();
        dispatch(dt, [&](auto t) {
          using T = decltype(t);
          kernels::group_norm_backward<T>(g.data_ptr<T>(), x.data_ptr<T>(), ptr_or_null<T>(w), save_mean.data_ptr<T>(),
                                          save_invstd.data_ptr<T>(), mut_ptr_or_null<T>(dx), mut_ptr_or_null<T>(dw),
                                          mut_ptr_or_null<T>(db), d);
        });
        std::vector<Tensor> grads{dx};
        if (has_w) grads.push_back(dw);
        if (has_b) grads.push_back(db);
        return grads;
      });
}

void check_affine(const char* op, const char* what, const Tensor& t, const Shape& want, const Tensor& input) {
  if (t.defined() && (t.shape() != want || t.dtype() != input.dtype()))
    fail("{}: {} must be {} of dtype {} for the input {}, got {} of dtype {}", op, what, shape_str(want), input.dtype(),
         shape_str(input.shape()), shape_str(t.shape()), t.dtype());
}

}  // namespace

Tensor native_group_norm(const Tensor& input, std::size_t num_groups, const Tensor& weight, const Tensor& bias,
                         double eps) {
  if (!input.defined() || input.ndim() < 2)
    fail("native_group_norm: the input must be [N, C, ...] with at least 2 dimensions, got {}",
         input.defined() ? shape_str(input.shape()) : "an undefined tensor");
  const Shape s = input.shape();
  const std::size_t C = s[1];
  if (num_groups == 0 || C % num_groups != 0)
    fail("native_group_norm: the {} channels of the input {} cannot be split into num_groups = {} equal groups", C,
         shape_str(s), num_groups);
  check_affine("native_group_norm", "weight", weight, {C}, input);
  check_affine("native_group_norm", "bias", bias, {C}, input);
  std::size_t S = 1;
  for (std::size_t a = 2; a < s.size(); ++a) S *= s[a];
  return norm_node("native_group_norm", input, weight, bias, {s[0], C, S, num_groups}, eps);
}

Tensor native_layer_norm(const Tensor& input, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias,
                         double eps) {
  if (!input.defined()) fail("native_layer_norm: the input is undefined");
  const Shape s = input.shape();
  const std::size_t k = normalized_shape.size();
  if (k == 0 || k > s.size() || !std::equal(normalized_shape.begin(), normalized_shape.end(), s.end() - k))
    fail("native_layer_norm: normalized_shape {} must be the last dimensions of the input {}",
         shape_str(normalized_shape), shape_str(s));
  check_affine("native_layer_norm", "weight", weight, normalized_shape, input);
  check_affine("native_layer_norm", "bias", bias, normalized_shape, input);
  std::size_t D = 1;
  for (std::size_t v : normalized_shape) D *= v;
  const std::size_t rows = D == 0 ? 0 : input.numel() / D;
  return norm_node("native_layer_norm", input, weight, bias, {rows, D, 1, 1}, eps);
}

}  // namespace xg
