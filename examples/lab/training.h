// training.h — one training run as every xgrad-lab experiment does it, and the experiments' entry points.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "experiment.h"
#include "nets.h"

namespace lab {

/// "sgd" (plain SGD: no momentum, as both papers' baselines) or "adam" (PyTorch's defaults besides lr).
std::unique_ptr<xg::optim::Optimizer> make_optimizer(const std::string& name, const std::vector<xg::Tensor>& params,
                                                     double lr);

/// One training run: a network trained from a seed for a number of steps, logged into the Lab's metrics.
struct RunSpec {
  std::string experiment, model, optimizer = "sgd", arm;  // the metrics.csv labels
  NetSpec net;
  double lr = 0.1;
  std::size_t seed_index = 0;   // the run's seed is lab.run_seed(seed_index) = --seed + seed_index (init, shuffle, noise)
  std::size_t steps = 1000;
  std::size_t batch_size = 128;
  std::size_t log_every = 50;   // mean training loss and accuracy over the last log_every steps
  std::size_t eval_every = 0;   // evaluate on `eval_set` every eval_every steps (0: only at the end)
  const xg::data::Dataset* train_set = nullptr;
  const xg::data::Dataset* eval_set = nullptr;
  /// A run whose mean training loss exceeds this in three consecutive log windows is stopped as diverged
  /// ("loss blow-up"); a NaN/Inf loss stops it at once.
  double blowup_loss = 23.0;  // = 10·ln(10), ten times the loss of a uniform guess over 10 classes
  /// Called before each training step (from 1) with the batch that step trains on, e.g. for probes that need
  /// the step's own batch (why_bn.h: landscape, ICS).
  std::function<void(Net& net, const xg::data::Batch& batch, std::size_t step)> before_step;
};

struct RunResult {
  bool diverged = false;
  std::size_t diverged_at = 0;      // step at which the loss became NaN/Inf or blew up
  std::string diverged_why;
  double final_accuracy = 0;        // on eval_set at the end (chance if diverged: see train_run)
  double best_accuracy = 0;         // best of the evaluations
  double final_train_loss = 0;      // mean of the last log window
  std::vector<double> log_steps, train_loss, train_accuracy;  // every log_every steps
  std::vector<double> eval_steps, eval_accuracy, eval_loss;   // every eval_every steps
  double seconds = 0;
  /// The run's other outputs by name (probe traces, histogram values, ...): an experiment whose runs are
  /// sweep cells (cells.h) keeps here what its analysis needs besides the above, so that the cell carries it
  /// from the rank that ran it to rank 0 (and from disk on a restart), exactly.
  std::map<std::string, std::vector<double>> series;
};

/// Called after every training step (the step number counts from 1) and once before training with step 0.
using StepHook = std::function<void(Net& net, std::size_t step)>;

/// Builds the network, trains it and records: train_loss/train_acc every log_every steps, test_acc/test_loss
/// at every evaluation (step 0 included), "diverged" (value = step) if it diverged. A diverged run stops at
/// once (the sweep goes on with the next run): its final accuracy is NaN (a diverged network is worth no more
/// than a guess), its best accuracy that of its evaluations before the divergence.
/// `progress` advances by one per step (by the remaining steps on divergence).
RunResult train_run(Lab& lab, const RunSpec& spec, Progress& progress, const StepHook& hook = {});

// ---- the experiments (lr_sweep.cpp, convergence.cpp, noisy_bn.cpp) ---------------------------------------------

/// Learning-rate tolerance (Santurkar et al. Fig. 1 / Ioffe & Szegedy §3.3 and §4.2.2).
struct LrSweepConfig {
  std::vector<std::string> models{"mlp", "cnn"};
  std::vector<std::string> optimizers{"sgd"};
  std::vector<double> sgd_lrs{0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30};   // the MLP's grid
  std::vector<double> cnn_lrs{0.01, 0.1, 0.3, 1};                    // the CNN's (SGD) grid: it costs ~50x more
  std::vector<double> adam_lrs{1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1};
  std::size_t seeds = 2;           // MLP seeds (the CNN runs seed 0 only)
  std::size_t cnn_seeds = 1;
  std::size_t mlp_steps = 1500, cnn_steps = 250;
  std::size_t batch_size = 64;
  std::size_t train_samples = 0;   // 0 = the whole training set
  std::size_t eval_samples = 2000; // 0 = the whole test set
  std::size_t evals = 3;           // evaluations per run (for the best accuracy)
  /// A run "trains" if it did not diverge and its final accuracy is at least
  /// chance + train_fraction·(best final accuracy of the sweep − chance).
  double train_fraction = 0.75;
};
LrSweepConfig lr_sweep_config(const Lab& lab);
void run_lr_sweep(Lab& lab, const LrSweepConfig& cfg);

/// Ioffe & Szegedy 2015, Figure 1.
struct ConvergenceConfig {
  std::size_t steps = 10000;
  std::size_t batch_size = 60;
  double lr = 0.5;
  double init_std = 0.1;
  std::size_t evals = 40;
  std::size_t eval_samples = 0;    // 0 = the whole test set
  std::size_t train_samples = 0;   // 0 = the whole training set
  std::size_t probe_samples = 1000;
  std::size_t unit = 0;            // which unit of the last hidden layer is traced
  std::size_t seeds = 2;           // runs per arm (accuracy bands; the percentiles are the first seed's)
};
ConvergenceConfig convergence_config(const Lab& lab);
void run_convergence(Lab& lab, const ConvergenceConfig& cfg);

/// Santurkar et al. 2018, Figure 2.
struct NoisyBnConfig {
  std::string model = "mlp";
  std::size_t depth = 8;           // hidden layers of the MLP (100 units each)
  std::size_t steps = 2000;
  std::size_t batch_size = 128;
  double lr = 0.1;
  std::size_t evals = 15;
  std::size_t eval_samples = 0;
  std::size_t train_samples = 0;
  std::size_t probe_samples = 1000;
  std::size_t snapshots = 5;       // activation histograms at this many points in training
  std::size_t unit = 0;
  NoiseOptions noise;
  /// "kaiming" (He-normal N(0, 2/fan_in), zero biases: the 8-layer standard ReLU net trains, as the paper's
  /// standard VGG does) or "pytorch" (PyTorch's default U(±1/√fan_in): at depth 8 the standard net barely trains).
  std::string init = "kaiming";
  std::size_t seeds = 2;
};
NoisyBnConfig noisy_bn_config(const Lab& lab);
void run_noisy_bn(Lab& lab, const NoisyBnConfig& cfg);

/// The first n samples of a dataset (n = 0: all of it) — kept in memory once per run.
const xg::data::Dataset& first_samples(const xg::data::Dataset& ds, std::size_t n, xg::data::Dataset& storage);

}  // namespace lab
