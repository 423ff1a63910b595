// batch_size.cpp — Wu & He 2018 ("Group Normalization"), Figure 1: ImageNet classification error against the
// batch size per GPU (32 down to 2) for BN and GN, ResNet-50; "BN's error increases rapidly when the batch size
// becomes smaller", GN's stays nearly constant. Here: the MLP of bn_limits.h with BN, GroupNorm, LayerNorm, Batch
// Renorm or nothing, trained for the same number of epochs at every batch size with the learning rate scaled
// linearly with the batch (as Wu & He: 0.1·B/32), test error of each arm against the batch size, several seeds.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "bn_limits.h"
#include "cells.h"
#include "training.h"

namespace lab {

BatchSizeConfig batch_size_config(const Lab& lab) {
  BatchSizeConfig c;
  c.seeds = lab.seeds(2);
  if (lab.tiny()) {
    c.batches = {2, 16};
    c.arms = {"bn", "gn", "none"};
    c.epochs = 1;
    c.train_samples = 128;
    c.eval_samples = 200;
    c.seeds = lab.seeds(1);
  } else if (lab.quick()) {
    c.batches = {2, 8, 32, 128};
    c.epochs = 1;
    c.train_samples = 1024;
    c.eval_samples = 1000;
    c.seeds = lab.seeds(1);
  } else if (lab.full()) {
    c.epochs = 5;
    c.train_samples = 0;  // all
    c.eval_samples = 0;
    c.seeds = lab.seeds(3);
  }
  return c;
}

namespace {
const char* arm_title(const std::string& a) {
  if (a == "bn") return "BatchNorm";
  if (a == "gn") return "GroupNorm";
  if (a == "ln") return "LayerNorm";
  if (a == "brn") return "Batch Renorm";
  return "no normalisation";
}
const char* arm_color(const std::string& a) {
  if (a == "bn") return "'#1f77b4'";
  if (a == "gn") return "'#2ca02c'";
  if (a == "ln") return "'#9467bd'";
  if (a == "brn") return "'#ff7f0e'";
  return "'#7f7f7f'";
}
}  // namespace

void run_batch_size(Lab& lab, const BatchSizeConfig& cfg) {
  const std::string ex = "batch-size";
  if (cfg.batches.empty() || cfg.arms.empty()) xg::fail("batch-size: no batch sizes or no arms");
  xg::data::Dataset train_store, eval_store;
  const auto& train = first_samples(lab.train_set(), cfg.train_samples, train_store);
  const auto& eval_set = first_samples(lab.test_set(), cfg.eval_samples, eval_store);
  for (std::size_t B : cfg.batches)
    if (B < 2 || B > train.size())
      xg::fail("batch-size: batch size {} must be in [2, {}] (BatchNorm needs 2 samples; the subset has {})", B,
               train.size(), train.size());
  const std::string data_name = dataset_name(lab);
  const std::size_t classes = train.num_classes();
  const std::size_t in = train.images.numel() / train.size();
  const double chance_err = 1.0 - 1.0 / static_cast<double>(classes);

  // cost of a step ~ a fixed overhead plus the batch's samples (measured: ~ 1 + B/16 in MLP-step units)
  std::size_t total_steps = 0;
  double total_cost = 0;
  for (std::size_t B : cfg.batches) {
    const std::size_t s = cfg.epochs * (train.size() / B) * cfg.arms.size() * cfg.seeds;
    total_steps += s;
    total_cost += static_cast<double>(s) * (1.0 + static_cast<double>(B) / 16.0);
  }
  Progress progress(ex, total_steps);
  progress.set_total_cost(total_cost);
  // ---- run every cell: batch x seed x arm (spread over the MPI ranks, recorded for restarts: cells.h) ---------
  struct Cell {
    std::size_t arm, batch;  // indices into cfg.arms, cfg.batches
    RunResult result;        // series "test_err": the run's test error
  };
  std::vector<Cell> cells;
  CellRunner runner(lab, ex, &progress);
  for (std::size_t bi = 0; bi < cfg.batches.size(); ++bi) {
    const std::size_t B = cfg.batches[bi];
    const double lr = cfg.base_lr * static_cast<double>(B) / static_cast<double>(cfg.base_batch);
    const std::size_t steps = cfg.epochs * (train.size() / B);
    progress.set_unit_cost(1.0 + static_cast<double>(B) / 16.0);
    for (std::size_t s = 0; s < cfg.seeds; ++s)
      for (std::size_t a = 0; a < cfg.arms.size(); ++a) {
        const std::string what = fmt::format("arm={} batch={} seed_index={}", cfg.arms[a], B, s);
        RunResult r = runner.run(what, steps, [&] {
          LimitsNetSpec spec;
          spec.norm = cfg.arms[a];
          spec.total_steps = steps;
          const std::uint64_t seed = lab.run_seed(s);  // --seed + seed index: the metrics.csv seed
          Net net = make_limits_net(spec, in, classes, seed_for(seed, "init"), nullptr);
          const LimitsRun run = train_limits(net, train, B, cfg.epochs, lr, seed_for(seed, "shuffle"), progress,
                                             fmt::format("{} B={} seed {}", cfg.arms[a], B, s));
          lab.add_timing(ex, run.seconds, run.steps);
          const double e = run.diverged ? chance_err : 1.0 - evaluate(*net.model, eval_set).accuracy;
          lab.metric(ex, "mlp", "sgd-momentum", cfg.arms[a], lr, static_cast<std::int64_t>(seed),
                     static_cast<std::int64_t>(run.steps), "test_err", e);
          if (run.diverged) lab.metric(ex, "mlp", "sgd-momentum", cfg.arms[a], lr, static_cast<std::int64_t>(seed),
                                       static_cast<std::int64_t>(run.steps), "diverged", 1.0);
          RunResult out;  // what the analysis needs, carried to rank 0 with the cell
          out.seconds = run.seconds;  // with diverged_at: the timing of a cell run elsewhere (gather)
          out.diverged = run.diverged;
          out.diverged_at = run.diverged ? run.steps : 0;
          out.series["test_err"] = {e};
          return out;
        });
        cells.push_back({a, bi, std::move(r)});
      }
  }
  progress.finish();
  if (!runner.gather([&](std::size_t i, RunResult r) { cells[i].result = std::move(r); })) return;  // not rank 0

  // err[arm][batch][seed], in the loop's (seed) order
  std::vector<std::vector<std::vector<double>>> err(cfg.arms.size(),
                                                    std::vector<std::vector<double>>(cfg.batches.size()));
  std::size_t diverged = 0;
  for (const Cell& c : cells) {
    err[c.arm][c.batch].push_back(c.result.series.at("test_err").at(0));
    diverged += c.result.diverged;
  }

  // ---- verdicts from the data ---------------------------------------------------------------------------------
  auto arm_index = [&](const std::string& k) -> std::ptrdiff_t {
    const auto it = std::find(cfg.arms.begin(), cfg.arms.end(), k);
    return it == cfg.arms.end() ? -1 : it - cfg.arms.begin();
  };
  // the reference batch: 32 if swept (Wu & He's), else the largest
  std::size_t ref = cfg.batches.size() - 1;
  for (std::size_t i = 0; i < cfg.batches.size(); ++i)
    if (cfg.batches[i] == 32) ref = i;
  const std::size_t small = std::min_element(cfg.batches.begin(), cfg.batches.end()) - cfg.batches.begin();
  auto rise = [&](std::size_t a) { return spread(err[a][small]).mean - spread(err[a][ref]).mean; };
  std::string verdict = fmt::format("Batch size (Wu & He Fig. 1, {}): test error at batch {} vs {} —", data_name,
                                    cfg.batches[small], cfg.batches[ref]);
  for (std::size_t a = 0; a < cfg.arms.size(); ++a)
    verdict += fmt::format(" {} {} → {} ({:+.1f} points){}", arm_title(cfg.arms[a]), percent(spread(err[a][ref]).mean),
                           percent(spread(err[a][small]).mean), 100 * rise(a), a + 1 < cfg.arms.size() ? ";" : ".");
  const std::ptrdiff_t bn = arm_index("bn"), gn = arm_index("gn");
  std::string claim = "not tested (needs the bn and gn arms)";
  if (bn >= 0 && gn >= 0 && small != ref) {
    const Spread b = spread(err[bn][small]), g = spread(err[gn][small]);
    const double rb = rise(bn), rg = rise(gn);
    if (rb > rg + 0.01 && cfg.seeds == 1)
      claim = fmt::format("holds on one seed (no spread to judge): BN's error rises {:.1f} points more than GN's",
                          100 * (rb - rg));
    else if (rb > rg + 0.01 && b.min > g.max)
      claim = fmt::format("HOLDS: BN's error rises {:.1f} points more than GN's as the batch shrinks, and at batch {} "
                          "every BN seed is worse than every GN seed",
                          100 * (rb - rg), cfg.batches[small]);
    else if (rb > rg + 0.01)
      claim = fmt::format("holds weakly: BN's error rises {:.1f} points more than GN's, but the seed ranges at batch "
                          "{} overlap",
                          100 * (rb - rg), cfg.batches[small]);
    else
      claim = fmt::format("does NOT hold here: BN's error rises {:.1f} points, GN's {:.1f}", 100 * rb, 100 * rg);
  }
  verdict += " Claim \"BN degrades at small batches, GN does not\": " + claim + ".";
  if (diverged) verdict += fmt::format(" {} run(s) diverged (counted at chance error).", diverged);
  lab.verdict(verdict);

  // ---- figure ---------------------------------------------------------------------------------------------------
  Figure fig{"batch_size_error", fmt::format("Wu & He Figure 1 on {}: test error against batch size", data_name), 1,
             1, 900, 560, {}};
  Panel p;
  p.title = fmt::format("{}: MLP 2x128, {} epoch(s) of {} images, lr = {}·B/{}, SGD momentum 0.9; {} seed(s), band = "
                        "min–max",
                        data_name, cfg.epochs, train.size(), short_number(cfg.base_lr), cfg.base_batch, cfg.seeds);
  p.xrange = std::pair{0.8 * static_cast<double>(*std::min_element(cfg.batches.begin(), cfg.batches.end())),
                       1.25 * static_cast<double>(*std::max_element(cfg.batches.begin(), cfg.batches.end()))};
  p.xlabel = "batch size (images per step)";
  p.ylabel = "test error";
  p.logx = true;
  p.key = "top right";
  for (std::size_t a = 0; a < cfg.arms.size(); ++a)
    add_band_curve(p, cfg.batches, err[a], arm_title(cfg.arms[a]), arm_color(cfg.arms[a]));
  fig.panels.push_back(p);

  Report& rep = lab.report(ex, "BatchNorm at small batches: BN, GroupNorm, LayerNorm, Batch Renorm (`batch-size`)");
  rep.para(fmt::format(
      "Wu & He (2018), Figure 1: with ResNet-50 on ImageNet, BN's error grows quickly as the batch per GPU shrinks "
      "from 32 to 2, while GroupNorm's barely moves. Here, on {}: an MLP {}-128-128-{} (Linear → norm → ReLU) with "
      "BatchNorm1d, GroupNorm (8 groups of 16 units), LayerNorm, BatchRenorm1d (rmax 3, dmax 5; plain BN for the "
      "first 5% of the steps, rmax reached at 40%, dmax at 25%) or no normalisation, {} epoch(s) over {} training "
      "images at every batch size ({}), SGD with momentum 0.9 and lr = {}·B/{} (linear scaling, as the paper), test "
      "error on {} test images with the BN layers in eval mode (moving averages). {} seed(s) per point; the band "
      "is the min–max over seeds.",
      data_name, in, classes, cfg.epochs, train.size(),
      fmt::format("{}", fmt::join(cfg.batches, ", ")), short_number(cfg.base_lr), cfg.base_batch, eval_set.size(),
      cfg.seeds));
  rep.para("**" + verdict + "**");
  rep.image("test error against batch size", lab.plot(fig));
  std::vector<std::string> head{"batch", "lr"};
  for (const auto& a : cfg.arms) head.push_back(arm_title(a));
  std::vector<std::vector<std::string>> rows;
  for (std::size_t bi = 0; bi < cfg.batches.size(); ++bi) {
    std::vector<std::string> row{std::to_string(cfg.batches[bi]),
                                 short_number(cfg.base_lr * static_cast<double>(cfg.batches[bi]) /
                                              static_cast<double>(cfg.base_batch))};
    for (std::size_t a = 0; a < cfg.arms.size(); ++a) row.push_back(band_cell(err[a][bi]));
    rows.push_back(row);
  }
  rep.table(head, rows);

  Json& sec = lab.section(ex);
  Json& conf = sec["config"];
  conf["batches"] = cfg.batches;
  conf["arms"] = cfg.arms;
  conf["seeds"] = cfg.seeds;
  conf["epochs"] = cfg.epochs;
  conf["train_samples"] = train.size();
  conf["eval_samples"] = eval_set.size();
  conf["base_lr"] = cfg.base_lr;
  conf["base_batch"] = cfg.base_batch;
  for (std::size_t a = 0; a < cfg.arms.size(); ++a) {
    Json& j = sec["arms"][cfg.arms[a]];
    for (std::size_t bi = 0; bi < cfg.batches.size(); ++bi) j[std::to_string(cfg.batches[bi])] = err[a][bi];
  }
  sec["verdict"] = verdict;
}

}  // namespace lab
