// first_program — the first program of docs/getting-started.md: a tiny two-layer network built from xgrad ops,
// trained with plain gradient descent on synthetic data. The loss it prints falls from ~2 to ~0.01.
//
//   build/bin/first_program
// [first]
#include <vector>

#include <xgrad/xgrad.h>

int main() {
  xg::manual_seed(0);  // one seed makes the whole run reproducible

  // Synthetic data: 256 points in [-2, 2]² and the target y = x₀·x₁, which no linear model can fit.
  xg::Tensor x = xg::uniform({256, 2}, -2.0, 2.0);      // [256,2]
  xg::Tensor y = x.narrow(1, 0, 1) * x.narrow(1, 1, 1);  // [256,1]

  // The model's parameters: leaves that require grad. A 2 -> 32 -> 1 network with a tanh in between.
  xg::Tensor w1 = (xg::randn({32, 2}) * 0.5).requires_grad_();
  xg::Tensor b1 = xg::zeros({32}, xg::kFloat32, /*requires_grad=*/true);
  xg::Tensor w2 = (xg::randn({1, 32}) * 0.2).requires_grad_();
  xg::Tensor b2 = xg::zeros({1}, xg::kFloat32, true);
  std::vector<xg::Tensor> params{w1, b1, w2, b2};

  const float lr = 0.1f;
  for (int step = 0; step <= 500; ++step) {
    // Forward: every op records itself in the graph.
    xg::Tensor h = xg::tanh(xg::linear(x, w1, b1));    // [256,32]  x·w1ᵀ + b1
    xg::Tensor pred = xg::linear(h, w2, b2);           // [256,1]
    xg::Tensor loss = ((pred - y) * (pred - y)).mean();  // mean squared error, 0-d

    // Backward: fills p.grad() for every parameter.
    loss.backward();

    // Plain gradient descent, straight on the parameters' xtensor arrays (nothing is recorded).
    for (xg::Tensor& p : params) {
      p.data<float>() -= lr * p.grad().data<float>();
      p.zero_grad();
    }
    if (step % 50 == 0) fmt::print("step {:3d}  loss {:.4f}\n", step, loss.item());
  }
  return 0;
}
// [/first]
