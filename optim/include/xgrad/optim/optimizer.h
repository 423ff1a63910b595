// xgrad/optim/optimizer.h — the Optimizer base class every optimizer derives from.
//
// An optimizer owns *parameter groups* (a list of parameters plus the hyper-parameters that apply to them, e.g.
// a smaller learning rate for a pre-trained backbone) and *per-parameter state* (momentum buffers, Adam moments).
// step() walks every parameter that has a gradient and calls the derived class's update() on it; the update is
// one in-place pass over raw pointers (see sgd.cpp, adam.cpp).
//
// Parameters are identified by their *index*: their position when every group's list is concatenated, in
// order. The checkpoint (state_dict) uses that index, exactly like PyTorch's optimizer state_dict:
//
//   state.<i>.step                 0-d float64   updates applied to parameter i
//   state.<i>.<buffer>             like param i  momentum_buffer, exp_avg, exp_avg_sq, ...
//   param_groups.<g>.params        1-d float64   the indices of group g's parameters
//   param_groups.<g>.<option>      0-d float64   lr, momentum, betas.0, ... (bools as 0/1)
//   param_groups.<g>.initial_lr    0-d float64   only once an LR scheduler has been attached
//
//   xg::StateDict ckpt;
//   ckpt.merge("model", model_state);        // the model's tensors
//   ckpt.merge("optimizer", opt.state_dict());
//   xg::save_npz("ckpt.npz", ckpt);
//   ...
//   opt.load_state_dict(xg::load_npz("ckpt.npz").sub("optimizer"));
//
// PyTorch: torch.optim.Optimizer / torch::optim::Optimizer. Differences are listed in docs/optim.md.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "xgrad/serialize.h"
#include "xgrad/tensor.h"

namespace xg::optim {

/// Declares one option of an options struct: a private field `name_`, a getter `name()` and a builder setter
/// `name(value)` that returns the struct, so calls chain: `SGDOptions(0.1).momentum(0.9).nesterov(true)`.
/// Write `XG_OPTION(double, momentum) = 0;` to give a default. (PyTorch C++: TORCH_ARG.)
#define XG_OPTION(T, name)                        \
 public:                                          \
  auto& name(const T& new_##name) {               \
    this->name##_ = new_##name;                   \
    return *this;                                 \
  }                                               \
  const T& name() const { return this->name##_; } \
                                                  \
 private:                                         \
  T name##_

/// What every optimizer's options struct (SGDOptions, AdamOptions, ...) can do, so the base class, the LR
/// schedulers and the checkpoint code can handle any of them. The structs get all of it but optimizer_name()
/// from OptimizerOptionsBase below, out of their one list of options.
class OptimizerOptions {
 public:
  virtual ~OptimizerOptions() = default;
  virtual std::unique_ptr<OptimizerOptions> clone() const = 0;
  /// The optimizer these options belong to ("SGD", "Adam", ...), used in error messages.
  virtual std::string_view optimizer_name() const = 0;
  virtual double get_lr() const = 0;
  virtual void set_lr(double lr) = 0;
  /// Throws xg::Error naming the first invalid option, e.g. "Adam: beta1 must be in [0, 1), got 1.2".
  virtual void validate() const = 0;
  /// Every hyper-parameter as a named number (bools as 0/1), in a fixed order: what state_dict() stores.
  virtual std::vector<std::pair<std::string, double>> values() const = 0;
  /// Sets every hyper-parameter from `get(name)` (the inverse of values()).
  virtual void set_values(const std::function<double(const std::string&)>& get) = 0;
};

/// (β1, β2): decay rates of the first and second moment (Adam, AdamW).
using Betas = std::pair<double, double>;

/// The checks an options struct attaches to its options (see OptimizerOptionsBase). Each throws xg::Error
/// naming the optimizer, the option, the rule and the value.
namespace check {
/// "SGD: lr must be >= 0, got -0.1"; NaN and infinities: "SGD: lr must be a finite number >= 0, got inf".
void non_negative(std::string_view optimizer, std::string_view option, double value);
/// "<optimizer>: <option> must be in [0, 1), got 1" (check::betas applies it to each beta).
void in_unit_interval(std::string_view optimizer, std::string_view option, double value);
/// "SGD: dampening must be a finite number, got nan".
void finite(std::string_view optimizer, std::string_view option, double value);
/// Each beta in [0, 1): "Adam: beta1 must be in [0, 1), got 1.2".
void betas(std::string_view optimizer, std::string_view option, const Betas& value);
}  // namespace check

namespace detail {
// How one option becomes checkpoint numbers (values()) and back (set_values()): a number as itself, a bool as
// 0/1, Betas as two numbers "<name>.0" and "<name>.1" (PyTorch's betas tuple).
using NamedValues = std::vector<std::pair<std::string, double>>;
using ValueGetter = std::function<double(const std::string&)>;
inline void put(NamedValues& out, std::string_view name, double v) { out.emplace_back(name, v); }
inline void put(NamedValues& out, std::string_view name, bool v) { out.emplace_back(name, v ? 1.0 : 0.0); }
inline void put(NamedValues& out, std::string_view name, const Betas& v) {
  out.emplace_back(std::string(name) + ".0", v.first);
  out.emplace_back(std::string(name) + ".1", v.second);
}
inline void take(const ValueGetter& get, std::string_view name, double& v) { v = get(std::string(name)); }
inline void take(const ValueGetter& get, std::string_view name, bool& v) { v = get(std::string(name)) != 0; }
inline void take(const ValueGetter& get, std::string_view name, Betas& v) {
  v = {get(std::string(name) + ".0"), get(std::string(name) + ".1")};
}
}  // namespace detail

/// Implements OptimizerOptions for an options struct from the one list of its options, which the struct writes
/// as a static member template (one line per option: checkpoint name, field, optional check):
///
///   template <class Self, class Visit>
///   static void for_each_option(Self& o, Visit&& visit) {
///     visit("lr", o.lr_, check::non_negative);
///     visit("nesterov", o.nesterov_);
///   }
///
/// That list, in that order, is what state_dict() saves per parameter group, what load_state_dict() reads back
/// and what validate() checks. The struct adds optimizer_name() and has an `lr` option.
/// (PyTorch's OptimizerCloneableOptions<Derived> provides the clone() part the same way.)
template <class Options>
class OptimizerOptionsBase : public OptimizerOptions {
 public:
  std::unique_ptr<OptimizerOptions> clone() const override { return std::make_unique<Options>(self()); }
  double get_lr() const override { return self().lr(); }
  void set_lr(double lr) override { self().lr(lr); }
  void validate() const override {
    // `check` is the option's check, or nothing for an option without one (the bools).
    Options::for_each_option(self(), [&]([[maybe_unused]] std::string_view name, [[maybe_unused]] const auto& value,
                                         auto... check) { (check(optimizer_name(), name, value), ...); });
  }
  std::vector<std::pair<std::string, double>> values() const override {
    detail::NamedValues out;
    Options::for_each_option(self(),
                             [&](std::string_view name, const auto& value, auto...) { detail::put(out, name, value); });
    return out;
  }
  void set_values(const std::function<double(const std::string&)>& get) override {
    Options::for_each_option(self(),
                             [&](std::string_view name, auto& value, auto...) { detail::take(get, name, value); });
  }

 private:
  const Options& self() const { return static_cast<const Options&>(*this); }
  Options& self() { return static_cast<Options&>(*this); }
};

/// Parameters that share hyper-parameters. A group made without options uses the optimizer's defaults.
///
///   xg::optim::SGD opt({ParamGroup(backbone_params, SGDOptions(0.01)), ParamGroup(head_params)},
///                      SGDOptions(0.1).momentum(0.9));       // the head gets lr 0.1, momentum 0.9
class ParamGroup {
 public:
  /// A group that takes the optimizer's default options.
  ParamGroup(std::vector<Tensor> params);  // NOLINT: implicit on purpose, `add_param_group({w, b})`
  /// A group with its own options (of the optimizer's options type, e.g. SGDOptions for SGD).
  template <class Options, class = std::enable_if_t<std::is_base_of_v<OptimizerOptions, Options>>>
  ParamGroup(std::vector<Tensor> params, const Options& options)
      : params(std::move(params)), options_(options.clone()) {}

  ParamGroup(const ParamGroup& other);
  ParamGroup& operator=(const ParamGroup& other);
  ParamGroup(ParamGroup&&) noexcept = default;
  ParamGroup& operator=(ParamGroup&&) noexcept = default;
  ~ParamGroup() = default;

  /// The group's parameters (leaf tensors that require grad).
  std::vector<Tensor> params;
  /// Set by the first LR scheduler attached to the optimizer: the lr the schedule starts from
  /// (PyTorch: group["initial_lr"]). Saved in the checkpoint.
  std::optional<double> initial_lr;

  bool has_options() const { return options_ != nullptr; }
  /// The group's options (error if it has none: only possible before it was added to an optimizer).
  OptimizerOptions& options();
  const OptimizerOptions& options() const;
  /// The options as their concrete type: `opt.param_groups()[1].options_as<SGDOptions>().momentum(0.5)`.
  /// Error if they are of another type.
  template <class Options>
  Options& options_as();
  template <class Options>
  const Options& options_as() const;
  void set_options(std::unique_ptr<OptimizerOptions> options) { options_ = std::move(options); }

  double lr() const { return options().get_lr(); }
  void set_lr(double lr) { options().set_lr(lr); }

 private:
  std::unique_ptr<OptimizerOptions> options_;
};

/// The state an optimizer keeps for one parameter. Empty until the parameter's first update.
struct ParamState {
  /// Updates applied to this parameter (Adam's t in the bias corrections, Adagrad's lr decay).
  double step = 0;
  /// Named buffers with the parameter's shape and dtype ("momentum_buffer", "exp_avg", ...).
  StateDict buffers;

  bool empty() const { return step == 0 && buffers.size() == 0; }
  bool has(const std::string& name) const { return buffers.contains(name); }
  /// The buffer `name` (a handle sharing the optimizer's storage).
  Tensor buffer(const std::string& name) const { return buffers.at(name); }
  /// The buffer `name`, created filled with `value` (shape and dtype of `like`) if it does not exist yet.
  Tensor buffer_or_full(const std::string& name, const Tensor& like, double value = 0.0);
};

/// Base class of SGD, Adam, AdamW, RMSprop and Adagrad. Not copyable (LR schedulers keep a reference to it).
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  /// Applies one update to every parameter whose gradient is defined; a parameter without a gradient is skipped
  /// and its state left untouched (PyTorch semantics). Runs under NoGradGuard. With set_check_finite(true), every
  /// gradient is checked *first* and a NaN/Inf throws xg::Error before any parameter is written.
  void step();
  /// Clears every parameter's gradient: set_to_none=true (the default here and in PyTorch ≥ 2.0; PyTorch 1.13
  /// defaulted to false) makes it undefined, false fills it with zeros.
  void zero_grad(bool set_to_none = true);
  /// Appends a group (its parameters get the next indices). The same checks as at construction apply.
  void add_param_group(ParamGroup group);

  std::vector<ParamGroup>& param_groups() { return groups_; }
  const std::vector<ParamGroup>& param_groups() const { return groups_; }
  /// The options new groups without their own options get.
  const OptimizerOptions& defaults() const { return *defaults_; }
  /// Every parameter, in index order.
  std::vector<Tensor> parameters() const;
  std::size_t num_parameters() const;
  /// The state of parameter `index` (empty before its first update).
  const ParamState& state(std::size_t index) const;
  /// "SGD", "Adam", ...
  const std::string& name() const { return name_; }

  /// A snapshot of the state (tensors are copies: training on does not change a saved dict). Keys above.
  StateDict state_dict() const;
  /// Restores hyper-parameters and state from state_dict() of an optimizer with the same groups. Everything is
  /// checked before anything changes, so a failed load leaves the optimizer as it was.
  void load_state_dict(const StateDict& state);

  /// Makes step() reject NaN/Inf gradients (off by default: it costs one extra read of every gradient). `names`
  /// (optional, one per parameter in index order, e.g. from a module's named_parameters()) are used in the
  /// message; without them a parameter's label() is used if it has one.
  void set_check_finite(bool on, std::vector<std::string> names = {});
  bool check_finite() const { return check_finite_; }

 protected:
  /// Validates `defaults` and every group, fills groups without options with a copy of `defaults`.
  Optimizer(std::string name, std::vector<ParamGroup> groups, std::unique_ptr<OptimizerOptions> defaults);

  /// One update of one parameter: `param` and `grad` have the same shape and dtype; `options` is the group's
  /// (of the derived class's options type); `state` belongs to this parameter and persists across steps.
  virtual void update(Tensor& param, const Tensor& grad, const OptimizerOptions& options, ParamState& state) = 0;

 private:
  std::string name_;
  std::unique_ptr<OptimizerOptions> defaults_;
  std::vector<ParamGroup> groups_;
  std::vector<ParamState> state_;  // one per parameter, by index
  bool check_finite_ = false;
  std::vector<std::string> names_;

  void check_group(const ParamGroup& group, std::size_t group_index) const;
};

// ---- template definitions ---------------------------------------------------------------------------------
namespace detail {
[[noreturn]] void wrong_options_type(const OptimizerOptions& have);
}

template <class Options>
Options& ParamGroup::options_as() {
  auto* o = dynamic_cast<Options*>(&options());
  if (!o) detail::wrong_options_type(options());
  return *o;
}
template <class Options>
const Options& ParamGroup::options_as() const {
  const auto* o = dynamic_cast<const Options*>(&options());
  if (!o) detail::wrong_options_type(options());
  return *o;
}

}  // namespace xg::optim
