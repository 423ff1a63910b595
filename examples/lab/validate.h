// Checks of the experiments' options, run by main.cpp before any experiment starts: a bad --lr, --batch or
// --steps is an error (exit code 1) before the first progress bar, not after a run that trained on nonsense.
// Every subcommand's configuration has its check here; `xgrad-lab all` checks all ten before the first one runs.
#pragma once

#include "bn_limits.h"
#include "ddp.h"
#include "training.h"
#include "why_bn.h"

namespace lab {

/// Each throws xg::Error naming the subcommand, the option, the rule and the value given:
/// "<subcommand>: <option> must be ..., got <value>".
void validate(const LrSweepConfig& c);
void validate(const ConvergenceConfig& c);
void validate(const NoisyBnConfig& c);
void validate(const LandscapeConfig& c);
void validate(const IcsConfig& c);
void validate(const DlnConfig& c);
void validate(const LpNormConfig& c);
void validate(const BatchSizeConfig& c);
void validate(const InferenceConfig& c);
void validate(const RegularisationConfig& c);
/// What does not depend on the number of ranks (the batch's split into P slices is checked by run_ddp).
void validate(const DdpConfig& c);

}  // namespace lab
