// Seeded random tensors.
#include "xgrad/random.h"

#include <numeric>

namespace xg {

Generator& default_generator() {
  static Generator gen(0);
  return gen;
}

void manual_seed(std::uint64_t seed) { default_generator().manual_seed(seed); }

namespace {
template <class Draw>
Tensor fill_random(const Shape& shape, Dtype dtype, Draw draw) {
  Tensor t = zeros(shape, dtype);
  dispatch(dtype, [&](auto v) {
    using T = decltype(v);
    T* p = t.data_ptr<T>();
    for (std::size_t i = 0, n = t.numel(); i < n; ++i) p[i] = static_cast<T>(draw());
  });
  return t;
}
Generator& pick(Generator* gen) { return gen ? *gen : default_generator(); }
}  // namespace

Tensor rand(const Shape& shape, Dtype dtype, Generator* gen) { return uniform(shape, 0.0, 1.0, dtype, gen); }
Tensor randn(const Shape& shape, Dtype dtype, Generator* gen) { return normal(shape, 0.0, 1.0, dtype, gen); }

Tensor uniform(const Shape& shape, double low, double high, Dtype dtype, Generator* gen) {
  if (!(low <= high)) fail("uniform: low ({}) must not exceed high ({})", low, high);
  Generator& g = pick(gen);
  return fill_random(shape, dtype, [&] { return low + (high - low) * g.uniform(); });
}

Tensor normal(const Shape& shape, double mean, double std, Dtype dtype, Generator* gen) {
  if (!(std >= 0)) fail("normal: std must be >= 0, got {}", std);
  Generator& g = pick(gen);
  return fill_random(shape, dtype, [&] { return mean + std * g.normal(); });
}

std::vector<std::size_t> randperm(std::size_t n, Generator* gen) {
  std::vector<std::size_t> p(n);
  std::iota(p.begin(), p.end(), 0);
  Generator& g = pick(gen);
  for (std::size_t i = n; i > 1; --i) std::swap(p[i - 1], p[g.randint(i)]);
  return p;
}

}  // namespace xg
