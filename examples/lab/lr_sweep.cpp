// lr_sweep.cpp — learning-rate tolerance with and without BatchNorm.
//
// Reproduces the claim of Ioffe & Szegedy (§3.3: "Batch Normalization enables higher learning rates"; §4.2.2:
// the same 5x learning-rate increase that BN-x5 takes "caused the model parameters to reach machine infinity"
// without BN) and Santurkar et al.'s Figure 1 (standard vs BN at LR 0.1 and 0.5): the same network, the same
// initial weights and the same batches, trained with plain SGD over learning rates spanning three-plus decades,
// without and with BatchNorm. Each run is classified as diverged (NaN/Inf or a loss blow-up), stalled, or
// trains (see LrSweepConfig::train_fraction); the verdict is the largest learning rate each arm trains at.
#include <algorithm>
#include <cmath>
#include <map>

#include <fmt/format.h>

#include "cells.h"
#include "training.h"

namespace lab {

LrSweepConfig lr_sweep_config(const Lab& lab) {
  LrSweepConfig c;
  if (lab.tiny()) {  // seconds, for sanitizer builds
    c.sgd_lrs = {0.1, 3};
    c.cnn_lrs = {0.1, 10};
    c.adam_lrs = {1e-3, 1};
    c.seeds = 1;
    c.mlp_steps = 300;
    c.cnn_steps = 8;
    c.batch_size = 32;
    c.train_samples = 2000;
    c.eval_samples = 300;
    c.evals = 1;
  } else if (lab.quick()) {  // CI: well under a minute
    c.sgd_lrs = {0.03, 0.3, 3, 30};
    c.cnn_lrs = {0.03, 3};
    c.adam_lrs = {1e-3, 1e-2, 1e-1, 1};
    c.seeds = 1;
    c.mlp_steps = 300;
    c.cnn_steps = 40;
    c.batch_size = 64;
    c.train_samples = 10000;
    c.eval_samples = 1000;
    c.evals = 2;
  } else if (lab.full()) {  // Santurkar et al. train VGG 15,000 steps; here longer runs and 3 seeds everywhere
    c.seeds = 3;
    c.cnn_seeds = 3;
    c.mlp_steps = 5000;
    c.cnn_steps = 2000;
    c.eval_samples = 0;
  }
  c.seeds = lab.seeds(c.seeds);
  if (lab.options().seeds > 0) c.cnn_seeds = lab.seeds(c.cnn_seeds);
  return c;
}

namespace {

struct Cell {
  std::string model, optimizer, arm;
  double lr;
  std::size_t seed;
  RunResult result;
};

// The verdict of one (model, optimizer) pair.
struct Tolerance {
  double chance = 0, best = 0, threshold = 0;
  std::map<std::string, double> largest;   // arm -> largest lr at which it trains (NaN: none)
  std::map<std::string, double> best_acc;  // arm -> best mean final accuracy over the learning rates
};

// Final accuracy used for comparisons: a diverged run counts as 0.
double score(const RunResult& r) { return r.diverged ? 0.0 : r.final_accuracy; }

std::string arm_title(const std::string& arm) { return arm == "bn" ? "with BN" : "without BN"; }

}  // namespace

void run_lr_sweep(Lab& lab, const LrSweepConfig& cfg) {
  const std::string ex = "lr-sweep";
  xg::data::Dataset train_store, eval_store;
  const auto& train = first_samples(lab.train_set(), cfg.train_samples, train_store);
  const auto& eval_set = first_samples(lab.test_set(), cfg.eval_samples, eval_store);
  lab.used_samples(train.size(), eval_set.size());
  const std::vector<std::string> arms{"plain", "bn"};
  auto lrs_of = [&](const std::string& model, const std::string& opt) {
    return opt == "adam" ? cfg.adam_lrs : model == "cnn" ? cfg.cnn_lrs : cfg.sgd_lrs;
  };
  auto steps_of = [&](const std::string& model) { return model == "cnn" ? cfg.cnn_steps : cfg.mlp_steps; };
  auto seeds_of = [&](const std::string& model) { return model == "cnn" ? cfg.cnn_seeds : cfg.seeds; };

  // For the ETA only: one CNN step costs about as much as 40 MLP steps (measured: ~1400 MLP vs ~30 CNN
  // steps per second on the 2-core development machine).
  auto cost_of = [&](const std::string& model) { return model == "cnn" ? 40.0 : 1.0; };
  std::size_t total = 0;
  double total_cost = 0;
  for (const auto& m : cfg.models)
    for (const auto& o : cfg.optimizers) {
      const std::size_t n = steps_of(m) * lrs_of(m, o).size() * arms.size() * seeds_of(m);
      total += n;
      total_cost += static_cast<double>(n) * cost_of(m);
    }
  if (lab.full())
    fmt::print(stderr, "lr-sweep --full: {} steps (about {} at ~1,400 MLP / ~35 CNN steps per second)\n", total,
               format_duration(total_cost / 1400.0));
  Progress progress("lr-sweep", total);
  progress.set_total_cost(total_cost);

  // ---- run every cell: model x optimizer x lr x arm x seed -------------------------------------------------
  // (spread over the MPI ranks, recorded for restarts: cells.h)
  CellRunner runner(lab, ex, &progress);
  std::vector<Cell> cells;
  for (const auto& model : cfg.models)
    for (const auto& opt : cfg.optimizers)
      for (double lr : lrs_of(model, opt))
        for (const auto& arm : arms)
          for (std::size_t s = 0; s < seeds_of(model); ++s) {
            RunSpec spec;
            spec.experiment = ex;
            spec.model = model;
            spec.optimizer = opt;
            spec.arm = arm;
            spec.net.kind = model;
            spec.net.batchnorm = arm == "bn";
            spec.lr = lr;
            spec.seed_index = s;
            spec.steps = steps_of(model);
            spec.batch_size = cfg.batch_size;
            spec.log_every = std::max<std::size_t>(1, spec.steps / 25);
            spec.eval_every = std::max<std::size_t>(1, spec.steps / std::max<std::size_t>(cfg.evals, 1));
            spec.train_set = &train;
            spec.eval_set = &eval_set;
            progress.set_unit_cost(cost_of(model));
            RunResult r = runner.run(spec, [&] { return train_run(lab, spec, progress); });
            if (r.diverged)
              progress.note(fmt::format("  {} {} lr={} {} seed {}: diverged at step {} ({})", model, opt,
                                        short_number(lr), arm, lab.run_seed(s), r.diverged_at, r.diverged_why));
            cells.push_back({model, opt, arm, lr, s, std::move(r)});
          }
  progress.finish();
  if (!runner.gather([&](std::size_t i, RunResult r) { cells[i].result = std::move(r); })) return;  // not rank 0

  // ---- analysis -------------------------------------------------------------------------------------------
  const double chance = 1.0 / static_cast<double>(train.num_classes());
  auto cells_of = [&](const std::string& model, const std::string& opt, const std::string& arm, double lr) {
    std::vector<const Cell*> out;
    for (const auto& c : cells)
      if (c.model == model && c.optimizer == opt && c.arm == arm && c.lr == lr) out.push_back(&c);
    return out;
  };
  std::map<std::string, Tolerance> tol;  // key "model/opt"
  Json& sec = lab.section(ex);
  Json& conf = sec["config"];
  conf["models"] = cfg.models;
  conf["optimizers"] = cfg.optimizers;
  conf["sgd_lrs"] = cfg.sgd_lrs;
  conf["cnn_lrs"] = cfg.cnn_lrs;
  conf["cnn_seeds"] = cfg.cnn_seeds;
  if (std::find(cfg.optimizers.begin(), cfg.optimizers.end(), "adam") != cfg.optimizers.end())
    conf["adam_lrs"] = cfg.adam_lrs;
  conf["seeds"] = cfg.seeds;
  conf["mlp_steps"] = cfg.mlp_steps;
  conf["cnn_steps"] = cfg.cnn_steps;
  conf["batch_size"] = cfg.batch_size;
  conf["train_samples"] = train.size();
  conf["eval_samples"] = eval_set.size();
  conf["train_fraction"] = cfg.train_fraction;

  Report& rep = lab.report(ex, "Learning-rate tolerance (`lr-sweep`)");
  rep.para(fmt::format(
      "The same network, initial weights and batches, trained with {} for a fixed number of steps at learning "
      "rates from {} to {}, without BatchNorm (plain) and with BatchNorm after every hidden layer (bias dropped "
      "before BN). Reproduces Ioffe & Szegedy §3.3/§4.2.2 (BN \"enables higher learning rates\") and Santurkar "
      "et al. Figure 1. MLP = 784-100-100-100-10 ReLU ({} steps), CNN = conv 8-8-pool-16-16-pool + linear, ReLU "
      "({} steps at SGD learning rates {}, {} seed(s): a CNN step costs far more than an MLP step); batch {}, "
      "{} MLP seed(s), {} training images, test accuracy on {} test images.",
      cfg.optimizers.size() == 1 ? "plain SGD" : "plain SGD and Adam", short_number(cfg.sgd_lrs.front()),
      short_number(cfg.sgd_lrs.back()), cfg.mlp_steps, cfg.cnn_steps,
      [&] {
        std::string s;
        for (double lr : cfg.cnn_lrs) s += (s.empty() ? "" : ", ") + short_number(lr);
        return s;
      }(),
      cfg.cnn_seeds, cfg.batch_size, cfg.seeds, train.size(),
      eval_set.size()));
  rep.para(fmt::format(
      "A run **diverged** if its loss became NaN/Inf or its mean loss stayed above 10·ln(10) for three log "
      "windows in a row (4% of the run each); it **trains** if it "
      "did not diverge and its final test accuracy is at least chance + {}·(best − chance), where best is the "
      "best final accuracy of any run of that network and optimizer; an arm trains at a learning rate if a "
      "majority of its seeds do.",
      cfg.train_fraction));

  std::vector<std::vector<std::string>> verdict_rows;
  Figure acc_fig{"lr_sweep_accuracy",
                 fmt::format("Final test accuracy against learning rate on {}", dataset_name(lab)),
                 1, 1, 900, 520, {}};
  for (const auto& model : cfg.models)
    for (const auto& opt : cfg.optimizers) {
      const auto lrs = lrs_of(model, opt);
      const std::string key = model + "/" + opt;
      Tolerance& t = tol[key];
      t.chance = chance;
      for (const auto& c : cells)
        if (c.model == model && c.optimizer == opt) t.best = std::max(t.best, score(c.result));
      t.threshold = chance + cfg.train_fraction * (t.best - chance);

      Panel panel;
      panel.title = fmt::format("{} + {}", model == "cnn" ? "CNN" : "MLP", opt == "adam" ? "Adam" : "SGD");
      panel.xlabel = "learning rate";
      panel.ylabel = "final test accuracy";
      panel.logx = true;
      panel.yrange = std::pair{0.0, 1.0};
      panel.key = "bottom left";
      panel.commands.push_back(fmt::format(
          "set arrow from graph 0, first {0} to graph 1, first {0} nohead dt 3 lc rgb '#888888'", t.threshold));
      panel.commands.push_back(fmt::format("set label 'trains above this line' at graph 0.02, first {} offset 0,0.6 "
                                           "font ',8' tc rgb '#666666'",
                                           t.threshold));
      std::vector<std::vector<std::string>> table_rows;
      Json& tj = sec["tolerance"][key];
      for (const auto& arm : arms) {
        Series mean{arm_title(arm), {}, {}, {}, "linespoints",
                    arm == "bn" ? "lw 2 pt 7 lc rgb '#1f77b4'" : "lw 2 pt 5 lc rgb '#d62728'"};
        Series seeds_pts{"", {}, {}, {}, "points", arm == "bn" ? "pt 6 lc rgb '#1f77b4'" : "pt 4 lc rgb '#d62728'"};
        Series range{"", {}, {}, {}, "band",
                     std::string("fs transparent solid 0.2 noborder lc rgb ") + (arm == "bn" ? "'#1f77b4'" : "'#d62728'")};
        Series div{arm_title(arm) + ": diverged", {}, {}, {}, "points",
                   arm == "bn" ? "pt 2 ps 1.6 lc rgb '#1f77b4'" : "pt 2 ps 1.6 lc rgb '#d62728'"};
        double largest = std::nan(""), smallest = std::nan(""), best_mean = 0;
        Json& arm_json = tj[arm];
        for (double lr : lrs) {
          const auto cs = cells_of(model, opt, arm, lr);
          std::size_t trains = 0, diverged = 0;
          double sum = 0, lo = INFINITY, hi = -INFINITY;
          for (const Cell* c : cs) {
            const double sc = score(c->result);
            sum += sc;
            lo = std::min(lo, sc);
            hi = std::max(hi, sc);
            diverged += c->result.diverged;
            trains += !c->result.diverged && sc >= t.threshold;
            if (!c->result.diverged) {
              seeds_pts.x.push_back(lr);
              seeds_pts.y.push_back(sc);
            }
          }
          const double m = cs.empty() ? std::nan("") : sum / static_cast<double>(cs.size());
          const bool ok = 2 * trains > cs.size();
          if (ok) {
            largest = lr;
            if (std::isnan(smallest)) smallest = lr;
          }
          best_mean = std::max(best_mean, m);
          if (diverged * 2 > cs.size()) {
            div.x.push_back(lr);
            div.y.push_back(arm == "bn" ? 0.015 : 0.035);  // apart, so both arms' crosses show
          } else {
            mean.x.push_back(lr);
            mean.y.push_back(m);
            range.x.push_back(lr);
            range.y.push_back(lo);
            range.y2.push_back(hi);
          }
          Json cell = Json::object();
          cell["lr"] = lr;
          cell["mean_final_accuracy"] = m;
          cell["seeds_training"] = trains;
          cell["seeds_diverged"] = diverged;
          cell["trains"] = ok;
          arm_json["by_lr"].push_back(cell);
        }
        if (seeds_of(model) > 1) {
          panel.series.push_back(range);
          panel.series.push_back(seeds_pts);
        }
        panel.series.push_back(mean);
        if (!div.x.empty()) panel.series.push_back(div);
        t.largest[arm] = largest;
        t.best_acc[arm] = best_mean;
        arm_json["largest_lr_that_trains"] = largest;
        arm_json["smallest_lr_that_trains"] = smallest;
        arm_json["best_mean_final_accuracy"] = best_mean;
      }
      tj["threshold_accuracy"] = t.threshold;
      acc_fig.panels.push_back(panel);

      auto lr_text = [](double v) { return std::isnan(v) ? std::string("none") : "lr " + short_number(v); };
      const double lp = t.largest["plain"], lb = t.largest["bn"];
      auto trains = [&](double v) {
        return std::isnan(v) ? std::string("it trains at none of the rates tried") : "up to " + lr_text(v);
      };
      std::string v = fmt::format("{} + {}: with BN {}; without, {}", model == "cnn" ? "CNN" : "MLP",
                                  opt == "adam" ? "Adam" : "SGD", std::isnan(lb) ? trains(lb) : "it trains " + trains(lb),
                                  trains(lp));
      if (!std::isnan(lb) && std::isnan(lp)) v += " — only the BN network trains";
      if (!std::isnan(lp) && !std::isnan(lb) && lb > lp) v += fmt::format(" — a {:g}x larger learning rate", lb / lp);
      else if (!std::isnan(lp) && !std::isnan(lb) && lb == lp) v += " — no difference in this range";
      else if (!std::isnan(lp) && !std::isnan(lb)) v += " — BN did NOT widen the range here";
      v += fmt::format(" (best accuracy {} with BN, {} without).", percent(t.best_acc["bn"]), percent(t.best_acc["plain"]));
      lab.verdict(v);
      tj["verdict"] = v;
      verdict_rows.push_back({model == "cnn" ? "CNN" : "MLP", opt == "adam" ? "Adam" : "SGD", lr_text(lp), lr_text(lb),
                              percent(t.best_acc["plain"]), percent(t.best_acc["bn"])});
    }
  if (acc_fig.panels.size() > 1) {
    acc_fig.cols = 2;
    acc_fig.rows = static_cast<int>((acc_fig.panels.size() + 1) / 2);
    acc_fig.width = 1200;
    acc_fig.height = 480 * acc_fig.rows;
  }

  rep.h3("Largest learning rate that still trains");
  rep.table({"network", "optimizer", "without BN", "with BN", "best acc. without", "best acc. with"}, verdict_rows);
  rep.image("accuracy against learning rate", lab.plot(acc_fig));
  rep.para("Lines: mean final test accuracy over seeds, shaded: min–max over seeds (open markers: single seeds); crosses at the bottom: "
           "learning rates at which most seeds diverged; dotted line: the \"trains\" threshold.");

  // ---- loss curves: one panel per (model, arm), one curve per learning rate (seed 0) -------------------------
  Figure loss_fig{"lr_sweep_loss",
                  fmt::format("Training loss per learning rate on {} (seed {}, first optimizer)",
                              dataset_name(lab), lab.run_seed(0)),
                  0, 2, 1200, 0, {}};
  const std::string opt0 = cfg.optimizers.front();
  for (const auto& model : cfg.models)
    for (const auto& arm : arms) {
      Panel p;
      p.title = fmt::format("{} {}", model == "cnn" ? "CNN" : "MLP", arm_title(arm));
      p.xlabel = "step";
      p.ylabel = "training loss";
      p.logy = true;
      p.yrange = std::pair{0.1, 30.0};
      p.key = "top right";
      for (double lr : lrs_of(model, opt0))
        for (const Cell* c : cells_of(model, opt0, arm, lr))
          if (c->seed == 0) {
            Series s{"lr " + short_number(lr) + (c->result.diverged ? " (diverged)" : ""), c->result.log_steps,
                     c->result.train_loss, {}, "lines", "lw 1.5"};
            p.series.push_back(s);
          }
      loss_fig.panels.push_back(p);
    }
  loss_fig.rows = static_cast<int>(cfg.models.size());
  loss_fig.height = 420 * loss_fig.rows;
  rep.image("training loss curves", lab.plot(loss_fig));

  // ---- per-cell table -----------------------------------------------------------------------------------------
  rep.h3("Every learning rate");
  std::vector<std::vector<std::string>> rows;
  for (const auto& model : cfg.models)
    for (const auto& opt : cfg.optimizers)
      for (double lr : lrs_of(model, opt)) {
        std::vector<std::string> row{model, opt, short_number(lr)};
        for (const auto& arm : arms) {
          std::string text;
          for (const Cell* c : cells_of(model, opt, arm, lr)) {
            if (!text.empty()) text += ", ";
            text += c->result.diverged ? fmt::format("diverged@{}", c->result.diverged_at)
                                       : percent(c->result.final_accuracy);
          }
          row.push_back(text);
        }
        rows.push_back(row);
      }
  rep.table({"network", "optimizer", "lr", "final test accuracy without BN (per seed)", "with BN (per seed)"}, rows);

  // ---- summary.json: every run ----------------------------------------------------------------------------
  for (const auto& c : cells) {
    Json j = Json::object();
    j["model"] = c.model;
    j["optimizer"] = c.optimizer;
    j["arm"] = c.arm;
    j["lr"] = c.lr;
    j["seed"] = lab.run_seed(c.seed);
    j["status"] = c.result.diverged ? "diverged"
                  : score(c.result) >= tol[c.model + "/" + c.optimizer].threshold ? "trains"
                                                                                  : "stalled";
    j["final_test_accuracy"] = c.result.final_accuracy;
    j["best_test_accuracy"] = c.result.best_accuracy;
    j["final_train_loss"] = c.result.final_train_loss;
    if (c.result.diverged) {
      j["diverged_at_step"] = c.result.diverged_at;
      j["diverged_why"] = c.result.diverged_why;
    }
    j["seconds"] = c.result.seconds;
    sec["runs"].push_back(j);
  }
}

}  // namespace lab
