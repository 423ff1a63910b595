// resume.h — xgrad-lab's checkpoints: stop cleanly on SIGINT/SIGTERM, and `--resume DIR` to continue.
//
// Every train_run (training.cpp) is one "run" of the Lab, numbered in the order the experiment starts them. Its
// state — the network (parameters and BatchNorm's running statistics), the optimizer, the data loader's position
// and shuffling stream, the noise streams, xg::default_generator, the step, the log-window sums, the metrics it
// logged and its result so far — is an xg::Checkpoint at <out>/checkpoints/run-<n>.npz, written every
// --checkpoint-every steps, when the run ends, and when SIGINT/SIGTERM arrives (then xgrad-lab exits with status
// 128 + the signal's number and says how to continue). <out>/checkpoints/args.txt holds the command's flags.
//
// `xgrad-lab SUBCOMMAND --resume DIR` re-runs the command with the flags in DIR/checkpoints/args.txt: finished
// runs are replayed from their checkpoints (metrics and results, no training), the interrupted run continues
// from its last checkpoint, and the rest train as usual — metrics.csv ends up byte-identical to an uninterrupted
// run's. Runs that collect data of their own in a StepHook (convergence, noisy-bn) cannot be replayed: they are
// trained again from step 0 (same seeds, so the same numbers). A successful finish removes <out>/checkpoints.
#pragma once

#include <csignal>
#include <stdexcept>
#include <string>
#include <vector>

#include "experiment.h"

namespace lab {

/// Thrown by train_run when SIGINT or SIGTERM arrived (after it saved its checkpoint).
class Interrupted : public std::runtime_error {
 public:
  Interrupted(int signal, const std::string& what) : std::runtime_error(what), signal_(signal) {}
  int signal() const { return signal_; }

 private:
  int signal_;
};

/// Takes SIGINT/SIGTERM: blocks them in the calling thread (and so in every thread it creates later) and starts
/// a watcher thread that waits for them (sigwait) and sets a flag, which train_run checks after every step. No
/// handler ever runs on a thread that computes (see resume.cpp for why). Call it first in main.
void install_stop_handlers();
/// The signal that asked to stop (0: none).
int stop_signal();
/// Forgets a stop request (a program that handled it and goes on; tests).
void reset_stop_signal();

/// The command line to parse. Without --resume: argv itself. With `--resume DIR`: the flags the interrupted run
/// was started with (DIR/checkpoints/args.txt), its subcommand checked against this one, --out set to DIR and
/// --resume kept; flags given besides --resume must equal the stored ones (else xg::Error saying which differ).
std::vector<std::string> resume_arguments(int argc, char** argv);

/// Writes <out>/checkpoints/args.txt (the flags of this command) unless resuming.
void record_arguments(const Lab& lab, const std::vector<std::string>& args);

/// The message and exit status for an interrupted run.
int report_interrupted(const Interrupted& e, const Lab& lab);

}  // namespace lab
