// The option checks of validate.h. A learning rate must be a finite number > 0 (lr = inf turns the weights into
// inf and the report into "-nan"; a negative lr ascends the loss); sizes and counts must be >= 1; a BatchNorm
// network needs batches of at least 2 (one value per channel has no variance), and a batch cannot be larger than
// the training subset (the loaders drop the last incomplete batch: there would be no step).
#include "validate.h"

#include <cmath>
#include <string_view>
#include <vector>

#include <fmt/format.h>

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
void in_range(std::string_view cmd, std::string_view option, std::size_t v, std::size_t min, std::size_t max) {
  if (v < min || v > max) xg::fail("{}: {} must be in [{}, {}], got {}", cmd, option, min, max, v);
}
template <class T>
void not_empty(std::string_view cmd, std::string_view option, const std::vector<T>& list) {
  if (list.empty()) xg::fail("{}: {} must list at least one value, got none", cmd, option);
}
// A list of learning rates or step multiples: at least one, each a finite number > 0.
void positive_finite_list(std::string_view cmd, std::string_view option, const std::vector<double>& list) {
  not_empty(cmd, option, list);
  for (double v : list) positive_finite(cmd, fmt::format("every {} value", option), v);
}
// Every experiment trains BatchNorm networks: a batch of one has no batch variance. `train_option` names the
// option that sets `train_samples` (nullptr: the subcommand has none, the mode chose it); 0 samples = all.
void batch(std::string_view cmd, std::size_t batch_size, std::size_t train_samples,
           const char* train_option = "--train-samples") {
  at_least(cmd, "--batch", batch_size, 2);
  if (train_samples > 0 && batch_size > train_samples) {
    if (train_option)
      xg::fail("{}: --batch {} is larger than the {} training samples ({})", cmd, batch_size, train_samples,
               train_option);
    xg::fail("{}: --batch {} is larger than the {} training samples this mode uses", cmd, batch_size,
             train_samples);
  }
}
// The batch sizes of batch-size and inference (--batches): each in [2, the training subset] (drop_last: a larger
// batch gives no step at all), and for inference also at most the test subset (it evaluates with each test
// batch's own statistics).
void batch_list(std::string_view cmd, const std::vector<std::size_t>& batches, std::size_t train_samples,
                std::size_t eval_samples = 0) {
  not_empty(cmd, "--batches", batches);
  for (std::size_t b : batches) {
    at_least(cmd, "every --batches value", b, 2);
    if (train_samples > 0 && b > train_samples)
      xg::fail("{}: every --batches value must be <= the {} training samples (--train-samples), got {}", cmd,
               train_samples, b);
    if (eval_samples > 0 && b > eval_samples)
      xg::fail("{}: every --batches value must be <= the {} test samples it evaluates batch by batch, got {}", cmd,
               eval_samples, b);
  }
}
// Probe points (landscape, ics, dln): at least one, at most one per training step (more would silently give
// fewer than asked).
void probe_count(std::string_view cmd, std::size_t probes, std::size_t steps, std::string_view steps_option) {
  at_least(cmd, "--probes", probes, 1);
  if (probes > steps)
    xg::fail("{}: --probes must be <= {} ({}; at most one probe point per training step), got {}", cmd, steps_option,
             steps, probes);
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

void validate(const LandscapeConfig& c) {
  const char* cmd = "landscape";
  not_empty(cmd, "--models", c.models);
  at_least(cmd, "--seeds", c.seeds, 1);
  at_least(cmd, "--mlp-steps", c.mlp_steps, 1);
  at_least(cmd, "--cnn-steps", c.cnn_steps, 1);
  for (const auto& m : c.models)  // only the networks that run
    probe_count(cmd, c.probes, m == "cnn" ? c.cnn_steps : c.mlp_steps, m == "cnn" ? "--cnn-steps" : "--mlp-steps");
  positive_finite(cmd, "--mlp-lr", c.mlp_lr);
  positive_finite(cmd, "--cnn-lr", c.cnn_lr);
  positive_finite_list(cmd, "--step-multiples", c.step_multiples);
  batch(cmd, c.batch_size, c.train_samples, nullptr);
}

void validate(const IcsConfig& c) {
  const char* cmd = "ics";
  at_least(cmd, "--seeds", c.seeds, 1);
  at_least(cmd, "--steps", c.steps, 1);
  probe_count(cmd, c.probes, c.steps, "--steps");
  positive_finite(cmd, "--lr", c.lr);
  batch(cmd, c.batch_size, c.train_samples, nullptr);
}

void validate(const DlnConfig& c) {
  const char* cmd = "dln";
  at_least(cmd, "--seeds", c.seeds, 1);
  in_range(cmd, "--layers", c.layers, 2, 1000);
  at_least(cmd, "the layer width", c.width, 1);
  in_range(cmd, "--samples", c.samples, 2, 1000000);  // the full batch: BatchNorm needs 2
  at_least(cmd, "--steps", c.steps, 1);
  probe_count(cmd, c.probes, c.steps, "--steps");
  positive_finite(cmd, "--lr", c.lr);
  positive_finite_list(cmd, "--step-multiples", c.step_multiples);
}

void validate(const LpNormConfig& c) {
  const char* cmd = "lp-norm";
  positive_finite_list(cmd, "--lrs", c.lrs);
  at_least(cmd, "--seeds", c.seeds, 1);
  at_least(cmd, "--steps", c.steps, 1);
  batch(cmd, c.batch_size, c.train_samples, nullptr);
}

void validate(const BatchSizeConfig& c) {
  const char* cmd = "batch-size";
  batch_list(cmd, c.batches, c.train_samples);
  not_empty(cmd, "--arms", c.arms);
  at_least(cmd, "--seeds", c.seeds, 1);
  at_least(cmd, "--epochs", c.epochs, 1);
  positive_finite(cmd, "--lr", c.base_lr);
  at_least(cmd, "the base batch of the learning rate", c.base_batch, 1);
}

void validate(const InferenceConfig& c) {
  const char* cmd = "inference";
  batch_list(cmd, c.batches, c.train_samples, c.eval_samples);
  not_empty(cmd, "--momenta", c.momenta);
  for (double m : c.momenta)  // BatchNorm's momentum: running = (1 - m) * running + m * batch
    if (!(m > 0 && m <= 1)) xg::fail("{}: every --momenta value must be in (0, 1], got {}", cmd, m);
  at_least(cmd, "--seeds", c.seeds, 1);
  at_least(cmd, "--epochs", c.epochs, 1);
  positive_finite(cmd, "--lr", c.base_lr);
  at_least(cmd, "the base batch of the learning rate", c.base_batch, 1);
}

void validate(const RegularisationConfig& c) {
  const char* cmd = "regularisation";
  at_least(cmd, "--seeds", c.seeds, 1);
  at_least(cmd, "--epochs", c.epochs, 1);
  batch(cmd, c.batch, c.train_samples);
  positive_finite(cmd, "--lr", c.lr);
  if (!(c.dropout > 0 && c.dropout < 1)) xg::fail("{}: --dropout must be in (0, 1), got {}", cmd, c.dropout);
  not_empty(cmd, "the hidden layers", c.hidden);
}

void validate(const DdpConfig& c) {
  const char* cmd = "ddp";
  at_least(cmd, "--steps", c.steps, 1);
  at_least(cmd, "--seeds", c.seeds, 1);
  at_least(cmd, "the number of evaluations", c.evals, 1);
  positive_finite(cmd, "--lr", c.lr);
  // The global batch is split over P >= 2 ranks, each slice of at least 2 (run_ddp checks the split for its P).
  if (c.batch_size < 4)
    xg::fail("{}: --batch must be >= 4 (at least 2 samples on each of at least 2 ranks), got {}", cmd, c.batch_size);
  batch(cmd, c.batch_size, c.train_samples);
}

}  // namespace lab
