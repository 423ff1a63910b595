// why_bn.cpp — the seed-spread helpers, the network probes, and the `landscape` and `ics` experiments
// (Santurkar, Tsipras, Ilyas & Madry 2018, Fig. 4 and Definition 2.1). dln.cpp and lp_norm.cpp hold the others.
#include "why_bn.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "cells.h"

namespace lab {

// ------------------------------------------------------------------------------------------------ seeds

Spread spread(const std::vector<double>& seeds) {
  Spread s;
  s.min = INFINITY;
  s.max = -INFINITY;
  double sum = 0;
  for (double v : seeds)
    if (std::isfinite(v)) {
      sum += v;
      s.min = std::min(s.min, v);
      s.max = std::max(s.max, v);
      ++s.n;
    }
  if (s.n == 0) return {std::nan(""), std::nan(""), std::nan(""), 0};
  s.mean = sum / static_cast<double>(s.n);
  return s;
}

Band band(const std::vector<double>& x, const std::vector<std::vector<double>>& runs) {
  Band b;
  std::size_t n = x.size();
  for (const auto& r : runs) n = std::min(n, r.size());
  for (std::size_t k = 0; k < n; ++k) {
    std::vector<double> v;
    for (const auto& r : runs) v.push_back(r[k]);
    const Spread s = spread(v);
    b.x.push_back(x[k]);
    b.mean.push_back(s.mean);
    b.min.push_back(s.min);
    b.max.push_back(s.max);
  }
  return b;
}

std::vector<Series> band_series(const Band& b, const std::string& title, const std::string& color) {
  std::vector<Series> out;
  bool spread_any = false;
  for (std::size_t k = 0; k < b.x.size(); ++k) spread_any = spread_any || b.max[k] > b.min[k];
  if (spread_any) out.push_back({"", b.x, b.min, b.max, "band", "fs transparent solid 0.25 noborder lc rgb " + color});
  out.push_back({title, b.x, b.mean, {}, "lines", "lw 2 lc rgb " + color});
  return out;
}

Comparison compare_smaller(const std::vector<std::vector<double>>& a, const std::vector<std::vector<double>>& b) {
  Comparison c;
  std::vector<double> ratios;
  for (std::size_t k = 0; k < std::min(a.size(), b.size()); ++k) {
    const Spread sa = spread(a[k]), sb = spread(b[k]);
    if (sa.n == 0 || sb.n == 0) continue;
    ++c.points;
    if (sa.max < sb.min) ++c.separated;
    if (sb.max < sa.min) ++c.reversed;
    if (sa.mean != 0) ratios.push_back(sb.mean / sa.mean);
  }
  if (!ratios.empty()) {
    std::sort(ratios.begin(), ratios.end());
    const std::size_t m = ratios.size();
    c.median_ratio = m % 2 ? ratios[m / 2] : 0.5 * (ratios[m / 2 - 1] + ratios[m / 2]);
  } else {
    c.median_ratio = std::nan("");
  }
  return c;
}

std::string smaller_verdict(const std::string& what, const std::string& a_name, const std::string& b_name,
                            const Comparison& c, const std::string& where) {
  if (c.points == 0) return fmt::format("{}: no finite values to compare", what);
  if (c.holds())
    return fmt::format("{}'s {} is {:.3g}x smaller than {}'s (median ratio; every seed below every seed at {} of {} "
                       "{})",
                       a_name, what, c.median_ratio, b_name, c.separated, c.points, where);
  if (c.reverse_holds())
    return fmt::format("{}'s {} is {:.3g}x LARGER than {}'s (median ratio; every seed above every seed at {} of {} "
                       "{})",
                       a_name, what, 1.0 / c.median_ratio, b_name, c.reversed, c.points, where);
  return fmt::format("{}'s {} is NOT consistently smaller or larger than {}'s (median ratio {:.3g} in favour of {}; "
                     "the seeds' ranges separate at only {} (smaller) / {} (larger) of {} {})",
                     a_name, what, b_name, c.median_ratio >= 1 ? c.median_ratio : 1.0 / c.median_ratio,
                     c.median_ratio >= 1 ? a_name : b_name, c.separated, c.reversed, c.points, where);
}

// ------------------------------------------------------------------------------------------------ probes

probes::LossFn network_loss(Net& net, const xg::data::Batch& batch) {
  return [&net, &batch] {
    xg::nn::NoStatsUpdateGuard keep_running_stats;
    return xg::nn::functional::cross_entropy(net.model->forward(batch.images), batch.labels);
  };
}

std::vector<probes::Layer> weight_layers(const Net& net) {
  std::vector<probes::Layer> layers;
  for (std::size_t i = 0; i < net.model->size(); ++i) {
    const auto& m = net.model->ptr(i);
    xg::Tensor w;
    if (auto lin = std::dynamic_pointer_cast<xg::nn::Linear>(m)) w = lin->weight;
    if (auto conv = std::dynamic_pointer_cast<xg::nn::Conv2d>(m)) w = conv->weight;
    if (w.defined()) {
      layers.push_back({w, {}});
      for (const auto& p : m->parameters()) layers.back().params.push_back(p);
    } else if (!layers.empty()) {  // BN / LpNorm after the layer: its γ, β belong to it
      for (const auto& p : m->parameters()) layers.back().params.push_back(p);
    }
  }
  return layers;
}

namespace {

const std::string kStdColor = "'#d62728'", kBnColor = "'#1f77b4'";

std::string model_title(const std::string& m) { return m == "cnn" ? "CNN" : "MLP"; }

// Probe steps of a run: step 1, then every steps/probes steps.
std::vector<std::size_t> probe_steps(std::size_t steps, std::size_t probes) {
  std::vector<std::size_t> s{1};
  const std::size_t every = std::max<std::size_t>(1, steps / std::max<std::size_t>(probes, 1));
  for (std::size_t t = every; t <= steps; t += every)
    if (t != 1) s.push_back(t);
  return s;
}

// values[seed][point] -> [point][seed]
std::vector<std::vector<double>> by_point(const std::vector<std::vector<double>>& per_seed) {
  std::size_t n = per_seed.empty() ? 0 : per_seed[0].size();
  for (const auto& s : per_seed) n = std::min(n, s.size());
  std::vector<std::vector<double>> out(n);
  for (std::size_t k = 0; k < n; ++k)
    for (const auto& s : per_seed) out[k].push_back(s[k]);
  return out;
}

std::vector<double> as_doubles(const std::vector<std::size_t>& v) { return {v.begin(), v.end()}; }

// One arm's landscape measurements per seed: [seed][probe point].
struct LandscapeTrace {
  std::vector<std::vector<double>> loss, loss_min, loss_max, pred_min, pred_max, beta;
  std::vector<double> final_acc;
};

}  // namespace

// ------------------------------------------------------------------------------------------------ landscape

LandscapeConfig landscape_config(const Lab& lab) {
  LandscapeConfig c;
  if (lab.tiny()) {
    c.seeds = 1;
    c.mlp_steps = 40;
    c.cnn_steps = 2;  // a CNN step is ~40 MLP steps, and --tiny runs under AddressSanitizer
    c.probes = 1;
    c.batch_size = 32;
    c.train_samples = 2000;
    c.eval_samples = 300;
    c.step_multiples = {0.5, 4};
  } else if (lab.quick()) {
    c.seeds = 2;
    c.mlp_steps = 300;
    c.cnn_steps = 30;
    c.probes = 6;
    c.train_samples = 10000;
    c.eval_samples = 1000;
  } else if (lab.full()) {
    c.seeds = 3;
    c.mlp_steps = 5000;
    c.cnn_steps = 2000;
    c.probes = 50;
    c.step_multiples = {0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4};
    c.eval_samples = 0;
  }
  c.seeds = lab.seeds(c.seeds);
  return c;
}

void run_landscape(Lab& lab, const LandscapeConfig& cfg) {
  const std::string ex = "landscape";
  xg::data::Dataset train_store, eval_store;
  const auto& train = first_samples(lab.train_set(), cfg.train_samples, train_store);
  const auto& eval_set = first_samples(lab.test_set(), cfg.eval_samples, eval_store);
  lab.used_samples(train.size(), eval_set.size());
  const std::vector<std::string> arms{"standard", "bn"};
  auto steps_of = [&](const std::string& m) { return m == "cnn" ? cfg.cnn_steps : cfg.mlp_steps; };
  auto lr_of = [&](const std::string& m) { return m == "cnn" ? cfg.cnn_lr : cfg.mlp_lr; };
  auto cost_of = [&](const std::string& m) { return m == "cnn" ? 40.0 : 1.0; };
  const double probe_cost = static_cast<double>(cfg.step_multiples.size() + 1);

  std::size_t total = 0;
  double total_cost = 0;
  for (const auto& m : cfg.models) {
    const std::size_t n = steps_of(m) * arms.size() * cfg.seeds;
    total += n;
    total_cost += cost_of(m) * (static_cast<double>(n) +
                                probe_cost * static_cast<double>(probe_steps(steps_of(m), cfg.probes).size() *
                                                                 arms.size() * cfg.seeds));
  }
  if (lab.full())
    fmt::print(stderr, "landscape --full: {} training steps plus probes (about {} at the default run's speed)\n",
               total, format_duration(total_cost / 900.0));
  Progress progress("landscape", total);
  progress.set_total_cost(total_cost);

  // ---- run every cell: model x arm x seed (spread over the MPI ranks, recorded for restarts: cells.h) ------
  // A cell's probe values travel in its RunResult::series, one value per probe step under the LandscapeTrace
  // field's name.
  CellRunner runner(lab, ex, &progress);
  struct Cell {
    std::string model, arm;
    RunResult result;
  };
  std::vector<Cell> cells;
  std::map<std::string, std::vector<std::size_t>> steps_at;
  for (const auto& model : cfg.models) {
    const std::vector<std::size_t> at = probe_steps(steps_of(model), cfg.probes);
    steps_at[model] = at;
    std::vector<double> etas;
    for (double m : cfg.step_multiples) etas.push_back(m * lr_of(model));
    for (const auto& arm : arms)
      for (std::size_t s = 0; s < cfg.seeds; ++s) {
        RunSpec spec;
        spec.experiment = ex;
        spec.model = model;
        spec.arm = arm;
        spec.net.kind = model;
        spec.net.batchnorm = arm == "bn";
        spec.lr = lr_of(model);
        spec.seed_index = s;
        spec.steps = steps_of(model);
        spec.batch_size = cfg.batch_size;
        spec.log_every = std::max<std::size_t>(1, spec.steps / 20);
        spec.eval_every = spec.steps;
        spec.train_set = &train;
        spec.eval_set = &eval_set;
        const std::int64_t run_seed = static_cast<std::int64_t>(lab.run_seed(s));
        std::map<std::string, std::vector<double>> probed;  // filled while this rank runs the cell
        spec.before_step = [&, run_seed](Net& net, const xg::data::Batch& batch, std::size_t step) {
          if (std::find(at.begin(), at.end(), step) == at.end()) return;
          const probes::Landscape r = probes::probe_landscape(network_loss(net, batch), net.model->parameters(), etas);
          double pmin = INFINITY, pmax = -INFINITY;
          for (double d : r.grad_distances) {
            pmin = std::min(pmin, d);
            pmax = std::max(pmax, d);
          }
          probed["loss"].push_back(r.loss);
          probed["loss_min"].push_back(r.loss_min);
          probed["loss_max"].push_back(r.loss_max);
          probed["pred_min"].push_back(pmin);
          probed["pred_max"].push_back(pmax);
          probed["beta"].push_back(r.beta);
          const auto st = static_cast<std::int64_t>(step);
          for (auto [name, v] : {std::pair{"loss_at_probe", r.loss}, {"loss_range_min", r.loss_min},
                                 {"loss_range_max", r.loss_max}, {"grad_pred_min", pmin}, {"grad_pred_max", pmax},
                                 {"beta_eff", r.beta}})
            lab.metric(ex, model, "sgd", arm, spec.lr, run_seed, st, name, v);
        };
        progress.set_unit_cost(cost_of(model) * (1.0 + probe_cost * static_cast<double>(at.size()) /
                                                           static_cast<double>(spec.steps)));
        RunResult r = runner.run(spec, [&] {
          RunResult res = train_run(lab, spec, progress);
          res.series = std::move(probed);
          return res;
        });
        if (r.diverged)
          progress.note(fmt::format("  {} {} seed {}: diverged at step {}", model, arm, run_seed, r.diverged_at));
        cells.push_back({model, arm, std::move(r)});
      }
  }
  progress.finish();
  if (!runner.gather([&](std::size_t i, RunResult r) { cells[i].result = std::move(r); })) return;  // not rank 0

  // The seeds' traces per model and arm, in the loop's seed order.
  std::map<std::string, std::map<std::string, LandscapeTrace>> traces;  // model -> arm -> trace
  for (auto& c : cells) {
    LandscapeTrace& tr = traces[c.model][c.arm];
    auto& ser = c.result.series;
    tr.loss.push_back(ser["loss"]);
    tr.loss_min.push_back(ser["loss_min"]);
    tr.loss_max.push_back(ser["loss_max"]);
    tr.pred_min.push_back(ser["pred_min"]);
    tr.pred_max.push_back(ser["pred_max"]);
    tr.beta.push_back(ser["beta"]);
    tr.final_acc.push_back(c.result.diverged ? std::nan("") : c.result.final_accuracy);
  }

  // ---- verdicts, figures, report --------------------------------------------------------------------------
  Report& rep = lab.report(ex, "Why does BatchNorm help? The loss landscape along the gradient (`landscape`)");
  rep.para(fmt::format(
      "Santurkar et al.'s Figure 4 on {}: the standard network and the same network with BatchNorm, trained with "
      "plain SGD (batch {}); at {} points of each run, on the batch of that step, the gradient g = ∇L(x) is "
      "taken and the loss and the gradient are evaluated at x − η·g for η = {{{}}} × the learning rate (the "
      "paper: [½, 4]×), in training mode without updating BN's running statistics. (a) the range of the loss "
      "over those points (\"variation of loss\"), (b) gradient predictiveness ‖∇L(x) − ∇L(x − η·g)‖₂ (range over "
      "η), (c) effective β-smoothness max_η ‖∇L(x) − ∇L(x − η·g)‖₂ / ‖η·g‖₂. Seeds {}; bands: min–max over the "
      "seeds (and, for (a) and (b), over η), lines: mean over seeds. {} training images.",
      lab.options().data, cfg.batch_size, cfg.probes + 1,
      [&] {
        std::string s;
        for (double m : cfg.step_multiples) s += (s.empty() ? "" : ", ") + short_number(m);
        return s;
      }(),
      [&] {
        std::string s;
        for (std::size_t k = 0; k < cfg.seeds; ++k) s += (s.empty() ? "" : ", ") + std::to_string(lab.run_seed(k));
        return s;
      }(),
      train.size()));
  Json& sec = lab.section(ex);
  Json& conf = sec["config"];
  conf["models"] = cfg.models;
  conf["seeds"] = cfg.seeds;
  conf["mlp_steps"] = cfg.mlp_steps;
  conf["cnn_steps"] = cfg.cnn_steps;
  conf["mlp_lr"] = cfg.mlp_lr;
  conf["cnn_lr"] = cfg.cnn_lr;
  conf["step_multiples"] = cfg.step_multiples;
  conf["batch_size"] = cfg.batch_size;
  conf["train_samples"] = train.size();
  conf["eval_samples"] = eval_set.size();

  Figure fig{"landscape", fmt::format("Santurkar et al. Figure 4 on {}: loss landscape along the gradient",
                                      dataset_name(lab)),
             static_cast<int>(cfg.models.size()), 3, 1500, 440 * static_cast<int>(cfg.models.size()), {}};
  std::vector<std::vector<std::string>> rows;
  for (const auto& model : cfg.models) {
    const auto x = as_doubles(steps_at[model]);
    const LandscapeTrace& st = traces[model]["standard"];
    const LandscapeTrace& bn = traces[model]["bn"];
    // Verdicts: effective β, the largest gradient change (predictiveness), the loss range.
    auto range_of = [](const LandscapeTrace& t) {
      std::vector<std::vector<double>> r = t.loss_max;
      for (std::size_t s = 0; s < r.size(); ++s)
        for (std::size_t k = 0; k < r[s].size(); ++k) r[s][k] -= t.loss_min[s][k];
      return r;
    };
    const Comparison cb = compare_smaller(by_point(bn.beta), by_point(st.beta));
    const Comparison cp = compare_smaller(by_point(bn.pred_max), by_point(st.pred_max));
    const Comparison cl = compare_smaller(by_point(range_of(bn)), by_point(range_of(st)));
    const std::string where = "probe steps";
    const std::string v = fmt::format("Landscape (Santurkar Fig. 4), {}: {}; {}; {}.", model_title(model),
                                      smaller_verdict("effective β-smoothness", "BN", "the standard network", cb, where),
                                      smaller_verdict("largest gradient change along the step", "BN",
                                                      "the standard network", cp, where),
                                      smaller_verdict("loss range along the step", "BN", "the standard network", cl,
                                                      where));
    lab.verdict(v);
    rep.h3(model_title(model));
    rep.para("**" + v + "**");
    Json& mj = sec["models"][model];
    mj["verdict"] = v;
    for (auto [name, c] : {std::pair{"beta", cb}, {"grad_pred_max", cp}, {"loss_range", cl}}) {
      Json& cj = mj["comparison"][name];
      cj["points"] = c.points;
      cj["bn_smaller_every_seed"] = c.separated;
      cj["bn_larger_every_seed"] = c.reversed;
      cj["median_ratio_standard_over_bn"] = c.median_ratio;
      cj["holds"] = c.holds();
    }
    for (const auto& arm : arms) {
      const Spread acc = spread(traces[model][arm].final_acc);
      mj["arms"][arm]["final_test_accuracy"] = traces[model][arm].final_acc;
      const Spread b = spread([&] {
        std::vector<double> all;
        for (const auto& s : traces[model][arm].beta) all.insert(all.end(), s.begin(), s.end());
        return all;
      }());
      rows.push_back({model_title(model), arm == "bn" ? "BN" : "standard", percent(acc.mean),
                      fmt::format("{}–{}", percent(acc.min), percent(acc.max)), fmt::format("{:.3g}", b.mean),
                      fmt::format("{:.3g}–{:.3g}", b.min, b.max)});
    }

    Panel pa, pb, pc;
    pa.title = model_title(model) + ": (a) loss range along the step";
    pb.title = model_title(model) + ": (b) gradient predictiveness";
    pc.title = model_title(model) + ": (c) effective β-smoothness";
    for (Panel* p : {&pa, &pb, &pc}) {
      p->xlabel = "training step";
      p->key = "top right";
    }
    pa.ylabel = "loss";
    pb.ylabel = "‖∇L(x) − ∇L(x − ηg)‖₂";
    pc.ylabel = "max_η ‖Δ∇L‖ / ‖ηg‖";
    pb.logy = pc.logy = true;
    for (const auto& arm : arms) {
      const LandscapeTrace& t = traces[model][arm];
      const std::string color = arm == "bn" ? kBnColor : kStdColor;
      const std::string title = arm == "bn" ? "with BN" : "standard";
      const Band lo = band(x, t.loss_min), hi = band(x, t.loss_max), mid = band(x, t.loss);
      const Band plo = band(x, t.pred_min), phi = band(x, t.pred_max);
      const std::string fill = "fs transparent solid 0.3 noborder lc rgb " + color;
      pa.series.push_back({"", lo.x, lo.min, hi.max, "band", fill});
      pa.series.push_back({title + " (L at x)", mid.x, mid.mean, {}, "lines", "lw 2 lc rgb " + color});
      pb.series.push_back({"", plo.x, plo.min, phi.max, "band", fill});
      std::vector<double> pmid;
      for (std::size_t k = 0; k < plo.x.size(); ++k) pmid.push_back(std::sqrt(plo.mean[k] * phi.mean[k]));
      pb.series.push_back({title, plo.x, pmid, {}, "lines", "lw 2 lc rgb " + color});
      for (auto& s : band_series(band(x, t.beta), title, color)) pc.series.push_back(s);
    }
    fig.panels.push_back(pa);
    fig.panels.push_back(pb);
    fig.panels.push_back(pc);
  }
  rep.image("loss landscape along the gradient", lab.plot(fig));
  rep.table({"network", "arm", "final test acc. (mean)", "min–max over seeds", "effective β (mean over probes)",
             "min–max"},
            rows);
  rep.para("How to read it: the paper's claim is that with BN the loss changes less and more predictably along "
           "the gradient — the BN bands in (a) and (b) are narrower and lower, and its β in (c) is smaller — which "
           "is why larger steps are safe. A verdict holds only where every seed of one arm is on the same side of "
           "every seed of the other at most probe steps.");
}

// ------------------------------------------------------------------------------------------------ ics

IcsConfig ics_config(const Lab& lab) {
  IcsConfig c;
  if (lab.tiny()) {
    c.seeds = 1;
    c.steps = 40;
    c.probes = 2;
    c.batch_size = 32;
    c.train_samples = 2000;
    c.eval_samples = 300;
  } else if (lab.quick()) {
    c.steps = 300;
    c.probes = 6;
    c.train_samples = 10000;
    c.eval_samples = 1000;
  } else if (lab.full()) {
    c.seeds = 3;
    c.steps = 5000;
    c.probes = 50;
    c.eval_samples = 0;
  }
  c.seeds = lab.seeds(c.seeds);
  return c;
}

void run_ics(Lab& lab, const IcsConfig& cfg) {
  const std::string ex = "ics";
  xg::data::Dataset train_store, eval_store;
  const auto& train = first_samples(lab.train_set(), cfg.train_samples, train_store);
  const auto& eval_set = first_samples(lab.test_set(), cfg.eval_samples, eval_store);
  lab.used_samples(train.size(), eval_set.size());
  const std::vector<std::string> arms{"standard", "bn"};
  const std::vector<std::size_t> at = probe_steps(cfg.steps, cfg.probes);
  const std::size_t L = 4;  // weight layers of the MLP 784-100-100-100-10
  if (lab.full())
    fmt::print(stderr, "ics --full: {} training steps plus probes\n", cfg.steps * arms.size() * cfg.seeds);
  Progress progress("ics", cfg.steps * arms.size() * cfg.seeds);
  // ---- run every cell: arm x seed (spread over the MPI ranks, recorded for restarts: cells.h) ---------------
  // A cell's probe values travel in its RunResult::series: "distance_layer<l>", "cosine_layer<l>" and
  // "relative_layer<l>" (‖G − G′‖/‖G‖), one value per probe step.
  auto series_name = [](const char* what, std::size_t l) { return fmt::format("{}_layer{}", what, l + 1); };
  CellRunner runner(lab, ex, &progress);
  struct Cell {
    std::string arm;
    RunResult result;
  };
  std::vector<Cell> cells;
  for (const auto& arm : arms)
    for (std::size_t s = 0; s < cfg.seeds; ++s) {
      RunSpec spec;
      spec.experiment = ex;
      spec.model = "mlp";
      spec.arm = arm;
      spec.net.batchnorm = arm == "bn";
      spec.lr = cfg.lr;
      spec.seed_index = s;
      spec.steps = cfg.steps;
      spec.batch_size = cfg.batch_size;
      spec.log_every = std::max<std::size_t>(1, cfg.steps / 20);
      spec.eval_every = cfg.steps;
      spec.train_set = &train;
      spec.eval_set = &eval_set;
      const auto run_seed = static_cast<std::int64_t>(lab.run_seed(s));
      std::map<std::string, std::vector<double>> probed;  // filled while this rank runs the cell
      spec.before_step = [&, run_seed](Net& net, const xg::data::Batch& batch, std::size_t step) {
        if (std::find(at.begin(), at.end(), step) == at.end()) return;
        const auto layers = weight_layers(net);
        if (layers.size() != L) xg::fail("ics: expected {} weight layers, found {}", L, layers.size());
        const probes::Ics r = probes::probe_ics(network_loss(net, batch), layers, cfg.lr);
        for (std::size_t l = 0; l < L; ++l) {
          probed[series_name("distance", l)].push_back(r.distance[l]);
          probed[series_name("cosine", l)].push_back(r.cosine[l]);
          probed[series_name("relative", l)].push_back(r.grad_norm[l] > 0 ? r.distance[l] / r.grad_norm[l]
                                                                          : std::nan(""));
          const auto st = static_cast<std::int64_t>(step);
          lab.metric(ex, "mlp", "sgd", arm, cfg.lr, run_seed, st, fmt::format("ics_l2_layer{}", l + 1), r.distance[l]);
          lab.metric(ex, "mlp", "sgd", arm, cfg.lr, run_seed, st, fmt::format("ics_cos_layer{}", l + 1), r.cosine[l]);
        }
      };
      RunResult r = runner.run(spec, [&] {
        RunResult res = train_run(lab, spec, progress);
        res.series = std::move(probed);
        return res;
      });
      cells.push_back({arm, std::move(r)});
    }
  progress.finish();
  if (!runner.gather([&](std::size_t i, RunResult r) { cells[i].result = std::move(r); })) return;  // not rank 0

  // arm -> layer -> [seed][probe], the seeds in the loop's order
  std::map<std::string, std::vector<std::vector<std::vector<double>>>> dist, cosine, rel;
  for (const auto& arm : arms) {
    dist[arm].assign(L, {});
    cosine[arm].assign(L, {});
    rel[arm].assign(L, {});
  }
  for (auto& c : cells)
    for (std::size_t l = 0; l < L; ++l) {
      dist[c.arm][l].push_back(c.result.series[series_name("distance", l)]);
      cosine[c.arm][l].push_back(c.result.series[series_name("cosine", l)]);
      rel[c.arm][l].push_back(c.result.series[series_name("relative", l)]);
    }

  // Verdicts over (probe step, layer ≥ 2) points: the raw ℓ2 distance of Definition 2.1, the distance relative
  // to ‖G‖ (the arms' gradients differ in scale), and 1 − cos.
  auto pooled = [&](auto& src, const std::string& arm, bool one_minus) {
    std::vector<std::vector<double>> pts;
    for (std::size_t l = 1; l < L; ++l)
      for (auto& p : by_point(src[arm][l])) {
        if (one_minus)
          for (auto& v : p) v = 1.0 - v;
        pts.push_back(p);
      }
    return pts;
  };
  const Comparison cd = compare_smaller(pooled(dist, "bn", false), pooled(dist, "standard", false));
  const Comparison cr = compare_smaller(pooled(rel, "bn", false), pooled(rel, "standard", false));
  const Comparison cc = compare_smaller(pooled(cosine, "bn", true), pooled(cosine, "standard", true));
  const std::string where = "(probe step, layer) points";
  std::string v = fmt::format("Internal covariate shift (Santurkar Def. 2.1), MLP: {}; {}; {}.",
                              smaller_verdict("‖G − G′‖₂", "BN", "the standard network", cd, where),
                              smaller_verdict("‖G − G′‖₂/‖G‖₂", "BN", "the standard network", cr, where),
                              smaller_verdict("1 − cos(G, G′)", "BN", "the standard network", cc, where));
  v += cr.holds() ? " By this measure BN does reduce ICS here." : " BN does not reduce ICS by the relative measure.";
  lab.verdict(v);

  Figure fig{"ics", fmt::format("Internal covariate shift per layer (Santurkar et al. Def. 2.1) on {}",
                                dataset_name(lab)),
             2, static_cast<int>(L - 1), 1500, 820, {}};
  const auto x = as_doubles(at);
  for (int row = 0; row < 2; ++row)
    for (std::size_t l = 1; l < L; ++l) {
      Panel p;
      p.title = fmt::format("layer {}: {}", l + 1, row == 0 ? "‖G − G′‖₂" : "cos(G, G′)");
      p.xlabel = "training step";
      p.ylabel = row == 0 ? "ℓ2 distance" : "cosine";
      p.logy = row == 0;
      p.key = row == 0 ? "top right" : "bottom right";
      for (const auto& arm : arms)
        for (auto& s : band_series(band(x, row == 0 ? dist[arm][l] : cosine[arm][l]),
                                   arm == "bn" ? "with BN" : "standard", arm == "bn" ? kBnColor : kStdColor))
          p.series.push_back(s);
      fig.panels.push_back(p);
    }
  Report& rep = lab.report(ex, "Does BatchNorm reduce internal covariate shift? (`ics`)");
  rep.para(fmt::format(
      "Santurkar et al.'s Definition 2.1 on {}: for layer i at step t, G = ∇_{{W_i}} L with every layer as it is, "
      "G′ = the same gradient after layers 1..i−1 took this step's SGD update (same batch); both through "
      "`xg::autograd::grad`, in training mode without updating BN's running statistics. MLP 784-100-100-100-10 "
      "ReLU, standard vs BN, SGD lr {}, batch {}, {} steps, probed at {} steps; seeds {}. Layer 1 has no "
      "preceding layer (G′ = G). Bands: min–max over seeds; lines: mean.",
      lab.options().data, short_number(cfg.lr), cfg.batch_size, cfg.steps, at.size(),
      [&] {
        std::string s;
        for (std::size_t k = 0; k < cfg.seeds; ++k) s += (s.empty() ? "" : ", ") + std::to_string(lab.run_seed(k));
        return s;
      }()));
  rep.para("**" + v + "**");
  rep.image("ICS per layer", lab.plot(fig));
  rep.para("How to read it: the ICS view of BN predicts a smaller ‖G − G′‖ and a cosine nearer 1 with BN. The paper "
           "found the opposite (BN networks \"often exhibit an increase in ICS\") — the row of cosines is where to "
           "look. The raw distance also depends on the gradients' scale, so the verdict also compares it "
           "relative to ‖G‖.");
  Json& sec = lab.section(ex);
  Json& conf = sec["config"];
  conf["seeds"] = cfg.seeds;
  conf["steps"] = cfg.steps;
  conf["lr"] = cfg.lr;
  conf["batch_size"] = cfg.batch_size;
  conf["train_samples"] = train.size();
  conf["eval_samples"] = eval_set.size();
  for (auto [name, c] : {std::pair{"l2", cd}, {"relative_l2", cr}, {"one_minus_cosine", cc}}) {
    Json& cj = sec["comparison"][name];
    cj["points"] = c.points;
    cj["bn_smaller_every_seed"] = c.separated;
    cj["bn_larger_every_seed"] = c.reversed;
    cj["median_ratio_standard_over_bn"] = c.median_ratio;
  }
  sec["verdict"] = v;
}

}  // namespace lab
