// Anomaly mode (xgrad/anomaly.h) on deliberately broken models: the error names the op that first produced a
// NaN/Inf, forward or backward, with its id, label and shapes; the guard removes itself after its scope.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "xgrad/anomaly.h"
#include "xgrad/autograd.h"
#include "xgrad/ops.h"
#include "xgrad/tensor.h"

using doctest::Contains;
using xg::Tensor;

namespace {
std::string op_id(const Tensor& t) { return fmt::format("op{}", t.grad_fn()->id); }
std::string leaf_id(const Tensor& t) { return fmt::format("t{}", t.impl()->id); }

// The message of the xg::Error `f` throws ("" if it does not throw).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const xg::Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("anomaly, forward: log of a negative number names log, its id, shapes and labels") {
  Tensor x = xg::tensor({1.0, -1.0, 2.0}, xg::kFloat32, true);
  x.set_label("x");
  xg::DetectAnomalyGuard anomaly;
  Tensor h = x * 2.0;  // fine
  h.set_label("h");
  const std::string msg = error_of([&] { Tensor y = xg::log(h); });
  CHECK(msg.find("forward op 'log'") != std::string::npos);
  CHECK(msg.find("produced 1 NaN (first at index [1]) in its output of shape [3]") != std::string::npos);
  CHECK(msg.find("inputs: [" + op_id(h) + " mul \"h\" [3]]") != std::string::npos);
  CHECK(msg.find("Its inputs were all finite, so this op is the first to produce it") != std::string::npos);
  CHECK(msg.find("log(x) is NaN for x < 0") != std::string::npos);
  // The id is the one the new node got: one more than h's.
  CHECK(msg.find(fmt::format("(op{})", h.grad_fn()->id + 1)) != std::string::npos);
}

TEST_CASE("anomaly, forward: ops that record nothing are checked too; upstream NaN is reported as such") {
  xg::DetectAnomalyGuard anomaly;
  Tensor c = xg::tensor({4.0, 0.0});  // no grad anywhere
  CHECK_THROWS_WITH_AS(xg::div(xg::ones({2}), c), Contains("forward op 'div' (t"), xg::Error);
  CHECK_THROWS_WITH_AS(xg::div(xg::ones({2}), c), Contains("1 Inf (first at index [1])"), xg::Error);
  // The position is given as a multi-index: element (1, 0) of a [2,2] tensor.
  CHECK_THROWS_WITH_AS(xg::log(xg::tensor({{1.0, 2.0}, {-3.0, -4.0}})),
                       Contains("2 NaN (first at index [1,0]) in its output of shape [2,2]"), xg::Error);

  Tensor bad = xg::tensor({1.0, std::numeric_limits<double>::quiet_NaN()}, xg::kFloat64, true);
  bad.set_label("data");
  const std::string msg = error_of([&] { Tensor y = bad * 2.0; });
  CHECK(msg.find("forward op 'mul'") != std::string::npos);
  CHECK(msg.find("Input 0 (" + leaf_id(bad) + " \"data\" [2]) already held 1 NaN") != std::string::npos);
  CHECK(msg.find("the problem is upstream") != std::string::npos);
}

TEST_CASE("anomaly, backward: sqrt(0) whose backward divides by zero names the node and its forward op") {
  Tensor x = xg::tensor({0.0, 1.0, 4.0}, xg::kFloat64, true);
  x.set_label("x");
  Tensor s = xg::sqrt(x);  // forward is fine: sqrt(0) = 0
  s.set_label("s");
  Tensor loss = (s * 3.0).sum();
  xg::DetectAnomalyGuard anomaly;
  const std::string msg = error_of([&] { loss.backward(); });
  CHECK(msg.find("the backward of 'sqrt' (" + op_id(s) + ") returned 1 Inf (first at index [0])") !=
        std::string::npos);
  CHECK(msg.find("for input 0 (" + leaf_id(x) + " \"x\" [3])") != std::string::npos);
  CHECK(msg.find("at backward step 2") != std::string::npos);  // after sum and mul
  CHECK(msg.find("although the gradient arriving at it (shape [3]) was finite") != std::string::npos);
  CHECK(msg.find("created in forward by op 'sqrt' (" + op_id(s) + ") from inputs [" + leaf_id(x) +
                 " \"x\" [3]] (shapes [3]); its output has shape [3] and label \"s\"") != std::string::npos);
  CHECK(msg.find("1/(2·sqrt(x)) is infinite at x = 0") != std::string::npos);
  CHECK_FALSE(x.grad().defined());  // stopped before the gradient reached the leaf

  // The engine is left in a sane state: grad mode on, not "in backward", and the graph can still run.
  CHECK(xg::is_grad_enabled());
  CHECK_FALSE(xg::autograd::in_backward());
}

TEST_CASE("anomaly, backward: a custom op whose backward returns NaN") {
  Tensor x = xg::tensor({1.0, 2.0}, xg::kFloat64, true);
  Tensor out = xg::record_op("broken_op", (x * 1.0).detach(), {x}, [](const Tensor& g, const std::vector<bool>&) {
    return std::vector<Tensor>{xg::full(g.shape(), std::nan(""), g.dtype())};
  });
  out.set_label("features");
  Tensor loss = (out * out).sum();
  xg::DetectAnomalyGuard anomaly;
  const std::string msg = error_of([&] { loss.backward(); });
  CHECK(msg.find("the backward of 'broken_op' (" + op_id(out) + ") returned 2 NaN") != std::string::npos);
  CHECK(msg.find("its output has shape [2] and label \"features\"") != std::string::npos);
}

TEST_CASE("anomaly, backward: a non-finite seed gradient is reported at the first node") {
  Tensor x = xg::tensor({1.0, 2.0}, xg::kFloat64, true);
  Tensor y = x * 2.0;
  xg::DetectAnomalyGuard anomaly;
  const Tensor seed = xg::tensor({1.0, std::numeric_limits<double>::infinity()}, xg::kFloat64);
  CHECK_THROWS_WITH_AS(y.backward(seed), Contains(("the gradient arriving at 'mul' (" + op_id(y)).c_str()), xg::Error);
  CHECK_THROWS_WITH_AS(y.backward(seed), Contains("came from the seed gradient passed to backward()"), xg::Error);
}

TEST_CASE("anomaly: the intermediate arithmetic of a backward closure is not a forward anomaly") {
  // The closure computes an inf on its way, masks it out, and returns a finite gradient: no error.
  Tensor x = xg::tensor({1.0, 2.0}, xg::kFloat64, true);
  Tensor out = xg::record_op("masked", (x * 1.0).detach(), {x}, [](const Tensor& g, const std::vector<bool>&) {
    Tensor inf = xg::div(xg::ones_like(g), xg::zeros_like(g));
    return std::vector<Tensor>{xg::where(xg::zeros_like(g).to(xg::kBool), inf, g)};  // false: g
  });
  xg::DetectAnomalyGuard anomaly;
  CHECK_NOTHROW(out.sum().backward());
  CHECK(x.grad().to_vector() == std::vector<double>{1.0, 1.0});
}

TEST_CASE("anomaly: the guard removes itself; without it the NaN goes by silently") {
  CHECK_FALSE(xg::is_anomaly_enabled());
  {
    xg::DetectAnomalyGuard outer;
    CHECK(xg::is_anomaly_enabled());
    {
      xg::DetectAnomalyGuard inner;  // nesting is fine
      CHECK_THROWS_AS(xg::log(xg::tensor({-1.0})), xg::Error);
    }
    CHECK(xg::is_anomaly_enabled());
    CHECK_THROWS_AS(xg::log(xg::tensor({-1.0})), xg::Error);
  }
  CHECK_FALSE(xg::is_anomaly_enabled());
  Tensor y;
  CHECK_NOTHROW(y = xg::log(xg::tensor({-1.0})));
  CHECK(std::isnan(y.item()));

  Tensor x = xg::tensor({0.0, 1.0}, xg::kFloat64, true);
  CHECK_NOTHROW(xg::sqrt(x).sum().backward());
  CHECK(std::isinf(x.grad().at({0})));  // what anomaly mode would have stopped
}
