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

#include "training.h"

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
  }
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
  const xg::data::Dataset probe = lab.test_set().head(cfg.probe_samples);  // fixed images for the percentiles
  const std::vector<std::string> arms{"plain", "bn"};
  const std::size_t probe_every = std::max<std::size_t>(1, cfg.steps / 100);

  Progress progress("convergence", cfg.steps * arms.size());
  std::vector<RunResult> results;
  std::vector<Trace> traces;
  for (const auto& arm : arms) {
    RunSpec spec;
    spec.experiment = ex;
    spec.model = "mlp-sigmoid";
    spec.arm = arm;
    spec.net.kind = "mlp";
    spec.net.activation = "sigmoid";
    spec.net.batchnorm = arm == "bn";
    spec.net.init_std = cfg.init_std;
    spec.lr = cfg.lr;
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
    Trace trace;
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
      for (int k = 0; k < 3; ++k)
        lab.metric(ex, spec.model, spec.optimizer, arm, spec.lr, 0, static_cast<std::int64_t>(step),
                   k == 0 ? "p15" : k == 1 ? "p50" : "p85", p[static_cast<std::size_t>(k)]);
    };
    results.push_back(train_run(lab, spec, progress, probe_hook));
    traces.push_back(std::move(trace));
  }
  progress.finish();
  const RunResult& plain = results[0];
  const RunResult& bn = results[1];

  // ---- verdict ----------------------------------------------------------------------------------------------
  std::string verdict;
  if (plain.diverged || bn.diverged) {
    verdict = fmt::format("Convergence (Ioffe & Szegedy Fig. 1): {} diverged at lr {}; see the section below.",
                          plain.diverged ? "the plain network" : "the BN network", short_number(cfg.lr));
  } else {
    const double target = plain.final_accuracy;
    const double sp = first_reaching(plain, target), sb = first_reaching(bn, target);
    verdict = fmt::format(
        "Convergence (Ioffe & Szegedy Fig. 1): after {} steps the test accuracy is {} with BN and {} without",
        cfg.steps, percent(bn.final_accuracy), percent(plain.final_accuracy));
    if (!std::isnan(sb) && sb < sp)
      verdict += fmt::format("; BN reached the plain network's final accuracy after {} steps ({:.1f}x fewer)",
                             static_cast<long>(sb), sp / std::max(sb, 1.0));
    else if (std::isnan(sb) || sb >= sp)
      verdict += "; BN did NOT reach the plain network's final accuracy sooner";
    verdict += ".";
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
  Figure fig{"convergence", "Ioffe & Szegedy Figure 1 on Fashion-MNIST: MLP 784-100-100-100-10 sigmoid, batch 60",
             1, 3, 1500, 460, {}};
  Panel a;
  a.title = "(a) test accuracy";
  a.xlabel = "training step";
  a.ylabel = "test accuracy";
  a.key = "bottom right";
  a.series.push_back({"without BN", plain.eval_steps, plain.eval_accuracy, {}, "lines", "lw 2 lc rgb '#d62728'"});
  a.series.push_back({"with BN", bn.eval_steps, bn.eval_accuracy, {}, "lines", "lw 2 lc rgb '#1f77b4'"});
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
      "BN arm that is γ·x̂+β with the probe batch's statistics) without updating anything.",
      short_number(cfg.init_std), short_number(cfg.lr), cfg.batch_size, cfg.steps, eval_set.size(),
      std::max<std::size_t>(1, cfg.steps / std::max<std::size_t>(cfg.evals, 1)), cfg.unit, probe.size(),
      probe_every));
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
  for (std::size_t k = 0; k < 2; ++k) {
    Json& j = sec["arms"][arms[k]];
    j["final_test_accuracy"] = results[k].final_accuracy;
    j["best_test_accuracy"] = results[k].best_accuracy;
    j["diverged"] = results[k].diverged;
    j["median_drift_after_10pct"] = k == 0 ? dp : db;
    j["seconds"] = results[k].seconds;
  }
  sec["verdict"] = verdict;
}

}  // namespace lab
