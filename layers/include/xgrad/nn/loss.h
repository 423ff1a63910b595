// xgrad/nn/loss.h — CrossEntropyLoss, NLLLoss, MSELoss as modules (see functional.h for the maths).
//
//   xg::nn::CrossEntropyLoss criterion;
//   xg::Tensor loss = criterion.forward(logits, labels);   // labels: Tensor of class indices or vector
#pragma once

#include <initializer_list>
#include <vector>

#include "xgrad/nn/module.h"
#include "xgrad/nn/options.h"

namespace xg::nn {

/// Options shared by the losses: `LossOptions().reduction(Reduction::Sum)`.
struct LossOptions {
  XG_ARG(Reduction, reduction) = Reduction::Mean;
};
using CrossEntropyLossOptions = LossOptions;
using NLLLossOptions = LossOptions;
using MSELossOptions = LossOptions;

/// Cross-entropy from logits [N, C] and class indices [N] (functional::cross_entropy).
class CrossEntropyLoss : public Module {
 public:
  explicit CrossEntropyLoss(const LossOptions& options = {}) : options_(options) {}
  Tensor forward(const Tensor& logits, const Tensor& target);
  Tensor forward(const Tensor& logits, const std::vector<std::size_t>& target);
  Tensor forward(const Tensor& logits, std::initializer_list<std::size_t> target) {
    return forward(logits, std::vector<std::size_t>(target));
  }
  void pretty_print(std::ostream& os) const override;

 private:
  LossOptions options_;
};

/// Negative log-likelihood from log-probabilities [N, C] and class indices [N] (functional::nll_loss).
class NLLLoss : public Module {
 public:
  explicit NLLLoss(const LossOptions& options = {}) : options_(options) {}
  Tensor forward(const Tensor& log_probs, const Tensor& target);
  Tensor forward(const Tensor& log_probs, const std::vector<std::size_t>& target);
  Tensor forward(const Tensor& log_probs, std::initializer_list<std::size_t> target) {
    return forward(log_probs, std::vector<std::size_t>(target));
  }
  void pretty_print(std::ostream& os) const override;

 private:
  LossOptions options_;
};

/// Mean squared error between equally shaped tensors (functional::mse_loss).
class MSELoss : public Module {
 public:
  explicit MSELoss(const LossOptions& options = {}) : options_(options) {}
  Tensor forward(const Tensor& input, const Tensor& target);
  void pretty_print(std::ostream& os) const override;

 private:
  LossOptions options_;
};

}  // namespace xg::nn
