// lp_norm.cpp — Santurkar et al. §3.3: is BatchNorm the only normalisation that helps? The MLP with nothing,
// BatchNorm, or xg::nn::LpNorm1d (p = 1, 2, ∞: subtract the batch mean, divide by the batch's average ℓp norm)
// after every hidden layer, trained with plain SGD over learning rates; the paper found that "all ℓp
// normalization strategies perform comparably or even better than BatchNorm".
#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "cells.h"
#include "why_bn.h"

namespace lab {

LpNormConfig lp_norm_config(const Lab& lab) {
  LpNormConfig c;
  if (lab.tiny()) {
    c.lrs = {1};
    c.seeds = 1;
    c.steps = 40;
    c.batch_size = 32;
    c.train_samples = 2000;
    c.eval_samples = 300;
  } else if (lab.quick()) {
    c.lrs = {0.1, 3};
    c.seeds = 1;
    c.steps = 200;
    c.train_samples = 10000;
    c.eval_samples = 1000;
  } else if (lab.full()) {
    c.lrs = {0.03, 0.1, 0.3, 1, 3, 10};
    c.seeds = 3;
    c.steps = 3000;
    c.eval_samples = 0;
  }
  c.seeds = lab.seeds(c.seeds);
  return c;
}

void run_lp_norm(Lab& lab, const LpNormConfig& cfg) {
  const std::string ex = "lp-norm";
  xg::data::Dataset train_store, eval_store;
  const auto& train = first_samples(lab.train_set(), cfg.train_samples, train_store);
  const auto& eval_set = first_samples(lab.test_set(), cfg.eval_samples, eval_store);
  lab.used_samples(train.size(), eval_set.size());
  struct Arm {
    std::string key, title, color;
    bool norm;
    double p;
  };
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<Arm> arms{{"none", "no normalisation", "'#d62728'", false, 0},
                              {"bn", "BatchNorm", "'#1f77b4'", true, 0},
                              {"l1", "ℓ1 norm", "'#2ca02c'", true, 1},
                              {"l2", "ℓ2 norm", "'#9467bd'", true, 2},
                              {"linf", "ℓ∞ norm", "'#ff7f0e'", true, inf}};
  const std::size_t total = arms.size() * cfg.lrs.size() * cfg.seeds * cfg.steps;
  if (lab.full())
    fmt::print(stderr, "lp-norm --full: {} MLP steps (about {} at ~900 steps/s)\n", total,
               format_duration(static_cast<double>(total) / 900.0));
  Progress progress("lp-norm", total);
  // Every run (arm x lr x seed) is a cell, spread over the MPI ranks and recorded for restarts (cells.h).
  CellRunner runner(lab, ex, &progress);
  struct Cell {
    std::string arm;
    std::size_t lr_index;
    RunResult result;
  };
  std::vector<Cell> cells;
  for (const auto& arm : arms) {
    for (std::size_t i = 0; i < cfg.lrs.size(); ++i)
      for (std::size_t s = 0; s < cfg.seeds; ++s) {
        RunSpec spec;
        spec.experiment = ex;
        spec.model = "mlp";
        spec.arm = arm.key;
        spec.net.batchnorm = arm.norm;
        spec.net.lp_norm = arm.p;
        spec.lr = cfg.lrs[i];
        spec.seed_index = s;
        spec.steps = cfg.steps;
        spec.batch_size = cfg.batch_size;
        spec.log_every = std::max<std::size_t>(1, cfg.steps / 10);
        spec.eval_every = cfg.steps;
        spec.train_set = &train;
        spec.eval_set = &eval_set;
        cells.push_back({arm.key, i, runner.run(spec, [&] { return train_run(lab, spec, progress); })});
      }
  }
  progress.finish();
  if (!runner.gather([&](std::size_t i, RunResult r) { cells[i].result = std::move(r); })) return;  // not rank 0

  // arm -> lr index -> seeds' final accuracy, in the loop's seed order
  std::map<std::string, std::vector<std::vector<double>>> acc;
  for (const auto& arm : arms) acc[arm.key].assign(cfg.lrs.size(), {});
  for (const auto& c : cells)  // a diverged run is worth a guess or less
    acc[c.arm][c.lr_index].push_back(c.result.diverged ? 0.0 : c.result.final_accuracy);

  // Verdict per ℓp arm: its best learning rate's mean against BN's, and whether at the largest learning rate
  // every seed beats every seed of the un-normalised network.
  auto best = [&](const std::string& key) {
    std::size_t bi = 0;
    for (std::size_t i = 0; i < cfg.lrs.size(); ++i)
      if (spread(acc[key][i]).mean > spread(acc[key][bi]).mean) bi = i;
    return bi;
  };
  const std::size_t bn_i = best("bn");
  const Spread bn_best = spread(acc["bn"][bn_i]);
  const std::size_t top = cfg.lrs.size() - 1;
  std::string v = fmt::format("ℓp normalisation (Santurkar §3.3), MLP: best test accuracy over lr {} — BN {} (seeds "
                              "{}–{}, lr {})",
                              [&] {
                                std::string s;
                                for (double lr : cfg.lrs) s += (s.empty() ? "" : "/") + short_number(lr);
                                return s;
                              }(),
                              percent(bn_best.mean), percent(bn_best.min), percent(bn_best.max),
                              short_number(cfg.lrs[bn_i]));
  std::vector<std::string> comparable, short_of;
  for (const auto& arm : arms) {
    if (arm.key == "bn") continue;
    const std::size_t i = best(arm.key);
    const Spread s = spread(acc[arm.key][i]);
    v += fmt::format(", {} {} ({}–{}, lr {})", arm.title, percent(s.mean), percent(s.min), percent(s.max),
                     short_number(cfg.lrs[i]));
    if (arm.key == "none") continue;
    // comparable: within 2 points of BN, or its seeds' range reaches BN's
    if (s.mean >= bn_best.mean - 0.02 || s.max >= bn_best.min) comparable.push_back(arm.title);
    else short_of.push_back(arm.title);
  }
  v += ". ";
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? (i + 1 == v.size() ? " and " : ", ") : "") + v[i];
    return s;
  };
  if (short_of.empty()) v += "Every ℓp normalisation performs comparably to BN or better, as the paper found";
  else if (!comparable.empty()) v += join(comparable) + " perform comparably to BN; " + join(short_of) + " do NOT";
  else v += "No ℓp normalisation matches BN here (the paper found them comparable)";
  std::vector<std::string> beat;
  const Spread none_top = spread(acc["none"][top]);
  for (const auto& arm : arms)
    if (arm.key != "none" && spread(acc[arm.key][top]).min > none_top.max) beat.push_back(arm.title);
  v += fmt::format("; at lr {} {} every seed of the un-normalised network ({}).", short_number(cfg.lrs[top]),
                   beat.empty() ? std::string("no normalisation beats") : join(beat) + " beat", percent(none_top.mean));
  lab.verdict(v);

  Figure fig{"lp_norm", fmt::format("ℓp normalisation vs BatchNorm (Santurkar et al. §3.3) on {}",
                                    dataset_name(lab)),
             1, 1, 900, 520, {}};
  Panel p;
  p.title = fmt::format("ℓp normalisation vs BatchNorm on {}: MLP 784-100-100-100-10 ReLU, SGD, {} steps (mean, "
                        "min–max over {} seed(s))",
                        dataset_name(lab), cfg.steps, cfg.seeds);
  p.xlabel = "learning rate";
  p.ylabel = "final test accuracy";
  p.logx = true;
  p.yrange = std::pair{0.0, 1.0};
  p.key = "bottom left";
  for (const auto& arm : arms) {
    Band b;
    for (std::size_t i = 0; i < cfg.lrs.size(); ++i) {
      const Spread s = spread(acc[arm.key][i]);
      b.x.push_back(cfg.lrs[i]);
      b.mean.push_back(s.mean);
      b.min.push_back(s.min);
      b.max.push_back(s.max);
    }
    for (auto& s : band_series(b, arm.title, arm.color)) {
      if (s.style == "lines") s.style = "linespoints";
      p.series.push_back(s);
    }
  }
  fig.panels.push_back(p);

  Report& rep = lab.report(ex, "Other normalisations: ℓp instead of BatchNorm (`lp-norm`)");
  rep.para(fmt::format(
      "Santurkar et al. §3.3 on {}: the MLP 784-100-100-100-10 ReLU with, after every hidden layer, nothing, "
      "BatchNorm, or `xg::nn::LpNorm1d` (subtract the batch mean, divide by the batch's average ℓp norm "
      "((1/m) Σ|x − μ|^p)^(1/p), p = 1, 2, ∞; see docs/batchnorm.md). Plain SGD, batch {}, {} steps, {} seed(s) "
      "per cell, {} training images, test accuracy on {}. A diverged run counts as 0.",
      lab.options().data, cfg.batch_size, cfg.steps, cfg.seeds, train.size(), eval_set.size()));
  rep.para("**" + v + "**");
  rep.image("accuracy against learning rate per normalisation", lab.plot(fig));
  std::vector<std::string> head{"lr"};
  for (const auto& arm : arms) head.push_back(arm.title + " (mean, min–max)");
  std::vector<std::vector<std::string>> rows;
  Json& sec = lab.section(ex);
  for (std::size_t i = 0; i < cfg.lrs.size(); ++i) {
    std::vector<std::string> row{short_number(cfg.lrs[i])};
    for (const auto& arm : arms) {
      const Spread s = spread(acc[arm.key][i]);
      row.push_back(fmt::format("{} ({}–{})", percent(s.mean), percent(s.min), percent(s.max)));
      Json cell = Json::object();
      cell["lr"] = cfg.lrs[i];
      cell["final_test_accuracy"] = acc[arm.key][i];
      sec["arms"][arm.key]["by_lr"].push_back(cell);
    }
    rows.push_back(row);
  }
  rep.table(head, rows);
  Json& conf = sec["config"];
  conf["lrs"] = cfg.lrs;
  conf["seeds"] = cfg.seeds;
  conf["steps"] = cfg.steps;
  conf["batch_size"] = cfg.batch_size;
  conf["train_samples"] = train.size();
  conf["eval_samples"] = eval_set.size();
  sec["verdict"] = v;
}

}  // namespace lab
