// The consumer project's program: a gradient computed through the installed library, checked against the
// derivative by hand. Exits 1 on a mismatch, so the CI step that builds and runs it fails loudly.
#include <cmath>
#include <cstdio>

#include <xgrad/xgrad.h>

int main() {
  xg::Tensor x = xg::tensor({1.0, 2.0, 3.0}, xg::kFloat64, /*requires_grad=*/true);
  xg::Tensor loss = (x * x).sum();  // d/dx sum(x²) = 2x
  loss.backward();
  fmt::print("consumer: loss = {}, grad = {}\n", loss.item(), x.grad());
  for (int i = 0; i < 3; ++i)
    if (std::abs(x.grad().at({i}) - 2.0 * (i + 1)) > 1e-12) {
      std::fprintf(stderr, "consumer: wrong gradient at %d\n", i);
      return 1;
    }
  return 0;
}
