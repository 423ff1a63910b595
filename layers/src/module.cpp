// Module: registries of parameters, buffers and children; recursion over them; state; hooks; printing.
#include "xgrad/nn/module.h"

#include <cxxabi.h>

#include <algorithm>
#include <cstdlib>
#include <ostream>
#include <sstream>
#include <typeinfo>

#include "xgrad/autograd.h"
#include "xgrad/nn/sequential.h"

namespace xg::nn {

// ---- hooks -------------------------------------------------------------------------------------------------
void HookHandle::remove() {
  if (auto reg = registry_.lock()) std::erase_if(*reg, [&](const Entry& e) { return e.id == id_; });
  registry_.reset();
}

bool HookHandle::active() const {
  auto reg = registry_.lock();
  return reg && std::any_of(reg->begin(), reg->end(), [&](const Entry& e) { return e.id == id_; });
}

HookHandle Module::add_forward_hook(ForwardHook hook) {
  if (!hook) fail("{}: register_forward_hook got an empty function", name());
  if (!hooks_) hooks_ = std::make_shared<HookHandle::Registry>();
  const std::size_t id = next_hook_id_++;
  hooks_->push_back({id, std::move(hook)});
  return HookHandle(hooks_, id);
}

Tensor Module::apply_forward_hooks(const Tensor& input, Tensor output) {
  if (!label_.empty() && output.defined() && output.impl() != input.impl() && output.label().empty())
    output.set_label(label_);
  if (!hooks_ || hooks_->empty()) return output;
  // Copy the list: a hook may remove itself (or others) while we iterate.
  const HookHandle::Registry hooks = *hooks_;
  for (const auto& h : hooks) {
    Tensor replaced = h.fn(*this, input, output);
    if (replaced.defined()) output = replaced;
  }
  return output;
}

Tensor Module::forward(const Tensor&) {
  fail("{}: this module has no forward(const Tensor&) override, so it cannot be called with one tensor "
       "(e.g. inside Sequential); call its own forward(...) with the arguments it takes",
       name());
}

// ---- registration ------------------------------------------------------------------------------------------
void Module::check_new_name(const std::string& n, const char* what) const {
  if (n.empty()) fail("{}: cannot register a {} with an empty name", name(), what);
  if (n.find('.') != std::string::npos)
    fail("{}: {} name '{}' must not contain '.' (dots separate the levels of dotted names)", name(), what, n);
  auto taken = [&](const auto& v) {
    return std::any_of(v.begin(), v.end(), [&](const auto& s) { return s.first == n; });
  };
  auto taken_slot = [&](const std::vector<Slot>& v) {
    return std::any_of(v.begin(), v.end(), [&](const Slot& s) { return s.name == n; });
  };
  if (taken_slot(parameters_) || taken_slot(buffers_) || taken(children_))
    fail("{}: the name '{}' is already registered (as a parameter, buffer or child); names must be unique",
         name(), n);
}

namespace {
std::string join_name(const std::string& prefix, const std::string& n) { return prefix.empty() ? n : prefix + "." + n; }
}  // namespace

Tensor Module::register_parameter(const std::string& n, Tensor tensor, bool requires_grad) {
  check_new_name(n, "parameter");
  if (tensor.defined()) {
    if (!tensor.is_leaf()) tensor = tensor.detach();  // a parameter is a leaf the optimizer owns
    tensor.requires_grad_(requires_grad);
    tensor.set_label(join_name(label_, n));
  }
  parameters_.push_back({n, tensor});
  return tensor;
}

Tensor Module::register_buffer(const std::string& n, Tensor tensor) {
  check_new_name(n, "buffer");
  if (tensor.defined()) {
    if (tensor.requires_grad()) tensor = tensor.detach();  // buffers never get gradients
    tensor.set_label(join_name(label_, n));
  }
  buffers_.push_back({n, tensor});
  return tensor;
}

void Module::replace_buffer(const std::string& n, Tensor tensor) {
  for (auto& s : buffers_)
    if (s.name == n) {
      if (tensor.defined()) tensor.set_label(join_name(label_, n));
      s.tensor = std::move(tensor);
      return;
    }
  fail("{}: replace_buffer: no buffer named '{}'", name(), n);
}

void Module::register_module_impl(const std::string& n, std::shared_ptr<Module> module) {
  if (!module) fail("{}: register_module('{}') got a null module", name(), n);
  if (module.get() == this) fail("{}: a module cannot be its own child ('{}')", name(), n);
  check_new_name(n, "module");
  children_.emplace_back(n, module);
  module->set_label(join_name(label_, n));
}

void Module::set_label(const std::string& label) {
  label_ = label;
  for (auto& s : parameters_)
    if (s.tensor.defined()) s.tensor.set_label(join_name(label_, s.name));
  for (auto& s : buffers_)
    if (s.tensor.defined()) s.tensor.set_label(join_name(label_, s.name));
  for (auto& [n, child] : children_) child->set_label(join_name(label_, n));
}

// ---- access ------------------------------------------------------------------------------------------------
void Module::collect_named(const std::string& prefix, bool params, bool recurse, NamedTensors& out) const {
  for (const auto& s : params ? parameters_ : buffers_)
    if (s.tensor.defined()) out.emplace_back(join_name(prefix, s.name), s.tensor);
  if (recurse)
    for (const auto& [n, child] : children_) child->collect_named(join_name(prefix, n), params, true, out);
}

NamedTensors Module::named_parameters(bool recurse) const {
  NamedTensors out;
  collect_named("", true, recurse, out);
  return out;
}

NamedTensors Module::named_buffers(bool recurse) const {
  NamedTensors out;
  collect_named("", false, recurse, out);
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}

std::vector<Tensor> Module::buffers(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_buffers(recurse)) out.push_back(t);
  return out;
}

std::vector<std::shared_ptr<Module>> Module::children() const {
  std::vector<std::shared_ptr<Module>> out;
  for (const auto& [n, c] : children_) out.push_back(c);
  return out;
}

NamedModules Module::named_children() const { return {children_.begin(), children_.end()}; }

NamedModules Module::named_modules(const std::string& prefix, bool include_self) {
  NamedModules out;
  if (include_self) {
    auto self = weak_from_this().lock();
    if (!self)
      fail("{}: named_modules()/modules() with include_self need the module to be held by a std::shared_ptr "
           "(create it with std::make_shared), or pass include_self = false",
           name());
    out.emplace_back(prefix, self);
  }
  for (const auto& [n, child] : children_) {
    const std::string full = join_name(prefix, n);
    out.emplace_back(full, child);
    auto below = child->named_modules(full, false);
    out.insert(out.end(), below.begin(), below.end());
  }
  return out;
}

std::vector<std::shared_ptr<Module>> Module::modules(bool include_self) {
  std::vector<std::shared_ptr<Module>> out;
  for (auto& [n, m] : named_modules("", include_self)) out.push_back(m);
  return out;
}

void Module::apply(const std::function<void(Module&)>& fn) {
  fn(*this);
  for (auto& [n, child] : children_) child->apply(fn);
}

Tensor Module::find_tensor(const std::string& dotted) const {
  for (const auto& [n, t] : named_parameters())
    if (n == dotted) return t;
  for (const auto& [n, t] : named_buffers())
    if (n == dotted) return t;
  fail("{}: no parameter or buffer named '{}' (it has: {})", name(), dotted, fmt::join(state_dict().keys(), ", "));
}

// ---- modes, grads, dtype -------------------------------------------------------------------------------------
void Module::train(bool on) {
  training_ = on;
  for (auto& [n, child] : children_) child->train(on);
}

void Module::zero_grad(bool set_to_none) {
  for (auto& p : parameters()) p.zero_grad(set_to_none);
}

void Module::to(Dtype dtype) {
  NoGradGuard no_grad;
  auto convert = [&](Tensor& t) {
    if (!t.defined() || t.dtype() == dtype) return;
    t.set_data(t.to(dtype));  // same handle, same storage object, new dtype
    t.zero_grad(true);  // an old-dtype gradient would not match any more
  };
  apply([&](Module& m) {
    for (auto& s : m.parameters_) convert(s.tensor);
    for (auto& s : m.buffers_) convert(s.tensor);
  });
}

// ---- state ---------------------------------------------------------------------------------------------------
void Module::collect_state(const std::string& prefix, StateDict& out) const {
  for (const auto& s : parameters_)
    if (s.tensor.defined()) out.insert(join_name(prefix, s.name), s.tensor);
  for (const auto& s : buffers_)
    if (s.tensor.defined()) out.insert(join_name(prefix, s.name), s.tensor);
  for (const auto& [n, child] : children_) child->collect_state(join_name(prefix, n), out);
}

StateDict Module::state_dict() const {
  StateDict out;
  collect_state("", out);
  return out;
}

namespace {
// True if src converted to `dtype` keeps every value: any float to any float, integers and bools to a dtype that
// holds them exactly, nothing floating into an integer or bool tensor.
bool converts_exactly(const Tensor& src, Dtype dtype) {
  if (src.is_floating_point()) return xg::is_floating_point(dtype);
  NoGradGuard no_grad;
  return src.to(dtype).to_vector() == src.to_vector();
}
}  // namespace

LoadStateDictResult Module::load_state_dict(const StateDict& dict, bool strict) {
  const StateDict own = state_dict();
  LoadStateDictResult result;
  std::vector<std::string> mismatched, wrong_kind;  // shapes; integer vs floating dtypes
  for (const auto& [n, t] : own) {
    if (!dict.contains(n)) {
      result.missing_keys.push_back(n);
      continue;
    }
    const Tensor& src = dict.at(n);
    if (!src.defined())
      mismatched.push_back(fmt::format("{} (the dict holds an undefined tensor)", n));
    else if (src.shape() != t.shape())
      mismatched.push_back(
          fmt::format("{} (checkpoint {} vs model {})", n, shape_str(src.shape()), shape_str(t.shape())));
    else if (t.defined() && src.dtype() != t.dtype() && !converts_exactly(src, t.dtype()))
      // float32 <-> float64 converts (as PyTorch's copy_), and so do integers a float holds exactly (PyTorch's
      // int64 num_batches_tracked); floats into an integer tensor, or integers a float would round, are refused
      wrong_kind.push_back(fmt::format("{} (checkpoint {} vs model {})", n, src.dtype(), t.dtype()));
  }
  for (const auto& [n, t] : dict)
    if (!own.contains(n)) result.unexpected_keys.push_back(n);

  std::vector<std::string> problems;
  if (strict && !result.missing_keys.empty())
    problems.push_back(fmt::format("missing keys: {}", fmt::join(result.missing_keys, ", ")));
  if (strict && !result.unexpected_keys.empty())
    problems.push_back(fmt::format("unexpected keys: {}", fmt::join(result.unexpected_keys, ", ")));
  if (!mismatched.empty()) problems.push_back(fmt::format("shape mismatch: {}", fmt::join(mismatched, "; ")));
  if (!wrong_kind.empty()) problems.push_back(fmt::format("dtype mismatch: {}", fmt::join(wrong_kind, "; ")));
  if (!problems.empty())
    fail("{}.load_state_dict: {} (nothing was loaded)", name(), fmt::join(problems, "; "));

  // Everything checked: copy the values in place (handles stay, so optimizers keep working).
  NoGradGuard no_grad;
  for (const auto& [n, t] : own) {
    if (!dict.contains(n)) continue;
    Tensor dst = t;  // a handle on the module's own tensor
    dst.copy_(dict.at(n));  // converted to dst's dtype, as PyTorch's param.copy_(input_param)
  }
  return result;
}

void save(const Module& module, const std::string& path) { save_npz(path, module.state_dict()); }

LoadStateDictResult load(Module& module, const std::string& path, bool strict) {
  const StateDict dict = load_npz(path);  // errors already name the file
  try {
    return module.load_state_dict(dict, strict);
  } catch (const Error& e) {
    fail("nn::load('{}'): {}", path, e.what());
  }
}

// ---- eval guard ----------------------------------------------------------------------------------------------
EvalGuard::EvalGuard(Module& module) {
  module.apply([&](Module& m) { saved_.emplace_back(&m, m.is_training()); });
  module.eval();
}

EvalGuard::~EvalGuard() {
  for (auto& [m, was_training] : saved_) m->training_ = was_training;
}

// ---- names and printing ----------------------------------------------------------------------------------
std::string Module::name() const {
  if (!name_.empty()) return name_;
  const char* mangled = typeid(*this).name();
  int status = 0;
  char* demangled = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string full = status == 0 && demangled ? demangled : mangled;
  std::free(demangled);
  // "xg::nn::Linear" -> "Linear", "(anonymous namespace)::Net" -> "Net"
  const auto colon = full.rfind("::");
  return colon == std::string::npos ? full : full.substr(colon + 2);
}

void Module::pretty_print(std::ostream& os) const { os << name(); }

namespace {
void print_tree(std::ostream& os, const Module& m, const std::string& indent) {
  // A module's own line may already end with "(options...)"; children are listed in a block after it.
  std::ostringstream own;
  m.pretty_print(own);
  os << own.str();
  const auto kids = m.named_children();
  if (kids.empty()) {
    if (own.str().find('(') == std::string::npos) os << "()";
    return;
  }
  os << "(\n";
  for (const auto& [n, child] : kids) {
    os << indent << "  (" << n << "): ";
    print_tree(os, *child, indent + "  ");
    os << "\n";
  }
  os << indent << ")";
}
}  // namespace

std::ostream& operator<<(std::ostream& os, const Module& m) {
  print_tree(os, m, "");
  return os;
}

}  // namespace xg::nn
