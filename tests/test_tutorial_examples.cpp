// The tutorial's examples (examples/autograd_walkthrough.cpp, micrograd_neuron.cpp, custom_op.cpp) check their
// own claims and exit 1 when one fails; this test runs the built programs and looks at what they print.
// It also re-derives, independently of the examples, the numbers docs/autograd.md quotes for the neuron.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "xgrad/graph.h"
#include "xgrad/ops.h"
#include "xgrad/tensor.h"

namespace fs = std::filesystem;
using xg::Tensor;

namespace {
struct Run {
  int exit_code = -1;
  std::string out;
};

// Runs bin/<name> from the build tree; false if the examples were not built (XGRAD_BUILD_EXAMPLES=OFF).
bool run_example(const std::string& name, const std::string& args, Run& r) {
  const fs::path exe = fs::path(XGRAD_BINARY_DIR) / "bin" / name;
  if (!fs::exists(exe)) {
    WARN_MESSAGE(false, "example ", exe.string(), " is not built; not run");
    return false;
  }
  FILE* p = ::popen(fmt::format("'{}' {} 2>&1", exe.string(), args).c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) r.out.append(buf, n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return true;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
}  // namespace

TEST_CASE("example micrograd_neuron: gradients match the chain rule by hand") {
  Run r;
  if (!run_example("micrograd_neuron", "", r)) return;
  INFO(r.out);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "every gradient matches its hand-derived value"));
  CHECK(contains(r.out, "digraph xgrad {"));
  CHECK(contains(r.out, "[backward step 0]"));
  CHECK(contains(r.out, "o = tanh(n) = 0.7071"));
}

TEST_CASE("the neuron's numbers, derived independently") {
  // o = tanh(2·(-3) + 0·1 + b) with b = 6.8813735870195432, so n = atanh(1/sqrt 2) and o = 1/sqrt 2.
  const double b = 6.8813735870195432, n = 2.0 * -3.0 + 0.0 * 1.0 + b;
  CHECK(std::tanh(n) == doctest::Approx(1 / std::sqrt(2.0)).epsilon(1e-12));
  Tensor x1 = xg::scalar(2.0, xg::kFloat64, true), w1 = xg::scalar(-3.0, xg::kFloat64, true);
  Tensor x2 = xg::scalar(0.0, xg::kFloat64, true), w2 = xg::scalar(1.0, xg::kFloat64, true);
  Tensor bb = xg::scalar(b, xg::kFloat64, true);
  Tensor o = xg::tanh(x1 * w1 + x2 * w2 + bb);
  o.backward();
  // do/dn = 1 - o² = 1/2: x1.grad = w1/2, w1.grad = x1/2, x2.grad = w2/2, w2.grad = x2/2, b.grad = 1/2.
  CHECK(x1.grad().item() == doctest::Approx(-1.5).epsilon(1e-12));
  CHECK(w1.grad().item() == doctest::Approx(1.0).epsilon(1e-12));
  CHECK(x2.grad().item() == doctest::Approx(0.5).epsilon(1e-12));
  CHECK(w2.grad().item() == doctest::Approx(0.0));
  CHECK(bb.grad().item() == doctest::Approx(0.5).epsilon(1e-12));
}

TEST_CASE("retain_graph and accumulation, as docs/autograd.md shows them") {
  // [retain_graph]
  xg::Tensor w = xg::tensor({1.0, 2.0}, xg::kFloat64, /*requires_grad=*/true);
  xg::Tensor loss = (w * w).sum();  // d loss/dw = 2w = [2, 4]

  loss.backward({}, /*retain_graph=*/true);  // keep the saved tensors for another backward
  CHECK(w.grad().to_vector() == std::vector<double>{2.0, 4.0});

  loss.backward();  // gradients accumulate: .grad() is now 2w + 2w
  CHECK(w.grad().to_vector() == std::vector<double>{4.0, 8.0});

  // That backward freed the graph (no retain_graph): a third one is an error, not a crash.
  CHECK_THROWS_WITH_AS(loss.backward(), doctest::Contains("backward through the graph a second time"), xg::Error);

  w.zero_grad();  // what an optimizer's zero_grad() does before the next step
  CHECK_FALSE(w.grad().defined());
  // [/retain_graph]
}

TEST_CASE("example autograd_walkthrough: composed BatchNorm = closed form = fused kernel = finite differences") {
  const fs::path svg = fs::temp_directory_path() / "xgrad_test_walkthrough.svg";
  fs::remove(svg);
  Run r;
  if (!run_example("autograd_walkthrough", fmt::format("'{}'", svg.string()), r)) return;
  INFO(r.out);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "all checks passed"));
  CHECK(contains(r.out, "[forward] op"));
  CHECK(contains(r.out, "[backward step 10]"));  // 11 nodes: mean and var are each a sum and a mul
  CHECK_FALSE(contains(r.out, "[backward step 11]"));
  CHECK(contains(r.out, "gradcheck of 'add' passed"));
  // Section 6: eps = 0 with a constant channel; anomaly mode names rsqrt and the labelled input.
  CHECK(contains(r.out, "forward op 'rsqrt'"));
  CHECK(contains(r.out, "(first at index [0,1]) in its output of shape [1,3]; inputs: [op"));
  CHECK(contains(r.out, " add \"var+eps\" [1,3]]"));
  if (xg::graphviz_available()) CHECK(fs::exists(svg));
  fs::remove(svg);
}

TEST_CASE("example custom_op: softplus passes gradcheck, the buggy version fails it") {
  Run r;
  if (!run_example("custom_op", "", r)) return;
  INFO(r.out);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "gradcheck of 'softplus' passed"));
  CHECK(contains(r.out, "gradcheck of 'softplus_buggy' FAILED"));
  CHECK(contains(r.out, "naive backward:   z.grad() = [0.7311, nan]"));
  CHECK(contains(r.out, "the backward of 'softplus_naive' (op"));
  CHECK(contains(r.out, "all checks passed"));
}
