// worked_example — the worked example of docs/tensors.md: a 2×2 input, a broadcast weight and bias, a mean
// squared output, and its gradients. Small enough to check by hand; tests/test_tensor.cpp recomputes every
// number it prints with plain arithmetic and compares the printout with the block in docs/tensors.md.
//
//   build/bin/worked_example
#include <string>

#include <xgrad/xgrad.h>

struct WorkedExample {
  xg::Tensor x, w, b, y, loss;
};

WorkedExample run_worked_example() {
  // [worked]
  xg::Tensor x = xg::tensor({{1, 2}, {3, 4}});          // [2,2] float32 data: no gradient wanted
  xg::Tensor w = xg::tensor({0.5, -1.0}).requires_grad_();  // [2]   a weight per column
  xg::Tensor b = xg::scalar(0.25, xg::kFloat32, /*requires_grad=*/true);  // 0-d bias

  xg::Tensor y = x * w + b;          // [2,2]: w is broadcast over the rows, b over everything
  xg::Tensor loss = (y * y).mean();  // 0-d: the mean of the four squares
  loss.backward();                   // fills w.grad() and b.grad()
  // [/worked]
  return {x, w, b, y, loss};
}

// What main prints, as one string (the test compares it with docs/tensors.md).
std::string worked_example_output(const WorkedExample& r) {
  // [print]
  std::string out = fmt::format("y:\n{}\n", r.y);
  out += fmt::format("loss:   {}\n", r.loss);
  out += fmt::format("w.grad: {}\n", r.w.grad());
  out += fmt::format("b.grad: {}\n", r.b.grad());
  // [/print]
  return out;
}

#ifndef XGRAD_WORKED_EXAMPLE_NO_MAIN
int main() {
  fmt::print("{}", worked_example_output(run_worked_example()));
  return 0;
}
#endif
