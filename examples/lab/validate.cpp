// The option checks of validate.h. A learning rate must be a finite number > 0 (lr = inf turns the weights into
// inf and the report into "-nan"; a negative lr ascends the loss); sizes and counts must be >= 1; a BatchNorm
// network needs batches of at least 2 (one value per channel has no variance).
#include "validate.h"

#include <cmath>
#include <string_view>

#include "xgrad/common.h"

namespace lab {
namespace {
void positive_finite(std::string_view cmd, std::string_view option, double v) {
  if (!(v > 0) || !std::isfinite(v)) xg::fail("{}: {} must be a finite number > 0, got {}", cmd, option, v);
}
void non_negative_finite(std::string_view cmd, std::string_view option, double v) {
  if (!(v >= 0) || !std::isfinite(v)) xg::fail("{}: {} must be a finite number >= 0, got {}", cmd, option, v);
}
void at_least(std::string_view cmd, std::string_view option, std::size_t v, std::size_t min) {
  if (v < min) xg::fail("{}: {} must be >= {}, got {}", cmd, option, min, v);
}
// Every experiment trains BatchNorm networks: a batch of one has no batch variance.
void batch(std::string_view cmd, std::size_t batch_size, std::size_t train_samples) {
  at_least(cmd, "--batch", batch_size, 2);
  if (train_samples > 0 && batch_size > train_samples)
    xg::fail("{}: --batch {} is larger than the {} training samples (--train-samples)", cmd, batch_size,
             train_samples);
}
}  // namespace

void validate(const LrSweepConfig& c) {
  const char* cmd = "lr-sweep";
  for (double lr : c.sgd_lrs) positive_finite(cmd, "every --lrs value", lr);
  for (double lr : c.cnn_lrs) positive_finite(cmd, "every --cnn-lrs value", lr);
  for (double lr : c.adam_lrs) positive_finite(cmd, "every --adam-lrs value", lr);
  if (c.sgd_lrs.empty() && c.cnn_lrs.empty() && c.adam_lrs.empty()) xg::fail("{}: no learning rates", cmd);
  at_least(cmd, "--seeds", c.seeds, 1);
  at_least(cmd, "--cnn-seeds", c.cnn_seeds, 1);
  at_least(cmd, "--mlp-steps", c.mlp_steps, 1);
  at_least(cmd, "--cnn-steps", c.cnn_steps, 1);
  batch(cmd, c.batch_size, c.train_samples);
  if (!(c.train_fraction > 0 && c.train_fraction <= 1))
    xg::fail("{}: --train-fraction must be in (0, 1], got {}", cmd, c.train_fraction);
}

void validate(const ConvergenceConfig& c) {
  const char* cmd = "convergence";
  positive_finite(cmd, "--lr", c.lr);
  positive_finite(cmd, "the init std", c.init_std);
  at_least(cmd, "--steps", c.steps, 1);
  at_least(cmd, "the number of evaluations", c.evals, 1);
  batch(cmd, c.batch_size, c.train_samples);
}

void validate(const NoisyBnConfig& c) {
  const char* cmd = "noisy-bn";
  positive_finite(cmd, "--lr", c.lr);
  at_least(cmd, "--depth", c.depth, 1);
  at_least(cmd, "--steps", c.steps, 1);
  at_least(cmd, "the number of evaluations", c.evals, 1);
  batch(cmd, c.batch_size, c.train_samples);
  if (!(c.noise.n_sigma >= 1) || !std::isfinite(c.noise.n_sigma))  // sigma ~ U(1, n_sigma)
    xg::fail("{}: --n-sigma must be a finite number >= 1, got {}", cmd, c.noise.n_sigma);
  non_negative_finite(cmd, "--r-sigma", c.noise.r_sigma);
  if (!std::isfinite(c.noise.n_mu) || !std::isfinite(c.noise.r_mu))
    xg::fail("{}: the noise means must be finite numbers, got n_mu {} and r_mu {}", cmd, c.noise.n_mu,
             c.noise.r_mu);
}

}  // namespace lab
