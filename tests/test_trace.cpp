// Tracers (xgrad/trace.h): the order backward runs nodes in, the gradient norms and values they report, the
// forward records, the printed lines, and that a tracer stops observing when it goes out of scope.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "xgrad/autograd.h"
#include "xgrad/graph.h"
#include "xgrad/ops.h"
#include "xgrad/tensor.h"
#include "xgrad/trace.h"

using xg::Tensor;

namespace {
xg::TraceOptions quiet() {
  xg::TraceOptions o;
  o.quiet = true;
  return o;
}
std::string op_id(const Tensor& t) { return fmt::format("op{}", t.grad_fn()->id); }
std::string leaf_id(const Tensor& t) { return fmt::format("t{}", t.impl()->id); }
}  // namespace

TEST_CASE("BackwardTracer: one record per node, reverse topological order, norms by hand") {
  // loss = sum(a*b + a) with a = [1, 2], b = [3, 4].
  Tensor a = xg::tensor({1.0, 2.0}, xg::kFloat64, true);
  Tensor b = xg::tensor({3.0, 4.0}, xg::kFloat64, true);
  a.set_label("a");
  Tensor c = a * b;
  Tensor d = c + a;
  Tensor loss = d.sum();

  // [collect_records]
  xg::TraceOptions opts;
  opts.quiet = true;  // print nothing, only keep the records
  xg::BackwardTracer tracer(opts);
  loss.backward();
  const std::vector<xg::BackwardRecord>& r = tracer.records();  // one per node, in execution order
  // [/collect_records]
  REQUIRE(r.size() == 3);
  CHECK(r[0].op == "sum");
  CHECK(r[1].op == "add");
  CHECK(r[2].op == "mul");
  CHECK(r[0].id == op_id(loss));
  CHECK(r[1].id == op_id(d));
  CHECK(r[2].id == op_id(c));
  for (std::size_t i = 0; i < r.size(); ++i) {
    CHECK(r[i].step == i);
    CHECK(r[i].pass == 0);
  }

  // sum: gradient 1 arrives; [1, 1] goes to add (norm sqrt 2).
  CHECK(r[0].grad_output.norm == doctest::Approx(1.0));
  CHECK(r[0].grad_output.values == std::vector<double>{1.0});
  REQUIRE(r[0].grad_inputs.size() == 1);
  CHECK(r[0].grad_inputs[0].id == op_id(d));
  CHECK(r[0].grad_inputs[0].norm == doctest::Approx(std::sqrt(2.0)));
  // add: [1, 1] to mul and [1, 1] to the leaf a.
  CHECK(r[1].grad_inputs[0].id == op_id(c));
  CHECK(r[1].grad_inputs[1].id == leaf_id(a));
  CHECK(r[1].grad_inputs[1].label == "a");
  CHECK(r[1].grad_inputs[1].values == std::vector<double>{1.0, 1.0});
  // mul: g·b = [3, 4] (norm 5) to a, g·a = [1, 2] (norm sqrt 5) to b.
  CHECK(r[2].grad_inputs[0].norm == doctest::Approx(5.0));
  CHECK(r[2].grad_inputs[0].values == std::vector<double>{3.0, 4.0});
  CHECK(r[2].grad_inputs[1].norm == doctest::Approx(std::sqrt(5.0)));
  CHECK(r[2].grad_inputs[1].id == leaf_id(b));
  CHECK(r[2].input_shapes == std::vector<xg::Shape>{{2}, {2}});
  CHECK(r[2].grad_output.shape == xg::Shape{2});
}

TEST_CASE("BackwardTracer: every node runs after all the nodes that consume its output") {
  // A diamond with a shared input and a long branch.
  Tensor x = xg::tensor({0.3, -0.7, 1.1}, xg::kFloat64, true);
  Tensor h = xg::tanh(x);
  Tensor left = h * 2.0;
  Tensor right = xg::exp(xg::exp(h));
  Tensor loss = (left + right + h).sum();
  xg::BackwardTracer tracer(quiet());
  loss.backward();
  std::map<std::string, std::size_t> step_of;
  for (const auto& r : tracer.records()) step_of[r.id] = r.step;
  CHECK(tracer.records().size() == 7);  // tanh mul exp exp add add sum
  for (const auto& r : tracer.records())
    for (const auto& g : r.grad_inputs)
      if (step_of.count(g.id)) CHECK_MESSAGE(step_of[g.id] > r.step, r.id, " -> ", g.id);
  CHECK(tracer.records().front().id == op_id(loss));
  CHECK(tracer.records().back().id == op_id(h));
}

TEST_CASE("BackwardTracer: big tensors report norms without values; constants get no gradient") {
  Tensor w = xg::full({4, 3}, 0.5, xg::kFloat64, true);  // 12 elements
  Tensor loss = (w * 2.0).sum();
  xg::BackwardTracer tracer(quiet());
  loss.backward();
  const auto& mul = tracer.records().at(1);
  CHECK(mul.op == "mul");
  CHECK(mul.grad_inputs[0].values.empty());
  CHECK(mul.grad_inputs[0].norm == doctest::Approx(std::sqrt(12.0 * 4.0)));  // twelve 2s
  CHECK_FALSE(mul.grad_inputs[1].defined);  // the constant 2.0
  CHECK(mul.grad_inputs[1].id.empty());

  xg::TraceOptions more = quiet();
  more.max_values = 12;
  xg::BackwardTracer tracer2(more);
  Tensor loss2 = (w * 2.0).sum();
  loss2.backward();
  CHECK(tracer2.records().at(1).grad_inputs[0].values == std::vector<double>(12, 2.0));
}

TEST_CASE("BackwardTracer: printed lines, passes, and no effect after its scope") {
  Tensor a = xg::tensor({1.0, 2.0}, xg::kFloat64, true);
  a.set_label("a");
  Tensor y = a * a;
  y.set_label("y");
  Tensor loss = y.sum();
  std::ostringstream out;
  {
    xg::BackwardTracer tracer(out);
    loss.backward({}, /*retain_graph=*/true);
    loss.backward();
    REQUIRE(tracer.records().size() == 4);
    CHECK(tracer.records()[2].pass == 1);
    CHECK(tracer.records()[2].step == 0);
  }
  const std::string text = out.str();
  // The mul node y = a·a: gradient [1, 1] arrives; each input gets g·(the other factor) = [1, 2] (norm 2.236).
  CHECK(text.find("[backward step 0] " + op_id(loss) + " sum []  grad_output |g|=1  1\n") != std::string::npos);
  CHECK(text.find("[backward step 1] " + op_id(y) + " mul \"y\" [2]  grad_output |g|=1.414  [1, 1]\n") !=
        std::string::npos);
  CHECK(text.find("    -> input 0: " + leaf_id(a) + " \"a\" [2]  |g|=2.236  [1, 2]  (accumulated into .grad)") !=
        std::string::npos);
  CHECK(text.find("    -> input 0: " + op_id(y) + " mul \"y\" [2]  |g|=1.414  [1, 1]") != std::string::npos);
  CHECK(text.find("[backward #1 step 0]") != std::string::npos);

  // Out of scope: nothing is printed any more.
  const std::string before = out.str();
  Tensor again = (a * a).sum();
  again.backward();
  CHECK(out.str() == before);
}

TEST_CASE("ForwardTracer: records ops as forward runs them, with the graph's ids") {
  Tensor x = xg::tensor({1.0, 2.0, 3.0}, xg::kFloat64, true);
  x.set_label("x");
  Tensor k = xg::tensor({2.0, 2.0, 2.0}, xg::kFloat64);  // no grad
  std::ostringstream out;
  Tensor y, z, n;
  {
    xg::ForwardTracer tracer(out);
    y = x * k;
    z = xg::exp(k);  // nothing requires grad: computed but not recorded
    {
      xg::NoGradGuard no_grad;
      n = x * 3.0;  // grad mode off
    }
    Tensor loss = y.sum();
    const std::size_t seen = tracer.records().size();
    loss.backward();  // the ops inside backward closures are not forward ops
    CHECK(tracer.records().size() == seen);

    const auto& r = tracer.records();
    REQUIRE(r.size() == 4);
    CHECK(r[0].op == "mul");
    CHECK(r[0].recorded);
    CHECK(r[0].output.id == op_id(y));
    CHECK(r[0].output.values == std::vector<double>{2.0, 4.0, 6.0});
    CHECK(r[0].output.norm == doctest::Approx(std::sqrt(4.0 + 16.0 + 36.0)));
    CHECK(r[0].inputs[0].id == leaf_id(x));
    CHECK(r[0].inputs[0].label == "x");
    CHECK(r[0].inputs[1].id == leaf_id(k));
    CHECK(r[1].op == "exp");
    CHECK_FALSE(r[1].recorded);
    CHECK(r[1].output.id == leaf_id(z));
    CHECK_FALSE(r[2].recorded);
    CHECK(r[3].op == "sum");
    CHECK(r[3].inputs[0].id == op_id(y));  // the same id the DOT graph gives y's node
  }
  const std::string text = out.str();
  CHECK(text.find("[forward] " + op_id(y) + " = mul(" + leaf_id(x) + " \"x\" [3], " + leaf_id(k) +
                  " [3]) -> [3]  |x|=7.483  [2, 4, 6]\n") != std::string::npos);
  CHECK(text.find("(not recorded: no input requires grad)") != std::string::npos);
  // A 0-d constant (here the scalar operand of x * 3.0) is printed as its value.
  CHECK(text.find(" = mul(" + leaf_id(x) + " \"x\" [3], 3) -> [3]") != std::string::npos);
  CHECK(text.find("(not recorded: grad mode is off)") != std::string::npos);

  // Out of scope: no more output.
  const std::string before = out.str();
  Tensor after = x * x;
  CHECK(out.str() == before);
  CHECK(xg::to_dot(after).find(op_id(after)) != std::string::npos);
}

TEST_CASE("summarize and format_summary") {
  Tensor t = xg::tensor({3.0, 4.0}, xg::kFloat64, true);
  t.set_label("v");
  const xg::TensorSummary s = xg::summarize(t);
  CHECK(s.defined);
  CHECK(s.id == leaf_id(t));
  CHECK(s.norm == doctest::Approx(5.0));
  CHECK(xg::format_summary(s) == leaf_id(t) + " \"v\" [2]  |g|=5  [3, 4]");
  CHECK(xg::summarize(t, 1).values.empty());
  CHECK_FALSE(xg::summarize(Tensor()).defined);
}
