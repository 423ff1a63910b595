// The losses over class indices: nll_loss (one recorded op: pick -log p of the target class; backward scatters
// -G back) and cross_entropy_loss (its composition with log_softmax).
#include <cmath>
#include <vector>

#include "xgrad/autograd.h"
#include "xgrad/ops.h"

namespace xg {

// ---- nll_loss, cross_entropy_loss --------------------------------------------------------------------------
namespace {

// Scores viewed as [N, C, S]: N samples, C classes (axis 1), S = product of the extra axes (1 if none).
// A 1-d [C] input is one sample. The target holds N·S class indices, shaped like the scores without axis 1.
struct ClassLayout {
  std::size_t N = 1, C = 0, S = 1;
  Shape target_shape;  // what a Tensor target must look like; also the shape of Reduction::None's output
};

ClassLayout class_layout(const char* op, const Tensor& scores) {
  if (!scores.defined()) fail("{}: the input is undefined", op);
  const Shape s = scores.shape();
  if (s.empty()) fail("{}: the input must be [N, C] (or [C], or [N, C, d1, ...]), got a 0-d tensor", op);
  ClassLayout l;
  if (s.size() == 1) {
    l.C = s[0];
    if (l.C == 0) fail("{}: the input [0] has no classes", op);
    return l;  // target_shape [] (one class index)
  }
  l.N = s[0];
  l.C = s[1];
  l.target_shape.push_back(s[0]);
  for (std::size_t i = 2; i < s.size(); ++i) {
    l.S *= s[i];
    l.target_shape.push_back(s[i]);
  }
  if (l.C == 0) fail("{}: the input {} has no classes (axis 1 is 0)", op, shape_str(s));
  return l;
}

void check_range(const char* op, const std::vector<std::size_t>& target, std::size_t C) {
  for (std::size_t i = 0; i < target.size(); ++i)
    if (target[i] >= C)
      fail("{}: target {} at position {} is out of range for {} classes (valid class indices are 0..{})", op,
           target[i], i, C, C - 1);
}

std::vector<std::size_t> indices_from_tensor(const char* op, const Tensor& target, const ClassLayout& l) {
  if (!target.defined()) fail("{}: the target is undefined", op);
  if (target.shape() != l.target_shape)
    fail("{}: target of shape {} does not match the input: expected class indices of shape {}", op,
         shape_str(target.shape()), shape_str(l.target_shape));
  const std::vector<double> v = target.to_vector();
  std::vector<std::size_t> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (!(v[i] >= 0) || v[i] != std::floor(v[i]) || v[i] >= static_cast<double>(l.C))
      fail("{}: target {} at position {} is not a class index in 0..{} (the input has {} classes)", op, v[i], i,
           l.C - 1, l.C);
    out[i] = static_cast<std::size_t>(v[i]);
  }
  return out;
}

// loss[n, s] = -log_probs[n, target[n, s], s], then reduced.
Tensor nll(const char* op, const Tensor& lp, const std::vector<std::size_t>& target, const ClassLayout& l,
           Reduction reduction) {
  const std::size_t count = l.N * l.S;
  if (target.size() != count)
    fail("{}: {} targets given for an input of shape {} (expected {}, one per sample{})", op, target.size(),
         shape_str(lp.shape()), count, l.S > 1 ? " and position" : "");
  check_range(op, target, l.C);
  if (reduction == Reduction::Mean && count == 0)
    fail("{}: mean over an empty batch (input {})", op, shape_str(lp.shape()));
  Tensor out = zeros(reduction == Reduction::None ? l.target_shape : Shape{}, lp.dtype());
  dispatch(lp.dtype(), [&](auto t) {
    using T = decltype(t);
    const T* p = lp.data_ptr<T>();
    T* o = out.data_ptr<T>();
    double total = 0;
    for (std::size_t n = 0; n < l.N; ++n)
      for (std::size_t s = 0; s < l.S; ++s) {
        const T v = -p[(n * l.C + target[n * l.S + s]) * l.S + s];
        if (reduction == Reduction::None)
          o[n * l.S + s] = v;
        else
          total += v;
      }
    if (reduction == Reduction::Sum) o[0] = static_cast<T>(total);
    if (reduction == Reduction::Mean) o[0] = static_cast<T>(total / static_cast<double>(count));
  });
  return record_op("nll_loss", out, {lp},
                   [target, l, reduction, shape = lp.shape(), count](const Tensor& g, const std::vector<bool>&) {
                     // d loss[n,s] / d lp[n,c,s] = -1 where c = target[n,s], else 0 (÷count for the mean)
                     Tensor d = zeros(shape, g.dtype());
                     dispatch(g.dtype(), [&](auto t) {
                       using T = decltype(t);
                       const T* pg = g.data_ptr<T>();
                       T* pd = d.data_ptr<T>();
                       const T scale = reduction == Reduction::Mean ? T(1) / static_cast<T>(count) : T(1);
                       for (std::size_t n = 0; n < l.N; ++n)
                         for (std::size_t s = 0; s < l.S; ++s) {
                           const T gi = reduction == Reduction::None ? pg[n * l.S + s] : pg[0] * scale;
                           pd[(n * l.C + target[n * l.S + s]) * l.S + s] = -gi;
                         }
                     });
                     return std::vector<Tensor>{d};
                   });
}

int class_axis(const Tensor& scores) { return scores.ndim() == 1 ? 0 : 1; }

void check_not_empty(const char* op, const Tensor& scores, const ClassLayout& l, Reduction reduction) {
  if (reduction == Reduction::Mean && l.N * l.S == 0)
    fail("{}: mean over an empty batch (input {})", op, shape_str(scores.shape()));
}

}  // namespace

Tensor nll_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  const ClassLayout l = class_layout("nll_loss", input);
  return nll("nll_loss", input, indices_from_tensor("nll_loss", target, l), l, reduction);
}

Tensor nll_loss(const Tensor& input, const std::vector<std::size_t>& target, Reduction reduction) {
  return nll("nll_loss", input, target, class_layout("nll_loss", input), reduction);
}

Tensor cross_entropy_loss(const Tensor& logits, const Tensor& target, Reduction reduction) {
  const ClassLayout l = class_layout("cross_entropy_loss", logits);
  const auto idx = indices_from_tensor("cross_entropy_loss", target, l);  // validate before computing anything
  check_not_empty("cross_entropy_loss", logits, l, reduction);
  return nll("cross_entropy_loss", log_softmax(logits, class_axis(logits)), idx, l, reduction);
}

Tensor cross_entropy_loss(const Tensor& logits, const std::vector<std::size_t>& target, Reduction reduction) {
  const ClassLayout l = class_layout("cross_entropy_loss", logits);
  if (target.size() != l.N * l.S)
    fail("cross_entropy_loss: {} targets given for an input of shape {} (expected {})", target.size(),
         shape_str(logits.shape()), l.N * l.S);
  check_range("cross_entropy_loss", target, l.C);
  check_not_empty("cross_entropy_loss", logits, l, reduction);
  // log_softmax subtracts each row's max before exp, so any finite logits are safe.
  return nll("cross_entropy_loss", log_softmax(logits, class_axis(logits)), target, l, reduction);
}

}  // namespace xg
