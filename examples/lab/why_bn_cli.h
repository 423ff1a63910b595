// why_bn_cli.h — the command lines of `landscape`, `ics`, `dln` and `lp-norm` (why_bn.h), kept out of main.cpp.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <memory>

#include "why_bn.h"

namespace lab {

class WhyBnCli {
 public:
  /// Adds the four subcommands to `app`; `add_common` adds the shared flags to each.
  WhyBnCli(CLI::App& app, const std::function<void(CLI::App*)>& add_common);
  ~WhyBnCli();
  /// Checks the configuration of the subcommand that was parsed (its options applied), if it is one of the four
  /// (validate.h): main.cpp calls it before any experiment starts.
  void validate_selected(const Lab& lab) const;
  /// Runs the subcommand that was parsed, if it is one of the four.
  void run_selected(Lab& lab) const;
  /// Checks the mode's configurations of all four, the ones run_all runs (for `xgrad-lab all`).
  static void validate_all(const Lab& lab);
  /// Runs all four (for `xgrad-lab all`), with the mode's configurations.
  static void run_all(Lab& lab);

 private:
  struct Options;
  std::unique_ptr<Options> o_;
};

}  // namespace lab
