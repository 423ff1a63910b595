// noisy_bn.cpp — Santurkar, Tsipras, Ilyas & Madry 2018, Figure 2: "does BatchNorm work by reducing internal
// covariate shift?"
//
// Four versions of one network: standard; standard + BatchNorm; BatchNorm followed by time-varying noise
// (Algorithm 1: every step each unit's activations get a new random scale and offset, so the distribution the
// next layer sees keeps moving — "complete distributional instability"); and the standard network with the same
// noise. The paper's finding: noisy BN "nearly matches" BN, while the same noise "prevents [the standard
// network] from training entirely". So BN's benefit does not come from stable layer-input distributions.
// The paper used VGG on CIFAR-10, SGD lr 0.1, batch 128; here the MLP (or --model cnn) on Fashion-MNIST.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "cells.h"
#include "why_bn.h"

namespace lab {

NoisyBnConfig noisy_bn_config(const Lab& lab) {
  NoisyBnConfig c;
  if (lab.tiny()) {
    c.steps = 60;
    c.batch_size = 32;
    c.evals = 2;
    c.eval_samples = 300;
    c.train_samples = 2000;
    c.probe_samples = 100;
    c.snapshots = 3;
  } else if (lab.quick()) {
    c.steps = 400;
    c.evals = 5;
    c.eval_samples = 2000;
    c.train_samples = 20000;
    c.probe_samples = 500;
    c.snapshots = 4;
  } else if (lab.full()) {
    c.seeds = 3;
    c.steps = 15000;  // the paper's VGG budget
    c.evals = 30;
  }
  if (lab.tiny()) c.seeds = 1;
  c.seeds = lab.seeds(c.seeds);
  return c;
}

namespace {

struct Arm {
  std::string key, title, color;
  bool bn, noise;
};

// Histogram of `v` over [lo, hi] in `bins` bins, as (bin centres, densities).
std::pair<std::vector<double>, std::vector<double>> histogram(const std::vector<double>& v, double lo, double hi,
                                                               std::size_t bins) {
  std::vector<double> x(bins), y(bins, 0.0);
  const double w = (hi - lo) / static_cast<double>(bins);
  for (std::size_t b = 0; b < bins; ++b) x[b] = lo + (static_cast<double>(b) + 0.5) * w;
  std::size_t n = 0;
  for (double e : v) {
    if (!std::isfinite(e) || e < lo || e > hi) continue;
    auto b = static_cast<std::size_t>((e - lo) / w);
    y[std::min(b, bins - 1)] += 1;
    ++n;
  }
  for (auto& c : y) c = n ? c / (static_cast<double>(v.size()) * w) : 0.0;
  return {x, y};
}

}  // namespace

void run_noisy_bn(Lab& lab, const NoisyBnConfig& cfg) {
  const std::string ex = "noisy-bn";
  xg::data::Dataset train_store, eval_store;
  const auto& train = first_samples(lab.train_set(), cfg.train_samples, train_store);
  const auto& eval_set = first_samples(lab.test_set(), cfg.eval_samples, eval_store);
  lab.used_samples(train.size(), eval_set.size());
  const xg::data::Dataset probe = train.head(cfg.probe_samples);
  const std::vector<Arm> arms{{"standard", "Standard", "'#d62728'", false, false},
                              {"bn", "Standard + BatchNorm", "'#1f77b4'", true, false},
                              {"bn+noise", "Standard + \"noisy\" BatchNorm", "'#2ca02c'", true, true},
                              {"standard+noise", "Standard + noise", "'#ff7f0e'", false, true}};
  // Snapshot steps for the histograms: evenly spread, the first after a little training.
  std::vector<std::size_t> snap_steps;
  for (std::size_t k = 0; k < cfg.snapshots; ++k)
    snap_steps.push_back(std::max<std::size_t>(1, (k + 1) * cfg.steps / cfg.snapshots));

  if (lab.full())
    fmt::print(stderr, "noisy-bn --full: {} steps (about {} at ~400 steps/s)\n", cfg.steps * arms.size() * cfg.seeds,
               format_duration(static_cast<double>(cfg.steps * arms.size() * cfg.seeds) / 400.0));
  Progress progress("noisy-bn", cfg.steps * arms.size() * cfg.seeds);
  std::vector<std::vector<RunResult>> results(arms.size());          // arm -> seed
  CellRunner runner(lab, ex, &progress);  // every (arm, seed) run is a cell (cells.h)
  for (std::size_t a = 0; a < arms.size(); ++a)
    for (std::size_t seed = 0; seed < cfg.seeds; ++seed) {
      const Arm& arm = arms[a];
      RunSpec spec;
      spec.experiment = ex;
      spec.model = cfg.model;
      spec.arm = arm.key;
      spec.net.kind = cfg.model;
      spec.net.hidden.assign(cfg.depth, 100);
      spec.net.batchnorm = arm.bn;
      spec.net.noise = arm.noise;
      spec.net.noise_options = cfg.noise;
      spec.net.kaiming = cfg.init == "kaiming";
      spec.lr = cfg.lr;
      spec.seed_index = seed;
      spec.steps = cfg.steps;
      spec.batch_size = cfg.batch_size;
      spec.log_every = std::max<std::size_t>(1, cfg.steps / 50);
      spec.eval_every = std::max<std::size_t>(1, cfg.steps / std::max<std::size_t>(cfg.evals, 1));
      spec.train_set = &train;
      spec.eval_set = &eval_set;
      // At the snapshot steps (first seed): the traced unit's activation input (after BN and noise, as the next
      // layer sees it in training) over fixed training images — in training mode, so BN uses batch statistics
      // and the noise is applied, but without updating BN's running statistics and without a graph.
      std::vector<std::vector<double>> run_snaps;  // snapshot -> values (first seed only)
      auto hook = [&](Net& net, std::size_t step) {
        if (seed != 0 || std::find(snap_steps.begin(), snap_steps.end(), step) == snap_steps.end()) return;
        xg::Tensor captured;
        auto handle = net.last_preactivation->register_forward_hook(
            [&](xg::nn::Module&, const xg::Tensor&, const xg::Tensor& out) { captured = out; });
        {
          xg::nn::NoStatsUpdateGuard keep_running_stats;
          xg::NoGradGuard no_grad;
          net.model->forward(probe.images);
        }
        handle.remove();
        run_snaps.push_back(unit_values(captured, cfg.unit));
      };
      RunResult r = runner.run(spec, [&] {
        RunResult run = train_run(lab, spec, progress, hook);
        for (std::size_t k = 0; k < run_snaps.size(); ++k) run.series[fmt::format("snapshot{}", k)] = run_snaps[k];
        return run;
      });
      if (r.diverged)
        progress.note(fmt::format("  {} seed {}: diverged at step {} ({})", arm.title, lab.run_seed(seed),
                                  r.diverged_at, r.diverged_why));
      results[a].push_back(std::move(r));
    }
  progress.finish();
  if (!runner.gather([&](std::size_t i, RunResult r) { results[i / cfg.seeds][i % cfg.seeds] = std::move(r); }))
    return;  // not rank 0
  std::vector<std::vector<std::vector<double>>> snaps(arms.size());  // arm -> snapshot -> values (first seed)
  for (std::size_t a = 0; a < arms.size(); ++a) {
    const auto& series = results[a].front().series;
    for (std::size_t k = 0; series.count(fmt::format("snapshot{}", k)); ++k)
      snaps[a].push_back(series.at(fmt::format("snapshot{}", k)));
  }

  // Final accuracy per arm over seeds (a diverged run counts as 0).
  auto finals = [&](std::size_t a) {
    std::vector<double> v;
    for (const auto& r : results[a]) v.push_back(r.diverged ? 0.0 : r.final_accuracy);
    return v;
  };
  const Spread sd = spread(finals(0)), sb = spread(finals(1)), sn = spread(finals(2)), ss = spread(finals(3));
  const double chance = 1.0 / static_cast<double>(train.num_classes());
  auto pm = [](const Spread& s) { return fmt::format("{} ({}–{})", percent(s.mean), percent(s.min), percent(s.max)); };
  std::string verdict = fmt::format(
      "Noisy BatchNorm (Santurkar et al. Fig. 2): final test accuracy, mean (min–max over {} seed(s)) — standard {}, "
      "BN {}, BN + noise {}, standard + noise {}.",
      cfg.seeds, pm(sd), pm(sb), pm(sn), pm(ss));
  // Does the baseline train? Every seed at least halfway from chance to BN's mean.
  const bool std_trains = sd.min >= chance + 0.5 * (sb.mean - chance);
  verdict += std_trains ? " The standard network trains (every seed)."
                        : " The standard network does NOT train on every seed, so the comparison is weak.";
  const double gap = sb.mean - sn.mean;
  verdict += gap <= 0.03 ? fmt::format(" Noisy BN nearly matches BN ({:+.1f} points)", -100 * gap)
                         : fmt::format(" Noisy BN falls {:.1f} points short of BN", 100 * gap);
  if (ss.max < chance + 0.25 * (sd.mean - chance))
    verdict += "; the same noise stops the standard network from training (every seed)";
  else if (ss.max < sd.min)
    verdict += fmt::format("; the same noise costs the standard network {:.1f} points (every seed below every "
                           "noise-free seed)",
                           100 * (sd.mean - ss.mean));
  else
    verdict += "; the same noise does NOT consistently hurt the standard network here";
  verdict += ".";
  // How unstable is the traced unit's distribution across snapshots? (std of its mean over time)
  auto instability = [&](std::size_t a) {
    std::vector<double> means;
    for (const auto& v : snaps[a]) {
      double s = 0;
      for (double e : v) s += e;
      means.push_back(v.empty() ? 0.0 : s / static_cast<double>(v.size()));
    }
    double m = 0, q = 0;
    for (double e : means) m += e / static_cast<double>(means.size());
    for (double e : means) q += (e - m) * (e - m) / static_cast<double>(means.size());
    return std::sqrt(q);
  };
  const std::string stability = fmt::format(
      "Across the {} snapshots the traced unit's mean moves with a standard deviation of {:.2f} with BN and "
      "{:.2f} with noisy BN.",
      cfg.snapshots, instability(1), instability(2));
  lab.verdict(verdict + " " + stability);

  // ---- figures ----------------------------------------------------------------------------------------------
  Figure curves{"noisy_bn_accuracy",
                fmt::format("Santurkar et al. Figure 2 on {}: accuracy (mean and min–max over {} seed(s))",
                            dataset_name(lab), cfg.seeds),
                1, 2, 1300, 480, {}};
  for (int which = 0; which < 2; ++which) {
    Panel p;
    p.title = which == 0 ? "training accuracy (mean over the last steps)" : "test accuracy";
    p.xlabel = "training step";
    p.ylabel = which == 0 ? "training accuracy" : "test accuracy";
    p.yrange = std::pair{0.0, 1.0};
    p.key = "bottom right";
    for (std::size_t a = 0; a < arms.size(); ++a) {
      std::vector<std::vector<double>> ys;
      bool diverged = false;
      for (const auto& r : results[a]) {
        ys.push_back(which == 0 ? r.train_accuracy : r.eval_accuracy);
        diverged = diverged || r.diverged;
      }
      const auto& x = which == 0 ? results[a][0].log_steps : results[a][0].eval_steps;
      for (auto& ser : band_series(band(x, ys), arms[a].title + (diverged ? " (a seed diverged)" : ""), arms[a].color))
        p.series.push_back(ser);
    }
    curves.panels.push_back(p);
  }
  Figure hist{"noisy_bn_histograms",
              fmt::format("Distribution of unit {} of the last hidden layer's activation input over training ({}, seed {})",
                          cfg.unit, dataset_name(lab), lab.run_seed(0)),
              2, 2, 1200, 860, {}};
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& arm_snaps : snaps)
    for (const auto& v : arm_snaps) {
      auto p = percentiles(v, {1, 99});
      if (std::isfinite(p[0])) lo = std::min(lo, p[0]);
      if (std::isfinite(p[1])) hi = std::max(hi, p[1]);
    }
  if (!(hi > lo)) { lo = -1; hi = 1; }
  const double pad = 0.1 * (hi - lo);
  for (std::size_t a = 0; a < arms.size(); ++a) {
    Panel p;
    p.title = arms[a].title;
    p.xlabel = "activation input (after BN and noise)";
    p.ylabel = "density";
    p.xrange = std::pair{lo - pad, hi + pad};
    p.key = "top right";
    for (std::size_t k = 0; k < snaps[a].size(); ++k) {
      auto [x, y] = histogram(snaps[a][k], lo - pad, hi + pad, 40);
      // Early snapshots light, late ones dark.
      const int shade = static_cast<int>(200 - 170 * static_cast<double>(k + 1) / static_cast<double>(snaps[a].size()));
      p.series.push_back({fmt::format("step {}", snap_steps[k]), x, y, {}, "steps",
                          fmt::format("lw 2 lc rgb '#{:02x}{:02x}{:02x}'", shade, shade, 255)});
    }
    hist.panels.push_back(p);
  }

  Report& rep = lab.report(ex, "Is it the distributional stability? Noisy BatchNorm (`noisy-bn`)");
  rep.para(fmt::format(
      "Santurkar et al.'s Figure 2 with {}: standard, + BatchNorm, + BatchNorm followed by time-varying noise, "
      "and standard + the same noise (Algorithm 1: per step and unit μ ~ U(−{}, {}), σ ~ U(1, {}); per sample "
      "m ~ U(μ − {}, μ + {}), s ~ N(σ, {}); a ← s·a + m, in training only). {} initialisation, plain SGD lr {}, "
      "batch {}, {} steps, seeds {}, {} training images of {}, test accuracy on {} test images; curves: mean and "
      "min–max over the seeds. The paper: VGG on CIFAR-10, lr 0.1, batch 128.",
      cfg.model == "cnn" ? std::string("the small CNN")
                         : fmt::format("an MLP with {} hidden layers of 100 ReLU units", cfg.depth), short_number(cfg.noise.n_mu),
      short_number(cfg.noise.n_mu), short_number(cfg.noise.n_sigma), short_number(cfg.noise.r_mu),
      short_number(cfg.noise.r_mu), short_number(cfg.noise.r_sigma),
      cfg.init == "kaiming" ? "He (Kaiming-normal, N(0, 2/fan_in))" : "PyTorch's default", short_number(cfg.lr),
      cfg.batch_size, cfg.steps,
      [&] {
        std::string s;
        for (std::size_t k = 0; k < cfg.seeds; ++k) s += (s.empty() ? "" : ", ") + std::to_string(lab.run_seed(k));
        return s;
      }(),
      train.size(), lab.options().data, eval_set.size()));
  rep.para("**" + verdict + "** " + stability);
  rep.image("accuracy of the four networks", lab.plot(curves));
  rep.image("activation histograms", lab.plot(hist));
  rep.para(fmt::format(
      "Histograms: the input of the last hidden layer's activation (unit {}) over {} fixed training images at {} "
      "points in training (seed {}), computed in training mode (batch statistics, noise on) without updating BN's "
      "running statistics. The paper's point: with noisy BN these distributions keep moving, yet the network "
      "trains about as well as with BN.",
      cfg.unit, probe.size(), cfg.snapshots, lab.run_seed(0)));

  Json& sec = lab.section(ex);
  Json& conf = sec["config"];
  conf["model"] = cfg.model;
  conf["depth"] = cfg.depth;
  conf["init"] = cfg.init;
  conf["seeds"] = cfg.seeds;
  conf["steps"] = cfg.steps;
  conf["batch_size"] = cfg.batch_size;
  conf["lr"] = cfg.lr;
  conf["n_mu"] = cfg.noise.n_mu;
  conf["n_sigma"] = cfg.noise.n_sigma;
  conf["r_mu"] = cfg.noise.r_mu;
  conf["r_sigma"] = cfg.noise.r_sigma;
  conf["train_samples"] = train.size();
  conf["eval_samples"] = eval_set.size();
  for (std::size_t a = 0; a < arms.size(); ++a) {
    Json& j = sec["arms"][arms[a].key];
    for (const auto& r : results[a]) {
      j["final_test_accuracy"].push_back(r.final_accuracy);
      j["best_test_accuracy"].push_back(r.best_accuracy);
      j["diverged"].push_back(r.diverged);
      j["seconds"].push_back(r.seconds);
    }
  }
  sec["verdict"] = verdict;
}

}  // namespace lab
