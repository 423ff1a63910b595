// xgrad/nn/module.h — the Module base class: named parameters, buffers and children, train/eval, hooks, state.
//
// Modelled on PyTorch's C++ frontend (torch::nn::Module). A module registers, in its constructor,
//   * parameters  — leaf tensors with requires_grad that an optimizer updates (`weight`, `bias`),
//   * buffers     — state that is saved but not optimised (`running_mean`, `num_batches_tracked`),
//   * children    — sub-modules, held by std::shared_ptr.
// Everything is kept in registration order, so the recursive accessors give stable dotted names
// (`features.0.weight`) in PyTorch's order: a module's own parameters, then its children's, depth first.
//
// Modules are held by plain std::shared_ptr (no ModuleHolder wrapper as in libtorch):
//
//   auto model = std::make_shared<xg::nn::Sequential>(xg::nn::Linear(784, 100), xg::nn::ReLU());
//   xg::Tensor y = model->forward(x);
//
// Deviations from libtorch, each deliberate: modules are not copyable (use state_dict to copy weights);
// undefined tensors (a Linear without bias, a BatchNorm without running stats) keep their registered name but
// are skipped by parameters()/buffers()/state_dict(), as in Python's PyTorch; forward hooks exist (libtorch
// has none) and fire inside forward (see register_forward_hook).
#pragma once

#include <cstddef>
#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "xgrad/nn/options.h"
#include "xgrad/serialize.h"
#include "xgrad/tensor.h"

namespace xg::nn {

class Module;

/// Named tensors in order (what named_parameters()/named_buffers() return).
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
/// Named modules in order (what named_children()/named_modules() return).
using NamedModules = std::vector<std::pair<std::string, std::shared_ptr<Module>>>;

/// A forward hook: called after a module's forward with the module, its input and its output. It may return
/// a tensor to replace the output (e.g. to inject noise), or an undefined Tensor() to keep it.
using ForwardHook = std::function<Tensor(Module& module, const Tensor& input, const Tensor& output)>;

/// What register_forward_hook returns: remove() unregisters the hook (safe to call twice, or after the module
/// is gone). Dropping the handle does NOT remove the hook (as PyTorch's RemovableHandle).
class HookHandle {
 public:
  HookHandle() = default;
  void remove();
  /// True while the hook is registered.
  bool active() const;

 private:
  friend class Module;
  struct Entry {
    std::size_t id;
    ForwardHook fn;
  };
  using Registry = std::vector<Entry>;
  HookHandle(std::weak_ptr<Registry> registry, std::size_t id) : registry_(std::move(registry)), id_(id) {}
  std::weak_ptr<Registry> registry_;
  std::size_t id_ = 0;
};

/// What load_state_dict found (only returned when it did not throw).
struct LoadStateDictResult {
  std::vector<std::string> missing_keys;     // in the module, not in the dict (only possible with strict=false)
  std::vector<std::string> unexpected_keys;  // in the dict, not in the module (only possible with strict=false)
};

class Module : public std::enable_shared_from_this<Module> {
 public:
  Module() = default;
  /// `name` overrides the type name returned by name() (default: the demangled class name, e.g. "Linear").
  explicit Module(std::string name) : name_(std::move(name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  Module(Module&&) = default;
  Module& operator=(Module&&) = default;

  // ---- forward ------------------------------------------------------------------------------------------
  /// The one-tensor forward that Sequential calls. Layers override it; a module whose forward takes other
  /// arguments (losses) does not, and this default throws an error naming the module.
  virtual Tensor forward(const Tensor& input);

  // ---- registration (call these from your constructor) ---------------------------------------------------
  /// Registers a parameter: the tensor becomes a leaf (detached if it was not one) with requires_grad, and gets
  /// `name` as its label (graph export shows it). An undefined Tensor() reserves the name (e.g. bias=false).
  /// Names must be non-empty, contain no '.', and be unique among this module's parameters, buffers and
  /// children. Returns the registered handle: `weight = register_parameter("weight", w);`.
  Tensor register_parameter(const std::string& name, Tensor tensor, bool requires_grad = true);
  /// Registers a buffer (saved in state_dict, converted by to(), never given a gradient).
  Tensor register_buffer(const std::string& name, Tensor tensor);
  /// Registers a child module. Its parameters' labels become dotted paths (`fc1.weight`, and
  /// `encoder.fc1.weight` once the parent is registered in turn). Returns the same pointer, typed.
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    static_assert(std::is_base_of_v<Module, M>, "register_module: M must derive from xg::nn::Module");
    register_module_impl(name, module);
    return module;
  }
  /// Convenience: moves a module value into a new shared_ptr and registers it.
  template <class M>
    requires(std::is_base_of_v<Module, M> && !std::is_reference_v<M>)
  std::shared_ptr<M> register_module(const std::string& name, M&& module) {
    return register_module(name, std::make_shared<M>(std::move(module)));
  }
  /// Replaces an already registered buffer's tensor (same name); used by modules that reallocate state.
  void replace_buffer(const std::string& name, Tensor tensor);

  // ---- access ---------------------------------------------------------------------------------------------
  /// Parameters of this module and (recurse) all descendants, in registration order, depth first.
  std::vector<Tensor> parameters(bool recurse = true) const;
  NamedTensors named_parameters(bool recurse = true) const;
  std::vector<Tensor> buffers(bool recurse = true) const;
  NamedTensors named_buffers(bool recurse = true) const;
  /// Direct children in registration order.
  std::vector<std::shared_ptr<Module>> children() const;
  NamedModules named_children() const;
  /// This module (if include_self) and every descendant, pre-order. Including self needs the module to be held
  /// by a std::shared_ptr (std::make_shared<Net>()); otherwise it is an error, as in libtorch.
  std::vector<std::shared_ptr<Module>> modules(bool include_self = true);
  /// As modules(), with dotted names ("" for self, "features", "features.0", ...) prefixed by `prefix`.
  NamedModules named_modules(const std::string& prefix = "", bool include_self = true);
  /// Calls fn on this module and every descendant, pre-order (PyTorch: Module::apply).
  void apply(const std::function<void(Module&)>& fn);
  /// A parameter or buffer by dotted name ("features.0.weight"); error listing some names if absent.
  Tensor find_tensor(const std::string& dotted_name) const;

  // ---- modes ---------------------------------------------------------------------------------------------
  /// Sets training mode on this module and every descendant. The one override point: a module that needs to
  /// react to the mode overrides train() and calls Module::train(on). (PyTorch: Module::train.)
  virtual void train(bool on = true);
  /// Same as train(false). Not virtual: override train() instead.
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // ---- gradients, dtype ---------------------------------------------------------------------------------
  /// Clears every parameter's gradient: to undefined (set_to_none, PyTorch's default) or to zeros.
  void zero_grad(bool set_to_none = true);
  /// Converts every parameter and buffer to `dtype` in place: the tensor handles stay the same (an optimizer
  /// built before still sees them), their data and dtype change, gradients are cleared.
  void to(Dtype dtype);

  // ---- state -------------------------------------------------------------------------------------------
  /// Parameters and buffers under dotted names, module by module in pre-order (own parameters, own buffers,
  /// then children), as PyTorch. The tensors are the module's own handles (no copy): save them, or
  /// clone() them for a snapshot.
  StateDict state_dict() const;
  /// Copies values from `dict` into this module's parameters and buffers (in place, converting dtype).
  /// strict: every key must match both ways. All problems (missing keys, unexpected keys, shape mismatches,
  /// the latter also when not strict) are reported in ONE xg::Error, and nothing is modified in that case.
  LoadStateDictResult load_state_dict(const StateDict& dict, bool strict = true);

  // ---- hooks ---------------------------------------------------------------------------------------------
  /// Registers `hook(module, input, output)`, called at the end of every forward of this module. The hook
  /// may return void, or a Tensor that replaces the output when defined. Reading values in a hook changes
  /// nothing in the graph. Built-in layers fire hooks in forward(); a module you write fires them by
  /// ending its forward with `return apply_forward_hooks(input, output);`.
  template <class F>
  HookHandle register_forward_hook(F&& hook) {
    using R = std::invoke_result_t<F&, Module&, const Tensor&, const Tensor&>;
    if constexpr (std::is_void_v<R>) {
      return add_forward_hook([h = std::forward<F>(hook)](Module& m, const Tensor& in, const Tensor& out) mutable {
        h(m, in, out);
        return Tensor();
      });
    } else {
      static_assert(std::is_convertible_v<R, Tensor>, "a forward hook returns void or a Tensor");
      return add_forward_hook(ForwardHook(std::forward<F>(hook)));
    }
  }
  std::size_t num_forward_hooks() const { return hooks_ ? hooks_->size() : 0; }

  // ---- names and printing -------------------------------------------------------------------------------
  /// The module's type name ("Linear", "Sequential", "Net").
  std::string name() const;
  /// The module's dotted path inside the model it was registered in ("features.0"; "" for a root), used as
  /// the label of its forward outputs in graph export. set_label renames it and relabels the tensors below.
  const std::string& label() const { return label_; }
  void set_label(const std::string& label);
  /// One line describing this module without its children, e.g. "Linear(in_features=4, out_features=2,
  /// bias=true)". Override to show options; operator<< prints the whole tree as PyTorch does.
  virtual void pretty_print(std::ostream& os) const;

 protected:
  /// Runs the forward hooks on (input, output) and returns the (possibly replaced) output. Also labels an
  /// unlabelled output with the module's label.
  Tensor apply_forward_hooks(const Tensor& input, Tensor output);

 private:
  friend class EvalGuard;
  struct Slot {
    std::string name;
    Tensor tensor;
  };
  void register_module_impl(const std::string& name, std::shared_ptr<Module> module);
  void check_new_name(const std::string& name, const char* what) const;
  HookHandle add_forward_hook(ForwardHook hook);
  void collect_named(const std::string& prefix, bool params, bool recurse, NamedTensors& out) const;
  void collect_state(const std::string& prefix, StateDict& out) const;

  std::vector<Slot> parameters_;
  std::vector<Slot> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
  std::string name_;
  std::string label_;
  std::shared_ptr<HookHandle::Registry> hooks_;
  std::size_t next_hook_id_ = 1;
};

/// Prints the module tree as PyTorch does:
///   Sequential(
///     (0): Linear(in_features=784, out_features=100, bias=true)
///     (1): ReLU()
///   )
std::ostream& operator<<(std::ostream& os, const Module& m);

/// Saves the module's state_dict to one .npz file (numpy: np.load(path)["fc1.weight"]), atomically.
void save(const Module& module, const std::string& path);
/// Loads a file written by save() (or by numpy's np.savez with the same names) into the module.
/// Errors name the file and every problem (see Module::load_state_dict).
LoadStateDictResult load(Module& module, const std::string& path, bool strict = true);

/// Switches a module tree to eval mode for one scope and restores each module's previous mode after
/// (evaluation inside a training loop). `{ xg::nn::EvalGuard g(*model); evaluate(...); }`
class EvalGuard {
 public:
  explicit EvalGuard(Module& module);
  ~EvalGuard();
  EvalGuard(const EvalGuard&) = delete;
  EvalGuard& operator=(const EvalGuard&) = delete;

 private:
  std::vector<std::pair<Module*, bool>> saved_;
};

}  // namespace xg::nn
