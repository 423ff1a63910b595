// ddp.h — `xgrad-lab ddp`: a BatchNorm network trained data-parallel on MPI ranks with SyncBatchNorm, with
// per-rank BatchNorm, and in one process on the whole batch (docs/distributed.md, docs/experiments.md).
//
//   mpirun -np 2 build/bin/xgrad-lab ddp --out results-ddp
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

#include "experiment.h"

namespace lab {

struct DdpConfig {
  std::string model = "mlp";
  std::size_t steps = 600;
  std::size_t batch_size = 128;  // the GLOBAL batch: every rank takes batch_size / P of it
  double lr = 0.1;
  std::size_t seeds = 2;
  std::size_t evals = 6;
  std::size_t train_samples = 0;  // 0 = the whole training set
  std::size_t eval_samples = 2000;
};
DdpConfig ddp_config(const Lab& lab);
/// Every rank must call it (the distributed arms are collectives); rank 0 writes the report section.
void run_ddp(Lab& lab, const DdpConfig& cfg);

/// The subcommand's CLI (its own flags); returns what main calls once the Lab exists.
std::function<void(Lab&)> add_ddp_command(CLI::App& app, CLI::App*& sub);

}  // namespace lab
