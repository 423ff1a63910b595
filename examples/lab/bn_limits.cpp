// bn_limits.cpp — the network and training loop shared by batch-size, inference and regularisation, and their CLI
// (see bn_limits.h).
#include "bn_limits.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <memory>

#include <fmt/format.h>

#include "validate.h"

namespace lab {

namespace nn = xg::nn;

Net make_limits_net(const LimitsNetSpec& spec, std::size_t in_features, std::size_t classes, std::uint64_t init_seed,
                    xg::Generator* dropout_gen) {
  Net net;
  net.model = std::make_shared<nn::Sequential>();
  auto& seq = *net.model;
  seq.push_back(nn::Flatten());
  std::size_t in = in_features, layer = 0;
  // Batch Renorm's schedule, the paper's proportions (plain BN for 5k of ~130k steps... here: the first 5% of
  // the run, rmax reached at 40%, dmax at 25%; final rmax 3, dmax 5)
  const std::size_t T = std::max<std::size_t>(spec.total_steps, 1);
  for (std::size_t width : spec.hidden) {
    xg::Generator gen(seed_for(init_seed, "layer", layer++));
    auto lin = std::make_shared<nn::Linear>(nn::LinearOptions(in, width).bias(spec.norm == "none"));
    lin->reset_parameters(&gen);
    seq.push_back(lin);
    std::shared_ptr<nn::Module> pre = lin;
    if (spec.norm == "bn") {
      auto bn = std::make_shared<nn::BatchNorm1d>(nn::BatchNormOptions(width).momentum(spec.bn_momentum));
      net.batchnorms.push_back(bn);
      pre = bn;
    } else if (spec.norm == "gn") {
      pre = std::make_shared<nn::GroupNorm>(nn::GroupNormOptions(spec.groups, width));
    } else if (spec.norm == "ln") {
      pre = std::make_shared<nn::LayerNorm>(nn::LayerNormOptions({width}));
    } else if (spec.norm == "brn") {
      pre = std::make_shared<nn::BatchRenorm1d>(nn::BatchRenormOptions(width)
                                                    .momentum(spec.bn_momentum)
                                                    .warmup_steps(T / 20)
                                                    .rmax_steps(2 * T / 5)
                                                    .dmax_steps(T / 4));
    } else if (spec.norm != "none") {
      xg::fail("make_limits_net: unknown normalisation '{}' (use bn, gn, ln, brn or none)", spec.norm);
    }
    if (pre != lin) seq.push_back(pre);
    net.last_preactivation = pre;
    seq.push_back(std::make_shared<nn::ReLU>());
    if (spec.dropout > 0) seq.push_back(std::make_shared<nn::Dropout>(nn::DropoutOptions(spec.dropout).generator(dropout_gen)));
    in = width;
  }
  xg::Generator gen(seed_for(init_seed, "layer", layer));
  auto head = std::make_shared<nn::Linear>(in, classes);
  head->reset_parameters(&gen);
  seq.push_back(head);
  return net;
}

LimitsRun train_limits(Net& net, const xg::data::Dataset& train, std::size_t batch, std::size_t epochs, double lr,
                       std::uint64_t shuffle_seed, Progress& progress, const std::string& status,
                       const std::function<void(std::size_t)>& after_step) {
  Timer timer;
  LimitsRun run;
  xg::optim::SGD opt(net.model->parameters(), xg::optim::SGDOptions(lr).momentum(0.9));
  xg::data::DataLoader loader(train, xg::data::DataLoaderOptions(batch).drop_last(true).seed(shuffle_seed));
  const std::size_t steps = epochs * loader.num_batches();
  net.model->train();
  for (std::size_t step = 1; step <= steps; ++step) {
    const StepResult r = train_step(net, opt, loader.next());
    ++run.steps;
    if (!std::isfinite(r.loss)) {  // a diverged run stops; the rest of its steps count as done
      run.diverged = true;
      progress.advance(steps - step + 1, status + " diverged");
      break;
    }
    if (after_step) after_step(step);
    progress.advance(1, status);
  }
  run.seconds = timer.seconds();
  return run;
}


std::string band_cell(const std::vector<double>& seeds) {
  const Spread b = spread(seeds);
  return seeds.size() > 1 ? fmt::format("{} ({}–{})", percent(b.mean), percent(b.min), percent(b.max)) : percent(b.mean);
}

void add_band_curve(Panel& p, const std::vector<std::size_t>& x, const std::vector<std::vector<double>>& per_x,
                    const std::string& title, const std::string& color, const std::string& style) {
  std::vector<double> xs, m, lo, hi;
  bool several = false;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const Spread b = spread(per_x[i]);
    xs.push_back(static_cast<double>(x[i]));
    m.push_back(b.mean);
    lo.push_back(b.min);
    hi.push_back(b.max);
    several = several || per_x[i].size() > 1;
  }
  if (several) p.series.push_back({"", xs, lo, hi, "band", "fs transparent solid 0.12 noborder lc rgb " + color});
  p.series.push_back({title, xs, m, {}, "linespoints", style + "lw 2 pt 7 lc rgb " + color});
}

// ---- CLI ---------------------------------------------------------------------------------------------------------
namespace {
template <class T>
struct Opt {  // a subcommand option that overrides a mode-dependent field only when given
  T value{};
  CLI::Option* option = nullptr;
  void add(CLI::App* app, const std::string& name, const std::string& help) { option = app->add_option(name, value, help); }
  void apply(T& target) const {
    if (option && option->count() > 0) target = value;
  }
};
}  // namespace

struct LimitsCommands {
  CLI::App *bs = nullptr, *inf = nullptr, *reg = nullptr;
  Opt<std::vector<std::size_t>> bs_batches, inf_batches;
  Opt<std::vector<std::string>> bs_arms;
  Opt<std::vector<double>> inf_momenta;
  Opt<std::size_t> bs_epochs, bs_train, inf_epochs, inf_train, reg_train, reg_epochs, reg_batch;
  Opt<double> bs_lr, inf_lr, reg_lr, reg_dropout;

  // The mode's configuration with the options given on the command line.
  BatchSizeConfig bs_cfg(const Lab& lab) const {
    auto cfg = batch_size_config(lab);
    bs_batches.apply(cfg.batches);
    bs_arms.apply(cfg.arms);
    bs_epochs.apply(cfg.epochs);
    bs_train.apply(cfg.train_samples);
    bs_lr.apply(cfg.base_lr);
    return cfg;
  }
  InferenceConfig inf_cfg(const Lab& lab) const {
    auto cfg = inference_config(lab);
    inf_batches.apply(cfg.batches);
    inf_momenta.apply(cfg.momenta);
    inf_epochs.apply(cfg.epochs);
    inf_train.apply(cfg.train_samples);
    inf_lr.apply(cfg.base_lr);
    return cfg;
  }
  RegularisationConfig reg_cfg(const Lab& lab) const {
    auto cfg = regularisation_config(lab);
    reg_train.apply(cfg.train_samples);
    reg_epochs.apply(cfg.epochs);
    reg_batch.apply(cfg.batch);
    reg_lr.apply(cfg.lr);
    reg_dropout.apply(cfg.dropout);
    return cfg;
  }
};

LimitsCommands* add_limits_subcommands(CLI::App& app, const std::function<void(CLI::App*)>& add_common) {
  static LimitsCommands c;
  c.bs = app.add_subcommand("batch-size", "Wu & He Figure 1: test error against batch size for BN, GroupNorm, "
                                          "LayerNorm, Batch Renorm and no normalisation");
  add_common(c.bs);
  c.bs_batches.add(c.bs, "--batches", "Batch sizes, comma-separated (default 2,4,...,128)");
  c.bs_batches.option->delimiter(',');
  c.bs_arms.add(c.bs, "--arms", "Arms: bn,gn,ln,brn,none");
  c.bs_arms.option->delimiter(',')->check(CLI::IsMember({"bn", "gn", "ln", "brn", "none"}));
  c.bs_epochs.add(c.bs, "--epochs", "Epochs per run (the same for every batch size)");
  c.bs_train.add(c.bs, "--train-samples", "Use the first N training images");
  c.bs_lr.add(c.bs, "--lr", "Learning rate at batch 32 (scaled linearly with the batch)");

  c.inf = app.add_subcommand("inference", "Test accuracy of a trained BN network with moving averages at several "
                                          "momenta, each test batch's statistics, or exact population statistics");
  add_common(c.inf);
  c.inf_batches.add(c.inf, "--batches", "Training batch sizes, comma-separated (default 4,16,128)");
  c.inf_batches.option->delimiter(',');
  c.inf_momenta.add(c.inf, "--momenta", "Moving-average momenta, comma-separated (default 0.01,0.1,0.5)");
  c.inf_momenta.option->delimiter(',');
  c.inf_epochs.add(c.inf, "--epochs", "Epochs per run");
  c.inf_train.add(c.inf, "--train-samples", "Use the first N training images");
  c.inf_lr.add(c.inf, "--lr", "Learning rate at batch 32 (scaled linearly with the batch)");

  c.reg = app.add_subcommand("regularisation", "Does BN regularise? Train/test gap of none / Dropout / BN / "
                                               "BN + Dropout on a small training subset");
  add_common(c.reg);
  c.reg_train.add(c.reg, "--train-samples", "Size of the small training subset (default 1000)");
  c.reg_epochs.add(c.reg, "--epochs", "Epochs over the subset");
  c.reg_batch.add(c.reg, "--batch", "Batch size");
  c.reg_lr.add(c.reg, "--lr", "SGD learning rate (momentum 0.9)");
  c.reg_dropout.add(c.reg, "--dropout", "Dropout probability of the Dropout arms");
  return &c;
}

void validate_limits(const Lab& lab, const LimitsCommands* c, bool all) {
  if (all || *c->bs) validate(c->bs_cfg(lab));
  if (all || *c->inf) validate(c->inf_cfg(lab));
  if (all || *c->reg) validate(c->reg_cfg(lab));
}

void run_limits(Lab& lab, LimitsCommands* c, bool all) {
  if (all || *c->bs) run_batch_size(lab, c->bs_cfg(lab));
  if (all || *c->inf) run_inference(lab, c->inf_cfg(lab));
  if (all || *c->reg) run_regularisation(lab, c->reg_cfg(lab));
}

}  // namespace lab
