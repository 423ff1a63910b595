// Learning-rate schedules (see xgrad/optim/lr_scheduler.h). Each schedule writes its formula once, as factor();
// LRScheduler derives PyTorch 1.13's chainable form (get_lr) and closed form (closed_form_lr) from it.
#include "xgrad/optim/lr_scheduler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

namespace xg::optim {

namespace {
Tensor f64(double v) { return scalar(v, kFloat64); }
Tensor f64(const std::vector<double>& v) { return from_vector(v, {v.size()}, kFloat64); }

const Tensor& get(const StateDict& sd, const std::string& key, const std::string& who) {
  if (!sd.contains(key))
    fail("{}: the state has no '{}' (pass the scheduler's part of a checkpoint, e.g. ckpt.sub(\"scheduler\"))", who,
         key);
  return sd.at(key);
}

std::vector<double> get_vector(const StateDict& sd, const std::string& key, std::size_t size, const std::string& who) {
  const Tensor& t = get(sd, key, who);
  if (t.numel() != size)
    fail("{}: '{}' has {} values but the optimizer has {} parameter groups", who, key, t.numel(), size);
  return t.to_vector();
}
}  // namespace

// ---- LRScheduler ------------------------------------------------------------------------------------------
LRScheduler::LRScheduler(Optimizer& optimizer, std::string name) : optimizer_(optimizer), name_(std::move(name)) {
  for (auto& group : optimizer_.param_groups()) {
    if (!group.initial_lr) group.initial_lr = group.lr();  // PyTorch: group.setdefault('initial_lr', group['lr'])
    base_lrs_.push_back(*group.initial_lr);
  }
}

void LRScheduler::initial_step() {
  step_count_ = 0;
  step();
}

void LRScheduler::step() {
  check_groups("step()");
  ++step_count_;
  ++last_epoch_;
  apply(get_lr());
}

void LRScheduler::step_to(std::int64_t epoch) {
  check_groups("step()");
  ++step_count_;
  last_epoch_ = epoch;
  apply(closed_form_lr());
}

double LRScheduler::factor(std::int64_t) const {
  fail("{}: a schedule must override factor() (or step(), as SequentialLR does)", name_);
}

// Closed form: lr(e) = η + (base_lr − η)·f(e).
std::vector<double> LRScheduler::closed_form_lr() const {
  const double f = factor(last_epoch_), eta = eta_min();
  std::vector<double> lrs;
  for (double base : base_lrs_) lrs.push_back(eta + (base - eta) * f);
  return lrs;
}

// Chainable form: the current lr keeps its distance to η scaled as the closed form's is,
//   lr_e = η + (lr_{e−1} − η)·f(e)/f(e−1),
// with f(−1) = 1 (the first step scales the optimizer's lr by f(0)). PyTorch writes this ratio out in each
// scheduler's get_lr() (StepLR: lr·gamma at a multiple of step_size, CosineAnnealingLR: the ratio of the
// (1 + cos) terms, ...); here it is derived once. Two cases are exact rather than divided:
// where f(e) = f(e−1) the lr stays as it is, and where f(e−1) = 0 (CosineAnnealingLR at the bottom of its cosine,
// e − 1 = T_max, 3·T_max, ...) there is no ratio, so the closed form's increment (base_lr − η)·(f(e) − f(e−1)) is
// added, as PyTorch does.
std::vector<double> LRScheduler::get_lr() const {
  const double now = factor(last_epoch_);
  const double before = last_epoch_ == 0 ? 1.0 : factor(last_epoch_ - 1);
  const double eta = eta_min();
  const auto& groups = optimizer_.param_groups();
  std::vector<double> lrs;
  for (std::size_t i = 0; i < groups.size(); ++i) {
    const double lr = groups[i].lr();
    if (now == before)
      lrs.push_back(lr);
    else if (before != 0)
      lrs.push_back(eta + (lr - eta) * (now / before));
    else
      lrs.push_back(lr + (base_lrs_[i] - eta) * (now - before));
  }
  return lrs;
}

void LRScheduler::apply(const std::vector<double>& lrs) {
  auto& groups = optimizer_.param_groups();
  for (std::size_t i = 0; i < groups.size(); ++i) groups[i].set_lr(lrs[i]);
  last_lr_ = lrs;
}

void LRScheduler::check_groups(const char* where) const {
  if (optimizer_.param_groups().size() != base_lrs_.size())
    fail(
        "{}.{}: the optimizer has {} parameter groups but had {} when the scheduler was created; create the "
        "scheduler after the last add_param_group()",
        name_, where, optimizer_.param_groups().size(), base_lrs_.size());
}

StateDict LRScheduler::state_dict() const {
  StateDict sd;
  sd.insert("last_epoch", f64(double(last_epoch_)));
  sd.insert("step_count", f64(double(step_count_)));
  sd.insert("base_lrs", f64(base_lrs_));
  sd.insert("last_lr", f64(last_lr_));
  return sd;
}

void LRScheduler::load_state_dict(const StateDict& sd) {
  const std::string who = name_ + ".load_state_dict()";
  const std::size_t n = optimizer_.param_groups().size();
  auto base = get_vector(sd, "base_lrs", n, who);
  auto last = get_vector(sd, "last_lr", n, who);
  const auto last_epoch = std::int64_t(get(sd, "last_epoch", who).item());
  const auto step_count = std::int64_t(get(sd, "step_count", who).item());
  last_epoch_ = last_epoch;
  step_count_ = step_count;
  base_lrs_ = std::move(base);
  last_lr_ = std::move(last);
}

// gamma multiplies the learning rate: a finite number >= 0 (a negative or infinite gamma would flip or blow up
// every learning rate after the first milestone; 0 stops training, a legitimate if odd schedule).
namespace {
void check_gamma(const char* who, double gamma) {
  if (!(gamma >= 0) || !std::isfinite(gamma)) fail("{}: gamma must be a finite number >= 0, got {}", who, gamma);
}
// ">= 0" first (the message the negative case always had), then finiteness.
void check_non_negative_finite(const char* who, const char* what, double v) {
  if (!(v >= 0)) fail("{}: {} must be >= 0, got {}", who, what, v);
  if (!std::isfinite(v)) fail("{}: {} must be a finite number >= 0, got {}", who, what, v);
}
}  // namespace

// ---- StepLR -----------------------------------------------------------------------------------------------
StepLR::StepLR(Optimizer& optimizer, std::int64_t step_size, double gamma)
    : LRScheduler(optimizer, "StepLR"), step_size_(step_size), gamma_(gamma) {
  if (step_size < 1) fail("StepLR: step_size must be >= 1, got {}", step_size);
  check_gamma("StepLR", gamma);
  initial_step();
}

// f(e) = gamma^⌊e / step_size⌋
double StepLR::factor(std::int64_t epoch) const { return std::pow(gamma_, double(epoch / step_size_)); }

// ---- MultiStepLR ------------------------------------------------------------------------------------------
MultiStepLR::MultiStepLR(Optimizer& optimizer, std::vector<std::int64_t> milestones, double gamma)
    : LRScheduler(optimizer, "MultiStepLR"), milestones_(std::move(milestones)), gamma_(gamma) {
  for (auto m : milestones_)
    if (m < 0) fail("MultiStepLR: milestones must be >= 0, got {}", m);
  check_gamma("MultiStepLR", gamma);
  std::sort(milestones_.begin(), milestones_.end());
  initial_step();
}

// f(e) = gamma^(number of milestones <= e)
double MultiStepLR::factor(std::int64_t epoch) const {
  const auto passed = std::upper_bound(milestones_.begin(), milestones_.end(), epoch) - milestones_.begin();
  return std::pow(gamma_, double(passed));
}

// ---- ExponentialLR ----------------------------------------------------------------------------------------
ExponentialLR::ExponentialLR(Optimizer& optimizer, double gamma)
    : LRScheduler(optimizer, "ExponentialLR"), gamma_(gamma) {
  check_gamma("ExponentialLR", gamma);
  initial_step();
}

// f(e) = gamma^e
double ExponentialLR::factor(std::int64_t epoch) const { return std::pow(gamma_, double(epoch)); }

// ---- CosineAnnealingLR ------------------------------------------------------------------------------------
CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, std::int64_t T_max, double eta_min)
    : LRScheduler(optimizer, "CosineAnnealingLR"), T_max_(T_max), eta_min_(eta_min) {
  if (T_max < 1) fail("CosineAnnealingLR: T_max must be >= 1, got {}", T_max);
  check_non_negative_finite("CosineAnnealingLR", "eta_min", eta_min);
  initial_step();
}

// [cosine_factor]
// f(e) = (1 + cos(π·e / T_max)) / 2: from base_lr (f = 1) at epoch 0 down to eta_min (f = 0) at T_max
double CosineAnnealingLR::factor(std::int64_t epoch) const {
  return (1 + std::cos(std::numbers::pi * double(epoch) / double(T_max_))) / 2;
}
// [/cosine_factor]

// ---- LinearLR ---------------------------------------------------------------------------------------------
LinearLR::LinearLR(Optimizer& optimizer, double start_factor, double end_factor, std::int64_t total_iters)
    : LRScheduler(optimizer, "LinearLR"),
      start_factor_(start_factor),
      end_factor_(end_factor),
      total_iters_(total_iters) {
  if (!(start_factor > 0 && start_factor <= 1)) fail("LinearLR: start_factor must be in (0, 1], got {}", start_factor);
  if (!(end_factor >= 0 && end_factor <= 1)) fail("LinearLR: end_factor must be in [0, 1], got {}", end_factor);
  if (total_iters < 1) fail("LinearLR: total_iters must be >= 1, got {}", total_iters);
  initial_step();
}

// f(e) = start_factor + (end_factor − start_factor)·min(e, total_iters) / total_iters
double LinearLR::factor(std::int64_t epoch) const {
  const double progress = double(std::min(total_iters_, epoch));
  return start_factor_ + (end_factor_ - start_factor_) * progress / double(total_iters_);
}

// ---- SequentialLR -----------------------------------------------------------------------------------------
SequentialLR::SequentialLR(Optimizer& optimizer, std::vector<std::shared_ptr<LRScheduler>> schedulers,
                           std::vector<std::int64_t> milestones)
    : LRScheduler(optimizer, "SequentialLR"), schedulers_(std::move(schedulers)), milestones_(std::move(milestones)) {
  if (schedulers_.empty()) fail("SequentialLR: needs at least one scheduler");
  for (std::size_t i = 0; i < schedulers_.size(); ++i) {
    const auto& s = schedulers_[i];
    if (!s) fail("SequentialLR: schedulers[{}] is null", i);
    if (&s->optimizer() != &optimizer)
      fail(
          "SequentialLR: schedulers[{}] ({}) belongs to another optimizer; every scheduler must wrap the "
          "optimizer given to SequentialLR",
          i, s->name());
    if (dynamic_cast<const SequentialLR*>(s.get()))
      fail("SequentialLR: schedulers[{}] is a SequentialLR; nesting is not supported", i);
    for (std::size_t j = 0; j < i; ++j)
      if (schedulers_[j] == s) fail("SequentialLR: schedulers[{}] is the same object as schedulers[{}]", i, j);
  }
  if (milestones_.size() + 1 != schedulers_.size())
    fail("SequentialLR: expects one milestone fewer than schedulers, got {} schedulers and {} milestones",
         schedulers_.size(), milestones_.size());
  for (std::size_t i = 0; i < milestones_.size(); ++i)
    if (milestones_[i] < 1 || (i > 0 && milestones_[i] <= milestones_[i - 1]))
      fail("SequentialLR: milestones must be positive and strictly increasing, got {}", fmt::join(milestones_, ", "));

  // As PyTorch: reset the lrs the schedulers' constructors changed, undo their initial step, and redo it for the
  // first scheduler only.
  for (auto& group : optimizer_.param_groups()) group.set_lr(*group.initial_lr);
  for (auto& s : schedulers_) s->last_epoch_ -= 1;
  schedulers_[0]->initial_step();
  last_epoch_ = 0;
  last_lr_ = schedulers_[0]->get_last_lr();
}

void SequentialLR::step() {
  check_groups("step()");
  ++step_count_;
  ++last_epoch_;
  const auto idx =
      std::size_t(std::upper_bound(milestones_.begin(), milestones_.end(), last_epoch_) - milestones_.begin());
  auto& s = schedulers_[idx];
  if (idx > 0 && milestones_[idx - 1] == last_epoch_)
    s->step_to(0);  // the next schedule starts at its own epoch 0, from base_lrs (closed form)
  else
    s->step();
  last_lr_ = s->get_last_lr();
}

StateDict SequentialLR::state_dict() const {
  StateDict sd = LRScheduler::state_dict();
  for (std::size_t i = 0; i < schedulers_.size(); ++i)
    sd.merge(fmt::format("schedulers.{}", i), schedulers_[i]->state_dict());
  return sd;
}

void SequentialLR::load_state_dict(const StateDict& sd) {
  // Check that every part is there before changing anything.
  for (std::size_t i = 0; i < schedulers_.size(); ++i)
    if (sd.sub(fmt::format("schedulers.{}", i)).size() == 0)
      fail(
          "SequentialLR.load_state_dict(): the state has no 'schedulers.{}.*' entries (it was saved with fewer "
          "schedulers?)",
          i);
  LRScheduler::load_state_dict(sd);
  for (std::size_t i = 0; i < schedulers_.size(); ++i)
    schedulers_[i]->load_state_dict(sd.sub(fmt::format("schedulers.{}", i)));
}

// ---- ReduceLROnPlateau ------------------------------------------------------------------------------------
ReduceLROnPlateau::ReduceLROnPlateau(Optimizer& optimizer, ReduceLROnPlateauOptions options)
    : optimizer_(optimizer), options_(std::move(options)) {
  const auto& o = options_;
  if (!(o.factor() >= 0 && o.factor() < 1)) fail("ReduceLROnPlateau: factor must be in [0, 1), got {}", o.factor());
  if (o.patience() < 0) fail("ReduceLROnPlateau: patience must be >= 0, got {}", o.patience());
  if (o.cooldown() < 0) fail("ReduceLROnPlateau: cooldown must be >= 0, got {}", o.cooldown());
  check_non_negative_finite("ReduceLROnPlateau", "threshold", o.threshold());
  check_non_negative_finite("ReduceLROnPlateau", "eps", o.eps());
  const std::size_t n = optimizer_.param_groups().size();
  if (o.min_lr().size() == 1)
    min_lrs_.assign(n, o.min_lr()[0]);
  else if (o.min_lr().size() == n)
    min_lrs_ = o.min_lr();
  else
    fail("ReduceLROnPlateau: min_lr has {} values; give one, or one per parameter group ({})", o.min_lr().size(), n);
  for (double m : min_lrs_)
    check_non_negative_finite("ReduceLROnPlateau", "min_lr", m);
  best_ =
      o.mode() == PlateauMode::min ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
  for (const auto& group : optimizer_.param_groups()) last_lr_.push_back(group.lr());
}

bool ReduceLROnPlateau::is_better(double a) const {
  const double t = options_.threshold();
  const bool rel = options_.threshold_mode() == ThresholdMode::rel;
  if (options_.mode() == PlateauMode::min) return rel ? a < best_ * (1.0 - t) : a < best_ - t;
  return rel ? a > best_ * (t + 1.0) : a > best_ + t;
}

void ReduceLROnPlateau::step(double metric) {
  auto& groups = optimizer_.param_groups();
  if (groups.size() != min_lrs_.size())
    fail(
        "ReduceLROnPlateau.step(): the optimizer has {} parameter groups but had {} when the scheduler was "
        "created; create the scheduler after the last add_param_group()",
        groups.size(), min_lrs_.size());
  ++last_epoch_;
  if (is_better(metric)) {
    best_ = metric;
    num_bad_epochs_ = 0;
  } else {
    ++num_bad_epochs_;
  }
  if (cooldown_counter_ > 0) {  // bad epochs during cooldown do not count
    --cooldown_counter_;
    num_bad_epochs_ = 0;
  }
  if (num_bad_epochs_ > options_.patience()) {
    for (std::size_t i = 0; i < groups.size(); ++i) {
      const double old_lr = groups[i].lr();
      const double new_lr = std::max(old_lr * options_.factor(), min_lrs_[i]);
      if (old_lr - new_lr > options_.eps()) groups[i].set_lr(new_lr);
    }
    cooldown_counter_ = options_.cooldown();
    num_bad_epochs_ = 0;
  }
  last_lr_.clear();
  for (const auto& group : groups) last_lr_.push_back(group.lr());
}

StateDict ReduceLROnPlateau::state_dict() const {
  StateDict sd;
  sd.insert("best", f64(best_));
  sd.insert("num_bad_epochs", f64(double(num_bad_epochs_)));
  sd.insert("cooldown_counter", f64(double(cooldown_counter_)));
  sd.insert("last_epoch", f64(double(last_epoch_)));
  sd.insert("last_lr", f64(last_lr_));
  return sd;
}

void ReduceLROnPlateau::load_state_dict(const StateDict& sd) {
  const std::string who = "ReduceLROnPlateau.load_state_dict()";
  auto last = get_vector(sd, "last_lr", optimizer_.param_groups().size(), who);
  const double best = get(sd, "best", who).item();
  const auto bad = std::int64_t(get(sd, "num_bad_epochs", who).item());
  const auto cooldown = std::int64_t(get(sd, "cooldown_counter", who).item());
  const auto last_epoch = std::int64_t(get(sd, "last_epoch", who).item());
  best_ = best;
  num_bad_epochs_ = bad;
  cooldown_counter_ = cooldown;
  last_epoch_ = last_epoch;
  last_lr_ = std::move(last);
}

}  // namespace xg::optim
