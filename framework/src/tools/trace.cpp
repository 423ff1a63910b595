// Tracers: autograd::Observers that turn each forward op / backward node into a record and a printed line.
// They read tensors with plain loops (no ops), so observing never records or triggers other observers.
#include "xgrad/trace.h"

#include <cmath>
#include <iostream>

#include "xgrad/graph.h"

namespace xg {

TensorSummary summarize(const Tensor& t, std::size_t max_values) {
  TensorSummary s;
  if (!t.defined()) return s;
  s.defined = true;
  s.id = node_id(t);
  if (auto fn = t.grad_fn()) s.op = fn->name;
  s.label = t.label();
  s.shape = t.shape();
  const std::vector<double> v = t.to_vector();
  double sq = 0;
  for (double x : v) sq += x * x;
  s.norm = std::sqrt(sq);
  if (v.size() <= max_values) s.values = v;
  return s;
}

namespace {

// "op8 mul "scaled" [4,3]" / "t3 "bias" [3]" / "const [4,3]": what a summary refers to.
std::string who(const TensorSummary& s) {
  std::string out = s.id.empty() ? "const" : s.id;
  if (!s.op.empty()) out += fmt::format(" {}", s.op);
  if (!s.label.empty()) out += fmt::format(" \"{}\"", s.label);
  return out + " " + shape_str(s.shape);
}

// "|g|=2.1 [[...]]" — the norm, then the values when they were kept.
std::string norm_and_values(const TensorSummary& s, const char* norm_name, int precision) {
  if (!s.defined) return "(no gradient)";
  std::string out = fmt::format("{}={:.{}g}", norm_name, s.norm, precision);
  if (!s.values.empty() || numel_of(s.shape) == 0) out += fmt::format("  {}", format_values(s.values, s.shape, precision));
  return out;
}

std::ostream& stream_of(const TraceOptions& o) { return o.out ? *o.out : std::cout; }

std::string not_recorded_reason(const std::vector<Tensor>& inputs) {
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return "  (not recorded: grad mode is off)";
  return "  (not recorded: no input requires grad)";
}

}  // namespace

std::string format_summary(const TensorSummary& s, const char* norm_name, int precision) {
  return who(s) + "  " + norm_and_values(s, norm_name, precision);
}

// ---- BackwardTracer ------------------------------------------------------------------------------------

BackwardTracer::BackwardTracer(TraceOptions opts) : opts_(opts) { autograd::add_observer(this); }
BackwardTracer::BackwardTracer(std::ostream& out) : BackwardTracer(TraceOptions{&out}) {}
BackwardTracer::~BackwardTracer() { autograd::remove_observer(this); }

void BackwardTracer::on_backward(const Node& node, std::size_t step, const Tensor& grad_output,
                                 const std::vector<Tensor>& grad_inputs) {
  if (step == 0 && !records_.empty()) ++pass_;  // a new backward call
  BackwardRecord r;
  r.pass = pass_;
  r.step = step;
  r.node_id = node.id;
  r.id = node_id(node);
  r.op = node.name;
  r.label = node_label(node);
  r.input_shapes = node.input_shapes;
  r.grad_output = summarize(grad_output, opts_.max_values);
  r.grad_output.id = r.id;  // the gradient is the output's; name it after the node
  r.grad_output.op = r.op;
  r.grad_output.label = r.label;
  for (std::size_t i = 0; i < node.next.size(); ++i) {
    TensorSummary s = summarize(i < grad_inputs.size() ? grad_inputs[i] : Tensor(), opts_.max_values);
    // Describe where this gradient goes: the op that produced input i, a leaf, or a constant (nowhere).
    const Edge& e = node.next[i];
    s.id.clear();
    s.op.clear();
    s.label.clear();
    s.shape = node.input_shapes[i];
    if (e.node) {
      s.id = node_id(*e.node);
      s.op = e.node->name;
      s.label = node_label(*e.node);
    } else if (e.leaf) {
      s.id = fmt::format("t{}", e.leaf->id);
      s.label = e.leaf->label;
    } else {
      s.defined = false;
    }
    r.grad_inputs.push_back(std::move(s));
  }

  if (!opts_.quiet) {
    std::ostream& os = stream_of(opts_);
    os << (r.pass ? fmt::format("[backward #{} step {}] ", r.pass, r.step) : fmt::format("[backward step {}] ", r.step))
       << who(r.grad_output) << "  grad_output " << norm_and_values(r.grad_output, "|g|", opts_.precision) << "\n";
    for (std::size_t i = 0; i < r.grad_inputs.size(); ++i) {
      const TensorSummary& s = r.grad_inputs[i];
      os << "    -> input " << i << ": " << who(s) << "  " << norm_and_values(s, "|g|", opts_.precision)
         << (s.defined && node.next[i].leaf ? "  (accumulated into .grad)" : "") << "\n";
    }
  }
  records_.push_back(std::move(r));
}

// ---- ForwardTracer -------------------------------------------------------------------------------------

ForwardTracer::ForwardTracer(TraceOptions opts) : opts_(opts) { autograd::add_observer(this); }
ForwardTracer::ForwardTracer(std::ostream& out) : ForwardTracer(TraceOptions{&out}) {}
ForwardTracer::~ForwardTracer() { autograd::remove_observer(this); }

void ForwardTracer::on_forward(std::string_view op, const Tensor& out, const std::vector<Tensor>& inputs,
                               const Node* node) {
  if (autograd::in_backward()) return;  // an op inside a backward closure, not the model's forward
  ForwardRecord r;
  r.op = std::string(op);
  r.recorded = node != nullptr;
  r.output = summarize(out, opts_.max_values);
  for (const Tensor& t : inputs) r.inputs.push_back(summarize(t, opts_.max_values));

  if (!opts_.quiet) {
    std::string args;
    for (std::size_t i = 0; i < r.inputs.size(); ++i) {
      const TensorSummary& s = r.inputs[i];
      if (i) args += ", ";
      if (!s.defined) {
        args += "undefined";
        continue;
      }
      if (s.shape.empty() && s.label.empty() && !inputs[i].requires_grad() && s.values.size() == 1) {
        args += fmt::format("{:.{}g}", s.values[0], opts_.precision);  // a scalar constant: `x * 0.5`
        continue;
      }
      args += s.id;
      if (!s.label.empty()) args += fmt::format(" \"{}\"", s.label);
      args += fmt::format(" {}", shape_str(s.shape));
    }
    stream_of(opts_) << "[forward] " << r.output.id << " = " << r.op << "(" << args << ") -> "
                     << shape_str(r.output.shape) << "  " << norm_and_values(r.output, "|x|", opts_.precision)
                     << (r.recorded ? "" : not_recorded_reason(inputs)) << "\n";
  }
  records_.push_back(std::move(r));
}

}  // namespace xg
