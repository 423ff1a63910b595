// probes.h — measurements of *why* BatchNorm helps (Santurkar, Tsipras, Ilyas & Madry 2018), reusable on any
// model whose loss can be recomputed from its parameters:
//
//   probe_landscape   §3.2 / Fig. 4: along the negative gradient, at several step lengths η, the loss
//                     L(x − η·g), the gradient predictiveness ‖∇L(x) − ∇L(x − η·g)‖₂ and the "effective"
//                     β-smoothness  max_η ‖∇L(x) − ∇L(x − η·g)‖₂ / ‖η·g‖₂.
//   probe_ics         Definition 2.1 / Fig. 5: per layer i, G_i = ∇_{W_i} L at the current parameters and G′_i the
//                     same gradient after layers 1..i−1 took this step's SGD update (same batch); ‖G − G′‖₂ and
//                     cos(G, G′).
//
// Both compute gradients with xg::autograd::grad, so they never read or write any parameter's .grad(), and
// they put every parameter back bit for bit before returning. The loss function they call must recompute the
// loss from the parameters' current values on a fixed batch; for a network with BatchNorm run it in training
// mode inside an xg::nn::NoStatsUpdateGuard (batch statistics, running statistics untouched) — the paper's
// setting, and what lab::network_loss (why_bn.h) does.
#pragma once

#include <functional>
#include <vector>

#include <xgrad/xgrad.h>

namespace lab::probes {

/// Recomputes the (scalar) loss from the parameters' current values, recording a graph.
using LossFn = std::function<xg::Tensor()>;

/// ∇ of loss() w.r.t. `params` (through xg::autograd::grad; .grad() untouched). `loss_value` gets L if given.
std::vector<xg::Tensor> gradient(const LossFn& loss, const std::vector<xg::Tensor>& params,
                                 double* loss_value = nullptr);

/// ‖a‖₂ over a list of tensors (as one vector), ‖a − b‖₂, and ⟨a, b⟩; computed in double.
double norm(const std::vector<xg::Tensor>& a);
double distance(const std::vector<xg::Tensor>& a, const std::vector<xg::Tensor>& b);
double dot(const std::vector<xg::Tensor>& a, const std::vector<xg::Tensor>& b);

/// What probe_landscape measured at one point x.
struct Landscape {
  double loss = 0;                     // L(x)
  double grad_norm = 0;                // ‖g‖₂, g = ∇L(x)
  std::vector<double> etas;            // the step lengths probed
  std::vector<double> losses;          // L(x − η·g) per η
  std::vector<double> grad_distances;  // ‖∇L(x) − ∇L(x − η·g)‖₂ per η (gradient predictiveness)
  double loss_min = 0, loss_max = 0;   // range of L over x and the probed points ("variation of loss")
  double beta = 0;                     // effective β-smoothness: max_η grad_distance / (η·‖g‖)
};

/// Evaluates the landscape along −∇L(x) at the step lengths `etas` (each > 0). The parameters are moved in
/// place (without recording) and restored exactly. A non-finite loss or gradient at a probed point is kept
/// as NaN/Inf in the result (the probe itself does not fail).
Landscape probe_landscape(const LossFn& loss, const std::vector<xg::Tensor>& params, const std::vector<double>& etas);

/// One layer for probe_ics: `weight` is W_i (whose gradient is compared), `params` every tensor of the layer
/// (weight, bias, BN's γ and β) — all of them take the SGD update when the layer precedes the measured one.
struct Layer {
  xg::Tensor weight;
  std::vector<xg::Tensor> params;
};

/// Per layer: G_i versus G′_i. Layer 0 has no preceding layer, so its distance is 0 and its cosine 1.
struct Ics {
  std::vector<double> distance;  // ‖G_i − G′_i‖₂
  std::vector<double> cosine;    // ⟨G_i, G′_i⟩ / (‖G_i‖·‖G′_i‖) (NaN if a norm is 0)
  std::vector<double> grad_norm; // ‖G_i‖₂, to put the distance in scale
};

/// Internal covariate shift of every layer for one SGD step of learning rate `lr` on loss(): W ← W − lr·∇W L
/// (plain SGD, the paper's optimiser). Costs one gradient plus one per layer after the first; restores every
/// parameter exactly.
Ics probe_ics(const LossFn& loss, const std::vector<Layer>& layers, double lr);

}  // namespace lab::probes
