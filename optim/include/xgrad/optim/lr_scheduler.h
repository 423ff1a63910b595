// xgrad/optim/lr_scheduler.h — learning-rate schedules that write each parameter group's lr.
//
// Usage is PyTorch's: create the scheduler after the optimizer (creating it already sets the epoch-0 learning
// rate), call opt.step() for every batch and sched.step() once per epoch:
//
//   xg::optim::SGD opt(params, xg::optim::SGDOptions(0.1).momentum(0.9));
//   xg::optim::CosineAnnealingLR sched(opt, /*T_max=*/20);
//   for (int epoch = 0; epoch < 20; ++epoch) {
//     train_one_epoch(opt);              // uses lr = sched.get_last_lr()[0]
//     sched.step();
//   }
//
// Each schedule states its formula once, as a factor f(e) of the epoch e (f(0) is where it starts):
//   lr(e) = eta_min + (base_lr − eta_min)·f(e)        (eta_min is CosineAnnealingLR's; 0 for the others)
// The base class derives from f both forms PyTorch 1.13 uses. step() computes the *chainable* form, the new lr
// from the group's current lr, which keeps its distance to eta_min scaled by f(e)/f(e−1) (so schedules can be
// combined and manual lr changes persist); SequentialLR uses the *closed* form above, from base_lr, when it
// switches to the next schedule. Both agree to rounding.
//
// The first scheduler attached records each group's lr as `initial_lr` (saved with the optimizer); every
// scheduler's base_lrs come from it, so a second scheduler starts from the original lr, not the current one.
//
// Checkpoints: state_dict() holds the progress (last_epoch, step count, base and last lrs); hyper-parameters
// come from the constructor (PyTorch also saves them and overwrites them on load).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "xgrad/optim/optimizer.h"
#include "xgrad/serialize.h"

namespace xg::optim {

/// Base class of the epoch-based schedules (PyTorch: torch.optim.lr_scheduler._LRScheduler). A schedule
/// overrides factor() (and eta_min() if its lr does not scale towards 0); the bookkeeping is all here.
class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  /// Advances one epoch and writes the new learning rates into the optimizer's groups (the chainable form).
  virtual void step();
  /// The learning rate of each group after the last step() (or after construction).
  const std::vector<double>& get_last_lr() const { return last_lr_; }
  /// The epoch the current learning rates belong to: 0 after construction, +1 per step().
  std::int64_t last_epoch() const { return last_epoch_; }
  /// Each group's initial_lr: where the schedule starts.
  const std::vector<double>& base_lrs() const { return base_lrs_; }
  Optimizer& optimizer() const { return optimizer_; }
  const std::string& name() const { return name_; }

  /// last_epoch, step_count, base_lrs [groups], last_lr [groups] (float64).
  virtual StateDict state_dict() const;
  virtual void load_state_dict(const StateDict& state);

 protected:
  /// Sets initial_lr of groups that have none and reads base_lrs. Derived constructors validate their
  /// arguments and then call initial_step() (a base constructor cannot call the derived factor()).
  LRScheduler(Optimizer& optimizer, std::string name);
  /// PyTorch's _initial_step(): step count 0, then one step() to epoch 0.
  void initial_step();
  /// The schedule: lr(e) = eta_min() + (base_lr − eta_min())·factor(e), for e >= 0. The only formula a schedule
  /// writes. (Not pure, as in PyTorch, whose base get_lr() raises: SequentialLR overrides step() instead.)
  virtual double factor(std::int64_t epoch) const;
  /// The lr the schedule scales towards: 0, or CosineAnnealingLR's eta_min.
  virtual double eta_min() const { return 0.0; }

  /// Error if groups were added to the optimizer after the scheduler was made.
  void check_groups(const char* where) const;

  Optimizer& optimizer_;
  std::string name_;
  std::vector<double> base_lrs_;
  std::vector<double> last_lr_;
  std::int64_t last_epoch_ = -1;
  std::int64_t step_count_ = 0;

 private:
  friend class SequentialLR;
  /// PyTorch's get_lr(): the new lr of each group from its current lr, at last_epoch_ (already advanced).
  std::vector<double> get_lr() const;
  /// PyTorch's _get_closed_form_lr(): the lr of each group at last_epoch_ from base_lrs_.
  std::vector<double> closed_form_lr() const;
  /// Writes `lrs` into the groups and records them as last_lr.
  void apply(const std::vector<double>& lrs);
  /// PyTorch's deprecated step(epoch): jump to `epoch` using the closed form (SequentialLR at a milestone).
  void step_to(std::int64_t epoch);
};

/// lr = base_lr · gamma^⌊epoch / step_size⌋.
class StepLR final : public LRScheduler {
 public:
  StepLR(Optimizer& optimizer, std::int64_t step_size, double gamma = 0.1);

 protected:
  double factor(std::int64_t epoch) const override;

 private:
  std::int64_t step_size_;
  double gamma_;
};

/// lr = base_lr · gamma^(number of milestones <= epoch). A milestone listed twice counts twice.
class MultiStepLR final : public LRScheduler {
 public:
  MultiStepLR(Optimizer& optimizer, std::vector<std::int64_t> milestones, double gamma = 0.1);

 protected:
  double factor(std::int64_t epoch) const override;

 private:
  std::vector<std::int64_t> milestones_;  // sorted
  double gamma_;
};

/// lr = base_lr · gamma^epoch.
class ExponentialLR final : public LRScheduler {
 public:
  ExponentialLR(Optimizer& optimizer, double gamma);

 protected:
  double factor(std::int64_t epoch) const override;

 private:
  double gamma_;
};

/// lr = eta_min + (base_lr − eta_min)·(1 + cos(π·epoch / T_max)) / 2   (no restarts: past T_max the cosine
/// continues, rising again, as in PyTorch).
class CosineAnnealingLR final : public LRScheduler {
 public:
  CosineAnnealingLR(Optimizer& optimizer, std::int64_t T_max, double eta_min = 0.0);

 protected:
  double factor(std::int64_t epoch) const override;
  double eta_min() const override { return eta_min_; }

 private:
  std::int64_t T_max_;
  double eta_min_;
};

/// Linear warm-up (or decay) of the factor:
///   lr = base_lr · (start_factor + (end_factor − start_factor)·min(epoch, total_iters) / total_iters).
/// start_factor in (0, 1], end_factor in [0, 1], total_iters >= 1.
class LinearLR final : public LRScheduler {
 public:
  LinearLR(Optimizer& optimizer, double start_factor = 1.0 / 3, double end_factor = 1.0, std::int64_t total_iters = 5);

 protected:
  double factor(std::int64_t epoch) const override;

 private:
  double start_factor_, end_factor_;
  std::int64_t total_iters_;
};

/// Runs schedulers one after another: schedulers[i] from epoch milestones[i−1] on (restarted at its epoch 0
/// there), e.g. a LinearLR warm-up for 5 epochs then a CosineAnnealingLR:
///
///   auto warmup = std::make_shared<LinearLR>(opt, 0.1, 1.0, 5);
///   auto cosine = std::make_shared<CosineAnnealingLR>(opt, 15);
///   SequentialLR sched(opt, {warmup, cosine}, {5});
///
/// Every scheduler must belong to `optimizer`; milestones.size() == schedulers.size() − 1, strictly increasing,
/// positive. Nesting a SequentialLR is not supported.
class SequentialLR final : public LRScheduler {
 public:
  SequentialLR(Optimizer& optimizer, std::vector<std::shared_ptr<LRScheduler>> schedulers,
               std::vector<std::int64_t> milestones);
  /// Steps the scheduler in charge (restarting the next one at its epoch 0 at a milestone); its lrs are ours.
  void step() override;
  /// As the base, plus each scheduler's state under "schedulers.<i>.".
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

 private:
  std::vector<std::shared_ptr<LRScheduler>> schedulers_;
  std::vector<std::int64_t> milestones_;
};

/// What ReduceLROnPlateau watches for: a metric that should go down (loss) or up (accuracy).
enum class PlateauMode { min, max };
/// How much better counts as better: relative (best·(1 ∓ threshold)) or absolute (best ∓ threshold).
enum class ThresholdMode { rel, abs };

/// ReduceLROnPlateau hyper-parameters (PyTorch's constructor arguments, same defaults).
class ReduceLROnPlateauOptions {
 public:
  XG_OPTION(PlateauMode, mode) = PlateauMode::min;
  XG_OPTION(double, factor) = 0.1;         // new_lr = lr · factor, in [0, 1)
  XG_OPTION(std::int64_t, patience) = 10;  // bad epochs tolerated before reducing
  XG_OPTION(double, threshold) = 1e-4;
  XG_OPTION(ThresholdMode, threshold_mode) = ThresholdMode::rel;
  XG_OPTION(std::int64_t, cooldown) = 0;           // epochs to wait after a reduction before counting bad epochs
  XG_OPTION(std::vector<double>, min_lr) = {0.0};  // one value for all groups, or one per group
  XG_OPTION(double, eps) = 1e-8;                   // reductions smaller than eps are skipped

 public:
  /// One minimum learning rate for every group.
  ReduceLROnPlateauOptions& min_lr(double v) {
    min_lr_ = {v};
    return *this;
  }
};

/// Reduces every group's lr by `factor` when a metric has stopped improving for more than `patience` epochs
/// (PyTorch: torch.optim.lr_scheduler.ReduceLROnPlateau):
///   better  = metric < best·(1 − threshold)   (min, rel)   | metric < best − threshold (min, abs)
///             metric > best·(1 + threshold)   (max, rel)   | metric > best + threshold (max, abs)
///   bad epochs counted while not better (reset to 0 during cooldown); when bad > patience:
///   lr ← max(lr·factor, min_lr) if that lowers lr by more than eps, then cooldown starts.
class ReduceLROnPlateau {
 public:
  explicit ReduceLROnPlateau(Optimizer& optimizer, ReduceLROnPlateauOptions options = {});
  ReduceLROnPlateau(const ReduceLROnPlateau&) = delete;
  ReduceLROnPlateau& operator=(const ReduceLROnPlateau&) = delete;

  /// Call once per epoch with the validation metric.
  void step(double metric);
  /// The learning rate of each group after the last step() (or at construction).
  const std::vector<double>& get_last_lr() const { return last_lr_; }
  double best() const { return best_; }
  std::int64_t num_bad_epochs() const { return num_bad_epochs_; }
  std::int64_t cooldown_counter() const { return cooldown_counter_; }
  std::int64_t last_epoch() const { return last_epoch_; }

  /// best, num_bad_epochs, cooldown_counter, last_epoch, last_lr [groups] (float64).
  StateDict state_dict() const;
  void load_state_dict(const StateDict& state);

 private:
  Optimizer& optimizer_;
  ReduceLROnPlateauOptions options_;
  std::vector<double> min_lrs_;
  std::vector<double> last_lr_;
  double best_;
  std::int64_t num_bad_epochs_ = 0;
  std::int64_t cooldown_counter_ = 0;
  std::int64_t last_epoch_ = 0;

  bool is_better(double metric) const;
};

}  // namespace xg::optim
