// Graph export: walk the backward graph from the roots (iteratively), then print one DOT node per op and per
// leaf, and one edge per input. Rendering shells out to Graphviz's `dot` through temporary files.
#include "xgrad/graph.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include "xgrad/atomic_file.h"

namespace xg {

namespace fs = std::filesystem;

// ---- ids and values ------------------------------------------------------------------------------------

std::string node_id(const Node& node) { return fmt::format("op{}", node.id); }

std::string node_id(const Tensor& t) {
  if (!t.defined()) return "undefined";
  if (auto fn = t.grad_fn()) return node_id(*fn);
  return fmt::format("t{}", t.impl()->id);
}

std::string node_label(const Node& node) {
  if (auto out = node.output.lock(); out && !out->label.empty()) return out->label;
  return node.created_by;
}

namespace {
std::string number(double v, int precision) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return fmt::format("{:.{}g}", v, precision);
}

// Nested brackets over axis `axis` of the row-major values `v`, starting at `offset`.
void nest(std::string& out, const std::vector<double>& v, const Shape& shape, std::size_t axis,
          std::size_t offset, int precision, const std::string& row_sep) {
  std::size_t stride = 1;
  for (std::size_t i = axis + 1; i < shape.size(); ++i) stride *= shape[i];
  out += '[';
  for (std::size_t k = 0; k < shape[axis]; ++k) {
    if (k > 0) {
      if (axis + 1 == shape.size()) {
        out += ", ";
      } else {
        out += row_sep;
        if (row_sep.back() == '\n') out.append(axis + 1, ' ');  // align the rows under the first one
      }
    }
    if (axis + 1 == shape.size())
      out += number(v[offset + k], precision);
    else
      nest(out, v, shape, axis + 1, offset + k * stride, precision, row_sep);
  }
  out += ']';
}
}  // namespace

std::string format_values(const std::vector<double>& v, const Shape& shape, int precision,
                          const std::string& row_sep) {
  if (v.size() != numel_of(shape))
    fail("format_values: {} values do not fill a tensor of shape {}", v.size(), shape_str(shape));
  if (shape.empty()) return number(v[0], precision);
  if (v.empty()) return "[]";
  std::string out;
  nest(out, v, shape, 0, 0, precision, row_sep.empty() ? ", " : row_sep);
  return out;
}

std::string format_values(const Tensor& t, int precision, const std::string& row_sep) {
  if (!t.defined()) return "undefined";
  return format_values(t.to_vector(), t.shape(), precision, row_sep);
}

// ---- DOT -------------------------------------------------------------------------------------------------

namespace {

// Text inside a record field: escape what the record syntax reserves; a line break becomes "\l" (end of a
// left-justified line) and leading spaces on continuation lines are kept with "\ ".
std::string record_text(const std::string& s) {
  std::string out;
  bool line_start = false;
  for (char c : s) {
    if (c == '\n') {
      out += "\\l";
      line_start = true;
      continue;
    }
    if (line_start && c == ' ') {
      out += "\\ ";
      continue;
    }
    line_start = false;
    if (c == '{' || c == '}' || c == '|' || c == '<' || c == '>' || c == '"' || c == '\\') out += '\\';
    out += c;
  }
  if (s.find('\n') != std::string::npos) out += "\\l";
  return out;
}

// "data [1, 2]" or, for two or more axes, one row per line.
std::string values_field(const char* what, const Tensor& t, const DotOptions& o) {
  const std::string sep = t.ndim() >= 2 ? ",\n" : ", ";
  std::string v = format_values(t, o.precision, sep);
  if (t.ndim() >= 2) return record_text(std::string(what) + "\n" + v);
  return record_text(std::string(what) + " " + v);
}

struct GraphParts {
  std::vector<const Node*> ops;                     // in creation order (ascending id)
  std::vector<std::shared_ptr<TensorImpl>> leaves;  // in creation order
  std::unordered_set<std::string> roots;            // ids of the roots (drawn bold)
};

// Every op and leaf reachable from the roots, found with an explicit stack (a 100,000-op chain is fine).
GraphParts collect(const std::vector<Tensor>& roots) {
  GraphParts g;
  std::unordered_set<const Node*> seen_ops;
  std::unordered_set<const TensorImpl*> seen_leaves;
  std::vector<const Node*> stack;
  auto add_leaf = [&](const std::shared_ptr<TensorImpl>& leaf) {
    if (seen_leaves.insert(leaf.get()).second) g.leaves.push_back(leaf);
  };
  for (const Tensor& r : roots) {
    if (!r.defined()) fail("to_dot: a root tensor is undefined");
    g.roots.insert(node_id(r));
    if (auto fn = r.grad_fn()) {
      if (seen_ops.insert(fn.get()).second) stack.push_back(fn.get());
    } else {
      add_leaf(r.impl());
    }
  }
  while (!stack.empty()) {
    const Node* n = stack.back();
    stack.pop_back();
    g.ops.push_back(n);
    for (const Edge& e : n->next) {
      if (e.node && seen_ops.insert(e.node.get()).second) stack.push_back(e.node.get());
      if (e.leaf) add_leaf(e.leaf);
    }
  }
  std::sort(g.ops.begin(), g.ops.end(), [](const Node* a, const Node* b) { return a->id < b->id; });
  std::sort(g.leaves.begin(), g.leaves.end(), [](const auto& a, const auto& b) { return a->id < b->id; });
  return g;
}

// The fields shared by op outputs and leaves: label, shape, values, gradient.
void tensor_fields(std::vector<std::string>& f, const std::shared_ptr<TensorImpl>& impl, const Shape& shape,
                   Dtype dtype, const DotOptions& o) {
  std::string shape_text = shape_str(shape);
  if (dtype != kFloat32) shape_text += fmt::format(" {}", dtype);
  f.push_back(record_text(shape_text));
  if (!impl || numel_of(shape) > o.max_values) return;
  const Tensor t(impl);
  if (o.show_values) f.push_back(values_field("data", t, o));
  if (o.show_grads && impl->grad) f.push_back(values_field("grad", Tensor(impl->grad), o));
}

std::string record(const std::vector<std::string>& fields) {
  std::string s = "{ ";
  for (std::size_t i = 0; i < fields.size(); ++i) s += (i ? " | " : "") + fields[i];
  return s + " }";
}

// The DOT id of where input i of `n` comes from (an op, a leaf, or a constant box).
std::string source_id(const Node& n, std::size_t i) {
  const Edge& e = n.next[i];
  if (e.node) return node_id(*e.node);
  if (e.leaf) return fmt::format("t{}", e.leaf->id);
  return fmt::format("{}_in{}", node_id(n), i);
}

}  // namespace

std::string to_dot(const std::vector<Tensor>& roots, const DotOptions& o) {
  if (o.rankdir != "LR" && o.rankdir != "TB" && o.rankdir != "RL" && o.rankdir != "BT")
    fail("to_dot: rankdir must be LR, TB, RL or BT, got '{}'", o.rankdir);
  const GraphParts g = collect(roots);
  std::ostringstream dot;
  dot << "digraph xgrad {\n"
      << "  rankdir=" << o.rankdir << ";\n"
      << "  node [shape=record, fontname=\"monospace\", fontsize=10];\n"
      << "  edge [fontsize=9];\n";

  dot << "  // leaves: inputs and parameters (their gradient accumulates in .grad())\n";
  for (const auto& leaf : g.leaves) {
    const Tensor t(leaf);
    const std::string id = fmt::format("t{}", leaf->id);
    std::vector<std::string> f{record_text(fmt::format("{}: {}", id, leaf->label.empty() ? "leaf" : leaf->label))};
    tensor_fields(f, leaf, t.shape(), t.dtype(), o);
    dot << "  " << id << " [style=filled, fillcolor=\"#dbeafe\"" << (g.roots.count(id) ? ", penwidth=2" : "")
        << ", label=\"" << record(f) << "\"];\n";
  }

  dot << "  // ops, in the order forward ran them; each shows its output\n";
  for (const Node* n : g.ops) {
    const std::string id = node_id(*n);
    const std::shared_ptr<TensorImpl> out = n->output.lock();  // null once the output tensor is gone
    std::vector<std::string> f{record_text(fmt::format("{}: {}", id, n->name))};
    const std::string label = node_label(*n);
    if (!label.empty()) f.push_back(record_text(label));
    tensor_fields(f, out, n->shape, n->dtype, o);
    const bool root = g.roots.count(id) > 0;
    dot << "  " << id << " [" << (root ? "style=filled, fillcolor=\"#fef3c7\", penwidth=2, " : "")
        << "label=\"" << record(f) << "\"];\n";
  }

  dot << "  // edges: data flows from each input to the op that consumes it\n";
  for (const Node* n : g.ops) {
    const bool many = n->next.size() > 1;
    for (std::size_t i = 0; i < n->next.size(); ++i) {
      const std::string src = source_id(*n, i);
      const bool constant = !n->next[i].active();
      if (constant) {
        if (!o.show_constants) continue;
        dot << "  " << src << " [shape=box, style=dashed, fontsize=9, label=\""
            << record_text(fmt::format("const {}", shape_str(n->input_shapes[i]))) << "\"];\n";
      }
      dot << "  " << src << " -> " << node_id(*n);
      std::vector<std::string> attrs;
      if (many) attrs.push_back(fmt::format("label=\"{}\"", i));  // input slot (matters for sub, div, ...)
      if (constant) attrs.push_back("style=dashed");
      if (!attrs.empty()) {
        dot << " [";
        for (std::size_t k = 0; k < attrs.size(); ++k) dot << (k ? ", " : "") << attrs[k];
        dot << "]";
      }
      dot << ";\n";
    }
  }
  dot << "}\n";
  return dot.str();
}

std::string to_dot(const Tensor& root, const DotOptions& opts) { return to_dot(std::vector<Tensor>{root}, opts); }

// ---- rendering -------------------------------------------------------------------------------------------

namespace {

std::string dot_program(const RenderOptions& o) {
  if (!o.dot_program.empty()) return o.dot_program;
  if (const char* env = std::getenv("XGRAD_DOT"); env && *env) return env;
  return "dot";
}

// A single-quoted shell word: ' becomes '\''.
std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

int run(const std::string& cmd) {
  const int status = std::system(cmd.c_str());
  if (status == -1) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

// A fresh file from a mkstemp template; removed when this object dies unless released.
struct TempFile {
  std::string path;
  explicit TempFile(std::string tmpl) {
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    const int fd = ::mkstemp(buf.data());
    if (fd < 0) fail("render_dot: cannot create a temporary file like '{}'", tmpl);
    ::close(fd);
    path = buf.data();
  }
  ~TempFile() {
    std::error_code ec;
    if (!path.empty()) fs::remove(path, ec);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

bool graphviz_available(const RenderOptions& opts) {
  return run(shell_quote(dot_program(opts)) + " -V >/dev/null 2>&1") == 0;
}

void render_dot(const std::string& dot, const std::string& path, const RenderOptions& opts) {
  const std::string program = dot_program(opts);
  if (!graphviz_available(opts))
    fail("render_dot: graphviz's `dot` was not found (tried '{}'{}); install it with apt-get install graphviz — "
         "the DOT text is still available from xg::to_dot",
         program, opts.dot_program.empty() && std::getenv("XGRAD_DOT") ? ", from $XGRAD_DOT" : "");
  const fs::path target(path);
  std::string format = opts.format;
  if (format.empty()) {
    format = target.extension().string();
    if (!format.empty()) format.erase(0, 1);
  }
  if (format.empty())
    fail("render_dot: cannot tell the output format of '{}'; give it an extension (.svg, .png, .pdf) or set "
         "RenderOptions::format",
         path);
  if (!target.parent_path().empty() && !fs::is_directory(target.parent_path()))
    fail("render_dot: the directory of '{}' does not exist", path);

  TempFile in((fs::temp_directory_path() / "xgrad-graph-XXXXXX").string());
  TempFile err((fs::temp_directory_path() / "xgrad-dot-err-XXXXXX").string());
  {
    std::ofstream f(in.path);
    f << dot;
    if (!f) fail("render_dot: cannot write the temporary file '{}'", in.path);
  }
  // Render to a temporary file next to the target, then rename (xgrad/atomic_file.h): readers never see a
  // half-written file, and a failed `dot` leaves the old one.
  AtomicFile out(path, "render_dot");
  const std::string cmd = fmt::format("{} -T{} {} -o {} 2>{}", shell_quote(program), shell_quote(format),
                                      shell_quote(in.path), shell_quote(out.temp_path()), shell_quote(err.path));
  if (const int rc = run(cmd); rc != 0)
    fail("render_dot: `{} -T{}` failed (exit code {}) writing '{}': {}", program, format, rc, path,
         read_text(err.path));
  out.commit();
}

void render(const Tensor& root, const std::string& path, const DotOptions& dot_opts, const RenderOptions& opts) {
  render_dot(to_dot(root, dot_opts), path, opts);
}

}  // namespace xg
