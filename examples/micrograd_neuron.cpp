// micrograd_neuron — one neuron, o = tanh(x1·w1 + x2·w2 + b), on 0-d tensors: the example from Andrej Karpathy's
// micrograd lecture, step by step. It prints the graph (Graphviz DOT), runs backward while a tracer prints
// each node, and puts every gradient beside the value derived by hand with the chain rule.
//
//   build/bin/micrograd_neuron            # then paste the digraph into any Graphviz viewer
//
// Read it with docs/autograd.md. Exits 1 if a gradient disagrees with its hand-derived value.
#include <cmath>
#include <cstdio>
#include <vector>

#include <xgrad/xgrad.h>

int main() {
  // [neuron]
  // Inputs and parameters: 0-d float64 tensors that require grad (micrograd's Value).
  auto value = [](double v, const char* label) {
    xg::Tensor t = xg::scalar(v, xg::kFloat64, /*requires_grad=*/true);
    t.set_label(label);
    return t;
  };
  xg::Tensor x1 = value(2.0, "x1"), x2 = value(0.0, "x2");
  xg::Tensor w1 = value(-3.0, "w1"), w2 = value(1.0, "w2");
  xg::Tensor b = value(6.8813735870195432, "b");

  // The forward pass, one op per line. Each result keeps a name so the graph can show its value, and
  // retain_grad() keeps its gradient after backward (only leaves keep theirs by default).
  xg::Tensor x1w1 = x1 * w1;
  xg::Tensor x2w2 = x2 * w2;
  xg::Tensor x1w1x2w2 = x1w1 + x2w2;
  xg::Tensor n = x1w1x2w2 + b;
  xg::Tensor o = xg::tanh(n);
  for (auto* t : {&x1w1, &x2w2, &x1w1x2w2, &n, &o}) t->retain_grad();
  x1w1.set_label("x1w1");
  x2w2.set_label("x2w2");
  x1w1x2w2.set_label("x1w1+x2w2");
  n.set_label("n");
  o.set_label("o");
  // [/neuron]

  // [backward]
  {
    xg::BackwardTracer trace;  // prints each node as the engine runs it, newest op first
    o.backward();              // o is a scalar: the seed gradient do/do = 1
  }
  // [/backward]

  // [dot]
  std::printf("\n%s\n", xg::to_dot(o).c_str());
  // [/dot]

  // [by_hand]
  // The chain rule by hand. tanh'(n) = 1 - tanh(n)², then each + passes the gradient through unchanged
  // and each * sends it to one factor multiplied by the other factor.
  const double o_val = std::tanh(x1.item() * w1.item() + x2.item() * w2.item() + b.item());
  const double dn = 1.0 - o_val * o_val;  // do/dn
  struct Row {
    const char* name;
    xg::Tensor t;
    double by_hand;
  };
  const std::vector<Row> rows{
      {"o", o, 1.0},       {"n", n, dn},      {"b", b, dn},   {"x1w1+x2w2", x1w1x2w2, dn},
      {"x1w1", x1w1, dn},  {"x2w2", x2w2, dn}, {"x1", x1, w1.item() * dn}, {"w1", w1, x1.item() * dn},
      {"x2", x2, w2.item() * dn}, {"w2", w2, x2.item() * dn},
  };
  // [/by_hand]

  std::printf("o = tanh(n) = %.4f\n\n%-10s %10s %10s  %s\n", o.item(), "tensor", "xgrad", "by hand", "rule");
  const char* rules[] = {"seed",         "1 - o²",   "dn · 1",    "dn · 1",    "dn · 1",
                         "dn · 1",       "w1 · dn",  "x1 · dn",   "w2 · dn",   "x2 · dn"};
  bool ok = true;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const double g = rows[i].t.grad().item();
    const bool same = std::abs(g - rows[i].by_hand) <= 1e-12;
    ok = ok && same;
    std::printf("%-10s %10.4f %10.4f  %s%s\n", rows[i].name, g, rows[i].by_hand, rules[i], same ? "" : "  MISMATCH");
  }
  std::printf("\n%s\n", ok ? "every gradient matches its hand-derived value" : "MISMATCH");
  return ok ? 0 : 1;
}
