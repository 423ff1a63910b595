// my_experiment.cpp — how to write your own experiment with xgrad-lab's toolkit (docs/experiments.md).
//
// The question here: does BatchNorm still help when the optimizer is Adam? Two runs of the MLP, with and
// without BN, same seed, same batches; the test accuracy curves are plotted and a verdict is written.
//
//   build/bin/my-experiment --quick --out my-results      # then open my-results/report.md
#include <CLI/CLI.hpp>

#include <fmt/format.h>

#include "training.h"

int main(int argc, char** argv) {
  // [setup]
  CLI::App app{"Does BatchNorm help an MLP trained with Adam?"};
  lab::LabOptions opts;
  opts.out = "my-results";
  bool quick = false;
  double lr = 3e-3;
  app.add_option("--seed", opts.seed, "Seed of the whole run");
  app.add_flag("--quick", quick, "A few hundred steps instead of a few thousand");
  app.add_option("--lr", lr, "Adam learning rate");
  app.add_option("--data", opts.data, "MNIST-format folder");
  app.add_option("--out", opts.out, "Output folder");
  CLI11_PARSE(app, argc, argv);
  opts.mode = quick ? "quick" : "default";
  opts.command_line = "my-experiment";
  // [/setup]

  try {
    // [train]
    lab::Lab lab(opts);  // output folder, threads, BatchNorm implementation, data on demand
    xg::data::Dataset eval_store;
    const auto& test = lab::first_samples(lab.test_set(), 2000, eval_store);
    const std::size_t steps = lab.quick() ? 300 : 3000;
    lab::Progress progress("adam-bn", 2 * steps);
    std::vector<lab::RunResult> results;
    for (bool bn : {false, true}) {
      lab::RunSpec spec;
      spec.experiment = "adam-bn";
      spec.model = "mlp";
      spec.optimizer = "adam";
      spec.arm = bn ? "bn" : "plain";
      spec.net.batchnorm = bn;  // MLP 784-100-100-100-10 ReLU (see lab::NetSpec)
      spec.lr = lr;
      spec.steps = steps;
      spec.eval_every = steps / 10;
      spec.train_set = &lab.train_set();
      spec.eval_set = &test;
      results.push_back(lab::train_run(lab, spec, progress));  // logs into metrics.csv
    }
    progress.finish();
    // [/train]

    // [report]
    lab::Figure fig{"adam_bn", "MLP + Adam: test accuracy", 1, 1, 800, 480, {}};
    lab::Panel panel;
    panel.xlabel = "training step";
    panel.ylabel = "test accuracy";
    panel.key = "bottom right";
    panel.series.push_back({"without BN", results[0].eval_steps, results[0].eval_accuracy, {}, "lines", "lw 2"});
    panel.series.push_back({"with BN", results[1].eval_steps, results[1].eval_accuracy, {}, "lines", "lw 2"});
    fig.panels.push_back(panel);

    const std::string verdict = fmt::format("With Adam at lr {}: {} with BN, {} without.", lab::short_number(lr),
                                            lab::percent(results[1].final_accuracy),
                                            lab::percent(results[0].final_accuracy));
    lab.verdict(verdict);
    lab::Report& rep = lab.report("adam-bn", "BatchNorm with Adam");
    rep.para(verdict);
    rep.image("test accuracy", lab.plot(fig));
    lab.section("adam-bn")["lr"] = lr;
    fmt::print("report: {}\n", lab.finish().string());  // metrics.csv, summary.json, report.md
    // [/report]
  } catch (const std::exception& e) {
    fmt::print(stderr, "my-experiment: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
