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
/// CrossEntropyLoss's options: the reduction and, as PyTorch, ignore_index (targets that contribute 0 and are
/// not counted by the mean) and label_smoothing in [0, 1] (see xg::cross_entropy_loss).
struct CrossEntropyLossOptions {
  CrossEntropyLossOptions() = default;
  CrossEntropyLossOptions(const LossOptions& o) : reduction_(o.reduction()) {}  // NOLINT: the shared options
  XG_ARG(Reduction, reduction) = Reduction::Mean;
  XG_ARG(std::int64_t, ignore_index) = -100;
  XG_ARG(double, label_smoothing) = 0.0;
};
using NLLLossOptions = LossOptions;
using MSELossOptions = LossOptions;

/// Cross-entropy from logits [N, C] and class indices [N] (functional::cross_entropy).
class CrossEntropyLoss : public Module {
 public:
  explicit CrossEntropyLoss(const CrossEntropyLossOptions& options = {}) : options_(options) {}
  Tensor forward(const Tensor& logits, const Tensor& target);
  Tensor forward(const Tensor& logits, const std::vector<std::size_t>& target);
  Tensor forward(const Tensor& logits, std::initializer_list<std::size_t> target) {
    return forward(logits, std::vector<std::size_t>(target));
  }
  void pretty_print(std::ostream& os) const override;

 private:
  CrossEntropyLossOptions options_;
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
