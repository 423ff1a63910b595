// why_bn.h — why BatchNorm works (Santurkar, Tsipras, Ilyas & Madry 2018): the loss-landscape (`landscape`,
// Fig. 4), internal-covariate-shift (`ics`, Definition 2.1 / Fig. 5), deep-linear-network (`dln`, Fig. 5/10) and
// ℓp-normalisation (`lp-norm`, §3.3) experiments, and the seed-spread helpers their verdicts (and the other
// experiments' plots) use. The probes themselves are in probes.h.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "probes.h"
#include "training.h"

namespace lab {

// ---- seeds: mean and min–max bands, seed-robust comparisons ---------------------------------------------------

/// Mean, minimum and maximum of the seeds' values (NaN values skipped; all NaN: NaN).
struct Spread {
  double mean = 0, min = 0, max = 0;
  std::size_t n = 0;  // finite values
};
Spread spread(const std::vector<double>& seeds);

/// A curve over seeds: runs[s] gives seed s's y at the shared x (curves of unequal length are cut to the
/// shortest). mean/min/max per x.
struct Band {
  std::vector<double> x, mean, min, max;
};
Band band(const std::vector<double>& x, const std::vector<std::vector<double>>& runs);

/// Series for a Panel: a shaded min–max band and the mean line in `color` ("'#1f77b4'"); the band is omitted
/// for a single seed.
std::vector<Series> band_series(const Band& b, const std::string& title, const std::string& color);

/// Seed-robust "a is smaller than b" over a sequence of points (probe steps, layers, ...): a[k] and b[k] hold
/// the seeds' values at point k.
struct Comparison {
  std::size_t points = 0;     // points with a finite value in both
  std::size_t separated = 0;  // points where every seed of a is below every seed of b (max a < min b)
  std::size_t reversed = 0;   // points where every seed of b is below every seed of a
  double median_ratio = 0;    // median over the points of mean(b)/mean(a)
  /// Holds when more than half of the points are separated (so the seeds' spread never covers the gap there).
  bool holds() const { return points > 0 && 2 * separated > points; }
  bool reverse_holds() const { return points > 0 && 2 * reversed > points; }
};
Comparison compare_smaller(const std::vector<std::vector<double>>& a, const std::vector<std::vector<double>>& b);

/// A verdict sentence: "<a_name>'s <what> is <ratio>x smaller than <b_name>'s (every seed, at k of n <where>)"
/// or the reverse, or "no consistent difference". Used by landscape, ics and dln.
std::string smaller_verdict(const std::string& what, const std::string& a_name, const std::string& b_name,
                            const Comparison& c, const std::string& where);

// ---- probes on a network --------------------------------------------------------------------------------------

/// The loss of `net` on `batch` as training computes it (training mode, BatchNorm with the batch's statistics),
/// but inside an xg::nn::NoStatsUpdateGuard: probing never moves the running statistics. `net` and `batch`
/// must outlive the returned function.
probes::LossFn network_loss(Net& net, const xg::data::Batch& batch);

/// The weight layers of a network, in order: each Linear/Conv2d with its bias and the BatchNorm/LpNorm after it.
std::vector<probes::Layer> weight_layers(const Net& net);

// ---- the experiments ---------------------------------------------------------------------------------------------

/// Santurkar et al. Fig. 4: loss range, gradient predictiveness and effective β along the gradient.
struct LandscapeConfig {
  std::vector<std::string> models{"mlp", "cnn"};
  std::size_t seeds = 2;
  std::size_t mlp_steps = 1000, cnn_steps = 200;
  std::size_t probes = 20;          // probe points per run (every steps/probes steps, and at step 1)
  double mlp_lr = 0.1, cnn_lr = 0.1;
  std::vector<double> step_multiples{0.5, 1, 2, 3, 4};  // η = multiple × lr (the paper: [1/2, 4])
  std::size_t batch_size = 64;
  std::size_t train_samples = 0, eval_samples = 2000;
};
LandscapeConfig landscape_config(const Lab& lab);
void run_landscape(Lab& lab, const LandscapeConfig& cfg);

/// Santurkar et al. Definition 2.1: ‖G − G′‖ and cos(G, G′) per layer.
struct IcsConfig {
  std::size_t seeds = 2;
  std::size_t steps = 1000;
  std::size_t probes = 20;
  double lr = 0.1;
  std::size_t batch_size = 64;
  std::size_t train_samples = 0, eval_samples = 2000;
};
IcsConfig ics_config(const Lab& lab);
void run_ics(Lab& lab, const IcsConfig& cfg);

/// Santurkar et al.'s 25-layer deep linear network on synthetic Gaussian data, full-batch gradient descent.
struct DlnConfig {
  std::size_t seeds = 2;
  std::size_t layers = 25, width = 10, samples = 1000;
  std::size_t steps = 10000;        // the paper's budget
  double lr = 1e-6;                 // the paper's
  std::size_t probes = 20;
  std::vector<double> step_multiples{0.01, 0.1, 1, 3, 10, 30};  // the paper: [1/100, 30]
};
DlnConfig dln_config(const Lab& lab);
void run_dln(Lab& lab, const DlnConfig& cfg);

/// Santurkar et al. §3.3 / Fig. 5 (ℓp normalisation): none / BN / ℓ1 / ℓ2 / ℓ∞ over learning rates.
struct LpNormConfig {
  std::vector<double> lrs{0.1, 1, 3};
  std::size_t seeds = 2;
  std::size_t steps = 600;
  std::size_t batch_size = 64;
  std::size_t train_samples = 0, eval_samples = 2000;
};
LpNormConfig lp_norm_config(const Lab& lab);
void run_lp_norm(Lab& lab, const LpNormConfig& cfg);

}  // namespace lab
