// The loss modules, and the functional losses that are not the framework's: cross_entropy calls
// xg::cross_entropy_loss (framework/src/core/ops_nn.cpp, as xg::nll_loss = functional::nll_loss); mse_loss is
// composed from framework ops.
#include <ostream>
#include <vector>

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

Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction) {
  return xg::cross_entropy_loss(logits, target, reduction);
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

}  // namespace functional

// ---- modules -----------------------------------------------------------------------------------------------
Tensor CrossEntropyLoss::forward(const Tensor& logits, const Tensor& target) {
  return functional::cross_entropy(logits, target, options_.reduction());
}
Tensor CrossEntropyLoss::forward(const Tensor& logits, const std::vector<std::size_t>& target) {
  return functional::cross_entropy(logits, target, options_.reduction());
}
void CrossEntropyLoss::pretty_print(std::ostream& os) const {
  os << "CrossEntropyLoss(reduction=" << to_string(options_.reduction()) << ")";
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
