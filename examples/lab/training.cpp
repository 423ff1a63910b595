// training.cpp — make_optimizer and train_run (see training.h).
#include "training.h"

#include "cells.h"  // job_size(): per-run checkpoints only in a single process

#include <algorithm>

#include <cmath>

#include <fmt/format.h>

#include "resume.h"

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

namespace {

// Text as float64 character codes (a Checkpoint holds numbers only), and back.
std::vector<double> text_codes(const std::string& s) {
  std::vector<double> v;
  for (unsigned char c : s) v.push_back(c);
  return v;
}
std::string codes_text(const std::vector<double>& v) {
  std::string s;
  for (double c : v) s += static_cast<char>(static_cast<unsigned char>(c));
  return s;
}

// The metrics train_run records, as codes in a checkpoint's rows.
const std::vector<std::string>& metric_names() {
  static const std::vector<std::string> names{"train_loss", "train_acc", "test_acc", "test_loss", "diverged"};
  return names;
}

}  // namespace

RunResult train_run(Lab& lab, const RunSpec& spec, Progress& progress, const StepHook& hook) {
  if (!spec.train_set || !spec.eval_set) xg::fail("train_run: train_set and eval_set must be set");
  if (const int sig = stop_signal())
    throw Interrupted(sig, fmt::format("before training run {} ({} {} lr={} {} seed {})", lab.next_run_index(),
                                       spec.model, spec.optimizer, short_number(spec.lr), spec.arm, spec.seed_index));
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

  // Everything the rest of the run depends on, as one checkpoint (resume.h).
  std::uint64_t step = 0, done = 0, windows_above = 0, window_steps = 0, diverged_at = 0;
  double window_loss = 0, window_correct = 0, window_seen = 0;  // since the last log line
  double prior_seconds = 0;  // training time of the processes before this one (resumed runs)
  std::vector<double> rows;  // the metrics recorded so far: (step, metric code, value) triples
  const std::size_t run_index = lab.next_run_index();
  const std::string cell = fmt::format("{}|{}|{}|{}|lr {:.17g}|seed {} of --seed {}|{} steps|batch {}|{}|{} {} samples",
                                       spec.experiment, spec.model, spec.optimizer, spec.arm, spec.lr,
                                       spec.seed_index, lab.options().seed, spec.steps, spec.batch_size, describe(spec.net),
                                       train.source, train.size());
  std::vector<double> cell_codes = text_codes(cell), why_codes, scalars;  // scalars: the RunResult's numbers
  xg::Checkpoint ck;
  ck.add("run", cell_codes).add("model", *net.model).add("optimizer", *opt).add("loader", loader);
  ck.add("rng.default", xg::default_generator());
  for (std::size_t i = 0; i < net.noise.size(); ++i) ck.add(fmt::format("rng.noise{}", i), net.noise[i]->generator());
  ck.add("step", step).add("done", done).add("windows_above", windows_above).add("window_steps", window_steps);
  ck.add("window_loss", window_loss).add("window_correct", window_correct).add("window_seen", window_seen);
  ck.add("diverged_at", diverged_at).add("rows", rows).add("diverged_why", why_codes).add("result", scalars);
  const fs::path ck_path = lab.checkpoint_dir() / fmt::format("run-{}.npz", run_index);
  // Under mpirun (several ranks) runs are resumed by whole cells instead (cells.h): no per-run checkpoints.
  const bool checkpoints_on = job_size() == 1;
  auto save_checkpoint = [&] {
    if (!checkpoints_on) return;
    why_codes = text_codes(res.diverged_why);
    scalars = {res.final_accuracy, res.best_accuracy, res.final_train_loss, prior_seconds + timer.seconds(),
               res.diverged ? 1.0 : 0.0};
    std::error_code ec;
    fs::create_directories(ck_path.parent_path(), ec);
    ck.save(ck_path.string());
  };

  auto record = [&](std::size_t at, const std::string& name, double value) {
    lab.metric(spec.experiment, spec.model, spec.optimizer, spec.arm, spec.lr,
               static_cast<std::int64_t>(seed), static_cast<std::int64_t>(at), name, value);
    const auto code = std::find(metric_names().begin(), metric_names().end(), name) - metric_names().begin();
    rows.insert(rows.end(), {static_cast<double>(at), static_cast<double>(code), value});
    if (name == "train_loss") {
      res.log_steps.push_back(static_cast<double>(at));
      res.train_loss.push_back(value);
    } else if (name == "train_acc") {
      res.train_accuracy.push_back(value);
    } else if (name == "test_acc") {
      res.eval_steps.push_back(static_cast<double>(at));
      res.eval_accuracy.push_back(value);
      res.best_accuracy = std::max(res.best_accuracy, value);
    } else if (name == "test_loss") {
      res.eval_loss.push_back(value);
    }
  };
  auto run_eval = [&](std::size_t at) {
    const Evaluation e = evaluate(*net.model, eval_set);
    record(at, "test_acc", e.accuracy);
    record(at, "test_loss", e.loss);
    return e;
  };

  // Resuming: replay what the checkpoint logged, then finish (a run that had ended) or continue. A run with a
  // hook (or a before_step probe) is trained again instead: the hook's own data (the experiment's traces and
  // probes) are not in the checkpoint.
  std::error_code exists_ec;
  if (lab.options().resume && !hook && !spec.before_step && fs::exists(ck_path, exists_ec)) {
    const xg::StateDict saved = xg::load_npz(ck_path.string());
    const std::string saved_cell = saved.contains("run") ? codes_text(saved.at("run").to_vector()) : "?";
    if (saved_cell != cell)
      xg::fail("--resume: checkpoint '{}' is of the run `{}`, but this command's run {} is `{}`: the flags differ "
               "from the interrupted run's",
               ck_path.string(), saved_cell, run_index, cell);
    try {
      ck.load_state_dict(saved);
    } catch (const std::exception& e) {
      xg::fail("--resume: cannot load '{}': {}", ck_path.string(), e.what());
    }
    const std::vector<double> logged = rows;
    rows.clear();
    for (std::size_t i = 0; i + 2 < logged.size(); i += 3)
      record(static_cast<std::size_t>(logged[i]), metric_names().at(static_cast<std::size_t>(logged[i + 1])),
             logged[i + 2]);
    res.diverged_why = codes_text(why_codes);
    res.diverged = scalars.at(4) != 0.0;
    res.diverged_at = diverged_at;
    progress.advance(step, "resumed");
    if (done) {
      res.final_accuracy = scalars.at(0);
      res.best_accuracy = scalars.at(1);
      res.final_train_loss = scalars.at(2);
      res.seconds = scalars.at(3);
      if (res.diverged) progress.advance(spec.steps - step + 1, "replayed");
      lab.add_timing(spec.experiment, res.seconds, res.diverged ? res.diverged_at : spec.steps);
      return res;
    }
    prior_seconds = scalars.at(3);
  } else {
    if (hook) hook(net, 0);
    run_eval(0);
  }
  const std::string status = fmt::format("{} {} lr={} {} seed {}", spec.model, spec.optimizer,
                                         short_number(spec.lr), spec.arm, seed);
  const std::size_t every = lab.options().checkpoint_every;
  while (step < spec.steps) {
    ++step;
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
    diverged_at = res.diverged_at;
    if (const int sig = stop_signal()) {
      if (!hook) save_checkpoint();
      throw Interrupted(sig, fmt::format("training run {} ({}) at step {} of {}{}", run_index, status, step,
                                         spec.steps, hook ? " (a run with a step hook: it restarts on resume)" : ""));
    }
    if (every > 0 && step % every == 0 && step != spec.steps && !hook) save_checkpoint();
  }
  if (res.diverged) {
    res.final_accuracy = std::nan("");
    res.final_train_loss = std::nan("");
  } else {
    res.final_accuracy = run_eval(spec.steps).accuracy;
    res.final_train_loss = res.train_loss.empty() ? std::nan("") : res.train_loss.back();
  }
  res.seconds = prior_seconds + timer.seconds();
  lab.add_timing(spec.experiment, res.seconds, res.diverged ? res.diverged_at : spec.steps);
  // The finished run, for a later --resume of this command (replayed, not trained again).
  if (!hook) {
    done = 1;
    diverged_at = res.diverged_at;
    save_checkpoint();
  }
  return res;
}

}  // namespace lab
