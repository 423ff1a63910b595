// xgrad/anomaly.h — anomaly mode: stop at the first op that produces NaN or Inf, forward or backward.
//
//   {
//     xg::DetectAnomalyGuard anomaly;   // PyTorch: torch::autograd::DetectAnomalyGuard
//     Tensor loss = model(x);           // throws at the first forward op whose output is not finite
//     loss.backward();                  // throws at the first node whose backward returns NaN/Inf
//   }
//
// The xg::Error names the op (and its graph id, as in xgrad/graph.h), the shapes and labels involved, whether
// its inputs were already non-finite, and — for backward — the forward op that created the failing node.
// Checking every tensor costs one pass over each output and gradient: use it to debug, not to train.
//
// Anomaly mode is an autograd::Observer: it watches every thread while alive and removes itself when it goes
// out of scope. Several guards may be nested. Ops that backward closures run internally are not checked one by
// one; the gradients each closure returns are (see autograd::in_backward()).
#pragma once

#include <string_view>
#include <vector>

#include "xgrad/autograd.h"
#include "xgrad/tensor.h"

namespace xg {

class DetectAnomalyGuard : public autograd::Observer {
 public:
  DetectAnomalyGuard();
  ~DetectAnomalyGuard() override;
  DetectAnomalyGuard(const DetectAnomalyGuard&) = delete;
  DetectAnomalyGuard& operator=(const DetectAnomalyGuard&) = delete;

  /// Throws xg::Error if `out` has a NaN/Inf element.
  void on_forward(std::string_view op, const Tensor& out, const std::vector<Tensor>& inputs,
                  const Node* node) override;
  /// Throws xg::Error if the gradient arriving at `node` or one it returns has a NaN/Inf element.
  void on_backward(const Node& node, std::size_t step, const Tensor& grad_output,
                   const std::vector<Tensor>& grad_inputs) override;
};

/// True while at least one DetectAnomalyGuard is alive (PyTorch: torch::autograd::AnomalyMode::is_enabled()).
bool is_anomaly_enabled();

}  // namespace xg
