// inference.cpp — which statistics should a trained BatchNorm network use at test time? For one trained network
// (per training batch size and seed) the test accuracy with
//   (a) moving averages at several momenta — kept side by side during the same training run: BN's momentum
//       changes only its buffers, never the training itself, so every momentum sees the same network;
//   (b) the statistics of each test batch (BN left in training mode at test time, batches of the training size);
//   (c) update_bn's statistics recomputed after training over the training set: PyTorch's cumulative average
//       (Ioffe & Szegedy's Alg. 2) and the exact pooled population statistics.
// and how the differences depend on the training batch size (Ioffe & Szegedy §3.1; "precise BN", Wu & Johnson
// 2021, "Rethinking 'Batch' in BatchNorm").
#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <xgrad/kernels/batchnorm.h>

#include "bn_limits.h"
#include "cells.h"
#include "training.h"

namespace lab {

InferenceConfig inference_config(const Lab& lab) {
  InferenceConfig c;
  c.seeds = lab.seeds(2);
  if (lab.tiny()) {
    c.batches = {4, 32};
    c.momenta = {0.01, 0.1};
    c.epochs = 1;
    c.train_samples = 128;
    c.eval_samples = 200;
    c.seeds = lab.seeds(1);
  } else if (lab.quick()) {
    c.batches = {4, 128};
    c.epochs = 1;
    c.train_samples = 1024;
    c.eval_samples = 1000;
    c.seeds = lab.seeds(1);
  } else if (lab.full()) {
    c.batches = {2, 4, 16, 64, 128};
    c.epochs = 5;
    c.train_samples = 0;
    c.eval_samples = 0;
    c.seeds = lab.seeds(3);
  }
  return c;
}

namespace {

// Moving averages of one BN layer's batch statistics at one momentum, exactly as BatchNorm updates its buffers
// (unbiased variance; from mean 0, variance 1).
struct Shadow {
  double momentum;
  std::vector<double> mean, var;
};

// Accuracy with each test batch's own statistics: training mode at test time, buffers untouched, no graph.
double batch_stats_accuracy(Net& net, const xg::data::Dataset& ds, std::size_t batch, std::uint64_t seed) {
  xg::data::DataLoader loader(ds, xg::data::DataLoaderOptions(batch).drop_last(true).seed(seed));
  std::size_t correct = 0, seen = 0;
  xg::NoGradGuard no_grad;
  xg::nn::NoStatsUpdateGuard keep;
  net.model->train();
  for (const auto& b : loader) {
    correct += count_correct(net.model->forward(b.images), b.labels);
    seen += b.size();
  }
  return seen ? static_cast<double>(correct) / static_cast<double>(seen) : std::nan("");
}

}  // namespace

void run_inference(Lab& lab, const InferenceConfig& cfg) {
  const std::string ex = "inference";
  if (cfg.batches.empty() || cfg.momenta.empty()) xg::fail("inference: no batch sizes or no momenta");
  for (double m : cfg.momenta)
    if (!(m > 0 && m <= 1)) xg::fail("inference: momentum {} must be in (0, 1]", m);
  xg::data::Dataset train_store, eval_store;
  const auto& train = first_samples(lab.train_set(), cfg.train_samples, train_store);
  const auto& eval_set = first_samples(lab.test_set(), cfg.eval_samples, eval_store);
  for (std::size_t B : cfg.batches)
    if (B < 2 || B > std::min(train.size(), eval_set.size()))
      xg::fail("inference: batch size {} must be in [2, {}]", B, std::min(train.size(), eval_set.size()));
  const std::string data_name = dataset_name(lab);
  const std::size_t classes = train.num_classes(), in = train.images.numel() / train.size();

  // methods: one per momentum, then batch statistics, update_bn cumulative, update_bn population
  std::vector<std::string> keys, titles;
  for (double m : cfg.momenta) {
    keys.push_back(fmt::format("ma_{}", short_number(m)));
    titles.push_back(fmt::format("moving average, momentum {}", short_number(m)));
  }
  keys.insert(keys.end(), {"batch", "cumulative", "population"});
  titles.insert(titles.end(), {"each test batch's statistics", "update_bn: average of batch statistics",
                               "update_bn: exact population statistics"});
  const std::size_t M = keys.size(), nm = cfg.momenta.size();

  std::size_t total = 0;
  double cost = 0;
  for (std::size_t B : cfg.batches) {
    total += cfg.seeds * cfg.epochs * (train.size() / B);
    cost += static_cast<double>(cfg.seeds * cfg.epochs * (train.size() / B)) * (1.0 + static_cast<double>(B) / 16.0);
  }
  Progress progress(ex, total);
  progress.set_total_cost(cost);
  // ---- run every cell: batch x seed (spread over the MPI ranks, recorded for restarts: cells.h) -----------------
  struct Cell {
    std::size_t batch;  // index into cfg.batches
    RunResult result;   // series "test_acc": the test accuracy of each method (keys), NaN if the run diverged
  };
  std::vector<Cell> cells;
  CellRunner runner(lab, ex, &progress);
  for (std::size_t bi = 0; bi < cfg.batches.size(); ++bi) {
    const std::size_t B = cfg.batches[bi];
    const double lr = cfg.base_lr * static_cast<double>(B) / static_cast<double>(cfg.base_batch);
    progress.set_unit_cost(1.0 + static_cast<double>(B) / 16.0);
    for (std::size_t s = 0; s < cfg.seeds; ++s) {
      const std::string what = fmt::format("batch={} seed_index={}", B, s);
      RunResult r = runner.run(what, cfg.epochs * (train.size() / B), [&] {
        const std::uint64_t seed = lab.run_seed(s);  // --seed + seed index: the metrics.csv seed
        LimitsNetSpec spec;
        spec.norm = "bn";
        Net net = make_limits_net(spec, in, classes, seed_for(seed, "init"), nullptr);
        // the shadows: per BN layer, per momentum, fed by a hook on the layer's training forwards
        std::vector<std::vector<Shadow>> shadows(net.batchnorms.size());
        std::vector<xg::nn::HookHandle> hooks;
        for (std::size_t l = 0; l < net.batchnorms.size(); ++l) {
          const std::size_t C = net.batchnorms[l]->options().num_features();
          for (double m : cfg.momenta) shadows[l].push_back({m, std::vector<double>(C, 0.0), std::vector<double>(C, 1.0)});
          hooks.push_back(net.batchnorms[l]->register_forward_hook(
              [&shadows, l, C](xg::nn::Module& mod, const xg::Tensor& input, const xg::Tensor&) {
                if (!mod.is_training() || xg::nn::NoStatsUpdateGuard::active()) return;
                const xg::Tensor x = input.detach().to(xg::kFloat64);
                std::vector<xg::kernels::BnMoments> mo(C);
                xg::kernels::batch_norm_local_moments<double>(x.data_ptr<double>(), {x.shape()[0], C, 1}, mo.data());
                for (Shadow& sh : shadows[l])
                  for (std::size_t c = 0; c < C; ++c) {
                    sh.mean[c] = (1 - sh.momentum) * sh.mean[c] + sh.momentum * mo[c].mean;
                    sh.var[c] = (1 - sh.momentum) * sh.var[c] + sh.momentum * mo[c].m2 / (mo[c].count - 1);
                  }
              }));
        }
        const LimitsRun run = train_limits(net, train, B, cfg.epochs, lr, seed_for(seed, "shuffle"), progress,
                                           fmt::format("B={} seed {}", B, s));
        for (auto& h : hooks) h.remove();
        lab.add_timing(ex, run.seconds, run.steps);
        std::vector<double> a(M, std::nan(""));
        if (!run.diverged) {
          for (std::size_t k = 0; k < nm; ++k) {
            {
              xg::NoGradGuard ng;
              for (std::size_t l = 0; l < net.batchnorms.size(); ++l) {
                const std::size_t C = shadows[l][k].mean.size();
                net.batchnorms[l]->running_mean.copy_(xg::from_vector(shadows[l][k].mean, {C}));
                net.batchnorms[l]->running_var.copy_(xg::from_vector(shadows[l][k].var, {C}));
              }
            }
            a[k] = evaluate(*net.model, eval_set).accuracy;
          }
          a[nm] = batch_stats_accuracy(net, eval_set, B, seed_for(seed, "test-batches"));
          xg::data::DataLoader pass(train, xg::data::DataLoaderOptions(B).drop_last(true).seed(seed_for(seed, "pass")));
          xg::nn::update_bn(pass, *net.model, xg::nn::BnStatistics::Cumulative);
          a[nm + 1] = evaluate(*net.model, eval_set).accuracy;
          xg::nn::update_bn(pass, *net.model, xg::nn::BnStatistics::Population);
          a[nm + 2] = evaluate(*net.model, eval_set).accuracy;
        }
        for (std::size_t k = 0; k < M; ++k)
          lab.metric(ex, "mlp", "sgd-momentum", keys[k], lr, static_cast<std::int64_t>(seed),
                     static_cast<std::int64_t>(run.steps), "test_acc", a[k]);
        RunResult out;  // what the analysis needs, carried to rank 0 with the cell
        out.seconds = run.seconds;  // with diverged_at: the timing of a cell run elsewhere (gather)
        out.diverged = run.diverged;
        out.diverged_at = run.diverged ? run.steps : 0;
        out.series["test_acc"] = a;
        return out;
      });
      cells.push_back({bi, std::move(r)});
    }
  }
  progress.finish();
  if (!runner.gather([&](std::size_t i, RunResult r) { cells[i].result = std::move(r); })) return;  // not rank 0

  // acc[method][batch][seed], in the loop's (seed) order
  std::vector<std::vector<std::vector<double>>> acc(M, std::vector<std::vector<double>>(cfg.batches.size()));
  for (const Cell& c : cells)
    for (std::size_t k = 0; k < M; ++k) acc[k][c.batch].push_back(c.result.series.at("test_acc").at(k));

  // ---- verdicts ---------------------------------------------------------------------------------------------------
  const std::size_t small = std::min_element(cfg.batches.begin(), cfg.batches.end()) - cfg.batches.begin();
  const std::size_t large = std::max_element(cfg.batches.begin(), cfg.batches.end()) - cfg.batches.begin();
  std::size_t def = 0;  // the momentum closest to PyTorch's 0.1
  for (std::size_t k = 0; k < nm; ++k)
    if (std::abs(cfg.momenta[k] - 0.1) < std::abs(cfg.momenta[def] - 0.1)) def = k;
  auto mean_at = [&](std::size_t k, std::size_t bi) { return spread(acc[k][bi]).mean; };
  auto gap = [&](std::size_t k, std::size_t bi) { return mean_at(nm + 2, bi) - mean_at(k, bi); };
  std::string verdict = fmt::format(
      "Inference statistics ({}): test accuracy with exact population statistics minus that with the moving average "
      "(momentum {}) is {:+.1f} points after training at batch {} and {:+.1f} at batch {}; each test batch's own "
      "statistics instead of population ones: {:+.1f} points at batch {}, {:+.1f} at batch {}.",
      data_name, short_number(cfg.momenta[def]), 100 * gap(def, small), cfg.batches[small],
      100 * gap(def, large), cfg.batches[large], -100 * gap(nm, small), cfg.batches[small], -100 * gap(nm, large),
      cfg.batches[large]);
  // spread over momenta at each end
  auto momentum_spread = [&](std::size_t bi) {
    double lo = INFINITY, hi = -INFINITY;
    for (std::size_t k = 0; k < nm; ++k) {
      lo = std::min(lo, mean_at(k, bi));
      hi = std::max(hi, mean_at(k, bi));
    }
    return hi - lo;
  };
  verdict += fmt::format(" The choice of momentum moves the accuracy by {:.1f} points at batch {} and {:.1f} at batch {}.",
                         100 * momentum_spread(small), cfg.batches[small], 100 * momentum_spread(large),
                         cfg.batches[large]);
  const bool pop_helps_more_small = gap(def, small) > gap(def, large) + 0.002;
  verdict += pop_helps_more_small
                 ? " Claim \"precise population statistics matter most for small training batches\": HOLDS here."
                 : " Claim \"precise population statistics matter most for small training batches\": does NOT hold "
                   "here.";
  lab.verdict(verdict);

  // ---- figure ----------------------------------------------------------------------------------------------------
  Figure fig{"inference_statistics",
             fmt::format("Which statistics at test time? A trained BN MLP on {}", data_name), 1, 1, 950, 580, {}};
  Panel p;
  p.title = fmt::format("{}: {} epoch(s) of {} images per training batch size; {} seed(s), band = min–max",
                        data_name, cfg.epochs, train.size(), cfg.seeds);
  p.xrange = std::pair{0.8 * static_cast<double>(*std::min_element(cfg.batches.begin(), cfg.batches.end())),
                       1.25 * static_cast<double>(*std::max_element(cfg.batches.begin(), cfg.batches.end()))};
  p.xlabel = "training batch size";
  p.ylabel = "test accuracy";
  p.logx = true;
  p.key = "bottom right";
  const char* colors[] = {"'#aec7e8'", "'#1f77b4'", "'#17becf'", "'#9edae5'", "'#393b79'", "'#d62728'", "'#ff7f0e'", "'#2ca02c'"};
  for (std::size_t k = 0; k < M; ++k)
    add_band_curve(p, cfg.batches, acc[k], titles[k], k < nm ? colors[std::min<std::size_t>(k, 4)] : colors[5 + (k - nm)],
                   k < nm ? "dt 2 " : "");
  fig.panels.push_back(p);

  Report& rep = lab.report(ex, "Statistics at inference: moving averages, batch statistics, population (`inference`)");
  rep.para(fmt::format(
      "Ioffe & Szegedy (2015, §3.1, Alg. 2) normalise at inference with population statistics, Var = m/(m−1)·E_B[σ²_B], "
      "and suggest moving averages as the practical substitute; PyTorch's `torch.optim.swa_utils.update_bn` "
      "recomputes them after training. Here, on {}: the BN MLP of `batch-size` trained at batch {} ({} epoch(s) of {} "
      "images, lr = {}·B/{}, SGD momentum 0.9); for every trained network the test accuracy on {} images with "
      "{} moving averages kept side by side during the same run (momenta {}: BN's momentum changes only its buffers, "
      "never training), with each test batch's own statistics (batches of the training size, drop_last), and with "
      "`xg::nn::update_bn` over the training set (batches of the training size, training mode as PyTorch): the "
      "average of the batch statistics (momentum = None) and the exact pooled mean and variance. {} seed(s).",
      data_name, fmt::format("{}", fmt::join(cfg.batches, ", ")), cfg.epochs, train.size(), short_number(cfg.base_lr),
      cfg.base_batch, eval_set.size(), nm, fmt::format("{}", fmt::join(cfg.momenta, ", ")), cfg.seeds));
  rep.para("**" + verdict + "**");
  rep.image("test accuracy per inference statistic against training batch size", lab.plot(fig));
  std::vector<std::string> head{"statistics"};
  for (std::size_t B : cfg.batches) head.push_back(fmt::format("trained at B={}", B));
  std::vector<std::vector<std::string>> rows;
  for (std::size_t k = 0; k < M; ++k) {
    std::vector<std::string> row{titles[k]};
    for (std::size_t bi = 0; bi < cfg.batches.size(); ++bi) row.push_back(band_cell(acc[k][bi]));
    rows.push_back(row);
  }
  rep.table(head, rows);

  Json& sec = lab.section(ex);
  Json& conf = sec["config"];
  conf["batches"] = cfg.batches;
  conf["momenta"] = cfg.momenta;
  conf["seeds"] = cfg.seeds;
  conf["epochs"] = cfg.epochs;
  conf["train_samples"] = train.size();
  conf["eval_samples"] = eval_set.size();
  for (std::size_t k = 0; k < M; ++k)
    for (std::size_t bi = 0; bi < cfg.batches.size(); ++bi)
      sec["test_accuracy"][keys[k]][std::to_string(cfg.batches[bi])] = acc[k][bi];
  sec["verdict"] = verdict;
}

}  // namespace lab
