// xgrad-lab — the bundled BatchNorm experiments, one subcommand each (run `xgrad-lab --help`).
//
//   xgrad-lab all --out results            # everything the README shows (about 4.5 minutes on 2 cores)
//   xgrad-lab lr-sweep --quick             # CI-sized (under a minute)
//   xgrad-lab convergence --steps 50000    # the paper's budget
//
// Every subcommand writes <out>/metrics.csv, summary.json, report.md and PNG/SVG plots.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <xgrad/xgrad.h>

#include "bn_limits.h"
#include "cells.h"
#if XGRAD_LAB_DIST
#include "ddp.h"
#endif
#include "resume.h"
#include "training.h"
#include "why_bn_cli.h"
#include "validate.h"

namespace {

// A subcommand option that overrides one field of a mode-dependent config only when given.
template <class T>
struct Override {
  T value{};
  CLI::Option* option = nullptr;
  void add(CLI::App* app, const std::string& name, const std::string& help) { option = app->add_option(name, value, help); }
  void apply(T& target) const {
    if (option && option->count() > 0) target = value;
  }
};

// The flags every subcommand shares.
void add_common(CLI::App* app, lab::LabOptions& o, bool& quick, bool& tiny, bool& full) {
  app->add_option("--seed", o.seed, "Seed of the whole run (weights, shuffling, noise)")->capture_default_str();
  app->add_option("--seeds", o.seeds, "Seeds per arm (default: the experiment's choice for the mode)")
      ->check(CLI::Range(1, 100));
  app->add_flag("--quick", quick, "CI-sized run: small subsets and few steps (under a minute)");
  app->add_flag("--full", full, "The papers' budgets where feasible (hours; the estimate is printed first)")
      ->excludes(app->get_option("--quick"));
  app->add_flag("--tiny", tiny, "Even smaller than --quick (for sanitizer builds)")->group("");  // hidden
  app->add_option("--bn-impl", o.bn_impl, "BatchNorm implementation: fused (hand-fused kernels) or composed")
      ->check(CLI::IsMember({"fused", "composed"}))
      ->capture_default_str();
  app->add_option("--threads", o.threads, "Number of threads (xg::set_num_threads)")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app->add_option("--data", o.data, "Folder with MNIST-format files ({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz])")
      ->capture_default_str();
  app->add_option("--out", o.out, "Output folder (created if needed) for metrics.csv, summary.json, report.md, plots")
      ->capture_default_str();
  app->add_option("--checkpoint-every", o.checkpoint_every,
                  "Checkpoint each training run every N steps (0: at the end of each run and on SIGINT/SIGTERM)")
      ->capture_default_str();
  app->add_option("--resume", o.out, "Continue the interrupted run that was writing into DIR (its flags come from "
                                     "DIR/checkpoints/args.txt)")
      ->type_name("DIR");
}

}  // namespace

int main(int argc, char** argv) {
  lab::install_stop_handlers();  // SIGINT/SIGTERM: checkpoint and stop at the next step (resume.h); before any thread
  // A training step frees and reallocates the same large tensors; keep them in the process instead of
  // page-faulting them back in every step (see xgrad/memory.h: 2x on the MLP steps of a 2-vCPU VM).
  xg::keep_freed_memory();
  lab::ClusterSession cluster(argc, argv);  // MPI when started by mpirun/srun: sweeps spread over ranks (cells.h)
  lab::Progress::set_job(lab::job_rank());  // only rank 0 draws progress bars
  CLI::App app{"xgrad-lab: what BatchNorm does to learning-rate tolerance and convergence, on Fashion-MNIST.\n"
               "Reproduces Ioffe & Szegedy 2015 (Figure 1) and Santurkar et al. 2018 (Figures 1 and 2) at a small "
               "scale. Each subcommand writes metrics.csv, summary.json, report.md and plots into --out."};
  app.require_subcommand(1);
  lab::LabOptions opts;
  bool quick = false, tiny = false, full = false;

  // ---- lr-sweep --------------------------------------------------------------------------------------------
  auto* sweep = app.add_subcommand("lr-sweep", "Learning-rate tolerance: accuracy against learning rate, with and "
                                               "without BN, for the MLP and the small CNN");
  add_common(sweep, opts, quick, tiny, full);
  Override<std::vector<double>> sweep_lrs, sweep_cnn_lrs, sweep_adam_lrs;
  Override<std::vector<std::string>> sweep_models, sweep_optims;
  Override<std::size_t> sweep_cnn_seeds, sweep_mlp_steps, sweep_cnn_steps, sweep_batch, sweep_train_n, sweep_eval_n;
  Override<double> sweep_frac;
  sweep_lrs.add(sweep, "--lrs", "MLP SGD learning rates, comma-separated (default 0.01,0.03,...,30)");
  sweep_lrs.option->delimiter(',');
  sweep_cnn_lrs.add(sweep, "--cnn-lrs", "CNN SGD learning rates, comma-separated (default 0.01,0.1,0.3,1)");
  sweep_cnn_lrs.option->delimiter(',');
  sweep_adam_lrs.add(sweep, "--adam-lrs", "Adam learning rates, comma-separated");
  sweep_adam_lrs.option->delimiter(',');
  sweep_models.add(sweep, "--models", "Networks: mlp,cnn");
  sweep_models.option->delimiter(',')->check(CLI::IsMember({"mlp", "cnn"}));
  sweep_optims.add(sweep, "--optimizers", "Optimizers: sgd,adam");
  sweep_optims.option->delimiter(',')->check(CLI::IsMember({"sgd", "adam"}));
  sweep_cnn_seeds.add(sweep, "--cnn-seeds", "CNN seeds per learning rate and arm");
  sweep_mlp_steps.add(sweep, "--mlp-steps", "Training steps per MLP run");
  sweep_cnn_steps.add(sweep, "--cnn-steps", "Training steps per CNN run");
  sweep_batch.add(sweep, "--batch", "Batch size");
  sweep_train_n.add(sweep, "--train-samples", "Use the first N training images (0 = all)");
  sweep_eval_n.add(sweep, "--eval-samples", "Evaluate on the first N test images (0 = all)");
  sweep_frac.add(sweep, "--train-fraction", "A run trains if its accuracy >= chance + f*(best - chance)");

  // ---- convergence -------------------------------------------------------------------------------------------
  auto* conv = app.add_subcommand("convergence", "Ioffe & Szegedy Figure 1: test accuracy against steps and the "
                                                 "percentiles of a sigmoid's input, with and without BN");
  add_common(conv, opts, quick, tiny, full);
  Override<std::size_t> conv_steps, conv_batch, conv_unit, conv_train_n, conv_eval_n;
  Override<double> conv_lr, conv_init;
  conv_steps.add(conv, "--steps", "Training steps (the paper: 50000)");
  conv_batch.add(conv, "--batch", "Batch size (the paper: 60)");
  conv_lr.add(conv, "--lr", "SGD learning rate (default 0.5)");
  conv_init.add(conv, "--init-std", "Standard deviation of the Gaussian initial weights (default 0.1)");
  conv_unit.add(conv, "--unit", "Which unit of the last hidden layer to trace (default 0)");
  conv_train_n.add(conv, "--train-samples", "Use the first N training images (0 = all)");
  conv_eval_n.add(conv, "--eval-samples", "Evaluate on the first N test images (0 = all)");

  // ---- noisy-bn ------------------------------------------------------------------------------------------------
  auto* noisy = app.add_subcommand("noisy-bn", "Santurkar et al. Figure 2: standard vs BN vs BN + time-varying "
                                               "noise vs standard + noise");
  add_common(noisy, opts, quick, tiny, full);
  Override<std::string> noisy_model;
  Override<std::size_t> noisy_depth, noisy_steps, noisy_batch, noisy_unit, noisy_train_n, noisy_eval_n;
  Override<double> noisy_lr, n_mu, n_sigma, r_mu, r_sigma;
  noisy_model.add(noisy, "--model", "Network: mlp or cnn");
  noisy_model.option->check(CLI::IsMember({"mlp", "cnn"}));
  noisy_depth.add(noisy, "--depth", "Hidden layers of the MLP (100 units each)");
  Override<std::string> noisy_init;
  noisy_init.add(noisy, "--init", "Weight init: kaiming (He-normal, default) or pytorch (PyTorch's default)");
  noisy_init.option->check(CLI::IsMember({"kaiming", "pytorch"}));
  noisy_steps.add(noisy, "--steps", "Training steps");
  noisy_batch.add(noisy, "--batch", "Batch size (the paper: 128)");
  noisy_lr.add(noisy, "--lr", "SGD learning rate (the paper: 0.1)");
  noisy_unit.add(noisy, "--unit", "Which unit of the last hidden layer to show");
  noisy_train_n.add(noisy, "--train-samples", "Use the first N training images (0 = all)");
  noisy_eval_n.add(noisy, "--eval-samples", "Evaluate on the first N test images (0 = all)");
  n_mu.add(noisy, "--n-mu", "Noise: per-step offsets mu ~ U(-n_mu, n_mu) (0.5)");
  n_sigma.add(noisy, "--n-sigma", "Noise: per-step scales sigma ~ U(1, n_sigma) (1.25)");
  r_mu.add(noisy, "--r-mu", "Noise: per-sample offsets m ~ U(mu - r_mu, mu + r_mu) (0.1)");
  r_sigma.add(noisy, "--r-sigma", "Noise: per-sample scales s ~ N(sigma, r_sigma) (0.1)");

  // ---- batch-size, inference, regularisation (bn_limits.cpp) ----------------------------------------------------
  lab::LimitsCommands* limits = lab::add_limits_subcommands(app, [&](CLI::App* a) { add_common(a, opts, quick, tiny, full); });

  // ---- all -------------------------------------------------------------------------------------------------------
  auto* all = app.add_subcommand("all", "Every experiment (convergence, lr-sweep, noisy-bn, landscape, ics, dln, "
                                        "lp-norm, batch-size, inference, regularisation) into one report (a few "
                                        "minutes on 2 cores; --quick for CI)");
  add_common(all, opts, quick, tiny, full);
  const lab::WhyBnCli why_bn(app, [&](CLI::App* sub) { add_common(sub, opts, quick, tiny, full); });

#if XGRAD_LAB_DIST
  CLI::App* ddp = nullptr;  // ddp.cpp: data-parallel BatchNorm (under mpirun)
  const auto run_ddp = lab::add_ddp_command(app, ddp);
  add_common(ddp, opts, quick, tiny, full);
#endif

  std::vector<std::string> args;  // argv, or with --resume DIR the interrupted run's flags (resume.h)
  try {
    args = lab::resume_arguments(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "xgrad-lab: error: {}\n", e.what());
    return 1;
  }
  std::vector<const char*> arg_ptrs;
  for (const auto& a : args) arg_ptrs.push_back(a.c_str());
  CLI11_PARSE(app, static_cast<int>(arg_ptrs.size()), arg_ptrs.data());

  opts.mode = tiny ? "tiny" : quick ? "quick" : full ? "full" : "default";
  opts.command_line = "xgrad-lab";
  for (std::size_t i = 1; i < args.size(); ++i) opts.command_line += " " + args[i];
  for (auto* sub : app.get_subcommands()) opts.resume = opts.resume || sub->get_option("--resume")->count() > 0;

  std::optional<lab::Lab> lab_holder;
  try {
    lab::Lab& lab = lab_holder.emplace(opts);
    // Under mpirun the sweep resumes by cells (run the same command again); --resume is for one process.
    if (lab::job_size() > 1 && (opts.resume || opts.checkpoint_every > 0))
      xg::fail("--resume and --checkpoint-every work in a single process; under mpirun a sweep resumes by its "
               "recorded cells: run the same command again");
    if (lab::job_size() == 1) lab::record_arguments(lab, args);
    auto sweep_cfg = [&] {
      auto c = lab::lr_sweep_config(lab);
      sweep_lrs.apply(c.sgd_lrs);
      sweep_cnn_lrs.apply(c.cnn_lrs);
      sweep_adam_lrs.apply(c.adam_lrs);
      sweep_models.apply(c.models);
      sweep_optims.apply(c.optimizers);
      sweep_cnn_seeds.apply(c.cnn_seeds);
      sweep_mlp_steps.apply(c.mlp_steps);
      sweep_cnn_steps.apply(c.cnn_steps);
      sweep_batch.apply(c.batch_size);
      sweep_train_n.apply(c.train_samples);
      sweep_eval_n.apply(c.eval_samples);
      sweep_frac.apply(c.train_fraction);
      return c;
    };
    auto conv_cfg = [&] {
      auto c = lab::convergence_config(lab);
      conv_steps.apply(c.steps);
      conv_batch.apply(c.batch_size);
      conv_lr.apply(c.lr);
      conv_init.apply(c.init_std);
      conv_unit.apply(c.unit);
      conv_train_n.apply(c.train_samples);
      conv_eval_n.apply(c.eval_samples);
      return c;
    };
    auto noisy_cfg = [&] {
      auto c = lab::noisy_bn_config(lab);
      noisy_model.apply(c.model);
      noisy_depth.apply(c.depth);
      noisy_init.apply(c.init);
      noisy_steps.apply(c.steps);
      noisy_batch.apply(c.batch_size);
      noisy_lr.apply(c.lr);
      noisy_unit.apply(c.unit);
      noisy_train_n.apply(c.train_samples);
      noisy_eval_n.apply(c.eval_samples);
      n_mu.apply(c.noise.n_mu);
      n_sigma.apply(c.noise.n_sigma);
      r_mu.apply(c.noise.r_mu);
      r_sigma.apply(c.noise.r_sigma);
      return c;
    };

    fmt::print(stderr, "xgrad-lab: mode {}, seed {}, {} thread(s), BatchNorm {}, float32 GEMM {}, data {}, output {}\n",
               opts.mode, opts.seed, opts.threads, lab.bn_impl(), xg::blas::sgemm_backend_name(), opts.data, opts.out);
    fmt::print(stderr, "xgrad-lab: CPU {}, xgrad built for {} ({} vectors)\n", xg::cpu::cpu_name(),
               xg::cpu::build_arch(), xg::cpu::simd_name());
    // Every option is checked before the first experiment starts (validate.h).
    if (*sweep || *all) lab::validate(sweep_cfg());
    if (*conv || *all) lab::validate(conv_cfg());
    if (*noisy || *all) lab::validate(noisy_cfg());
    if (*all) lab::WhyBnCli::validate_all(lab);  // all: every experiment it runs, before convergence starts
    why_bn.validate_selected(lab);
    lab::validate_limits(lab, limits, bool(*all));  // (ddp checks its options in ddp.cpp, before the rank check)
    if (*sweep) lab::run_lr_sweep(lab, sweep_cfg());
    if (*conv) lab::run_convergence(lab, conv_cfg());
    if (*noisy) lab::run_noisy_bn(lab, noisy_cfg());
    // Under mpirun every rank runs every experiment, each with its runs spread over the ranks (cells.h): a
    // rank runs its share of an experiment's cells, sends them to rank 0 and goes on with the next experiment.
    if (*all) {
      lab::run_convergence(lab, conv_cfg());
      lab::run_lr_sweep(lab, sweep_cfg());
      lab::run_noisy_bn(lab, noisy_cfg());
      lab::WhyBnCli::run_all(lab);
    }
    why_bn.run_selected(lab);
    lab::run_limits(lab, limits, bool(*all));
#if XGRAD_LAB_DIST
    if (*ddp) run_ddp(lab);
#endif
    if (!lab::is_report_rank()) return 0;  // rank 0 writes the report
    const auto report = lab.finish();
    fmt::print(stderr, "xgrad-lab: done; report: {}\n", report.string());
  } catch (const lab::Interrupted& e) {
    return lab::report_interrupted(e, *lab_holder);
  } catch (const std::exception& e) {
    return lab::fail_job(e.what());  // under mpirun: ends every rank (no half-written report)
  }
  return 0;
}
