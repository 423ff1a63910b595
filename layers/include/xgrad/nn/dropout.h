// xgrad/nn/dropout.h — Dropout.
#pragma once

#include "xgrad/nn/module.h"
#include "xgrad/nn/options.h"
#include "xgrad/random.h"

namespace xg::nn {

/// Options of Dropout: `DropoutOptions(0.2).generator(&gen)`.
struct DropoutOptions {
  DropoutOptions(double p = 0.5) : p_(p) {}  // NOLINT: implicit, Dropout(0.2)
  /// Probability of zeroing an element, in [0, 1].
  XG_ARG(double, p);
  /// Where the masks come from (not owned; must outlive the module). Null: xg::default_generator().
  XG_ARG(Generator*, generator) = nullptr;
};

/// Inverted dropout (functional::dropout) in training mode; the identity in eval mode.
class Dropout : public Module {
 public:
  explicit Dropout(const DropoutOptions& options = {});
  Tensor forward(const Tensor& input) override;
  void pretty_print(std::ostream& os) const override;

 private:
  DropoutOptions options_;
};

}  // namespace xg::nn
