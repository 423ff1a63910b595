// Checks of the experiments' options, run by main.cpp before any experiment starts: a bad --lr, --batch or
// --steps is an error (exit code 1) before the first progress bar, not after a run that trained on nonsense.
#pragma once

#include "training.h"

namespace lab {

/// Each throws xg::Error naming the subcommand, the option, the rule and the value given.
void validate(const LrSweepConfig& c);
void validate(const ConvergenceConfig& c);
void validate(const NoisyBnConfig& c);

}  // namespace lab
