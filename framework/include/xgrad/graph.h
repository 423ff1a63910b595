// xgrad/graph.h — the backward graph as Graphviz DOT text, and rendering it to SVG/PNG.
//
// micrograd's draw_dot for tensors: every recorded op is one record node showing its name, its id, the label
// and shape of its output and — for tensors of at most `max_values` elements — the output's values and
// gradient. Leaves (tensors that require grad but were not produced by an op: inputs and parameters) are
// shaded nodes with their label and shape. Edges follow the data: input -> op -> op that consumes it.
//
//   std::cout << xg::to_dot(loss);              // paste into https://dreampuf.github.io/GraphvizOnline or:
//   xg::render(loss, "graph.svg");              // runs Graphviz's `dot` (Debian: apt-get install graphviz)
//
// Node ids are the ones the tracers (xgrad/trace.h) and anomaly mode (xgrad/anomaly.h) print: `op17` is the
// op whose Node::id is 17, `t5` the leaf whose TensorImpl::id is 5. The walkthrough is docs/debugging.md.
//
// What is shown. An op's output values are known only while the output tensor is alive (the graph holds a
// weak reference to it): keep intermediate results in variables to see them. Gradients are shown where they
// are kept: a leaf's .grad(), and a non-leaf's after retain_grad(). Labels come from Tensor::set_label (also
// after the op ran). Inputs that do not require grad ("constants") have no tensor in the graph, only a
// shape; they appear as small dashed boxes (DotOptions::show_constants).
#pragma once

#include <string>
#include <vector>

#include "xgrad/autograd.h"
#include "xgrad/tensor.h"

namespace xg {

struct DotOptions {
  std::size_t max_values = 10;   // show data/grad of tensors with at most this many elements
  bool show_values = true;       // show the data of small tensors
  bool show_grads = true;        // show the gradients of small tensors (where present)
  bool show_constants = true;    // draw inputs that do not require grad as dashed boxes
  std::string rankdir = "LR";    // "LR" (left to right, as micrograd) or "TB" (top to bottom)
  int precision = 4;             // significant digits of the values shown
};

/// The backward graph reachable from `root` as a Graphviz `digraph`. `root` may be a leaf (one node).
std::string to_dot(const Tensor& root, const DotOptions& opts = {});
/// Same for several outputs drawn together (shared sub-graphs appear once).
std::string to_dot(const std::vector<Tensor>& roots, const DotOptions& opts = {});

/// Ids shared by the graph export, the tracers and anomaly messages: "op<Node::id>" for an op, and for a
/// tensor the id of its op if it has one, else "t<TensorImpl::id>".
std::string node_id(const Node& node);
std::string node_id(const Tensor& t);
/// The label of a node's output: the tensor's current label while it is alive, else the last one it had.
std::string node_label(const Node& node);

/// Values as nested brackets with `precision` significant digits: "0.5", "[1, 2]", "[[1, 2], [3, 4]]".
/// Rows of a tensor with two or more axes are separated by `row_sep` (", " keeps it on one line).
std::string format_values(const Tensor& t, int precision = 4, const std::string& row_sep = ", ");
/// Same for row-major `values` of the given shape (values.size() must equal numel_of(shape)).
std::string format_values(const std::vector<double>& values, const Shape& shape, int precision = 4,
                          const std::string& row_sep = ", ");

struct RenderOptions {
  /// The Graphviz program. Empty: the environment variable XGRAD_DOT if set, else "dot" from the PATH.
  std::string dot_program;
  /// Output format passed as -T<format>. Empty: from the file extension (.svg, .png, .pdf, ...).
  std::string format;
};

/// True if the Graphviz program answers `-V`.
bool graphviz_available(const RenderOptions& opts = {});

/// Runs Graphviz on DOT text and writes `path` (atomically: a temporary file then a rename, so a failure
/// leaves no half-written file). Throws xg::Error when `dot` is missing (naming the Debian package) or fails.
void render_dot(const std::string& dot, const std::string& path, const RenderOptions& opts = {});

/// render_dot(to_dot(root, dot_opts), path, opts).
void render(const Tensor& root, const std::string& path, const DotOptions& dot_opts = {},
            const RenderOptions& opts = {});

}  // namespace xg
