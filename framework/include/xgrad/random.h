// xgrad/random.h — seeded random numbers. One seed (xg::manual_seed) makes a whole run reproducible:
// initialisation, shuffling, dropout and noise all draw from generators derived from it.
#pragma once

#include <cstdint>
#include <random>

#include "xgrad/tensor.h"

namespace xg {

/// A random stream (mt19937_64). Pass one explicitly to keep streams apart (e.g. shuffling vs noise), or use
/// the global default_generator().
class Generator {
 public:
  explicit Generator(std::uint64_t seed = 0) : engine_(seed), seed_(seed) {}
  void manual_seed(std::uint64_t seed) {
    engine_.seed(seed);
    seed_ = seed;
  }
  std::uint64_t initial_seed() const { return seed_; }
  std::mt19937_64& engine() { return engine_; }
  const std::mt19937_64& engine() const { return engine_; }
  /// Uniform double in [0, 1).
  double uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(engine_); }
  /// Standard normal.
  double normal() { return std::normal_distribution<double>(0.0, 1.0)(engine_); }
  /// Uniform integer in [0, n).
  std::uint64_t randint(std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(engine_); }

 private:
  std::mt19937_64 engine_;
  std::uint64_t seed_;
};

/// The global generator every random function uses when none is given.
Generator& default_generator();
/// Seeds the global generator (PyTorch: torch::manual_seed).
void manual_seed(std::uint64_t seed);

/// U[0,1) / N(0,1) / U[low,high) / N(mean,std) samples of the given shape.
Tensor rand(const Shape& shape, Dtype dtype = kFloat32, Generator* gen = nullptr);
Tensor randn(const Shape& shape, Dtype dtype = kFloat32, Generator* gen = nullptr);
Tensor uniform(const Shape& shape, double low, double high, Dtype dtype = kFloat32, Generator* gen = nullptr);
Tensor normal(const Shape& shape, double mean, double std, Dtype dtype = kFloat32, Generator* gen = nullptr);
/// A random permutation of 0..n-1 (Fisher–Yates with the generator).
std::vector<std::size_t> randperm(std::size_t n, Generator* gen = nullptr);

}  // namespace xg
