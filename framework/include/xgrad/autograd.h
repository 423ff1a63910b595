// xgrad/autograd.h — the define-by-run graph and the reverse-mode engine.
//
// Every op that sees an input requiring a gradient records a Node: its name, edges to where each input's
// gradient must go, and a backward closure that turns the output's gradient into the inputs' gradients.
// backward() walks the nodes in reverse topological order (iteratively: no recursion, so a 100,000-op chain
// is fine), sums the gradients arriving at each node, calls its closure, and accumulates into the leaves'
// .grad(). The walk is explained step by step in docs/autograd.md.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "xgrad/tensor.h"

namespace xg {

/// Where the gradient of one input of a node goes.
struct Edge {
  std::shared_ptr<Node> node;        // the input was produced by an op: its gradient flows on to that node
  std::shared_ptr<TensorImpl> leaf;  // the input is a leaf that requires grad: its gradient lands in .grad()
  bool active() const { return node != nullptr || leaf != nullptr; }
};

/// A node's backward: from the gradient of its output, compute one gradient per input (same order as the
/// inputs). `needs[i]` tells whether input i wants a gradient; return an undefined Tensor() where it does not.
using BackwardFn =
    std::function<std::vector<Tensor>(const Tensor& grad_output, const std::vector<bool>& needs)>;

/// One recorded op.
struct Node {
  std::string name;                    // op name ("mul", "matmul", "batch_norm", ...)
  std::uint64_t id = 0;                // creation order; the engine runs newer nodes first on ties
  std::vector<Edge> next;              // one edge per input of the op
  std::vector<Shape> input_shapes;     // shapes of the op's inputs (for errors, tracing, graph export)
  Shape shape;                         // shape of the op's output
  Dtype dtype = kFloat32;              // dtype of the op's output
  BackwardFn backward;                 // null once released
  bool released = false;               // saved tensors freed by a backward without retain_graph
  std::vector<GradHook> hooks;         // hooks registered on the output tensor
  std::weak_ptr<TensorImpl> output;    // the output tensor while it is alive (retain_grad, labels, values)
  std::string created_by;              // label of the output (set_label), kept after the output is gone

  // Scratch space of the engine, meaningful only while a backward() runs over this node (autograd.cpp):
  // which run last visited it, how many consumers still owe it a gradient, and the gradient summed so far.
  std::uint64_t engine_run = 0;
  std::size_t engine_deps = 0;
  Tensor engine_grad;

  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  /// Destroys the chain of nodes only this one keeps alive with a loop instead of recursion, so dropping the
  /// last tensor of a 100,000-op chain cannot overflow the stack.
  ~Node();

  /// Frees the saved tensors (the closure) but keeps the structure, so a second backward can say what
  /// happened instead of crashing.
  void release();
};

// ---- grad mode ---------------------------------------------------------------------------------------
bool is_grad_enabled();
void set_grad_enabled(bool on);

/// While alive, ops record nothing (PyTorch: torch::NoGradGuard). Used by optimizers and evaluation.
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

/// For op implementers: returns `out` as the result of op `name` applied to `inputs`. When grad mode is on and
/// an input requires grad, records a Node with `backward` and marks `out` as requiring grad.
/// Writing your own op is shown in docs/custom-ops.md and examples/custom_op.cpp.
Tensor record_op(std::string_view name, Tensor out, const std::vector<Tensor>& inputs, BackwardFn backward);
/// The same for a braced list of inputs, `record_op("mul", out, {a, b}, ...)`, without building a vector.
Tensor record_op(std::string_view name, Tensor out, std::initializer_list<Tensor> inputs, BackwardFn backward);

/// True if any input requires grad and grad mode is on (then an op must record).
bool any_requires_grad(const std::vector<Tensor>& inputs);
bool any_requires_grad(std::initializer_list<Tensor> inputs);

namespace autograd {

/// Runs backward from `outputs`, seeding each with the matching entry of `grad_outputs` (an undefined entry
/// means "ones" and is only allowed for a one-element output). Accumulates into leaves' .grad().
void backward(const std::vector<Tensor>& outputs, const std::vector<Tensor>& grad_outputs = {},
              bool retain_graph = false);

/// Returns d(sum of outputs·grad_outputs)/d(input) for each input, without touching any .grad().
/// An input that does not influence the outputs is an error unless allow_unused (then: undefined Tensor).
std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& grad_outputs = {}, bool retain_graph = false,
                         bool allow_unused = false);

/// Observes the engine (graph tracers, anomaly mode). Callbacks run synchronously; keep them cheap.
struct Observer {
  virtual ~Observer() = default;
  /// After an op produced `out` (node is null when nothing was recorded).
  virtual void on_forward(std::string_view op, const Tensor& out, const std::vector<Tensor>& inputs,
                          const Node* node) {}
  /// After the engine ran `node`'s backward: `step` counts from 0 within one backward call.
  virtual void on_backward(const Node& node, std::size_t step, const Tensor& grad_output,
                           const std::vector<Tensor>& grad_inputs) {}
};
/// Adds/removes an observer (not owned). Scope guards in trace.h do this for you.
void add_observer(Observer* obs);
void remove_observer(Observer* obs);
/// True while the engine runs backward on this thread. The ops a backward closure computes with call
/// on_forward too; observers use this to tell them from the model's forward ops.
bool in_backward();

}  // namespace autograd
}  // namespace xg
