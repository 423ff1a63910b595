// nets.h — the networks xgrad-lab trains, Santurkar et al.'s "noisy BatchNorm" module, and the three
// training-loop pieces every experiment shares: one SGD/Adam step, evaluation in eval mode, percentiles.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <xgrad/data.h>
#include <xgrad/xgrad.h>

namespace lab {

// ---- noise after BatchNorm (Santurkar et al. 2018, Algorithm 1) ---------------------------------------------

/// The four numbers of Algorithm 1; the defaults are the paper's.
struct NoiseOptions {
  double n_mu = 0.5;      // per-step mean offset of unit j:   mu_j    ~ U(-n_mu, n_mu)
  double n_sigma = 1.25;  // per-step scale of unit j:         sigma_j ~ U(1, n_sigma)
  double r_mu = 0.1;      // per-sample offset:                m_ij    ~ U(mu_j - r_mu, mu_j + r_mu)
  double r_sigma = 0.1;   // per-sample scale:                 s_ij    ~ N(sigma_j, r_sigma)
};

/// "Time-varying, non-Gaussian noise" injected after a layer in training: a_ij <- s_ij * a_ij + m_ij, with a
/// new distribution (mu_j, sigma_j) per unit at every training step (call new_step() before each step) and new
/// s_ij, m_ij per sample. Channels are axis 1; for images [N, C, H, W] the H and W positions count as samples
/// (the paper's convention). Identity in eval mode. Draws from its own seeded generator.
class TimeVaryingNoise : public xg::nn::Module {
 public:
  TimeVaryingNoise(std::size_t channels, NoiseOptions options, std::uint64_t seed);
  /// Draws this step's mu_j and sigma_j.
  void new_step();
  xg::Tensor forward(const xg::Tensor& input) override;
  /// The noise stream (saved in checkpoints; mu_j and sigma_j need not be: new_step() redraws them before use).
  xg::Generator& generator() { return gen_; }

 private:
  NoiseOptions opts_;
  xg::Generator gen_;
  std::vector<double> mu_, sigma_;
};

// ---- networks ------------------------------------------------------------------------------------------------

/// What to build. Every hidden block is  Linear/Conv (bias dropped when followed by BN) -> [BatchNorm] ->
/// [TimeVaryingNoise] -> activation.
struct NetSpec {
  /// "mlp": Flatten -> hidden Linear blocks -> Linear(classes).
  /// "cnn": the small VGG-like net of experiments.md for 28x28: conv3x3 1->8, 8->8, maxpool 2, 8->16, 16->16,
  ///        maxpool 2, Flatten, Linear(16*7*7 -> classes); 3x3 convs with padding 1.
  std::string kind = "mlp";
  std::vector<std::size_t> hidden{100, 100, 100};  // MLP widths
  std::string activation = "relu";                 // "relu" or "sigmoid"
  bool batchnorm = false;
  /// With batchnorm: p > 0 puts xg::nn::LpNorm1d/2d with this p (1, 2 or infinity) where BatchNorm would go
  /// (Santurkar et al. §3.3); 0 = BatchNorm.
  double lp_norm = 0;
  bool noise = false;
  NoiseOptions noise_options;
  /// Weight init: nullopt = PyTorch's default (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases);
  /// a value s = N(0, s^2) weights and zero biases (Ioffe & Szegedy's "small random Gaussian values").
  std::optional<double> init_std;
  /// true (and no init_std): He/Kaiming-normal weights N(0, 2/fan_in) and zero biases — the initialisation made
  /// for ReLU nets, under which a deep un-normalised MLP keeps its signal's scale (noisy-bn uses it).
  bool kaiming = false;
};

/// A built network and handles into it.
struct Net {
  std::shared_ptr<xg::nn::Sequential> model;
  /// The module whose output is the input of the last hidden activation (the BN, noise or Linear before the
  /// last sigmoid/ReLU): what Ioffe & Szegedy's Figure 1 (b, c) and Santurkar's Figure 2 histograms show.
  std::shared_ptr<xg::nn::Module> last_preactivation;
  std::vector<std::shared_ptr<TimeVaryingNoise>> noise;
  std::vector<std::shared_ptr<xg::nn::BatchNormBase>> batchnorms;
};

/// Builds `spec` for inputs [N, channels, height, width] and `classes` outputs. Layer k's weights come from
/// the generator seeded with seed_for(init_seed, "layer", k): two networks that differ only in BatchNorm start
/// from the same weights. Noise generators are seeded from noise_seed.
Net make_net(const NetSpec& spec, const xg::Shape& input_shape, std::size_t classes, std::uint64_t init_seed,
             std::uint64_t noise_seed);

/// "MLP 784-100-100-100-10 ReLU" / "CNN 8-8-16-16 ReLU" (+ " + BN", " + noise").
std::string describe(const NetSpec& spec);

// ---- training pieces ---------------------------------------------------------------------------------------

/// What one training step saw.
struct StepResult {
  double loss = 0;          // mean cross-entropy of the batch
  std::size_t correct = 0;  // samples of the batch classified right (by the logits before the update)
};

/// One optimisation step on one batch: new noise draws, zero_grad, forward, cross-entropy, backward, step.
/// If the loss is NaN or infinite the step is skipped (no backward, no update) and the loss returned: the
/// caller records the run as diverged.
StepResult train_step(Net& net, xg::optim::Optimizer& opt, const xg::data::Batch& batch);

/// Number of rows of `logits` [N, C] whose argmax equals the label; a row holding a NaN counts as wrong.
std::size_t count_correct(const xg::Tensor& logits, const std::vector<std::size_t>& labels);

/// Loss and accuracy of a model on a dataset.
struct Evaluation {
  double loss = 0;      // mean cross-entropy (NaN/Inf if the model produces them)
  double accuracy = 0;  // fraction of argmax == label; a row with a NaN logit counts as wrong
};

/// Evaluates in eval mode (xg::nn::EvalGuard: BatchNorm uses its running statistics and does not update them;
/// the previous mode is restored after) and without recording a graph, in batches of `batch_size`.
Evaluation evaluate(xg::nn::Module& model, const xg::data::Dataset& ds, std::size_t batch_size = 1000);

/// The p-th percentiles (p in [0, 100], linear interpolation) of `values`.
std::vector<double> percentiles(std::vector<double> values, const std::vector<double>& ps);

/// Column `unit` of a [N, C] tensor, or channel `unit` of [N, C, H, W] (all N*H*W values), as doubles.
std::vector<double> unit_values(const xg::Tensor& t, std::size_t unit);

}  // namespace lab
