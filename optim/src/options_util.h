// Small helpers shared by the optimizers' option checks (private to optim/src).
#pragma once

#include <cmath>
#include <string_view>

#include "xgrad/common.h"

namespace xg::optim {

/// "SGD: lr must be >= 0, got -0.1" (NaN fails too).
inline void check_at_least(std::string_view who, std::string_view what, double value, double low) {
  if (!(value >= low)) fail("{}: {} must be >= {}, got {}", who, what, low, value);
}

/// "Adam: beta1 must be in [0, 1), got 1.2".
inline void check_unit_interval(std::string_view who, std::string_view what, double value) {
  if (!(value >= 0 && value < 1)) fail("{}: {} must be in [0, 1), got {}", who, what, value);
}

/// "SGD: dampening must be a finite number, got nan".
inline void check_finite_value(std::string_view who, std::string_view what, double value) {
  if (!std::isfinite(value)) fail("{}: {} must be a finite number, got {}", who, what, value);
}

}  // namespace xg::optim
