// convergence.cpp — Ioffe & Szegedy 2015, Figure 1, on Fashion-MNIST.
//
// The paper: MLP with 3 hidden layers of 100 sigmoid units, "weights initialized to small random Gaussian
// values", cross-entropy, 50,000 steps of 60 examples; BN on each hidden layer's Wu with the bias dropped.
// (a) test accuracy against training steps; (b, c) "the evolution of input distributions to a typical sigmoid,
// over the course of training, shown as {15, 50, 85}th percentiles" for one unit of the last hidden layer.
// Not stated there and chosen here: plain SGD at lr 0.5 (as a TensorFlow reproduction that matched the
// paper's numbers), init N(0, 0.1²), grayscale inputs in [0, 1] (the paper binarised MNIST).
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "cells.h"
#include "why_bn.h"

namespace lab {

ConvergenceConfig convergence_config(const Lab& lab) {
  ConvergenceConfig c;
  if (lab.tiny()) {
    c.steps = 100;
    c.evals = 2;
    c.eval_samples = 300;
    c.train_samples = 2000;
    c.probe_samples = 100;
  } else if (lab.quick()) {
    c.steps = 1000;
    c.evals = 10;
    c.eval_samples = 2000;
    c.train_samples = 20000;
    c.probe_samples = 500;
  } else if (lab.full()) {
    c.steps = 50000;  // the paper's budget
    c.seeds = 3;
  }
  if (lab.tiny()) c.seeds = 1;
  c.seeds = lab.seeds(c.seeds);
  return c;
}

namespace {

struct Trace {
  std::vector<double> steps, p15, p50, p85;
};

// First step at which `acc` reaches `target` (NaN if never).
double first_reaching(const RunResult& r, double target) {
  for (std::size_t i = 0; i < r.eval_steps.size(); ++i)
    if (r.eval_accuracy[i] >= target) return r.eval_steps[i];
  return std::nan("");
}

}  // namespace

void run_convergence(Lab& lab, const ConvergenceConfig& cfg) {
  const std::string ex = "convergence";
  xg::data::Dataset train_store, eval_store;
  const auto& train = first_samples(lab.train_set(), cfg.train_samples, train_store);
  const auto& eval_set = first_samples(lab.test_set(), cfg.eval_samples, eval_store);
  lab.used_samples(train.size(), eval_set.size());
  const xg::data::Dataset probe = lab.test_set().head(cfg.probe_samples);  // fixed images for the percentiles
  const std::vector<std::string> arms{"plain", "bn"};
  const std::size_t probe_every = std::max<std::size_t>(1, cfg.steps / 100);

  if (lab.full())
    fmt::print(stderr, "convergence --full: {} steps (about {} at ~2,000 steps/s)\n", cfg.steps * arms.size() * cfg.seeds,
               format_duration(static_cast<double>(cfg.steps * arms.size() * cfg.seeds) / 2000.0));
  Progress progress("convergence", cfg.steps * arms.size() * cfg.seeds);
  std::vector<std::vector<RunResult>> results(arms.size());  // arm -> seed
  CellRunner runner(lab, ex, &progress);                                // every (arm, seed) run is a cell (cells.h)
  for (std::size_t k = 0; k < arms.size(); ++k) {
    const std::string& arm = arms[k];
    for (std::size_t seed = 0; seed < cfg.seeds; ++seed) {
      RunSpec spec;
      spec.experiment = ex;
      spec.model = "mlp-sigmoid";
      spec.arm = arm;
      spec.net.kind = "mlp";
      spec.net.activation = "sigmoid";
      spec.net.batchnorm = arm == "bn";
      spec.net.init_std = cfg.init_std;
      spec.lr = cfg.lr;
      spec.seed_index = seed;
      spec.steps = cfg.steps;
      spec.batch_size = cfg.batch_size;
      spec.log_every = std::max<std::size_t>(1, cfg.steps / 100);
      spec.eval_every = std::max<std::size_t>(1, cfg.steps / std::max<std::size_t>(cfg.evals, 1));
      spec.train_set = &train;
      spec.eval_set = &eval_set;

      // Every probe_every steps: the 15/50/85th percentiles of the traced unit's sigmoid input over the probe
      // images, read by a forward hook on the module feeding the last sigmoid. The probe runs the network as
      // training does (BN normalises with the statistics of the probe batch) but changes nothing: no graph,
      // and BN's running statistics are not updated.
      Trace trace;  // this run's percentiles, kept with its cell (RunResult::series)
      const auto run_seed = static_cast<std::int64_t>(lab.run_seed(seed));
      auto probe_hook = [&](Net& net, std::size_t step) {
        if (step % probe_every != 0) return;
        xg::Tensor captured;
        auto handle = net.last_preactivation->register_forward_hook(
            [&](xg::nn::Module&, const xg::Tensor&, const xg::Tensor& out) { captured = out; });
        {
          xg::nn::NoStatsUpdateGuard keep_running_stats;
          xg::NoGradGuard no_grad;
          net.model->forward(probe.images);
        }
        handle.remove();
        const auto p = percentiles(unit_values(captured, cfg.unit), {15, 50, 85});
        trace.steps.push_back(static_cast<double>(step));
        trace.p15.push_back(p[0]);
        trace.p50.push_back(p[1]);
        trace.p85.push_back(p[2]);
        for (int q = 0; q < 3; ++q)
          lab.metric(ex, spec.model, spec.optimizer, arm, spec.lr, run_seed, static_cast<std::int64_t>(step),
                     q == 0 ? "p15" : q == 1 ? "p50" : "p85", p[static_cast<std::size_t>(q)]);
      };
      results[k].push_back(runner.run(spec, [&] {
        RunResult r = train_run(lab, spec, progress, probe_hook);
        r.series = {{"probe_step", trace.steps}, {"p15", trace.p15}, {"p50", trace.p50}, {"p85", trace.p85}};
        return r;
      }));
    }
  }
  progress.finish();
  if (!runner.gather([&](std::size_t i, RunResult r) { results[i / cfg.seeds][i % cfg.seeds] = std::move(r); }))
    return;  // not rank 0
  std::vector<Trace> traces;  // arm -> the first seed's percentiles
  for (const auto& arm_runs : results) {
    const auto& s = arm_runs.front().series;
    traces.push_back({s.at("probe_step"), s.at("p15"), s.at("p50"), s.at("p85")});
  }
  auto finals = [&](std::size_t k) {
    std::vector<double> v;
    for (const auto& r : results[k]) v.push_back(r.diverged ? std::nan("") : r.final_accuracy);
    return v;
  };
  const Spread fp = spread(finals(0)), fb = spread(finals(1));
  auto pm = [](const Spread& s) { return fmt::format("{} ({}–{})", percent(s.mean), percent(s.min), percent(s.max)); };

  // ---- verdict ----------------------------------------------------------------------------------------------
  std::string verdict;
  bool any_diverged = false;
  for (const auto& arm_runs : results)
    for (const auto& r : arm_runs) any_diverged = any_diverged || r.diverged;
  if (any_diverged) {
    verdict = fmt::format("Convergence (Ioffe & Szegedy Fig. 1): a run diverged at lr {}; see the section below.",
                          short_number(cfg.lr));
  } else {
    // When does each BN seed reach the plain network's mean final accuracy, and each plain seed?
    const double target = fp.mean;
    std::vector<double> sb, sp;
    for (const auto& r : results[1]) sb.push_back(first_reaching(r, target));
    for (const auto& r : results[0]) sp.push_back(first_reaching(r, target));
    const Spread rb = spread(sb), rp = spread(sp);
    verdict = fmt::format(
        "Convergence (Ioffe & Szegedy Fig. 1): after {} steps the test accuracy is {} with BN and {} without "
        "(mean, min–max over {} seed(s))",
        cfg.steps, pm(fb), pm(fp), cfg.seeds);
    const bool all_bn_reach = rb.n == sb.size();
    if (all_bn_reach && (rp.n < sp.size() || rb.max < rp.min))
      verdict += fmt::format("; every BN seed reached the plain network's mean final accuracy by step {} (every "
                             "plain seed only at step {} or later: {:.1f}x fewer steps)",
                             static_cast<long>(rb.max), static_cast<long>(rp.n ? rp.min : cfg.steps),
                             (rp.n ? rp.min : static_cast<double>(cfg.steps)) / std::max(rb.max, 1.0));
    else
      verdict += "; BN did NOT reach the plain network's final accuracy sooner on every seed";
    verdict += fb.min > fp.max ? "; every BN seed ends above every plain seed." : "; the seeds' final accuracies overlap.";
  }
  // Distribution drift of the traced sigmoid input after the first 10% of training.
  auto drift = [&](const Trace& t, const std::vector<double>& v) {
    double lo = INFINITY, hi = -INFINITY;
    for (std::size_t i = 0; i < v.size(); ++i)
      if (t.steps[i] >= 0.1 * static_cast<double>(cfg.steps) && std::isfinite(v[i])) {
        lo = std::min(lo, v[i]);
        hi = std::max(hi, v[i]);
      }
    return hi - lo;
  };
  auto spread = [](const Trace& t, std::size_t i) { return t.p85[i] - t.p15[i]; };
  const double dp = drift(traces[0], traces[0].p50), db = drift(traces[1], traces[1].p50);
  std::string stability = fmt::format(
      "The traced sigmoid input (unit {} of the last hidden layer): after the first 10% of training its median "
      "moved over a range of {:.2f} without BN and {:.2f} with BN; its 15–85th percentile spread went from "
      "{:.2f} to {:.2f} without BN and from {:.2f} to {:.2f} with BN.",
      cfg.unit, dp, db, spread(traces[0], 0), spread(traces[0], traces[0].steps.size() - 1), spread(traces[1], 0),
      spread(traces[1], traces[1].steps.size() - 1));
  lab.verdict(verdict + " " + stability);

  // ---- figure: (a) accuracy, (b) plain percentiles, (c) BN percentiles ------------------------------------
  Figure fig{"convergence",
             fmt::format("Ioffe & Szegedy Figure 1 on {}: MLP 784-100-100-100-10 sigmoid, batch 60 (accuracy: mean and "
                         "min–max over {} seed(s); percentiles: seed {})",
                         dataset_name(lab), cfg.seeds, lab.run_seed(0)),
             1, 3, 1500, 460, {}};
  Panel a;
  a.title = "(a) test accuracy";
  a.yrange = std::pair{0.0, 1.0};
  a.xlabel = "training step";
  a.ylabel = "test accuracy";
  a.key = "bottom right";
  for (std::size_t k = 0; k < arms.size(); ++k) {
    std::vector<std::vector<double>> ys;
    for (const auto& r : results[k]) ys.push_back(r.eval_accuracy);
    for (auto& ser : band_series(band(results[k][0].eval_steps, ys), k == 0 ? "without BN" : "with BN",
                                 k == 0 ? "'#d62728'" : "'#1f77b4'"))
      a.series.push_back(ser);
  }
  fig.panels.push_back(a);
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& t : traces)
    for (std::size_t i = 0; i < t.steps.size(); ++i) {
      if (std::isfinite(t.p15[i])) lo = std::min(lo, t.p15[i]);
      if (std::isfinite(t.p85[i])) hi = std::max(hi, t.p85[i]);
    }
  for (std::size_t k = 0; k < 2; ++k) {
    const Trace& t = traces[k];
    Panel p;
    p.title = k == 0 ? "(b) without BN: sigmoid input, 15/50/85th pct." : "(c) with BN: sigmoid input, 15/50/85th pct.";
    p.xlabel = "training step";
    p.ylabel = "input to the sigmoid";
    p.key = "top right";
    if (std::isfinite(lo) && hi > lo) p.yrange = std::pair{lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)};
    const std::string color = k == 0 ? "'#d62728'" : "'#1f77b4'";
    p.series.push_back({"15–85th", t.steps, t.p15, t.p85, "band", "lc rgb " + color});
    p.series.push_back({"median", t.steps, t.p50, {}, "lines", "lw 2 lc rgb " + color});
    p.series.push_back({"", t.steps, t.p15, {}, "lines", "lw 1 lc rgb " + color});
    p.series.push_back({"", t.steps, t.p85, {}, "lines", "lw 1 lc rgb " + color});
    fig.panels.push_back(p);
  }

  Report& rep = lab.report(ex, "Convergence and the distribution of a sigmoid's input (`convergence`)");
  rep.para(fmt::format(
      "Ioffe & Szegedy's Figure 1: MLP 784-100-100-100-10 with sigmoid, weights N(0, {}²), plain SGD lr {}, "
      "batch {}, {} steps (the paper: 50,000 on binarised MNIST), with and without BatchNorm (BN on Wu, bias "
      "dropped). Test accuracy on {} test images every {} steps; the percentiles are those of unit {} of the last "
      "hidden layer's sigmoid input over {} fixed test images, every {} steps, computed as in training (for the "
      "BN arm that is γ·x̂+β with the probe batch's statistics) without updating anything. Data {}, {} training "
      "images; seeds {} (accuracy: mean line, min–max band; percentiles: the first seed).",
      short_number(cfg.init_std), short_number(cfg.lr), cfg.batch_size, cfg.steps, eval_set.size(),
      std::max<std::size_t>(1, cfg.steps / std::max<std::size_t>(cfg.evals, 1)), cfg.unit, probe.size(),
      probe_every, lab.options().data, train.size(), [&] {
        std::string s;
        for (std::size_t k = 0; k < cfg.seeds; ++k) s += (s.empty() ? "" : ", ") + std::to_string(lab.run_seed(k));
        return s;
      }()));
  rep.para("**" + verdict + "** " + stability);
  rep.image("test accuracy and sigmoid-input percentiles", lab.plot(fig));
  rep.para("What the paper shows: (a) the BN network trains faster and reaches higher accuracy; (b) without BN "
           "the input distribution of a sigmoid drifts in mean and spread during training; (c) with BN it is "
           "much more stable.");

  Json& sec = lab.section(ex);
  Json& conf = sec["config"];
  conf["steps"] = cfg.steps;
  conf["batch_size"] = cfg.batch_size;
  conf["lr"] = cfg.lr;
  conf["init_std"] = cfg.init_std;
  conf["train_samples"] = train.size();
  conf["eval_samples"] = eval_set.size();
  conf["probe_samples"] = probe.size();
  conf["unit"] = cfg.unit;
  conf["seeds"] = cfg.seeds;
  for (std::size_t k = 0; k < 2; ++k) {
    Json& j = sec["arms"][arms[k]];
    for (const auto& r : results[k]) {
      j["final_test_accuracy"].push_back(r.final_accuracy);
      j["best_test_accuracy"].push_back(r.best_accuracy);
      j["diverged"].push_back(r.diverged);
      j["seconds"].push_back(r.seconds);
    }
    j["median_drift_after_10pct"] = k == 0 ? dp : db;  // the first seed's
  }
  sec["verdict"] = verdict;
}

}  // namespace lab
