// experiment.cpp — lab::Lab, the run context of xgrad-lab (see experiment.h).
#include "experiment.h"

#include <algorithm>
#include <ctime>

#include <fmt/format.h>
#include <xgrad/xgrad.h>

#include "cells.h"  // job_size()

namespace lab {

const std::vector<std::string>& metric_columns() {
  static const std::vector<std::string> cols{"experiment", "model", "optimizer", "arm", "lr",
                                             "seed",       "step",  "metric",    "value"};
  return cols;
}

namespace {

// True if the fused BatchNorm runs a forward and backward here (it is a separate implementation that may be
// missing from a build); `why` gets the error otherwise.
bool fused_batchnorm_works(std::string& why) {
  try {
    xg::nn::BatchNorm1d bn(xg::nn::BatchNormOptions(3).impl(xg::nn::BatchNormImpl::Fused));
    xg::Tensor x = xg::randn({4, 3});
    x.requires_grad_();
    bn.forward(x).sum().backward();
    return x.grad().defined();
  } catch (const std::exception& e) {
    why = e.what();
    return false;
  }
}

}  // namespace

Lab::Lab(LabOptions options) : opts_(std::move(options)), out_(opts_.out), metrics_(metric_columns()) {
  if (opts_.threads < 1) xg::fail("--threads must be at least 1, got {}", opts_.threads);
  xg::set_num_threads(opts_.threads);
  std::error_code ec;
  fs::create_directories(out_, ec);
  if (ec) xg::fail("cannot create the output folder '{}': {}", out_.string(), ec.message());

  if (opts_.bn_impl == "composed") {
    bn_impl_used_ = "composed";
  } else if (opts_.bn_impl == "fused") {
    std::string why;
    if (fused_batchnorm_works(why)) {
      bn_impl_used_ = "fused";
    } else {
      bn_impl_used_ = "composed";
      bn_impl_note_ = "the fused BatchNorm is not available in this build (" + why +
                      "); the composed implementation was used instead";
      fmt::print(stderr, "note: {}\n", bn_impl_note_);
    }
  } else {
    xg::fail("--bn-impl must be fused or composed, got '{}'", opts_.bn_impl);
  }
  xg::nn::set_default_batchnorm_impl(bn_impl_used_ == "fused" ? xg::nn::BatchNormImpl::Fused
                                                              : xg::nn::BatchNormImpl::Composed);
}

const xg::data::Dataset& Lab::train_set() {
  if (!train_) {
    Timer t;
    train_ = xg::data::load_mnist_folder(opts_.data, true);
    load_seconds_ += t.seconds();
  }
  return *train_;
}

const xg::data::Dataset& Lab::test_set() {
  if (!test_) {
    Timer t;
    test_ = xg::data::load_mnist_folder(opts_.data, false);
    load_seconds_ += t.seconds();
  }
  return *test_;
}

void Lab::used_samples(std::size_t train, std::size_t test) {
  used_train_ = std::max(used_train_, train);
  used_test_ = std::max(used_test_, test);
}

void Lab::metric(const std::string& experiment, const std::string& model, const std::string& optimizer,
                 const std::string& arm, double lr, std::int64_t seed, std::int64_t step, const std::string& name,
                 double value) {
  metrics_.add({experiment, model, optimizer, arm, lr, seed, step, name, value});
}

Json& Lab::section(const std::string& experiment) { return summary_["experiments"][experiment]; }

Report& Lab::report(const std::string& experiment, const std::string& title) {
  for (auto& [name, r] : sections_)
    if (name == experiment) return r;
  sections_.emplace_back(experiment, Report());
  sections_.back().second.h2(title);
  return sections_.back().second;
}

void Lab::add_timing(const std::string& experiment, double seconds, std::size_t steps) {
  Json& t = timings_[experiment];
  const double s = (t.find("train_seconds") ? t.find("train_seconds")->number() : 0.0) + seconds;
  const double n = (t.find("steps") ? t.find("steps")->number() : 0.0) + static_cast<double>(steps);
  t["train_seconds"] = s;
  t["steps"] = n;
  t["steps_per_second"] = s > 0 ? n / s : 0.0;
}

fs::path Lab::finish() {
  const double total = timer_.seconds();
  // summary.json: configuration, versions, timings, then the experiments' own sections.
  Json summary = Json::object();
  summary["command"] = opts_.command_line;
  Json& cfg = summary["config"];
  cfg["seed"] = opts_.seed;
  cfg["mode"] = opts_.mode;
  cfg["bn_impl_requested"] = opts_.bn_impl;
  cfg["bn_impl_used"] = bn_impl_used_;
  if (!bn_impl_note_.empty()) cfg["bn_impl_note"] = bn_impl_note_;
  cfg["threads"] = opts_.threads;
  cfg["data"] = opts_.data;
  // The subsets the experiments actually used (the largest), and the files' sizes.
  if (train_) {
    cfg["train_samples"] = used_train_ ? used_train_ : train_->size();
    cfg["train_samples_in_data"] = train_->size();
  }
  if (test_) {
    cfg["test_samples"] = used_test_ ? used_test_ : test_->size();
    cfg["test_samples_in_data"] = test_->size();
  }
  summary["versions"] = versions();
  Json& timing = summary["timings"];
  timing["total_seconds"] = total;
  timing["data_load_seconds"] = load_seconds_;
  timing["experiments"] = timings_;
  summary["verdicts"] = verdicts_;
  if (const Json* ex = summary_.find("experiments")) summary["experiments"] = *ex;

  metrics_.save(out_ / "metrics.csv");
  summary.save(out_ / "summary.json");

  // report.md: what was run, the verdicts, then each experiment's section.
  Report r;
  r.h1("xgrad-lab: BatchNorm experiments");
  std::time_t now = std::time(nullptr);
  char date[64];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M", std::localtime(&now));
  r.para(fmt::format("Run on {} with `{}` — mode **{}**, seed {} (run k of an arm uses seed {} + k: that is the "
                     "`seed` column of metrics.csv), {}{} thread(s), BatchNorm implementation **{}**, data `{}`{}. "
                     "Took {} in total.",
                     date, opts_.command_line, opts_.mode, opts_.seed, opts_.seed,
                     job_size() > 1 ? fmt::format("{} MPI ranks (the runs spread over them) × ", job_size()) : "",
                     opts_.threads, bn_impl_used_,
                     opts_.data,
                     train_ && used_train_ && used_train_ < train_->size()
                         ? fmt::format(" (at most {} of its {} training images used)", used_train_, train_->size())
                         : std::string(),
                     format_duration(total)));
  if (!bn_impl_note_.empty()) r.para("Note: " + bn_impl_note_ + ".");
  if (quick())
    r.para("This is a reduced (" + opts_.mode +
           ") run sized for CI: small subsets and few steps. The numbers show the machinery works; run without "
           "`--quick` for the real figures.");
  if (!verdicts_.empty()) {
    r.h2("Verdicts (computed from the data below)");
    for (const auto& v : verdicts_) r.bullet(v);
    r.blank();
  }
  std::string text = r.str();
  for (const auto& [name, sec] : sections_) text += sec.str();
  text += fmt::format("---\nFiles: `metrics.csv` (columns: {}), `summary.json`, and for every plot a PNG, an SVG "
                      "and the gnuplot script that draws both (`gnuplot <name>.gp`).\n",
                      [] {
                        std::string s;
                        for (const auto& c : metric_columns()) s += (s.empty() ? "" : ", ") + c;
                        return s;
                      }());
  write_file_atomic(out_ / "report.md", text);
  // Complete: nothing left to resume.
  std::error_code ec;
  fs::remove_all(checkpoint_dir(), ec);
  return out_ / "report.md";
}

std::string dataset_name(const Lab& lab) {
  fs::path p(lab.options().data);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();  // "data/" -> "data"
  return p.empty() ? lab.options().data : p.filename().string();
}

}  // namespace lab
