// Graph export (xgrad/graph.h): DOT structure, ids, labels, values/gradients of small tensors, rendering.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "xgrad/autograd.h"
#include "xgrad/graph.h"
#include "xgrad/nn.h"
#include "xgrad/ops.h"
#include "xgrad/random.h"
#include "xgrad/tensor.h"
#include "xgrad/trace.h"

namespace fs = std::filesystem;
using xg::Tensor;

namespace {

// A parsed DOT graph: node id -> label (the text inside label="..."), and the edges (from, to, attributes).
struct Dot {
  std::map<std::string, std::string> nodes;
  std::vector<std::tuple<std::string, std::string, std::string>> edges;
};

Dot parse(const std::string& dot) {
  Dot d;
  std::istringstream in(dot);
  const std::regex node_re(R"re(^  (\w+) \[(.*)label="(.*)"\];$)re");
  const std::regex edge_re(R"re(^  (\w+) -> (\w+)( \[.*\])?;$)re");
  std::smatch m;
  for (std::string line; std::getline(in, line);) {
    if (std::regex_match(line, m, edge_re))
      d.edges.emplace_back(m[1], m[2], m[3]);
    else if (std::regex_match(line, m, node_re))
      d.nodes[m[1]] = m[3];
  }
  return d;
}

std::string id_of(const Tensor& t) {
  return t.grad_fn() ? fmt::format("op{}", t.grad_fn()->id) : fmt::format("t{}", t.impl()->id);
}

bool has_edge(const Dot& d, const std::string& from, const std::string& to) {
  for (const auto& [f, t, a] : d.edges)
    if (f == from && t == to) return true;
  return false;
}

// Sets an environment variable for one scope.
struct ScopedEnv {
  std::string name;
  std::string old;
  bool had;
  ScopedEnv(const char* n, const char* value) : name(n) {
    const char* o = std::getenv(n);
    had = o != nullptr;
    if (had) old = o;
    ::setenv(n, value, 1);
  }
  ~ScopedEnv() {
    if (had)
      ::setenv(name.c_str(), old.c_str(), 1);
    else
      ::unsetenv(name.c_str());
  }
};

}  // namespace

TEST_CASE("to_dot: a known small graph has one node per op and per leaf, edges input -> op") {
  // loss = sum(a*b + a): ops mul, add, sum; leaves a, b; edges a->mul, b->mul, mul->add, a->add, add->sum.
  Tensor a = xg::tensor({1.0, 2.0}, xg::kFloat64, true);
  Tensor b = xg::tensor({3.0, 4.0}, xg::kFloat64, true);
  a.set_label("a");
  b.set_label("b");
  Tensor c = a * b;
  Tensor d = c + a;
  Tensor loss = d.sum();
  const Dot dot = parse(xg::to_dot(loss));

  CHECK(dot.nodes.size() == 5);
  CHECK(dot.edges.size() == 5);
  const std::string ta = id_of(a), tb = id_of(b), mul = id_of(c), add = id_of(d), sum = id_of(loss);
  CHECK(ta == fmt::format("t{}", a.impl()->id));
  CHECK(mul == fmt::format("op{}", c.grad_fn()->id));
  for (const auto& id : {ta, tb, mul, add, sum}) CHECK_MESSAGE(dot.nodes.count(id) == 1, id);
  CHECK(has_edge(dot, ta, mul));
  CHECK(has_edge(dot, tb, mul));
  CHECK(has_edge(dot, mul, add));
  CHECK(has_edge(dot, ta, add));
  CHECK(has_edge(dot, add, sum));
  // Op nodes show "<id>: <name>" and the output shape; leaves show their label and shape.
  CHECK(dot.nodes.at(mul).find(mul + ": mul") != std::string::npos);
  CHECK(dot.nodes.at(sum).find(sum + ": sum") != std::string::npos);
  CHECK(dot.nodes.at(sum).find("| [] float64") != std::string::npos);
  CHECK(dot.nodes.at(ta).find(ta + ": a | [2] float64") != std::string::npos);
  // Two-input ops number their edges (the order matters for sub and div).
  int labelled = 0;
  for (const auto& [f, t, attrs] : dot.edges)
    if (t == add) labelled += attrs.find(f == mul ? "label=\"0\"" : "label=\"1\"") != std::string::npos;
  CHECK(labelled == 2);
}

TEST_CASE("to_dot: values and gradients of small tensors, as micrograd's draw_dot") {
  Tensor a = xg::tensor({1.0, 2.0}, xg::kFloat64, true);
  Tensor b = xg::tensor({3.0, 4.0}, xg::kFloat64, true);
  Tensor c = a * b;
  c.retain_grad();
  Tensor loss = (c + a).sum();

  Dot before = parse(xg::to_dot(loss));
  // The output of (c + a) was a temporary: its node keeps the op, name and shape but no longer the values.
  const std::string add_id = fmt::format("op{}", loss.grad_fn()->next.at(0).node->id);
  CHECK(before.nodes.at(add_id).find("| data") == std::string::npos);
  CHECK(before.nodes.at(id_of(c)).find("data [3, 8]") != std::string::npos);  // 1*3, 2*4
  CHECK(before.nodes.at(id_of(c)).find("| grad") == std::string::npos);         // no backward yet
  CHECK(before.nodes.at(id_of(a)).find("data [1, 2]") != std::string::npos);
  CHECK(before.nodes.at(id_of(loss)).find("data 14") != std::string::npos);   // 3 + 8 + 1 + 2

  loss.backward();
  Dot after = parse(xg::to_dot(loss));
  // d loss/dc = 1; d loss/da = b + 1 = [4, 5]; d loss/db = a = [1, 2].
  CHECK(after.nodes.at(id_of(c)).find("grad [1, 1]") != std::string::npos);
  CHECK(after.nodes.at(id_of(a)).find("grad [4, 5]") != std::string::npos);
  CHECK(after.nodes.at(id_of(b)).find("grad [1, 2]") != std::string::npos);
  // The graph was released by backward, but its structure is still exported.
  CHECK(after.nodes.size() == before.nodes.size());
  CHECK(after.edges.size() == before.edges.size());

  SUBCASE("show_values / show_grads switch them off") {
    xg::DotOptions o;
    o.show_values = false;
    o.show_grads = false;
    const std::string text = xg::to_dot(loss, o);
    CHECK(text.find("| data") == std::string::npos);
    CHECK(text.find("| grad") == std::string::npos);
  }
}

TEST_CASE("to_dot: no values for tensors above max_values; 2-d values one row per line") {
  Tensor x = xg::ones({4, 3}, xg::kFloat32, true);  // 12 elements > 10
  Tensor y = x * 2.0;
  Tensor loss = y.sum();
  loss.backward();
  Dot d = parse(xg::to_dot(loss));
  CHECK(d.nodes.at(id_of(x)).find("| data") == std::string::npos);
  CHECK(d.nodes.at(id_of(x)).find("| grad") == std::string::npos);
  CHECK(d.nodes.at(id_of(x)).find("[4,3]") != std::string::npos);
  CHECK(d.nodes.at(id_of(loss)).find("data 24") != std::string::npos);  // the 0-d sum is small

  xg::DotOptions o;
  o.max_values = 12;
  d = parse(xg::to_dot(loss, o));
  // "data" then the rows, each ending with \l (left-justified line), continuation rows indented with "\ ".
  CHECK(d.nodes.at(id_of(y)).find(R"(data\l[[2, 2, 2],\l\ [2, 2, 2],\l\ [2, 2, 2],\l\ [2, 2, 2]]\l)") !=
        std::string::npos);
  CHECK(d.nodes.at(id_of(x)).find(R"(grad\l[[2, 2, 2],)") != std::string::npos);  // d(2x)/dx = 2
}

TEST_CASE("to_dot: constants, labels set after creation, escaping, leaf roots") {
  Tensor a = xg::tensor({1.0, -1.0}, xg::kFloat32, true);
  Tensor h = a * 2.0;  // the 2.0 is a constant: no tensor in the graph, a dashed box
  h.set_label("h1");   // labelled after the op ran: the node still finds it
  Tensor out = h.sum();
  Dot d = parse(xg::to_dot(out));
  const std::string c = id_of(h) + "_in1";
  REQUIRE(d.nodes.count(c) == 1);
  CHECK(d.nodes.at(c) == "const []");
  CHECK(has_edge(d, c, id_of(h)));
  CHECK(d.nodes.at(id_of(h)).find("| h1 |") != std::string::npos);

  xg::DotOptions no_consts;
  no_consts.show_constants = false;
  Dot d2 = parse(xg::to_dot(out, no_consts));
  CHECK(d2.nodes.count(c) == 0);
  CHECK(d2.edges.size() == d.edges.size() - 1);

  // Record syntax characters in labels are escaped.
  a.set_label("w{0}|<x>\"q\"");
  const std::string text = xg::to_dot(out);
  CHECK(text.find(R"(w\{0\}\|\<x\>\"q\")") != std::string::npos);

  // A leaf root is a graph of one node.
  Dot leaf = parse(xg::to_dot(a));
  CHECK(leaf.nodes.size() == 1);
  CHECK(leaf.edges.empty());
  CHECK(leaf.nodes.count(id_of(a)) == 1);

  // Bad options are reported.
  xg::DotOptions bad;
  bad.rankdir = "sideways";
  CHECK_THROWS_WITH_AS(xg::to_dot(out, bad), doctest::Contains("rankdir must be LR, TB, RL or BT"), xg::Error);
  CHECK_THROWS_WITH_AS(xg::to_dot(Tensor()), doctest::Contains("undefined"), xg::Error);
}

TEST_CASE("to_dot: shared sub-graphs appear once; several roots; a long chain is not recursive") {
  Tensor x = xg::tensor({1.0, 2.0}, xg::kFloat64, true);
  Tensor s = x * x;  // one mul feeding two roots
  Tensor r1 = s.sum(), r2 = xg::tanh(s);
  Dot d = parse(xg::to_dot(std::vector<Tensor>{r1, r2}));
  CHECK(d.nodes.size() == 4);  // x, mul, sum, tanh
  CHECK(d.edges.size() == 4);  // x->mul twice (inputs 0 and 1), mul->sum, mul->tanh

  Tensor y = x;
  const int n = 3000;
  for (int i = 0; i < n; ++i) y = y + 1.0;
  xg::DotOptions o;
  o.show_constants = false;
  Dot chain = parse(xg::to_dot(y, o));
  CHECK(chain.nodes.size() == n + 1);
  CHECK(chain.edges.size() == n);
}

TEST_CASE("to_dot: modules label their parameters and outputs with their dotted names") {
  // [module_graph]
  xg::manual_seed(0);
  xg::nn::Sequential model(xg::nn::Linear(3, 2), xg::nn::Tanh());
  xg::Tensor x = xg::ones({4, 3});
  x.set_label("input");
  xg::Tensor loss = model.forward(x).sum();
  const std::string dot = xg::to_dot(loss);  // leaves "0.weight", "0.bias"; op outputs "0" and "1"
  // [/module_graph]
  const Dot d = parse(dot);
  std::set<std::string> labels;
  for (const auto& [name, p] : model.named_parameters()) labels.insert(name);
  CHECK(labels == std::set<std::string>{"0.weight", "0.bias"});
  for (const auto& [name, p] : model.named_parameters())
    CHECK_MESSAGE(d.nodes.at(id_of(p)).find(fmt::format(": {} | ", name)) != std::string::npos, name);
  // x does not require grad: a constant of the graph (call x.requires_grad_() to see it as a leaf).
  const std::string linear_id = fmt::format("op{}", loss.grad_fn()->next.at(0).node->next.at(0).node->id);
  CHECK(d.nodes.at(linear_id + "_in0") == "const [4,3]");
  CHECK(d.nodes.at(linear_id).find(": linear | 0 | [4,2]") != std::string::npos);
  // The Tanh output (module "1") feeds the sum; its node carries the module's label although the tensor is
  // gone (the node keeps the label it was given).
  const std::string tanh_id = fmt::format("op{}", loss.grad_fn()->next.at(0).node->id);
  CHECK(d.nodes.at(tanh_id).find(": tanh | 1 | [4,2]") != std::string::npos);
}

TEST_CASE("graph ids are the tracer's ids") {
  Tensor a = xg::tensor({0.5, -1.5, 2.0}, xg::kFloat64, true);
  Tensor w = xg::tensor({2.0, 1.0, -1.0}, xg::kFloat64, true);
  Tensor loss = xg::tanh(a * w + 1.0).sum();
  const Dot d = parse(xg::to_dot(loss));
  std::set<std::string> dot_ops, traced;
  for (const auto& [id, label] : d.nodes)
    if (id.rfind("op", 0) == 0 && id.find("_in") == std::string::npos) dot_ops.insert(id);
  xg::TraceOptions quiet;
  quiet.quiet = true;
  xg::BackwardTracer tracer(quiet);
  loss.backward();
  for (const auto& r : tracer.records()) {
    traced.insert(r.id);
    for (const auto& g : r.grad_inputs)
      if (!g.id.empty()) CHECK_MESSAGE(d.nodes.count(g.id) == 1, g.id);  // every destination is a DOT node
  }
  CHECK(traced == dot_ops);
  CHECK(xg::node_id(loss) == id_of(loss));
  CHECK(xg::node_id(a) == id_of(a));
}

TEST_CASE("format_values") {
  CHECK(xg::format_values(xg::scalar(0.5)) == "0.5");
  CHECK(xg::format_values(xg::tensor({1.0, 2.5, -3.0})) == "[1, 2.5, -3]");
  CHECK(xg::format_values(xg::tensor({{1.0, 2.0}, {3.0, 4.0}})) == "[[1, 2], [3, 4]]");
  CHECK(xg::format_values(xg::tensor({{1.0, 2.0}, {3.0, 4.0}}), 4, ",\n") == "[[1, 2],\n [3, 4]]");
  CHECK(xg::format_values(xg::tensor({1.0 / 3.0}), 3) == "[0.333]");
  CHECK(xg::format_values(xg::tensor({1.0, 0.0}) / xg::tensor({0.0, 0.0})) == "[inf, nan]");
  CHECK(xg::format_values(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 1, 3}) == "[[[1, 2, 3]], [[4, 5, 6]]]");
  CHECK_THROWS_WITH_AS(xg::format_values(std::vector<double>{1, 2}, {3}), doctest::Contains("do not fill"),
                       xg::Error);
}

TEST_CASE("render: a clear error when graphviz's dot is missing") {
  Tensor a = xg::tensor({1.0, 2.0}, xg::kFloat64, true);
  Tensor loss = (a * a).sum();
  const fs::path out = fs::temp_directory_path() / "xgrad_test_graph_missing.svg";
  fs::remove(out);
  {
    ScopedEnv env("XGRAD_DOT", "/nonexistent/dot");
    CHECK_FALSE(xg::graphviz_available());
    CHECK_THROWS_WITH_AS(xg::render(loss, out.string()),
                         doctest::Contains("graphviz's `dot` was not found (tried '/nonexistent/dot', from $XGRAD_DOT); "
                                           "install it with apt-get install graphviz"),
                         xg::Error);
    CHECK_THROWS_WITH_AS(xg::render(loss, out.string()), doctest::Contains("xg::to_dot"), xg::Error);
  }
  xg::RenderOptions ro;
  ro.dot_program = "no-such-graphviz-program";
  CHECK_FALSE(xg::graphviz_available(ro));
  CHECK_THROWS_WITH_AS(xg::render_dot(xg::to_dot(loss), out.string(), ro), doctest::Contains("apt-get install graphviz"),
                       xg::Error);
  CHECK_FALSE(fs::exists(out));
}

TEST_CASE("render: SVG through graphviz, atomically") {
  if (!xg::graphviz_available()) {
    WARN_MESSAGE(false, "graphviz's dot is not installed: rendering not tested (apt-get install graphviz)");
    return;
  }
  Tensor a = xg::tensor({1.0, 2.0}, xg::kFloat64, true);
  a.set_label("a {tricky} | <label>");
  Tensor big = xg::ones({4, 3}, xg::kFloat64, true);
  Tensor loss = ((a * a).sum() + (big * 3.0).mean()).sum();
  loss.backward();
  xg::DotOptions o;
  o.max_values = 12;  // exercise the multi-line 2-d values too

  const fs::path dir = fs::temp_directory_path() / "xgrad_test_graph_render";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path svg = dir / "graph.svg";
  xg::render(loss, svg.string(), o);
  REQUIRE(fs::exists(svg));
  std::ifstream in(svg);
  std::stringstream ss;
  ss << in.rdbuf();
  CHECK(ss.str().find("<svg") != std::string::npos);
  CHECK(ss.str().find(id_of(loss) + ": sum") != std::string::npos);  // the node text made it through
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);  // no temporary left

  // A format graphviz does not know: an error with dot's own message, and no file.
  const fs::path weird = dir / "graph.notaformat";
  CHECK_THROWS_WITH_AS(xg::render(loss, weird.string()), doctest::Contains("failed"), xg::Error);
  CHECK_FALSE(fs::exists(weird));
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);
  CHECK_THROWS_WITH_AS(xg::render(loss, (dir / "noextension").string()), doctest::Contains("give it an extension"),
                       xg::Error);
  CHECK_THROWS_WITH_AS(xg::render(loss, (dir / "missing" / "g.svg").string()), doctest::Contains("does not exist"),
                       xg::Error);
  fs::remove_all(dir);
}
