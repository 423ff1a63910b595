// experiment.h — one run of xgrad-lab: its options, data, output folder and the files it writes.
//
// Every subcommand fills one lab::Lab: experiments add rows to the metrics table, sections to the report and to
// summary.json, and plots into the output folder; Lab::finish() writes metrics.csv, summary.json and report.md.
// `xgrad-lab all` runs several experiments into the same Lab, so one report holds them all.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <xgrad/data.h>

#include "lab.h"

namespace lab {

/// The flags every subcommand takes.
struct LabOptions {
  std::uint64_t seed = 1;
  /// "default" (the real figures, minutes), "quick" (CI-sized, under a minute), "tiny" (hidden; seconds, for
  /// sanitizer builds).
  std::string mode = "default";  // also "full" (--full: the papers' budgets where feasible)
  /// Seeds per arm (--seeds); 0 = the experiment's default for the mode (see Lab::seeds).
  std::size_t seeds = 0;
  std::string bn_impl = "fused";  // "fused" or "composed"
  int threads = 2;
  std::string data = "/usr/share/datasets/fashion-mnist";
  std::string out = "results";
  std::string command_line;       // for the report
  /// Checkpoints (resume.h): every N steps of each training run (0: only at the end of a run and on
  /// SIGINT/SIGTERM); resume = continue the interrupted run in `out` (--resume DIR).
  std::size_t checkpoint_every = 0;
  bool resume = false;
};

/// The columns of metrics.csv (one measurement per row, "long" format):
///   experiment, model, optimizer, arm, lr, seed, step, metric, value
/// e.g. `lr-sweep,mlp,sgd,bn,0.3,0,2000,test_acc,0.861`.
const std::vector<std::string>& metric_columns();

class Lab;
/// The dataset's name for titles and reports: the last component of --data ("fashion-mnist"; a trailing '/'
/// ignored). Every plot title and report names the data actually used, never a hard-coded one.
std::string dataset_name(const Lab& lab);

class Lab {
 public:
  /// Creates the output folder, sets the thread count and the BatchNorm implementation (falling back to
  /// composed, with a message, if fused was asked for and is not available).
  explicit Lab(LabOptions options);

  const LabOptions& options() const { return opts_; }
  /// quick() is true for --quick and --tiny; full() for --full (the papers' budgets, hours).
  bool quick() const { return opts_.mode == "quick" || opts_.mode == "tiny"; }
  bool full() const { return opts_.mode == "full"; }
  /// Seeds per arm: --seeds if given, else `fallback` (the experiment's choice for the mode).
  std::size_t seeds(std::size_t fallback) const { return opts_.seeds > 0 ? opts_.seeds : fallback; }
  bool tiny() const { return opts_.mode == "tiny"; }
  /// The seed of run `seed_index` of an arm: --seed + seed_index. It is what metrics.csv's `seed` column and
  /// the report show; every stream of that run (init, shuffle, noise) is derived from it with seed_for.
  std::uint64_t run_seed(std::size_t seed_index) const { return opts_.seed + seed_index; }
  const fs::path& out() const { return out_; }
  /// The BatchNorm implementation actually used ("fused" or "composed").
  const std::string& bn_impl() const { return bn_impl_used_; }

  /// The training and test sets from --data, loaded on first use.
  const xg::data::Dataset& train_set();
  const xg::data::Dataset& test_set();
  /// An experiment trained on `train` images and evaluated on `test` (its subsets of the above): summary.json's
  /// config states the largest subsets any experiment used (with --quick these are smaller than the files).
  void used_samples(std::size_t train, std::size_t test);

  /// One row of metrics.csv.
  void metric(const std::string& experiment, const std::string& model, const std::string& optimizer,
              const std::string& arm, double lr, std::int64_t seed, std::int64_t step, const std::string& name,
              double value);
  /// metrics.csv's rows so far (cells.cpp moves a run's rows to replay them in the sweep's order).
  Table& metrics_table() { return metrics_; }
  /// Draws a figure into the output folder (PNG + SVG + .gp); nullopt if gnuplot failed.
  std::optional<std::string> plot(const Figure& fig) { return draw(fig, out_); }

  /// The experiment's section of summary.json (created on first use): summary["experiments"][name].
  Json& section(const std::string& experiment);
  /// The experiment's part of report.md.
  Report& report(const std::string& experiment, const std::string& title);
  /// A one-line verdict shown at the top of report.md.
  void verdict(const std::string& text) { verdicts_.push_back(text); }
  /// Adds training time and steps to the experiment's timing (steps/s in summary.json).
  void add_timing(const std::string& experiment, double seconds, std::size_t steps);

  /// Writes metrics.csv, summary.json and report.md and removes the checkpoints (the run is complete); returns
  /// the report's path.
  fs::path finish();

  /// Checkpoints (resume.h): <out>/checkpoints, and the number of the next training run (0, 1, ... in the
  /// order the experiments start them; train_run names its checkpoint with it).
  fs::path checkpoint_dir() const { return out_ / "checkpoints"; }
  std::size_t next_run_index() { return runs_started_++; }

 private:
  LabOptions opts_;
  fs::path out_;
  std::string bn_impl_used_, bn_impl_note_;
  std::optional<xg::data::Dataset> train_, test_;
  double load_seconds_ = 0;
  std::size_t used_train_ = 0, used_test_ = 0;
  Table metrics_;
  Json summary_ = Json::object();
  std::vector<std::pair<std::string, Report>> sections_;
  std::vector<std::string> verdicts_;
  Json timings_ = Json::object();
  Timer timer_;
  std::size_t runs_started_ = 0;
};

}  // namespace lab
