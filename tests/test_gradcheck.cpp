// xg::gradcheck itself: it passes correct gradients, FAILS on a deliberately wrong backward (reporting the op and
// the worst element), honours atol/rtol, works through random projections for large outputs, leaves the caller's
// tensors alone — and a coverage check that every differentiable op in ops.h is gradchecked somewhere in tests/.
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "testing.h"

using namespace xgt;
using xg::kFloat64;

namespace {
// x² with a wrong derivative: x instead of 2x (a classic forgotten factor).
Tensor square_buggy(const Tensor& x) {
  Tensor out = x.detach() * x.detach();
  return xg::record_op("square_buggy", out, {x}, [x = x.detach()](const Tensor& g, const std::vector<bool>&) {
    return std::vector<Tensor>{g * x};  // should be g * 2x
  });
}

// a·b whose backward for b is off by `err` (relative): a tiny or a real mistake depending on err.
Tensor mul_off(const Tensor& a, const Tensor& b, double err) {
  Tensor out = a.detach() * b.detach();
  return xg::record_op("mul_off", out, {a, b},
                       [a = a.detach(), b = b.detach(), err](const Tensor& g, const std::vector<bool>& n) {
                         return std::vector<Tensor>{n[0] ? g * b : Tensor(), n[1] ? g * a * (1.0 + err) : Tensor()};
                       });
}
}  // namespace

TEST_CASE("gradcheck passes correct gradients and says so") {
  const Tensor a = rnd({2, 3}, 101), b = rnd({3}, 102);
  const auto r = xg::gradcheck([](auto& in) { return (in[0] * in[1]).sum({1}); }, {a, b});
  CHECK(r.ok);
  CHECK(r.op == "sum");
  CHECK(r.max_abs_error < 1e-8);
  CHECK(r.report.find("gradcheck of 'sum' passed") != std::string::npos);
}

TEST_CASE("gradcheck FAILS on a wrong backward and reports the worst element and the op") {
  // x = [0.5, -3, 1]: analytic x, numeric 2x, so the error |x| is worst at element 1 (x = -3).
  const Tensor x = xg::tensor({0.5, -3.0, 1.0}, kFloat64, true);
  xg::GradcheckOptions o;
  o.raise = false;
  const auto r = xg::gradcheck([](auto& in) { return square_buggy(in[0]); }, {x}, o);
  CHECK_FALSE(r.ok);
  CHECK(r.op == "square_buggy");
  CHECK(r.worst_input == 0);
  CHECK(r.worst_element == 1);
  CHECK(r.worst_output == 1);  // the Jacobian is diagonal: output 1 depends on element 1
  CHECK(r.analytic == doctest::Approx(-3.0));
  CHECK(r.numeric == doctest::Approx(-6.0).epsilon(1e-6));
  CHECK(r.max_abs_error == doctest::Approx(3.0).epsilon(1e-6));
  CHECK(r.report.find("gradcheck of 'square_buggy' FAILED") != std::string::npos);
  CHECK(r.report.find("input 0 (shape [3]) element 1") != std::string::npos);
  // By default it throws the same report.
  CHECK_THROWS_WITH_AS(xg::gradcheck([](auto& in) { return square_buggy(in[0]); }, {x}),
                       doctest::Contains("gradcheck of 'square_buggy' FAILED"), xg::Error);
  // Behind other ops, the reported op is the output's; the worst element still points at the culprit's input.
  const auto r2 = xg::gradcheck([](auto& in) { return square_buggy(in[0]).sum() * 2.0; }, {x}, o);
  CHECK_FALSE(r2.ok);
  CHECK(r2.op == "mul");
  CHECK(r2.worst_element == 1);
}

TEST_CASE("gradcheck finds which input is wrong") {
  const Tensor a = rnd({4}, 103), b = rnd({4}, 104);
  xg::GradcheckOptions o;
  o.raise = false;
  const auto r = xg::gradcheck([](auto& in) { return mul_off(in[0], in[1], 0.1); }, {a, b}, o);
  CHECK_FALSE(r.ok);
  CHECK(r.worst_input == 1);
  // An input that does not require grad is held constant and not checked: only the correct gradient remains.
  const auto r2 = xg::gradcheck([](auto& in) { return mul_off(in[0], in[1], 0.1); }, {a, b.detach()}, o);
  CHECK(r2.ok);
}

TEST_CASE("gradcheck tolerances: |analytic - numeric| <= atol + rtol·|numeric|") {
  const Tensor a = xg::tensor({1.0, 2.0}, kFloat64, true), b = xg::tensor({3.0, 4.0}, kFloat64, true);
  xg::GradcheckOptions o;
  o.raise = false;
  // A 1e-6 relative error passes the defaults (atol 1e-5, rtol 1e-3) ...
  CHECK(xg::gradcheck([](auto& in) { return mul_off(in[0], in[1], 1e-6); }, {a, b}, o).ok);
  // ... and fails tight ones.
  o.atol = 1e-9;
  o.rtol = 1e-8;
  CHECK_FALSE(xg::gradcheck([](auto& in) { return mul_off(in[0], in[1], 1e-6); }, {a, b}, o).ok);
  CHECK(xg::gradcheck([](auto& in) { return in[0] * in[1]; }, {a, b}, o).ok);
}

TEST_CASE("gradcheck on large outputs uses random projections and still catches a wrong backward") {
  const Tensor x = rnd({20, 20}, 105);  // 400 outputs > full_jacobian_max_outputs (256)
  xg::GradcheckOptions o;
  o.raise = false;
  const auto good = xg::gradcheck([](auto& in) { return in[0] * in[0]; }, {x}, o);
  CHECK(good.ok);
  const auto bad = xg::gradcheck([](auto& in) { return square_buggy(in[0]); }, {x}, o);
  CHECK_FALSE(bad.ok);
  CHECK(bad.report.find("projection") != std::string::npos);
}

TEST_CASE("gradcheck: NaN in the analytic gradient is a failure") {
  const Tensor x = xg::tensor({1.0}, kFloat64, true);
  auto nan_backward = [](const Tensor& v) {
    return xg::record_op("nan_grad", v.detach() * 1.0, {v}, [](const Tensor& g, const std::vector<bool>&) {
      return std::vector<Tensor>{g * std::nan("")};
    });
  };
  xg::GradcheckOptions o;
  o.raise = false;
  const auto r = xg::gradcheck([&](auto& in) { return nan_backward(in[0]); }, {x}, o);
  CHECK_FALSE(r.ok);
  CHECK(r.op == "nan_grad");
}

TEST_CASE("gradcheck leaves the caller's tensors alone") {
  Tensor x = rnd({3}, 106);
  const auto before = x.to_vector();
  xg::gradcheck([](auto& in) { return in[0].exp(); }, {x});
  CHECK(x.to_vector() == before);
  CHECK_FALSE(x.grad().defined());
  // f may return its input unchanged (an identity): the numeric side must not be fooled by aliasing.
  const auto r = xg::gradcheck([](auto& in) { return in[0]; }, {x});
  CHECK(r.ok);
  CHECK(r.op == "(leaf)");
}

TEST_CASE("every differentiable op in ops.h is gradchecked in tests/") {
  // Free functions returning Tensor, declared as `Tensor name(` at the start of a line in ops.h. Comparisons are
  // masks (not differentiable). Each remaining name must appear in a `check_grad("name"` call in tests/*.cpp.
  const std::filesystem::path root = XGRAD_SOURCE_DIR;
  std::ifstream ops(root / "framework/include/xgrad/ops.h");
  REQUIRE(ops.good());
  const std::set<std::string> not_differentiable = {"eq",    "ne",         "lt",          "le",          "gt",
                                                    "ge",    "isnan",      "isinf",       "isfinite",    "logical_not",
                                                    "logical_and", "logical_or", "logical_xor", "argmax", "argmin",
                                                    "argsort", "scalar_for"};
  std::set<std::string> declared;
  const std::regex decl(R"(^Tensor (\w+)\()");
  for (std::string line; std::getline(ops, line);) {
    std::smatch m;
    if (std::regex_search(line, m, decl) && !not_differentiable.count(m[1])) declared.insert(m[1]);
  }
  CHECK(declared.size() >= 40);  // the parse found the op list (add ... logsumexp)
  declared.insert("to");         // the differentiable Tensor methods outside ops.h
  declared.insert("clone");

  std::string all_tests;
  for (const auto& e : std::filesystem::directory_iterator(root / "tests"))
    if (e.path().extension() == ".cpp") {
      std::ifstream in(e.path());
      std::stringstream ss;
      ss << in.rdbuf();
      all_tests += ss.str();
    }
  for (const auto& name : declared) {
    CAPTURE(name);
    CHECK(all_tests.find("check_grad(\"" + name + "\"") != std::string::npos);
  }
}
