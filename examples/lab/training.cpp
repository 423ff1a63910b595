// training.cpp — make_optimizer and train_run (see training.h).
#include "training.h"

#include <cmath>

#include <fmt/format.h>

namespace lab {

std::unique_ptr<xg::optim::Optimizer> make_optimizer(const std::string& name, const std::vector<xg::Tensor>& params,
                                                     double lr) {
  if (name == "sgd") return std::make_unique<xg::optim::SGD>(params, xg::optim::SGDOptions(lr));
  if (name == "adam") return std::make_unique<xg::optim::Adam>(params, xg::optim::AdamOptions(lr));
  xg::fail("unknown optimizer '{}' (use sgd or adam)", name);
}

const xg::data::Dataset& first_samples(const xg::data::Dataset& ds, std::size_t n, xg::data::Dataset& storage) {
  if (n == 0 || n >= ds.size()) return ds;
  storage = ds.head(n);
  return storage;
}

RunResult train_run(Lab& lab, const RunSpec& spec, Progress& progress, const StepHook& hook) {
  if (!spec.train_set || !spec.eval_set) xg::fail("train_run: train_set and eval_set must be set");
  Timer timer;
  RunResult res;
  const std::uint64_t seed = lab.run_seed(spec.seed_index);  // --seed + seed_index
  const auto& train = *spec.train_set;
  const auto& eval_set = *spec.eval_set;

  // The same seed_index gives the same initial weights and the same batches to every arm.
  Net net = make_net(spec.net, train.images.shape(), train.num_classes(), seed_for(seed, "init"),
                     seed_for(seed, "noise"));
  auto opt = make_optimizer(spec.optimizer, net.model->parameters(), spec.lr);
  xg::data::DataLoader loader(
      train, xg::data::DataLoaderOptions(spec.batch_size).drop_last(true).seed(seed_for(seed, "shuffle")));

  auto record = [&](std::size_t step, const std::string& name, double value) {
    lab.metric(spec.experiment, spec.model, spec.optimizer, spec.arm, spec.lr,
               static_cast<std::int64_t>(seed), static_cast<std::int64_t>(step), name, value);
  };
  auto run_eval = [&](std::size_t step) {
    const Evaluation e = evaluate(*net.model, eval_set);
    res.eval_steps.push_back(static_cast<double>(step));
    res.eval_accuracy.push_back(e.accuracy);
    res.eval_loss.push_back(e.loss);
    res.best_accuracy = std::max(res.best_accuracy, e.accuracy);
    record(step, "test_acc", e.accuracy);
    record(step, "test_loss", e.loss);
    return e;
  };

  if (hook) hook(net, 0);
  run_eval(0);
  const std::string status = fmt::format("{} {} lr={} {} seed {}", spec.model, spec.optimizer,
                                         short_number(spec.lr), spec.arm, seed);
  double window_loss = 0, window_correct = 0, window_seen = 0;  // since the last log line
  std::size_t window_steps = 0;
  std::size_t windows_above = 0;  // consecutive log windows whose mean loss exceeded blowup_loss
  for (std::size_t step = 1; step <= spec.steps; ++step) {
    const xg::data::Batch batch = loader.next();
    if (spec.before_step) spec.before_step(net, batch, step);
    const StepResult r = train_step(net, *opt, batch);
    const double loss = r.loss;
    if (!std::isfinite(loss)) {
      res.diverged = true;
      res.diverged_at = step;
      res.diverged_why = fmt::format("loss became {}", loss);
    }
    window_loss += loss;
    window_correct += static_cast<double>(r.correct);
    window_seen += static_cast<double>(batch.size());
    ++window_steps;
    if (step % spec.log_every == 0 || step == spec.steps) {
      const double mean = window_loss / static_cast<double>(window_steps);
      res.log_steps.push_back(static_cast<double>(step));
      res.train_loss.push_back(mean);
      res.train_accuracy.push_back(window_correct / window_seen);
      record(step, "train_loss", mean);
      record(step, "train_acc", window_correct / window_seen);
      window_loss = window_correct = window_seen = 0;
      window_steps = 0;
      // A blow-up: the loss stays far above a guess's for three log windows in a row (a single spike that
      // training recovers from is not a divergence).
      windows_above = mean > spec.blowup_loss ? windows_above + 1 : 0;
      if (windows_above >= 3) {
        res.diverged = true;
        res.diverged_at = step;
        res.diverged_why = fmt::format("loss blew up: mean {:.3g} over the last {} steps", mean, spec.log_every);
      }
    }
    if (res.diverged) {
      record(step, "diverged", static_cast<double>(step));
      progress.advance(spec.steps - step + 1, status + " diverged");
      break;
    }
    if (hook) hook(net, step);
    if (spec.eval_every > 0 && step % spec.eval_every == 0 && step != spec.steps) run_eval(step);
    progress.advance(1, status);
  }
  if (res.diverged) {
    res.final_accuracy = std::nan("");
    res.final_train_loss = std::nan("");
  } else {
    res.final_accuracy = run_eval(spec.steps).accuracy;
    res.final_train_loss = res.train_loss.empty() ? std::nan("") : res.train_loss.back();
  }
  res.seconds = timer.seconds();
  lab.add_timing(spec.experiment, res.seconds, res.diverged ? res.diverged_at : spec.steps);
  return res;
}

}  // namespace lab
