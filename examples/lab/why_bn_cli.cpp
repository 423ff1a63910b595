// why_bn_cli.cpp — see why_bn_cli.h.
#include "why_bn_cli.h"

#include <optional>

#include "validate.h"

namespace lab {

namespace {
// An option that overrides a config field only when given.
template <class T>
struct Opt {
  T value{};
  CLI::Option* option = nullptr;
  void add(CLI::App* app, const std::string& name, const std::string& help) { option = app->add_option(name, value, help); }
  void apply(T& target) const {
    if (option && option->count() > 0) target = value;
  }
};
}  // namespace

struct WhyBnCli::Options {
  CLI::App *landscape = nullptr, *ics = nullptr, *dln = nullptr, *lp = nullptr;
  Opt<std::vector<std::string>> ls_models;
  Opt<std::size_t> ls_mlp_steps, ls_cnn_steps, ls_probes, ls_batch;
  Opt<double> ls_mlp_lr, ls_cnn_lr;
  Opt<std::vector<double>> ls_multiples;
  Opt<std::size_t> ics_steps, ics_probes, ics_batch;
  Opt<double> ics_lr;
  Opt<std::size_t> dln_steps, dln_layers, dln_probes, dln_samples;
  Opt<double> dln_lr;
  Opt<std::vector<double>> dln_multiples, lp_lrs;
  Opt<std::size_t> lp_steps, lp_batch;

  // The mode's configuration with the options given on the command line.
  LandscapeConfig landscape_cfg(const Lab& lab) const {
    auto c = landscape_config(lab);
    ls_models.apply(c.models);
    ls_mlp_steps.apply(c.mlp_steps);
    ls_cnn_steps.apply(c.cnn_steps);
    ls_probes.apply(c.probes);
    ls_batch.apply(c.batch_size);
    ls_mlp_lr.apply(c.mlp_lr);
    ls_cnn_lr.apply(c.cnn_lr);
    ls_multiples.apply(c.step_multiples);
    return c;
  }
  IcsConfig ics_cfg(const Lab& lab) const {
    auto c = ics_config(lab);
    ics_steps.apply(c.steps);
    ics_probes.apply(c.probes);
    ics_batch.apply(c.batch_size);
    ics_lr.apply(c.lr);
    return c;
  }
  DlnConfig dln_cfg(const Lab& lab) const {
    auto c = dln_config(lab);
    dln_steps.apply(c.steps);
    dln_layers.apply(c.layers);
    dln_probes.apply(c.probes);
    dln_samples.apply(c.samples);
    dln_lr.apply(c.lr);
    dln_multiples.apply(c.step_multiples);
    return c;
  }
  LpNormConfig lp_cfg(const Lab& lab) const {
    auto c = lp_norm_config(lab);
    lp_lrs.apply(c.lrs);
    lp_steps.apply(c.steps);
    lp_batch.apply(c.batch_size);
    return c;
  }
};

// The numbers are checked by validate.cpp (validate_selected), not by CLI11 checks: one message style
// ("<subcommand>: <option> must be ..., got <value>"), exit code 1, and NaN/inf rejected too.
WhyBnCli::WhyBnCli(CLI::App& app, const std::function<void(CLI::App*)>& add_common) : o_(std::make_unique<Options>()) {
  Options& o = *o_;
  o.landscape = app.add_subcommand("landscape", "Santurkar et al. Figure 4: loss range, gradient predictiveness and "
                                                "effective beta-smoothness along the gradient, standard vs BN");
  add_common(o.landscape);
  o.ls_models.add(o.landscape, "--models", "Networks: mlp,cnn");
  o.ls_models.option->delimiter(',')->check(CLI::IsMember({"mlp", "cnn"}));
  o.ls_mlp_steps.add(o.landscape, "--mlp-steps", "Training steps of the MLP runs");
  o.ls_cnn_steps.add(o.landscape, "--cnn-steps", "Training steps of the CNN runs");
  o.ls_probes.add(o.landscape, "--probes", "Probe points per run (besides step 1)");
  o.ls_batch.add(o.landscape, "--batch", "Batch size");
  o.ls_mlp_lr.add(o.landscape, "--mlp-lr", "SGD learning rate of the MLP (default 0.1)");
  o.ls_cnn_lr.add(o.landscape, "--cnn-lr", "SGD learning rate of the CNN (default 0.1)");
  o.ls_multiples.add(o.landscape, "--step-multiples", "Probed step lengths as multiples of the lr (default 0.5,1,2,3,4)");
  o.ls_multiples.option->delimiter(',');

  o.ics = app.add_subcommand("ics", "Santurkar et al. Definition 2.1: internal covariate shift per layer "
                                    "(||G - G'|| and cos), standard vs BN");
  add_common(o.ics);
  o.ics_steps.add(o.ics, "--steps", "Training steps");
  o.ics_probes.add(o.ics, "--probes", "Probe points per run (besides step 1)");
  o.ics_batch.add(o.ics, "--batch", "Batch size");
  o.ics_lr.add(o.ics, "--lr", "SGD learning rate (default 0.1)");

  o.dln = app.add_subcommand("dln", "Santurkar et al.'s 25-layer deep linear network on synthetic Gaussian data: "
                                    "loss, ICS and landscape probes, with and without BN");
  add_common(o.dln);
  o.dln_steps.add(o.dln, "--steps", "Full-batch gradient-descent steps (the paper: 10000)");
  o.dln_layers.add(o.dln, "--layers", "Number of 10x10 layers, 2 to 1000 (the paper: 25)");
  o.dln_probes.add(o.dln, "--probes", "Probe points per run (besides step 1)");
  o.dln_samples.add(o.dln, "--samples", "Data set size = batch size, 2 to 1000000 (the paper: 1000)");
  o.dln_lr.add(o.dln, "--lr", "Learning rate (the paper: 1e-6)");
  o.dln_multiples.add(o.dln, "--step-multiples", "Probed step lengths as multiples of the lr (default 0.01,0.1,1,3,10,30)");
  o.dln_multiples.option->delimiter(',');

  o.lp = app.add_subcommand("lp-norm", "Santurkar et al. section 3.3: no normalisation vs BN vs l1 / l2 / l-inf "
                                       "normalisation over learning rates");
  add_common(o.lp);
  o.lp_lrs.add(o.lp, "--lrs", "SGD learning rates, comma-separated (default 0.1,1,3)");
  o.lp_lrs.option->delimiter(',');
  o.lp_steps.add(o.lp, "--steps", "Training steps per run");
  o.lp_batch.add(o.lp, "--batch", "Batch size");
}

WhyBnCli::~WhyBnCli() = default;

void WhyBnCli::validate_selected(const Lab& lab) const {
  const Options& o = *o_;
  if (*o.landscape) lab::validate(o.landscape_cfg(lab));
  if (*o.ics) lab::validate(o.ics_cfg(lab));
  if (*o.dln) lab::validate(o.dln_cfg(lab));
  if (*o.lp) lab::validate(o.lp_cfg(lab));
}

void WhyBnCli::run_selected(Lab& lab) const {
  const Options& o = *o_;
  if (*o.landscape) run_landscape(lab, o.landscape_cfg(lab));
  if (*o.ics) run_ics(lab, o.ics_cfg(lab));
  if (*o.dln) run_dln(lab, o.dln_cfg(lab));
  if (*o.lp) run_lp_norm(lab, o.lp_cfg(lab));
}

void WhyBnCli::validate_all(const Lab& lab) {
  lab::validate(landscape_config(lab));
  lab::validate(ics_config(lab));
  lab::validate(dln_config(lab));
  lab::validate(lp_norm_config(lab));
}

void WhyBnCli::run_all(Lab& lab) {
  run_landscape(lab, landscape_config(lab));
  run_ics(lab, ics_config(lab));
  run_dln(lab, dln_config(lab));
  run_lp_norm(lab, lp_norm_config(lab));
}

}  // namespace lab
