// dln.cpp — Santurkar et al.'s 25-layer deep linear network on synthetic Gaussian data (Appendix A.1: minimise
// ‖W_k…W_1·x − A·x‖² with k = 25 square 10×10 layers, A 10×10 i.i.d. Gaussian, 1,000 Gaussian inputs, full-batch
// gradient descent, lr 1e-6, 10,000 steps, Glorot initialisation), without and with BatchNorm after every
// layer but the last; ICS (Definition 2.1) and landscape probes along the way with η in [1/100, 30] × lr.
// No dataset is read: the data are made in-process from the run's seed.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "cells.h"
#include "why_bn.h"

namespace lab {

DlnConfig dln_config(const Lab& lab) {
  DlnConfig c;
  if (lab.tiny()) {
    c.seeds = 1;
    c.steps = 30;
    c.probes = 2;
    c.samples = 200;
    c.layers = 8;
  } else if (lab.quick()) {
    c.steps = 1000;
    c.probes = 5;
  } else if (lab.full()) {
    c.seeds = 3;
    c.probes = 50;
  }
  c.seeds = lab.seeds(c.seeds);
  return c;
}

namespace {

struct DlnTrace {
  std::vector<double> steps, loss;                 // loss every log step
  std::vector<double> beta, pred_max, loss_range;  // at the probe steps
  std::vector<double> ics_l2, ics_rel, ics_cos;    // at the probe steps, mean over layers 2..k
  bool diverged = false;
  std::size_t diverged_at = 0;
};

// A trace's series by name, as a cell carries them in RunResult::series (cells.h).
const std::vector<std::pair<const char*, std::vector<double> DlnTrace::*>> kTraceSeries{
    {"steps", &DlnTrace::steps},       {"loss", &DlnTrace::loss},
    {"beta", &DlnTrace::beta},         {"pred_max", &DlnTrace::pred_max},
    {"loss_range", &DlnTrace::loss_range}, {"ics_l2", &DlnTrace::ics_l2},
    {"ics_rel", &DlnTrace::ics_rel},   {"ics_cos", &DlnTrace::ics_cos}};

RunResult to_result(const DlnTrace& t) {
  RunResult r;
  r.diverged = t.diverged;
  r.diverged_at = t.diverged_at;
  for (const auto& [name, field] : kTraceSeries) r.series[name] = t.*field;
  return r;
}

DlnTrace to_trace(const RunResult& r) {
  DlnTrace t;
  t.diverged = r.diverged;
  t.diverged_at = r.diverged_at;
  for (const auto& [name, field] : kTraceSeries)
    if (const auto it = r.series.find(name); it != r.series.end()) t.*field = it->second;
  return t;
}

// One full-batch GD run.
DlnTrace run_one(Lab& lab, const DlnConfig& cfg, bool bn, std::size_t seed_index, Progress& progress) {
  namespace nn = xg::nn;
  const std::string ex = "dln", arm = bn ? "bn" : "standard";
  const std::uint64_t seed = lab.run_seed(seed_index);
  const auto run_seed = static_cast<std::int64_t>(seed);
  // The data (the same for both arms of a seed): A, X ~ N(0, 1), Y = X·Aᵀ.
  xg::Generator data_gen(seed_for(seed, "data"));
  const xg::Tensor A = xg::randn({cfg.width, cfg.width}, xg::kFloat32, &data_gen);
  const xg::Tensor X = xg::randn({cfg.samples, cfg.width}, xg::kFloat32, &data_gen);
  xg::Tensor Y;
  {
    xg::NoGradGuard g;
    Y = X.matmul(A.transpose(0, 1));
  }
  // The network: Linear(10, 10, no bias) ×k, Glorot-uniform, BN1d after each but the last in the BN arm.
  Net net;
  net.model = std::make_shared<nn::Sequential>();
  for (std::size_t l = 0; l < cfg.layers; ++l) {
    auto lin = std::make_shared<nn::Linear>(nn::LinearOptions(cfg.width, cfg.width).bias(false));
    xg::Generator g(seed_for(seed_for(seed, "init"), "layer", l));
    nn::init::xavier_uniform_(lin->weight, 1.0, &g);
    net.model->push_back(lin);
    if (bn && l + 1 < cfg.layers) net.model->push_back(std::make_shared<nn::BatchNorm1d>(nn::BatchNormOptions(cfg.width)));
  }
  auto loss_fn = [&] {
    xg::nn::NoStatsUpdateGuard keep;
    const xg::Tensor d = net.model->forward(X) - Y;
    return (d * d).sum();  // ‖f(X) − A·X‖² over the whole data set, as the paper writes it
  };
  const auto params = net.model->parameters();
  const auto layers = weight_layers(net);
  xg::optim::SGD opt(params, xg::optim::SGDOptions(cfg.lr));
  std::vector<double> etas;
  for (double m : cfg.step_multiples) etas.push_back(m * cfg.lr);
  const std::size_t probe_every = std::max<std::size_t>(1, cfg.steps / std::max<std::size_t>(cfg.probes, 1));
  const std::size_t log_every = std::max<std::size_t>(1, cfg.steps / 100);
  DlnTrace t;
  auto metric = [&](std::size_t step, const std::string& name, double v) {
    lab.metric(ex, "dln", "gd", arm, cfg.lr, run_seed, static_cast<std::int64_t>(step), name, v);
  };
  const std::string status = fmt::format("dln {} seed {}", arm, seed);
  for (std::size_t step = 1; step <= cfg.steps; ++step) {
    if (step == 1 || step % probe_every == 0) {
      const probes::Landscape ls = probes::probe_landscape(loss_fn, params, etas);
      double pmax = 0;
      for (double d : ls.grad_distances) pmax = std::max(pmax, d);
      const probes::Ics ics = probes::probe_ics(loss_fn, layers, cfg.lr);
      double l2 = 0, rel = 0, cs = 0;
      const double n = static_cast<double>(layers.size() - 1);
      for (std::size_t l = 1; l < layers.size(); ++l) {
        l2 += ics.distance[l] / n;
        rel += (ics.grad_norm[l] > 0 ? ics.distance[l] / ics.grad_norm[l] : std::nan("")) / n;
        cs += ics.cosine[l] / n;
      }
      t.beta.push_back(ls.beta);
      t.pred_max.push_back(pmax);
      t.loss_range.push_back(ls.loss_max - ls.loss_min);
      t.ics_l2.push_back(l2);
      t.ics_rel.push_back(rel);
      t.ics_cos.push_back(cs);
      metric(step, "beta_eff", ls.beta);
      metric(step, "grad_pred_max", pmax);
      metric(step, "loss_range", ls.loss_max - ls.loss_min);
      metric(step, "ics_l2_mean", l2);
      metric(step, "ics_cos_mean", cs);
    }
    opt.zero_grad();
    const xg::Tensor loss = loss_fn();
    const double lv = loss.item();
    if (!std::isfinite(lv)) {
      t.diverged = true;
      t.diverged_at = step;
      metric(step, "diverged", static_cast<double>(step));
      progress.advance(cfg.steps - step + 1, status + " diverged");
      break;
    }
    loss.backward();
    if (step == 1 || step % log_every == 0) {
      t.steps.push_back(static_cast<double>(step));
      t.loss.push_back(lv);
      metric(step, "train_loss", lv);
    }
    // The running statistics are not used by this experiment (no evaluation): update them as training would.
    opt.step();
    progress.advance(1, status);
  }
  return t;
}

}  // namespace

void run_dln(Lab& lab, const DlnConfig& cfg) {
  const std::string ex = "dln";
  const std::vector<std::string> arms{"standard", "bn"};
  if (lab.full())
    fmt::print(stderr, "dln --full: {} full-batch steps (about {} at ~1,500 steps/s)\n",
               cfg.steps * arms.size() * cfg.seeds,
               format_duration(static_cast<double>(cfg.steps * arms.size() * cfg.seeds) / 1500.0));
  Progress progress("dln", cfg.steps * arms.size() * cfg.seeds);
  // Every run (arm x seed) is a cell, spread over the MPI ranks and recorded for restarts (cells.h); its trace
  // travels in the cell's RunResult.
  CellRunner runner(lab, ex, &progress);
  std::vector<std::string> cell_arms;
  for (const auto& arm : arms)
    for (std::size_t s = 0; s < cfg.seeds; ++s) {
      const std::string what = fmt::format("arm={} seed_index={} layers={} width={} samples={} steps={} lr={}", arm,
                                           s, cfg.layers, cfg.width, cfg.samples, cfg.steps, cfg.lr);
      runner.run(what, cfg.steps, [&] {
        Timer timer;
        RunResult r = to_result(run_one(lab, cfg, arm == "bn", s, progress));
        r.seconds = timer.seconds();
        lab.add_timing(ex, r.seconds, r.diverged ? r.diverged_at : cfg.steps);
        return r;
      });
      cell_arms.push_back(arm);
    }
  progress.finish();
  std::map<std::string, std::vector<DlnTrace>> traces;  // arm -> [seed], in the loop's order
  if (!runner.gather([&](std::size_t i, RunResult r) { traces[cell_arms[i]].push_back(to_trace(r)); }))
    return;  // not rank 0

  auto per_seed = [&](const std::string& arm, std::vector<double> DlnTrace::*field) {
    std::vector<std::vector<double>> v;
    for (const auto& t : traces[arm]) v.push_back(t.*field);
    return v;
  };
  auto cmp = [&](std::vector<double> DlnTrace::*field, bool one_minus = false) {
    auto pts = [&](const std::string& arm) {
      std::vector<std::vector<double>> out;
      const auto ps = per_seed(arm, field);
      std::size_t n = ps.empty() ? 0 : ps[0].size();
      for (const auto& s : ps) n = std::min(n, s.size());
      for (std::size_t k = 0; k < n; ++k) {
        out.emplace_back();
        for (const auto& s : ps) out.back().push_back(one_minus ? 1.0 - s[k] : s[k]);
      }
      return out;
    };
    return compare_smaller(pts("bn"), pts("standard"));
  };
  const std::string where = "probe steps";
  const Comparison cb = cmp(&DlnTrace::beta), cp = cmp(&DlnTrace::pred_max), cr = cmp(&DlnTrace::ics_rel),
                   cc = cmp(&DlnTrace::ics_cos, true);
  std::vector<double> final_std, final_bn;
  for (const auto& t : traces["standard"]) final_std.push_back(t.diverged ? std::nan("") : t.loss.back());
  for (const auto& t : traces["bn"]) final_bn.push_back(t.diverged ? std::nan("") : t.loss.back());
  const Spread fs_ = spread(final_std), fb = spread(final_bn);
  const std::string v = fmt::format(
      "Deep linear network ({} layers {}×{}, full-batch GD lr {}, {} steps): final loss {:.4g} without BN "
      "(seeds {:.4g}–{:.4g}) and {:.4g} with BN ({:.4g}–{:.4g}); {}; {}; {}; {}.",
      cfg.layers, cfg.width, cfg.width, short_number(cfg.lr), cfg.steps, fs_.mean, fs_.min, fs_.max, fb.mean, fb.min,
      fb.max, smaller_verdict("effective β-smoothness", "BN", "the standard DLN", cb, where),
      smaller_verdict("largest gradient change", "BN", "the standard DLN", cp, where),
      smaller_verdict("relative ICS ‖G − G′‖/‖G‖", "BN", "the standard DLN", cr, where),
      smaller_verdict("1 − cos(G, G′)", "BN", "the standard DLN", cc, where));
  lab.verdict(v);

  // x of the probes: the same schedule in every run (a diverged run is cut short: band() uses the shortest)
  std::vector<double> px;
  const std::size_t probe_every = std::max<std::size_t>(1, cfg.steps / std::max<std::size_t>(cfg.probes, 1));
  px.push_back(1);
  for (std::size_t t = probe_every; t <= cfg.steps; t += probe_every)
    if (t != 1) px.push_back(static_cast<double>(t));
  Figure fig{"dln", "Santurkar et al.'s 25-layer deep linear network (synthetic Gaussian data)", 2, 3, 1500, 860, {}};
  struct P {
    std::string title, ylabel;
    std::vector<double> DlnTrace::*field;
    bool logy;
  };
  const std::vector<P> panels{{"training loss ‖f(X) − AX‖²", "loss", &DlnTrace::loss, true},
                              {"effective β-smoothness", "max_η ‖Δ∇L‖ / ‖ηg‖", &DlnTrace::beta, true},
                              {"gradient predictiveness (largest over η)", "max_η ‖∇L(x) − ∇L(x − ηg)‖", &DlnTrace::pred_max, true},
                              {"loss range along the step", "max − min of L", &DlnTrace::loss_range, true},
                              {"ICS ‖G − G′‖₂ (mean over layers 2..k)", "ℓ2 distance", &DlnTrace::ics_l2, true},
                              {"ICS cos(G, G′) (mean over layers 2..k)", "cosine", &DlnTrace::ics_cos, false}};
  for (const auto& pp : panels) {
    Panel p;
    p.title = pp.title;
    p.ylabel = pp.ylabel;
    p.xlabel = "step";
    p.logy = pp.logy;
    p.key = "top right";
    for (const auto& arm : arms) {
      const auto x = pp.field == &DlnTrace::loss ? traces[arm].front().steps : px;
      for (auto& s : band_series(band(x, per_seed(arm, pp.field)), arm == "bn" ? "with BN" : "standard",
                                 arm == "bn" ? "'#1f77b4'" : "'#d62728'"))
        p.series.push_back(s);
    }
    fig.panels.push_back(p);
  }
  Report& rep = lab.report(ex, "The deep linear network (`dln`)");
  rep.para(fmt::format(
      "Santurkar et al.'s DLN (Appendix A.1): ‖W_{}…W_1·x − A·x‖² with {} square {}×{} layers (no bias, "
      "Glorot-uniform), A and the {} inputs x i.i.d. N(0, 1), made from each run's seed; full-batch gradient "
      "descent at lr {} for {} steps (the paper's budget is 10,000 steps at 1e-6); BN arm: BatchNorm1d after "
      "every layer but the last. Every {} steps: the landscape probe with η = {{{}}} × lr (the paper: "
      "[1/100, 30]×) and the ICS probe of every layer. Seeds {}; bands: min–max over seeds.",
      cfg.layers, cfg.layers, cfg.width, cfg.width, cfg.samples, short_number(cfg.lr), cfg.steps, probe_every,
      [&] {
        std::string s;
        for (double m : cfg.step_multiples) s += (s.empty() ? "" : ", ") + short_number(m);
        return s;
      }(),
      [&] {
        std::string s;
        for (std::size_t k = 0; k < cfg.seeds; ++k) s += (s.empty() ? "" : ", ") + std::to_string(lab.run_seed(k));
        return s;
      }()));
  rep.para("**" + v + "**");
  rep.image("deep linear network", lab.plot(fig));
  rep.para("How to read it: the paper's Figure 5 (bottom) finds almost no ICS in the standard DLN and G, G′ almost "
           "uncorrelated with BN — while BN still trains faster; its Figure 10 shows a smaller effective β with BN.");
  Json& sec = lab.section(ex);
  Json& conf = sec["config"];
  conf["layers"] = cfg.layers;
  conf["width"] = cfg.width;
  conf["samples"] = cfg.samples;
  conf["steps"] = cfg.steps;
  conf["lr"] = cfg.lr;
  conf["seeds"] = cfg.seeds;
  conf["step_multiples"] = cfg.step_multiples;
  for (const auto& arm : arms) {
    Json& aj = sec["arms"][arm];
    for (const auto& t : traces[arm]) {
      aj["final_loss"].push_back(t.diverged ? Json() : Json(t.loss.back()));
      aj["diverged"].push_back(t.diverged);
    }
  }
  sec["verdict"] = v;
}

}  // namespace lab
