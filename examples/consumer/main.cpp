// The consumer project's program: a gradient computed through the installed library, checked against the
// derivative by hand, and a float32 product (oneDNN's sgemm when xgrad was built with it) checked against a
// loop. Exits 1 on a mismatch, so the CI step that builds and runs it fails loudly.
#include <cmath>
#include <cstdio>
#include <vector>

#include <xgrad/xgrad.h>

int main() {
  // [speed]
  xg::keep_freed_memory();  // keep freed buffers for reuse (glibc malloc): once, at the start of main
  fmt::print("consumer: float32 GEMM on {}, OpenBLAS kernels {}\n", xg::blas::sgemm_backend_name(),
             xg::blas::core_name());
  // xg::blas::set_sgemm_backend(xg::blas::SgemmBackend::OpenBLAS);  // to compare the two
  fmt::print("consumer: CPU {}, xgrad built for {} ({} vectors), extensions used: {}\n", xg::cpu::cpu_name(),
             xg::cpu::build_arch(), xg::cpu::simd_name(), fmt::join(xg::cpu::required_features(), " "));
  // [/speed]
  xg::Tensor x = xg::tensor({1.0, 2.0, 3.0}, xg::kFloat64, /*requires_grad=*/true);
  xg::Tensor loss = (x * x).sum();  // d/dx sum(x²) = 2x
  loss.backward();
  fmt::print("consumer: loss = {}, grad = {}\n", loss.item(), x.grad());
  for (int i = 0; i < 3; ++i)
    if (std::abs(x.grad().at({i}) - 2.0 * (i + 1)) > 1e-12) {
      std::fprintf(stderr, "consumer: wrong gradient at %d\n", i);
      return 1;
    }
  // [[1, 2], [3, 4]] · [[5, 6], [7, 8]] = [[19, 22], [43, 50]] in float32
  const xg::Tensor p = xg::matmul(xg::from_vector(std::vector<double>{1, 2, 3, 4}, {2, 2}, xg::kFloat32),
                                  xg::from_vector(std::vector<double>{5, 6, 7, 8}, {2, 2}, xg::kFloat32));
  const double want[4] = {19, 22, 43, 50};
  for (int i = 0; i < 4; ++i)
    if (p.to_vector()[i] != want[i]) {
      std::fprintf(stderr, "consumer: wrong float32 product at %d: %g, expected %g\n", i, p.to_vector()[i], want[i]);
      return 1;
    }
  return 0;
}
