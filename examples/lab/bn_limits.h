// bn_limits.h — BatchNorm's limits and its alternatives: three xgrad-lab experiments (docs/experiments.md).
// (Not "limits.h": on this include path that name would shadow the C header <limits.h>.)
//
//   batch-size      Wu & He 2018, Fig. 1: test error against batch size for BN, GroupNorm, LayerNorm, Batch
//                   Renorm and no normalisation, same epochs, learning rate scaled linearly with the batch
//   inference       which statistics a trained BN network should use at test time: moving averages at several
//                   momenta, each test batch's own statistics, or exact population statistics (update_bn)
//   regularisation  "BN regularises": the train/test gap of none / Dropout / BN / BN + Dropout on a small subset
//
// The CLI blocks live here too (add_limits_subcommands / run_limits) so main.cpp only gains a few lines.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "experiment.h"
#include "nets.h"
#include "why_bn.h"  // Spread / spread(): mean and min–max over seeds

namespace CLI {
class App;
}

namespace lab {

/// The MLP every experiment here trains: Flatten -> [Linear -> norm -> ReLU -> Dropout(p)] per hidden layer ->
/// Linear(classes). norm: "none" (Linear with bias), "bn" (BatchNorm1d), "gn" (GroupNorm, `groups` groups), "ln"
/// (LayerNorm), "brn" (BatchRenorm1d with the warm-up schedule scaled to the run, see brn_schedule).
struct LimitsNetSpec {
  std::string norm = "none";
  std::vector<std::size_t> hidden{128, 128};
  std::size_t groups = 8;
  double dropout = 0;           // 0: no Dropout layers
  double bn_momentum = 0.1;     // BatchNorm / BatchRenorm momentum
  std::size_t total_steps = 0;  // the run's length: Batch Renorm's warm-up and ramps are fractions of it
};

/// Builds the network; Linear k's weights from seed_for(init_seed, "layer", k) (PyTorch's default init), so
/// the arms of one seed start from the same weights; Dropout masks from `dropout_gen` (must outlive the net).
Net make_limits_net(const LimitsNetSpec& spec, std::size_t in_features, std::size_t classes, std::uint64_t init_seed,
                    xg::Generator* dropout_gen);

/// One training run of the experiments here: SGD (momentum 0.9, as Wu & He) over `epochs` epochs of `train` in
/// batches of `batch` (drop_last), shuffled from `shuffle_seed`. after_step(step) runs after every step.
struct LimitsRun {
  std::size_t steps = 0;
  bool diverged = false;
  double seconds = 0;
};
LimitsRun train_limits(Net& net, const xg::data::Dataset& train, std::size_t batch, std::size_t epochs, double lr,
                       std::uint64_t shuffle_seed, Progress& progress, const std::string& status,
                       const std::function<void(std::size_t)>& after_step = {});


/// A table cell for one point's seeds: "81.2% (80.9%–81.5%)", or "81.2%" for one seed.
std::string band_cell(const std::vector<double>& seeds);
/// A curve over x (one entry of `per_x` per x: the seeds' values): its min–max band (with more than one seed),
/// then the means as linespoints titled `title`, in `color`; `style` is prepended to the line's options ("dt 2 ").
void add_band_curve(Panel& p, const std::vector<std::size_t>& x, const std::vector<std::vector<double>>& per_x,
                    const std::string& title, const std::string& color, const std::string& style = "");

// ---- batch-size ------------------------------------------------------------------------------------------------
struct BatchSizeConfig {
  std::vector<std::size_t> batches{2, 4, 8, 16, 32, 64, 128};
  std::vector<std::string> arms{"bn", "gn", "ln", "brn", "none"};
  std::size_t seeds = 2;
  std::size_t epochs = 2;
  std::size_t train_samples = 4096;
  std::size_t eval_samples = 2000;
  double base_lr = 0.05;          // at base_batch; lr = base_lr * batch / base_batch (Wu & He: 0.1 at 32)
  std::size_t base_batch = 32;
};
BatchSizeConfig batch_size_config(const Lab& lab);
void run_batch_size(Lab& lab, const BatchSizeConfig& cfg);

// ---- inference -------------------------------------------------------------------------------------------------
struct InferenceConfig {
  std::vector<std::size_t> batches{4, 16, 128};   // training batch sizes
  std::vector<double> momenta{0.01, 0.1, 0.5};    // moving averages kept side by side during training
  std::size_t seeds = 2;
  std::size_t epochs = 2;
  std::size_t train_samples = 4096;
  std::size_t eval_samples = 2000;
  double base_lr = 0.05;
  std::size_t base_batch = 32;
};
InferenceConfig inference_config(const Lab& lab);
void run_inference(Lab& lab, const InferenceConfig& cfg);

// ---- regularisation --------------------------------------------------------------------------------------------
struct RegularisationConfig {
  std::size_t train_samples = 1000;  // the small training subset
  std::size_t eval_samples = 2000;
  std::size_t seeds = 3;
  std::size_t epochs = 100;
  std::size_t batch = 50;
  double lr = 0.05;
  double dropout = 0.5;              // Srivastava et al.'s value for hidden units
  std::vector<std::size_t> hidden{128, 128};
};
RegularisationConfig regularisation_config(const Lab& lab);
void run_regularisation(Lab& lab, const RegularisationConfig& cfg);

// ---- CLI -------------------------------------------------------------------------------------------------------
/// The three subcommands and their overrides; `add_common` adds the shared flags to a subcommand.
struct LimitsCommands;
LimitsCommands* add_limits_subcommands(CLI::App& app, const std::function<void(CLI::App*)>& add_common);
/// Checks the configurations of the subcommands that were given (their options applied); with `all`, of all
/// three (validate.h). main.cpp calls it before any experiment starts.
void validate_limits(const Lab& lab, const LimitsCommands* cmds, bool all);
/// Runs the subcommands that were given; with `all`, all three.
void run_limits(Lab& lab, LimitsCommands* cmds, bool all);

}  // namespace lab
