// The loss modules, and the functional losses that are not the framework's: cross_entropy calls
// xg::cross_entropy_loss (framework/src/core/ops_nn.cpp, as xg::nll_loss = functional::nll_loss); mse_loss is
// composed from framework ops.
#include <ostream>
#include <vector>

#include "xgrad/autograd.h"
#include "xgrad/nn/functional.h"
#include "xgrad/nn/loss.h"
#include "xgrad/ops.h"

namespace xg::nn {

namespace {

Tensor reduce(const Tensor& per_element, Reduction r) {
  switch (r) {
    case Reduction::None: return per_element;
    case Reduction::Sum: return sum(per_element);
    case Reduction::Mean: return mean(per_element);
  }
  return per_element;
}

}  // namespace

namespace functional {

Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction, std::int64_t ignore_index,
                     double label_smoothing) {
  return xg::cross_entropy_loss(logits, target, reduction, ignore_index, label_smoothing);
}

Tensor cross_entropy(const Tensor& logits, const std::vector<std::size_t>& target, Reduction reduction) {
  return xg::cross_entropy_loss(logits, target, reduction);
}

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  if (!input.defined() || !target.defined()) fail("mse_loss: input and target must be defined");
  if (input.shape() != target.shape())
    fail("mse_loss: input {} and target {} must have the same shape (no broadcasting; reshape the target)",
         shape_str(input.shape()), shape_str(target.shape()));
  if (reduction == Reduction::Mean && input.numel() == 0) fail("mse_loss: mean over an empty input");
  const Tensor diff = input - target;  // d/dinput = 1, d/dtarget = -1
  return reduce(diff * diff, reduction);
}

Tensor accuracy(const Tensor& logits, const Tensor& labels) {
  if (!logits.defined() || !labels.defined()) fail("accuracy: the logits or the labels are undefined");
  if (logits.ndim() != 2) fail("accuracy: logits must be [N, C], got shape {}", shape_str(logits.shape()));
  if (!is_integral(labels.dtype()))
    fail("accuracy: labels must be an int64 tensor of class indices, got {}; convert with .to(xg::kInt64)",
         labels.dtype());
  if (labels.shape() != Shape{logits.size(0)})
    fail("accuracy: labels of shape {} do not match logits {} (expected [{}])", shape_str(labels.shape()),
         shape_str(logits.shape()), logits.size(0));
  if (logits.size(0) == 0) fail("accuracy: an empty batch has no accuracy");
  NoGradGuard no_grad;
  // mean([argmax_c logits[n, c] == labels[n]]), counted in int64 and divided in float64
  const Tensor hits = sum(eq(argmax(logits, 1), labels.to(kInt64)));
  return scalar(static_cast<double>(hits.item<std::int64_t>()) / static_cast<double>(logits.size(0)), kFloat64);
}

Tensor accuracy(const Tensor& logits, const std::vector<std::size_t>& labels) {
  return accuracy(logits, from_vector(labels, {labels.size()}));
}

}  // namespace functional

// ---- modules -----------------------------------------------------------------------------------------------
Tensor CrossEntropyLoss::forward(const Tensor& logits, const Tensor& target) {
  return functional::cross_entropy(logits, target, options_.reduction(), options_.ignore_index(),
                                   options_.label_smoothing());
}
Tensor CrossEntropyLoss::forward(const Tensor& logits, const std::vector<std::size_t>& target) {
  if (options_.label_smoothing() != 0.0)  // (a class-index vector has no ignored entries)
    return forward(logits, from_vector(target, {target.size()}));
  return functional::cross_entropy(logits, target, options_.reduction());
}
void CrossEntropyLoss::pretty_print(std::ostream& os) const {
  os << "CrossEntropyLoss(reduction=" << to_string(options_.reduction());
  if (options_.ignore_index() != -100) os << ", ignore_index=" << options_.ignore_index();
  if (options_.label_smoothing() != 0.0) os << ", label_smoothing=" << options_.label_smoothing();
  os << ")";
}

Tensor NLLLoss::forward(const Tensor& log_probs, const Tensor& target) {
  return functional::nll_loss(log_probs, target, options_.reduction());
}
Tensor NLLLoss::forward(const Tensor& log_probs, const std::vector<std::size_t>& target) {
  return functional::nll_loss(log_probs, target, options_.reduction());
}
void NLLLoss::pretty_print(std::ostream& os) const {
  os << "NLLLoss(reduction=" << to_string(options_.reduction()) << ")";
}

Tensor MSELoss::forward(const Tensor& input, const Tensor& target) {
  return functional::mse_loss(input, target, options_.reduction());
}
void MSELoss::pretty_print(std::ostream& os) const {
  os << "MSELoss(reduction=" << to_string(options_.reduction()) << ")";
}

}  // namespace xg::nn
