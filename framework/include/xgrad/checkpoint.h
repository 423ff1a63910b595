// xgrad/checkpoint.h — everything a training run depends on, saved and restored as one file (exact resume).
//
// In PyTorch one saves a dict of state dicts: {"model": model.state_dict(), "optimizer": opt.state_dict(), ...}
// and the RNG states beside it. xg::Checkpoint is that dict, bound to the live objects so save() and load() need
// no bookkeeping, plus the pieces PyTorch leaves to the user: every random stream, the data loader's position
// within its epoch, and plain counters.
//
//   xg::Checkpoint ck;
//   ck.add("model", *model)                     // parameters and buffers (BN running statistics)
//     .add("optimizer", opt)                    // moments, step counts, hyper-parameters
//     .add("scheduler", sched)                  // last_epoch, lrs
//     .add("loader", loader)                    // epoch, permutation, position, shuffling stream
//     .add("rng.default", xg::default_generator())  // dropout and anything else drawing from it
//     .add("step", step);                       // a std::uint64_t (or double, or std::vector<double>)
//   ck.save("run/checkpoint.npz");              // atomic (xgrad/atomic_file.h)
//   ck.load("run/checkpoint.npz");              // all or nothing
//
// The file is an ordinary .npz (numpy can read it): each object's state under "<name>.", each counter under
// "<name>". load() reads and checks the whole file first; if any object refuses its part (another architecture,
// another optimizer, a missing entry, a corrupt file), every object already loaded is restored and the error names
// the file and what was wrong: a failed load changes nothing.
#pragma once

#include <concepts>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "xgrad/random.h"
#include "xgrad/serialize.h"

namespace xg {

/// Something with a state dict: Module, Optimizer, LRScheduler, data::DataLoader, Checkpoint.
template <class T>
concept Stateful = requires(T& t, const T& ct, const StateDict& s) {
  { ct.state_dict() } -> std::convertible_to<StateDict>;
  t.load_state_dict(s);
};

/// A generator's state (mt19937_64's 312 words and position, and its seed) as tensors, and back. Exact: every
/// 64-bit word is stored as two float64 halves.
StateDict generator_state(const Generator& gen);
void load_generator_state(Generator& gen, const StateDict& state);

class Checkpoint {
 public:
  /// Binds `object` under "<name>."; it must outlive the Checkpoint. Names must be unique and not prefixes of
  /// each other's keys ("a" and "a.b" clash).
  template <Stateful T>
  Checkpoint& add(const std::string& name, T& object) {
    add_entry(name, false, [&object] { return StateDict(object.state_dict()); },
              [&object](const StateDict& s) { object.load_state_dict(s); });
    return *this;
  }
  Checkpoint& add(const std::string& name, Generator& gen);
  Checkpoint& add(const std::string& name, std::uint64_t& counter);
  Checkpoint& add(const std::string& name, double& value);
  Checkpoint& add(const std::string& name, std::vector<double>& values);

  /// The names bound so far, in order.
  std::vector<std::string> names() const;

  /// Everything, under the names (module tensors are copies: training on does not change the result).
  StateDict state_dict() const;
  /// Loads every bound object from `state`; all or nothing (see above). xg::Error lists what is missing or
  /// unknown.
  void load_state_dict(const StateDict& state);

  /// state_dict() as an .npz, atomically.
  void save(const std::string& path) const;
  /// load_state_dict(load_npz(path)); errors name the file.
  void load(const std::string& path);

 private:
  struct Entry {
    std::string name;
    bool scalar;  // stored under "<name>" (a counter) instead of "<name>."
    std::function<StateDict()> save;
    std::function<void(const StateDict&)> load;
  };
  void add_entry(const std::string& name, bool scalar, std::function<StateDict()> save,
                 std::function<void(const StateDict&)> load);
  std::vector<Entry> entries_;
};

}  // namespace xg
