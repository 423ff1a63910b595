// regularisation.cpp — "BN regularises": Ioffe & Szegedy (2015, §3.4) write that "Batch Normalization regularizes
// the model and reduces the need for Dropout", and removed Dropout from BN-Inception (§4.2.1). Here: a small
// training subset (where a network overfits), the same MLP with none / Dropout / BN / BN + Dropout at a fixed
// budget of epochs, several seeds; the train/test gap (accuracy on the training subset minus test accuracy, both
// in eval mode) and the test accuracy of each arm.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "bn_limits.h"
#include "cells.h"
#include "training.h"

namespace lab {

RegularisationConfig regularisation_config(const Lab& lab) {
  RegularisationConfig c;
  c.seeds = lab.seeds(3);
  if (lab.tiny()) {
    c.train_samples = 200;
    c.eval_samples = 200;
    c.epochs = 3;
    c.hidden = {64, 64};
    c.seeds = lab.seeds(1);
  } else if (lab.quick()) {
    c.epochs = 25;
    c.eval_samples = 1000;
    c.seeds = lab.seeds(2);
  } else if (lab.full()) {
    c.epochs = 200;
    c.eval_samples = 0;
    c.seeds = lab.seeds(5);
  }
  return c;
}

void run_regularisation(Lab& lab, const RegularisationConfig& cfg) {
  const std::string ex = "regularisation";
  struct Arm {
    std::string key, title, color;
    bool bn;
    bool dropout;
  };
  const std::vector<Arm> arms{{"none", "no BN, no Dropout", "'#7f7f7f'", false, false},
                              {"dropout", fmt::format("Dropout {}", short_number(cfg.dropout)), "'#ff7f0e'", false, true},
                              {"bn", "BatchNorm", "'#1f77b4'", true, false},
                              {"bn+dropout", "BatchNorm + Dropout", "'#2ca02c'", true, true}};
  if (!(cfg.dropout > 0 && cfg.dropout < 1)) xg::fail("regularisation: --dropout must be in (0, 1), got {}", cfg.dropout);
  xg::data::Dataset train_store, eval_store;
  const auto& train = first_samples(lab.train_set(), cfg.train_samples, train_store);
  const auto& eval_set = first_samples(lab.test_set(), cfg.eval_samples, eval_store);
  if (cfg.batch < 2 || cfg.batch > train.size())
    xg::fail("regularisation: batch {} must be in [2, {}] (the subset's size)", cfg.batch, train.size());
  const std::string data_name = dataset_name(lab);
  const std::size_t classes = train.num_classes(), in = train.images.numel() / train.size();
  const std::size_t steps = cfg.epochs * (train.size() / cfg.batch);

  Progress progress(ex, steps * arms.size() * cfg.seeds);
  // ---- run every cell: seed x arm (spread over the MPI ranks, recorded for restarts: cells.h) --------------------
  struct Cell {
    std::size_t arm;   // index into arms
    RunResult result;  // series "train_acc", "test_acc": the accuracies in eval mode (NaN if the run diverged)
  };
  std::vector<Cell> cells;
  CellRunner runner(lab, ex, &progress);
  for (std::size_t s = 0; s < cfg.seeds; ++s)
    for (std::size_t a = 0; a < arms.size(); ++a) {
      const std::string what = fmt::format("arm={} seed_index={}", arms[a].key, s);
      RunResult r = runner.run(what, steps, [&] {
        const std::uint64_t seed = lab.run_seed(s);  // --seed + seed index: the metrics.csv seed
        LimitsNetSpec spec;
        spec.norm = arms[a].bn ? "bn" : "none";
        spec.hidden = cfg.hidden;
        spec.dropout = arms[a].dropout ? cfg.dropout : 0.0;
        xg::Generator dropout_gen(seed_for(seed, "dropout"));
        Net net = make_limits_net(spec, in, classes, seed_for(seed, "init"), &dropout_gen);
        const LimitsRun run = train_limits(net, train, cfg.batch, cfg.epochs, cfg.lr, seed_for(seed, "shuffle"),
                                           progress, fmt::format("{} seed {}", arms[a].key, s));
        lab.add_timing(ex, run.seconds, run.steps);
        const double a_tr = run.diverged ? std::nan("") : evaluate(*net.model, train).accuracy;
        const double a_te = run.diverged ? std::nan("") : evaluate(*net.model, eval_set).accuracy;
        if (run.diverged)
          lab.metric(ex, "mlp", "sgd-momentum", arms[a].key, cfg.lr, static_cast<std::int64_t>(seed),
                     static_cast<std::int64_t>(run.steps), "diverged", static_cast<double>(run.steps));
        for (const auto& [name, v] : {std::pair{"train_acc", a_tr}, std::pair{"test_acc", a_te}, std::pair{"gap", a_tr - a_te}})
          lab.metric(ex, "mlp", "sgd-momentum", arms[a].key, cfg.lr, static_cast<std::int64_t>(seed),
                     static_cast<std::int64_t>(run.steps), name, v);
        RunResult out;  // what the analysis needs, carried to rank 0 with the cell
        out.seconds = run.seconds;  // with diverged_at: the timing of a cell run elsewhere (gather)
        out.diverged = run.diverged;
        out.diverged_at = run.diverged ? run.steps : 0;
        out.series["train_acc"] = {a_tr};
        out.series["test_acc"] = {a_te};
        return out;
      });
      cells.push_back({a, std::move(r)});
    }
  progress.finish();
  if (!runner.gather([&](std::size_t i, RunResult r) { cells[i].result = std::move(r); })) return;  // not rank 0

  // per arm: train accuracy, test accuracy, gap — one value per seed, in the loop's order
  std::vector<std::vector<double>> tr(arms.size()), te(arms.size()), gap(arms.size());
  for (const Cell& c : cells) {
    const double a_tr = c.result.series.at("train_acc").at(0), a_te = c.result.series.at("test_acc").at(0);
    tr[c.arm].push_back(a_tr);
    te[c.arm].push_back(a_te);
    gap[c.arm].push_back(a_tr - a_te);
  }

  // ---- verdicts ------------------------------------------------------------------------------------------------
  const Spread g_none = spread(gap[0]), g_do = spread(gap[1]), g_bn = spread(gap[2]), g_bnd = spread(gap[3]);
  const Spread t_none = spread(te[0]), t_do = spread(te[1]), t_bn = spread(te[2]), t_bnd = spread(te[3]);
  std::string verdict = fmt::format(
      "Regularisation ({}, {} training images): train/test gap none {:.1f}, Dropout {:.1f}, BN {:.1f}, BN + Dropout "
      "{:.1f} points; test accuracy {} / {} / {} / {}.",
      data_name, train.size(), 100 * g_none.mean, 100 * g_do.mean, 100 * g_bn.mean, 100 * g_bnd.mean,
      percent(t_none.mean), percent(t_do.mean), percent(t_bn.mean), percent(t_bnd.mean));
  // "BN regularises": BN's gap below the plain network's, with separated seed ranges for a firm yes
  if (g_bn.mean < g_none.mean - 0.01 && cfg.seeds == 1)
    verdict += fmt::format(" Claim \"BN regularises\" (a smaller gap than without): holds on one seed (no spread to "
                           "judge), {:.1f} points smaller",
                           100 * (g_none.mean - g_bn.mean));
  else if (g_bn.max < g_none.min)
    verdict += fmt::format(" Claim \"BN regularises\" (a smaller gap than without): HOLDS ({:.1f} points smaller, seed "
                           "ranges apart)",
                           100 * (g_none.mean - g_bn.mean));
  else if (g_bn.mean < g_none.mean - 0.01)
    verdict += fmt::format(" Claim \"BN regularises\": holds weakly ({:.1f} points smaller gap, seed ranges overlap)",
                           100 * (g_none.mean - g_bn.mean));
  else
    verdict += fmt::format(" Claim \"BN regularises\": does NOT hold here (BN's gap {:+.1f} points vs none)",
                           100 * (g_bn.mean - g_none.mean));
  const double extra = t_bnd.mean - t_bn.mean;
  verdict += std::abs(extra) <= 0.01
                 ? fmt::format("; Dropout on top of BN changes test accuracy by only {:+.1f} points (\"BN reduces the "
                               "need for Dropout\": consistent).",
                               100 * extra)
                 : fmt::format("; Dropout on top of BN changes test accuracy by {:+.1f} points (\"BN reduces the need "
                               "for Dropout\": {}).",
                               100 * extra, extra > 0 ? "not here, Dropout still helps" : "Dropout hurts with BN here");
  lab.verdict(verdict);

  // ---- figure: per arm, train and test accuracy (mean and min–max over seeds) ---------------------------------
  Figure fig{"regularisation_gap",
             fmt::format("Does BN regularise? {} training images of {}", train.size(), data_name), 1, 2, 1250, 520, {}};
  for (int which = 0; which < 2; ++which) {
    Panel p;
    p.title = fmt::format("{}: {}", data_name, which == 0 ? "accuracy on the training subset (+) and on the test set (o)"
                                                          : "train/test gap");
    p.xlabel = "arm (1 none, 2 Dropout, 3 BN, 4 BN + Dropout)";
    p.ylabel = which == 0 ? "accuracy" : "train accuracy - test accuracy";
    p.xrange = std::pair{0.5, 4.5};
    p.key = which == 0 ? "bottom right" : "off";  // the left panel's legend names the arms
    for (std::size_t a = 0; a < arms.size(); ++a) {
      const double x = static_cast<double>(a + 1);
      const std::vector<std::vector<double>*> what =
          which == 0 ? std::vector<std::vector<double>*>{&tr[a], &te[a]} : std::vector<std::vector<double>*>{&gap[a]};
      for (std::size_t w = 0; w < what.size(); ++w) {
        const Spread b = spread(*what[w]);
        // the min–max range as a vertical line, the mean as a point, every seed as a small dot
        p.series.push_back({"", {x, x}, {b.min, b.max}, {}, "lines", "lw 3 lc rgb " + arms[a].color});
        p.series.push_back({w == 0 ? arms[a].title : "", {x}, {b.mean}, {}, "points",
                            fmt::format("pt {} ps 2 lc rgb {}", which == 0 && w == 0 ? 1 : 7, arms[a].color)});
      }
    }
    fig.panels.push_back(p);
  }

  Report& rep = lab.report(ex, "Does BatchNorm regularise? (`regularisation`)");
  rep.para(fmt::format(
      "Ioffe & Szegedy (2015, §3.4): \"Batch Normalization regularizes the model and reduces the need for Dropout\" "
      "(BN-Inception drops Dropout, §4.2.1). Here, on {}: the first {} training images only, an MLP {}-{}-{} with "
      "none / Dropout({}) after every hidden ReLU / BatchNorm1d before every ReLU / both, {} epochs in batches of {} "
      "({} steps), SGD momentum 0.9 lr {}, PyTorch's default initialisation, {} seed(s) per arm (the same initial "
      "weights and batches per seed). Accuracies in eval mode (BN with its moving averages, Dropout off) on the "
      "training subset and on {} test images; the gap is their difference.",
      data_name, train.size(), in, fmt::format("{}", fmt::join(cfg.hidden, "-")), classes, short_number(cfg.dropout),
      cfg.epochs, cfg.batch, steps, short_number(cfg.lr), cfg.seeds, eval_set.size()));
  rep.para("**" + verdict + "**");
  rep.image("train and test accuracy, gap", lab.plot(fig));
  std::vector<std::vector<std::string>> rows;
  for (std::size_t a = 0; a < arms.size(); ++a) {
    auto fmt_band = [&](const std::vector<double>& v, bool pts) {
      const Spread b = spread(v);
      return pts ? fmt::format("{:.1f} ({:.1f} – {:.1f})", 100 * b.mean, 100 * b.min, 100 * b.max)
                 : fmt::format("{} ({} – {})", percent(b.mean), percent(b.min), percent(b.max));
    };
    rows.push_back({arms[a].title, fmt_band(tr[a], false), fmt_band(te[a], false), fmt_band(gap[a], true)});
  }
  rep.table({"arm", "train accuracy (min – max)", "test accuracy", "gap, points"}, rows);

  Json& sec = lab.section(ex);
  Json& conf = sec["config"];
  conf["train_samples"] = train.size();
  conf["eval_samples"] = eval_set.size();
  conf["seeds"] = cfg.seeds;
  conf["epochs"] = cfg.epochs;
  conf["batch"] = cfg.batch;
  conf["lr"] = cfg.lr;
  conf["dropout"] = cfg.dropout;
  conf["hidden"] = cfg.hidden;
  for (std::size_t a = 0; a < arms.size(); ++a) {
    Json& j = sec["arms"][arms[a].key];
    j["train_accuracy"] = tr[a];
    j["test_accuracy"] = te[a];
    j["gap"] = gap[a];
  }
  sec["verdict"] = verdict;
}

}  // namespace lab
