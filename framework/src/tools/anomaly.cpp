// Anomaly mode: an Observer that scans every forward output and every backward gradient for NaN/Inf and
// throws an xg::Error describing where the first one appeared. The engine lets the exception through cleanly
// (its state is local to the backward call); nodes not yet run keep their saved tensors.
#include "xgrad/anomaly.h"

#include <atomic>
#include <cmath>

#include <fmt/ranges.h>

#include "xgrad/graph.h"

namespace xg {

namespace {

std::atomic<int> g_guards{0};

// How many elements are NaN / ±Inf, and the first offending flat index.
struct NonFinite {
  std::size_t nan = 0, inf = 0, first = 0;
  bool any() const { return nan + inf > 0; }
};

NonFinite scan(const Tensor& t) {
  NonFinite r;
  if (!t.defined()) return r;
  dispatch(t.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* p = t.data_ptr<T>();
    for (std::size_t i = 0, n = t.numel(); i < n; ++i) {
      if (std::isfinite(p[i])) continue;
      if (!r.any()) r.first = i;
      (std::isnan(p[i]) ? r.nan : r.inf)++;
    }
  });
  return r;
}

// The multi-index of a flat row-major position: 5 in shape [2,3] is "[1,2]".
std::string unravel(std::size_t flat, const Shape& shape) {
  std::vector<std::size_t> idx(shape.size());
  for (std::size_t k = shape.size(); k-- > 0;) {
    idx[k] = shape[k] ? flat % shape[k] : 0;
    flat = shape[k] ? flat / shape[k] : 0;
  }
  return fmt::format("[{}]", fmt::join(idx, ","));
}

// "2 NaN and 1 Inf (first at index [1,0])".
std::string describe(const NonFinite& nf, const Shape& shape) {
  std::string what;
  if (nf.nan) what = fmt::format("{} NaN", nf.nan);
  if (nf.inf) what += fmt::format("{}{} Inf", what.empty() ? "" : " and ", nf.inf);
  return fmt::format("{} (first at index {})", what, unravel(nf.first, shape));
}

// `t1 "x" [3]` / `op4 mul "h" [3]`.
std::string tensor_ref(const Tensor& t) {
  std::string s = node_id(t);
  if (auto fn = t.grad_fn()) s += fmt::format(" {}", fn->name);
  if (!t.label().empty()) s += fmt::format(" \"{}\"", t.label());
  return s + " " + shape_str(t.shape());
}

// Where input i of a node came from: `op4 mul "h" [3]`, `t1 "x" [3]`, or `const [3]`.
std::string input_ref(const Node& n, std::size_t i) {
  const Edge& e = n.next[i];
  std::string s;
  std::string label;
  if (e.node) {
    s = node_id(*e.node) + " " + e.node->name;
    label = node_label(*e.node);
  } else if (e.leaf) {
    s = fmt::format("t{}", e.leaf->id);
    label = e.leaf->label;
  } else {
    s = "const";
  }
  if (!label.empty()) s += fmt::format(" \"{}\"", label);
  return s + " " + shape_str(n.input_shapes[i]);
}

// The usual suspects, for learners.
std::string forward_hint(std::string_view op) {
  if (op == "log") return " Hint: log(x) is NaN for x < 0 and -inf at x = 0; clamp its input (e.g. x.clamp(1e-12, {})).";
  if (op == "sqrt" || op == "rsqrt")
    return " Hint: sqrt/rsqrt of a negative number is NaN; rsqrt(0) is inf (a variance can be 0: add an eps, as "
           "BatchNorm does).";
  if (op == "div") return " Hint: a division by zero gives inf (or NaN for 0/0).";
  if (op == "exp") return " Hint: exp overflows to inf above ~88 in float32 (~709 in float64).";
  if (op == "pow") return " Hint: a negative base with a fractional exponent is NaN; 0 to a negative power is inf.";
  return "";
}

std::string backward_hint(std::string_view op) {
  if (op == "sqrt") return " Hint: d sqrt(x)/dx = 1/(2·sqrt(x)) is infinite at x = 0; add a small epsilon inside.";
  if (op == "rsqrt") return " Hint: d rsqrt(x)/dx = -1/2·x^(-3/2) is infinite at x = 0; add an epsilon (as BatchNorm does).";
  if (op == "log") return " Hint: d log(x)/dx = 1/x is infinite at x = 0.";
  if (op == "div") return " Hint: d(a/b)/db = -a/b² is infinite where b = 0.";
  if (op == "pow") return " Hint: d x^p/dx = p·x^(p-1) is infinite at x = 0 when p < 1.";
  return "";
}

// "created in forward by op 'sqrt' (op12) from t1 "x" [3]; its output has shape [3] and label "s"".
std::string origin(const Node& n) {
  std::string inputs;
  for (std::size_t i = 0; i < n.next.size(); ++i) inputs += (i ? ", " : "") + input_ref(n, i);
  const std::string label = node_label(n);
  return fmt::format("This node was created in forward by op '{}' ({}) from inputs [{}] (shapes {}); its output "
                     "has shape {}{}.",
                     n.name, node_id(n), inputs,
                     [&] {
                       std::string s;
                       for (std::size_t i = 0; i < n.input_shapes.size(); ++i)
                         s += (i ? ", " : "") + shape_str(n.input_shapes[i]);
                       return s;
                     }(),
                     shape_str(n.shape), label.empty() ? " and no label" : fmt::format(" and label \"{}\"", label));
}

}  // namespace

bool is_anomaly_enabled() { return g_guards.load() > 0; }

DetectAnomalyGuard::DetectAnomalyGuard() {
  ++g_guards;
  autograd::add_observer(this);
}

DetectAnomalyGuard::~DetectAnomalyGuard() {
  autograd::remove_observer(this);
  --g_guards;
}

void DetectAnomalyGuard::on_forward(std::string_view op, const Tensor& out, const std::vector<Tensor>& inputs,
                                    const Node* node) {
  // Inside a backward closure the ops are the closure's arithmetic: the gradients it returns are checked in
  // on_backward, with a message about the node instead of an anonymous 'mul'.
  if (autograd::in_backward()) return;
  const NonFinite bad = scan(out);
  if (!bad.any()) return;
  const std::string id = node ? node_id(*node) : node_id(out);
  std::string ins, already;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined()) continue;
    ins += (ins.empty() ? "" : ", ") + tensor_ref(inputs[i]);
    if (const NonFinite in = scan(inputs[i]); in.any())
      already += fmt::format(" Input {} ({}) already held {} before this op: the problem is upstream (a leaf or a "
                             "tensor computed outside anomaly mode).",
                             i, tensor_ref(inputs[i]), describe(in, inputs[i].shape()));
  }
  fail("anomaly mode: forward op '{}' ({}) produced {} in its output of shape {}{}; inputs: [{}].{}{}", op, id,
       describe(bad, out.shape()), shape_str(out.shape()),
       out.label().empty() ? std::string() : fmt::format(" (label \"{}\")", out.label()), ins,
       already.empty() ? " Its inputs were all finite, so this op is the first to produce it." : already,
       already.empty() ? forward_hint(op) : std::string());
}

void DetectAnomalyGuard::on_backward(const Node& node, std::size_t step, const Tensor& grad_output,
                                     const std::vector<Tensor>& grad_inputs) {
  if (const NonFinite g = scan(grad_output); g.any())
    fail("anomaly mode: the gradient arriving at '{}' ({}, output shape {}) at backward step {} already holds {}. "
         "Every gradient returned by a node was checked, so it came from the seed gradient passed to backward(), "
         "a gradient hook, or two finite gradients whose sum overflowed. {}",
         node.name, node_id(node), shape_str(node.shape), step, describe(g, grad_output.shape()), origin(node));
  for (std::size_t i = 0; i < grad_inputs.size() && i < node.next.size(); ++i) {
    const NonFinite g = scan(grad_inputs[i]);
    if (!g.any()) continue;
    fail("anomaly mode: the backward of '{}' ({}) returned {} in the gradient for input {} ({}) at backward step "
         "{}, although the gradient arriving at it (shape {}) was finite. {}{}",
         node.name, node_id(node), describe(g, grad_inputs[i].shape()), i, input_ref(node, i), step,
         shape_str(node.shape), origin(node),
         backward_hint(node.name));
  }
}

}  // namespace xg
