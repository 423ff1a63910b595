// xgrad/trace.h — watch autograd work: print every op as forward records it and every node as backward runs it.
//
//   {
//     xg::BackwardTracer trace;   // prints to stdout while alive
//     loss.backward();
//   }
//   // [backward step 0] op11 add "y" [4,3]  grad_output |g|=0.9487  [[0.1, -0.2, 0.3], ...]
//   //     -> input 0: op10 mul "scaled" [4,3]  |g|=0.9487  [[0.1, -0.2, 0.3], ...]
//   //     -> input 1: t3 "bias" [3]  |g|=0.5099  [0.4, 0.1, 0.3]  (accumulated into .grad)
//
// Each line uses the ids of the graph export (xgrad/graph.h): `op17` is the node with Node::id 17, `t5` the
// leaf tensor with TensorImpl::id 5. Norms are Euclidean (Frobenius) norms; tensors with at most
// TraceOptions::max_values elements also print their values. Every printed line is also kept as a record
// (records()), which is what tests inspect.
//
// The tracers are autograd::Observers: they see every op on every thread while alive, and remove themselves
// when they go out of scope. Ops that a backward closure runs internally are not forward ops of the model and
// are not reported by ForwardTracer (see autograd::in_backward()).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "xgrad/autograd.h"
#include "xgrad/tensor.h"

namespace xg {

struct TraceOptions {
  std::ostream* out = nullptr;  // where to print; nullptr = stdout (set quiet to print nothing; not owned)
  bool quiet = false;           // only collect records()
  std::size_t max_values = 10;  // print the values of tensors with at most this many elements
  int precision = 4;            // significant digits
};

/// One tensor as a tracer saw it.
struct TensorSummary {
  std::string id;              // graph id: "op17" (output of an op), "t5" (leaf), "" (no tensor: constant)
  std::string op;              // name of the op that produced it ("" for a leaf or constant)
  std::string label;           // Tensor::set_label, if any
  Shape shape;
  bool defined = false;        // false: no gradient (a constant input, or an input that needs none)
  double norm = 0;             // Euclidean norm of the values
  std::vector<double> values;  // all values if numel <= max_values, else empty
};

/// One node run by the backward engine.
struct BackwardRecord {
  std::size_t pass = 0;        // which backward call within this tracer's lifetime (0, 1, ...)
  std::size_t step = 0;        // position within that call: 0 runs first (the root's node)
  std::uint64_t node_id = 0;   // Node::id
  std::string id;              // "op<node_id>"
  std::string op;              // Node::name
  std::string label;           // label of the node's output, if it is alive and labelled
  std::vector<Shape> input_shapes;
  TensorSummary grad_output;   // the summed gradient arriving at the node's output
  std::vector<TensorSummary> grad_inputs;  // one per input; id/op/label say where each gradient goes
};

/// One op seen by forward.
struct ForwardRecord {
  std::string op;
  bool recorded = false;       // false when no input required grad (or under NoGradGuard)
  TensorSummary output;        // id: "op<id>" when recorded, else "t<id>"
  std::vector<TensorSummary> inputs;
};

/// Prints (and records) each node as the backward engine executes it, in execution order — a reverse
/// topological order of the graph. RAII: registered in the constructor, removed in the destructor.
class BackwardTracer : public autograd::Observer {
 public:
  explicit BackwardTracer(TraceOptions opts = {});
  explicit BackwardTracer(std::ostream& out);
  ~BackwardTracer() override;
  BackwardTracer(const BackwardTracer&) = delete;
  BackwardTracer& operator=(const BackwardTracer&) = delete;

  const std::vector<BackwardRecord>& records() const { return records_; }
  void on_backward(const Node& node, std::size_t step, const Tensor& grad_output,
                   const std::vector<Tensor>& grad_inputs) override;

 private:
  TraceOptions opts_;
  std::vector<BackwardRecord> records_;
  std::size_t pass_ = 0;
};

/// Prints (and records) each op as forward computes it, as "op5 = mul(t1 "x" [4,3], op4 [1,3]) -> [4,3]".
class ForwardTracer : public autograd::Observer {
 public:
  explicit ForwardTracer(TraceOptions opts = {});
  explicit ForwardTracer(std::ostream& out);
  ~ForwardTracer() override;
  ForwardTracer(const ForwardTracer&) = delete;
  ForwardTracer& operator=(const ForwardTracer&) = delete;

  const std::vector<ForwardRecord>& records() const { return records_; }
  void on_forward(std::string_view op, const Tensor& out, const std::vector<Tensor>& inputs,
                  const Node* node) override;

 private:
  TraceOptions opts_;
  std::vector<ForwardRecord> records_;
};

/// A summary of `t` (its id from graph.h's node_id, op, label, shape, norm and small values).
TensorSummary summarize(const Tensor& t, std::size_t max_values = 10);
/// `op8 mul "scaled" [4,3]  |g|=2.1  [[...]]` — the text tracers print for a summary.
std::string format_summary(const TensorSummary& s, const char* norm_name = "|g|", int precision = 4);

}  // namespace xg
