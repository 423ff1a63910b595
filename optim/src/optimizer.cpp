// Optimizer base: option checks, parameter groups, validation, step/zero_grad, state_dict/load_state_dict.
#include "xgrad/optim/optimizer.h"

#include <charconv>
#include <cmath>
#include <map>
#include <typeinfo>
#include <unordered_map>

#include "xgrad/autograd.h"
#include "xgrad/optim/clip_grad.h"

namespace xg::optim {

namespace detail {
void wrong_options_type(const OptimizerOptions& have) {
  fail("ParamGroup::options_as(): the group's options are {}Options, not the type asked for", have.optimizer_name());
}
}  // namespace detail

// ---- option checks ------------------------------------------------------------------------------------------
namespace check {
void non_negative(std::string_view optimizer, std::string_view option, double value) {
  if (!std::isfinite(value)) fail("{}: {} must be a finite number >= 0, got {}", optimizer, option, value);
  if (value < 0) fail("{}: {} must be >= 0, got {}", optimizer, option, value);
}
void in_unit_interval(std::string_view optimizer, std::string_view option, double value) {
  if (!(value >= 0 && value < 1)) fail("{}: {} must be in [0, 1), got {}", optimizer, option, value);
}
void finite(std::string_view optimizer, std::string_view option, double value) {
  if (!std::isfinite(value)) fail("{}: {} must be a finite number, got {}", optimizer, option, value);
}
void betas(std::string_view optimizer, std::string_view /*option*/, const Betas& value) {
  in_unit_interval(optimizer, "beta1", value.first);
  in_unit_interval(optimizer, "beta2", value.second);
}
}  // namespace check

// ---- ParamGroup / ParamState -------------------------------------------------------------------------------
ParamGroup::ParamGroup(std::vector<Tensor> params) : params(std::move(params)) {}

ParamGroup::ParamGroup(const ParamGroup& other)
    : params(other.params),
      initial_lr(other.initial_lr),
      options_(other.options_ ? other.options_->clone() : nullptr) {}

ParamGroup& ParamGroup::operator=(const ParamGroup& other) {
  if (this != &other) {
    params = other.params;
    initial_lr = other.initial_lr;
    options_ = other.options_ ? other.options_->clone() : nullptr;
  }
  return *this;
}

OptimizerOptions& ParamGroup::options() {
  if (!options_) fail("ParamGroup::options(): this group has no options yet (it gets the defaults when added)");
  return *options_;
}
const OptimizerOptions& ParamGroup::options() const {
  if (!options_) fail("ParamGroup::options(): this group has no options yet (it gets the defaults when added)");
  return *options_;
}

Tensor ParamState::buffer_or_full(const std::string& name, const Tensor& like, double value) {
  if (!buffers.contains(name)) buffers.insert(name, full(like.shape(), value, like.dtype()));
  return buffers.at(name);
}

// ---- construction and validation -----------------------------------------------------------------------------
Optimizer::Optimizer(std::string name, std::vector<ParamGroup> groups, std::unique_ptr<OptimizerOptions> defaults)
    : name_(std::move(name)), defaults_(std::move(defaults)) {
  defaults_->validate();
  std::size_t total = 0;
  for (const auto& g : groups) total += g.params.size();
  if (total == 0) fail("{}: got an empty parameter list; pass the tensors to optimize", name_);
  for (auto& g : groups) add_param_group(std::move(g));
}

// The identity of a parameter is its storage: two handles to the same data are the same parameter.
static const void* identity(const Tensor& t) { return &t.storage(); }

void Optimizer::check_group(const ParamGroup& group, std::size_t gi) const {
  const OptimizerOptions& o = group.options();
  if (typeid(o) != typeid(*defaults_))
    fail("{}: parameter group {} has {}Options; a {} optimizer needs {}Options", name_, gi, o.optimizer_name(), name_,
         defaults_->optimizer_name());
  o.validate();

  // Where each parameter already in the optimizer lives, to name both places of a duplicate.
  std::unordered_map<const void*, std::pair<std::size_t, std::size_t>> seen;  // storage -> (group, position)
  for (std::size_t g = 0; g < groups_.size(); ++g)
    for (std::size_t j = 0; j < groups_[g].params.size(); ++j)
      seen.emplace(identity(groups_[g].params[j]), std::pair{g, j});

  for (std::size_t j = 0; j < group.params.size(); ++j) {
    const Tensor& p = group.params[j];
    if (!p.defined()) fail("{}: parameter {} of group {} is an undefined Tensor", name_, j, gi);
    if (!p.is_leaf())
      fail(
          "{}: parameter {} of group {} (shape {}) is not a leaf: it was computed by '{}'. Optimize the leaf "
          "tensors it was computed from (or use .detach().requires_grad_() to make a new leaf)",
          name_, j, gi, shape_str(p.shape()), p.grad_fn()->name);
    if (!p.requires_grad())
      fail(
          "{}: parameter {} of group {} (shape {}) does not require grad, so it would never get a gradient; call "
          "requires_grad_() on it or leave it out of the optimizer",
          name_, j, gi, shape_str(p.shape()));
    auto [it, inserted] = seen.emplace(identity(p), std::pair{gi, j});
    if (!inserted)
      fail(
          "{}: a parameter (shape {}) is listed twice: as parameter {} of group {} and as parameter {} of group {}. "
          "Each parameter may appear once in one group",
          name_, shape_str(p.shape()), it->second.second, it->second.first, j, gi);
  }
}

void Optimizer::add_param_group(ParamGroup group) {
  if (!group.has_options()) group.set_options(defaults_->clone());
  check_group(group, groups_.size());
  state_.resize(state_.size() + group.params.size());
  groups_.push_back(std::move(group));
}

std::vector<Tensor> Optimizer::parameters() const {
  std::vector<Tensor> all;
  for (const auto& g : groups_) all.insert(all.end(), g.params.begin(), g.params.end());
  return all;
}

std::size_t Optimizer::num_parameters() const { return state_.size(); }

const ParamState& Optimizer::state(std::size_t index) const {
  if (index >= state_.size())
    fail("{}.state(): parameter index {} is out of range (the optimizer has {} parameters)", name_, index,
         state_.size());
  return state_[index];
}

void Optimizer::set_check_finite(bool on, std::vector<std::string> names) {
  if (!names.empty() && names.size() != num_parameters())
    fail("{}.set_check_finite(): got {} names for {} parameters; give one name per parameter, in index order", name_,
         names.size(), num_parameters());
  check_finite_ = on;
  names_ = std::move(names);
}

// ---- step / zero_grad -------------------------------------------------------------------------------------
void Optimizer::step() {
  NoGradGuard no_grad;
  if (check_finite_) detail::check_finite_grads(parameters(), names_, name_ + ".step()", "no parameter was updated");
  std::size_t index = 0;
  for (auto& group : groups_) {
    for (auto& p : group.params) {
      ParamState& s = state_[index++];
      const Tensor g = p.grad();
      if (!g.defined()) continue;  // no gradient this step: leave the parameter and its state alone
      if (g.shape() != p.shape() || g.dtype() != p.dtype())
        fail("{}.step(): parameter {} is {} {} but its gradient is {} {}", name_, index - 1, shape_str(p.shape()),
             p.dtype(), shape_str(g.shape()), g.dtype());
      update(p, g, group.options(), s);
    }
  }
}

void Optimizer::zero_grad(bool set_to_none) {
  for (auto& group : groups_)
    for (auto& p : group.params) p.zero_grad(set_to_none);
}

// ---- checkpoints ------------------------------------------------------------------------------------------
static Tensor f64(double v) { return scalar(v, kFloat64); }

StateDict Optimizer::state_dict() const {
  NoGradGuard no_grad;
  StateDict sd;
  for (std::size_t i = 0; i < state_.size(); ++i) {
    const ParamState& s = state_[i];
    if (s.empty()) continue;
    const std::string prefix = fmt::format("state.{}.", i);
    sd.insert(prefix + "step", f64(s.step));
    for (const auto& [name, t] : s.buffers) sd.insert(prefix + name, t.clone());
  }
  std::size_t index = 0;
  for (std::size_t g = 0; g < groups_.size(); ++g) {
    const std::string prefix = fmt::format("param_groups.{}.", g);
    std::vector<double> idx;
    for (std::size_t j = 0; j < groups_[g].params.size(); ++j) idx.push_back(double(index++));
    sd.insert(prefix + "params", from_vector(idx, {idx.size()}, kFloat64));
    for (const auto& [name, v] : groups_[g].options().values()) sd.insert(prefix + name, f64(v));
    if (groups_[g].initial_lr) sd.insert(prefix + "initial_lr", f64(*groups_[g].initial_lr));
  }
  return sd;
}

namespace {
// "state.12.exp_avg" -> (12, "exp_avg"); false if the key is not of that form.
bool parse_state_key(const std::string& key, std::size_t& index, std::string& name) {
  const std::string head = "state.";
  if (key.rfind(head, 0) != 0) return false;
  const auto dot = key.find('.', head.size());
  if (dot == std::string::npos || dot + 1 >= key.size()) return false;
  const char* first = key.data() + head.size();
  const char* last = key.data() + dot;
  auto [ptr, ec] = std::from_chars(first, last, index);
  if (ec != std::errc() || ptr != last) return false;
  name = key.substr(dot + 1);
  return true;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
}  // namespace

void Optimizer::load_state_dict(const StateDict& sd) {
  NoGradGuard no_grad;
  const std::string who = name_ + ".load_state_dict()";

  // Everything is read into these first; the optimizer changes only once all of it checked out.
  std::vector<std::unique_ptr<OptimizerOptions>> options;
  std::vector<std::optional<double>> initial_lrs;
  std::vector<ParamState> state(state_.size());

  std::size_t saved_groups = 0;
  while (sd.contains(fmt::format("param_groups.{}.params", saved_groups))) ++saved_groups;
  if (saved_groups != groups_.size())
    fail(
        "{}: the state has {} parameter groups, this optimizer has {}. (Pass the optimizer's part of a "
        "checkpoint, e.g. ckpt.sub(\"optimizer\").)",
        who, saved_groups, groups_.size());

  for (std::size_t g = 0; g < groups_.size(); ++g) {
    const std::string prefix = fmt::format("param_groups.{}.", g);
    const std::size_t n = sd.at(prefix + "params").numel();
    if (n != groups_[g].params.size())
      fail("{}: parameter group {} has {} parameters in the state but {} in this optimizer", who, g, n,
           groups_[g].params.size());
    auto o = groups_[g].options().clone();
    o->set_values([&](const std::string& name) {
      if (!sd.contains(prefix + name))
        fail("{}: the state has no '{}{}' (was it saved by another kind of optimizer than {}?)", who, prefix, name,
             name_);
      return sd.at(prefix + name).item();
    });
    o->validate();
    options.push_back(std::move(o));
    initial_lrs.push_back(sd.contains(prefix + "initial_lr") ? std::optional(sd.at(prefix + "initial_lr").item())
                                                             : std::nullopt);
  }

  const std::vector<Tensor> params = parameters();
  for (const auto& [key, t] : sd) {
    if (starts_with(key, "param_groups.")) continue;
    std::size_t i = 0;
    std::string name;
    if (!parse_state_key(key, i, name))
      fail(
          "{}: unexpected key '{}' (an optimizer state has only 'state.<i>.<name>' and 'param_groups.<g>.<name>' "
          "keys; pass the optimizer's part of a checkpoint, e.g. ckpt.sub(\"optimizer\"))",
          who, key);
    if (i >= params.size())
      fail("{}: '{}' is for parameter {}, but the optimizer has {} parameters", who, key, i, params.size());
    if (name == "step") {
      state[i].step = t.item();
      continue;
    }
    if (t.shape() != params[i].shape())
      fail("{}: '{}' has shape {} but parameter {} has shape {}", who, key, shape_str(t.shape()), i,
           shape_str(params[i].shape()));
    // A private copy in the parameter's dtype: the loaded dict and the optimizer must not share storage.
    state[i].buffers.insert(name, t.detach().to(params[i].dtype()).clone());
  }

  for (std::size_t g = 0; g < groups_.size(); ++g) {
    groups_[g].set_options(std::move(options[g]));
    groups_[g].initial_lr = initial_lrs[g];
  }
  state_ = std::move(state);
}

}  // namespace xg::optim
