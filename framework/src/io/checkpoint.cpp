// xg::Checkpoint (see xgrad/checkpoint.h): named state dicts of live objects, saved atomically, loaded all or
// nothing.
#include "xgrad/checkpoint.h"

#include <cmath>
#include <sstream>

#include "xgrad/atomic_file.h"
#include "xgrad/common.h"

namespace xg {

namespace {

// A 64-bit word as two float64 halves (each < 2^32, so exact), and back.
void push_word(std::vector<double>& out, std::uint64_t w) {
  out.push_back(static_cast<double>(w >> 32));
  out.push_back(static_cast<double>(w & 0xFFFFFFFFull));
}

Tensor words_tensor(const std::vector<std::uint64_t>& words) {
  std::vector<double> v;
  v.reserve(words.size() * 2);
  for (auto w : words) push_word(v, w);
  return from_vector(v, {words.size(), 2}, kFloat64);
}

// The words of a [n, 2] tensor written by words_tensor; `what` names it in errors.
std::vector<std::uint64_t> tensor_words(const Tensor& t, const std::string& what) {
  if (!t.defined() || t.ndim() != 2 || t.shape()[1] != 2)
    fail("{} must be a [n, 2] tensor of 32-bit halves, got {}", what, t.defined() ? shape_str(t.shape()) : "none");
  const std::vector<double> v = t.to_vector();
  std::vector<std::uint64_t> words;
  words.reserve(v.size() / 2);
  for (std::size_t i = 0; i < v.size(); i += 2) {
    for (double h : {v[i], v[i + 1]})
      if (!(h >= 0 && h < 4294967296.0 && h == std::floor(h)))
        fail("{} holds {} at row {}, not a 32-bit half of a word", what, h, i / 2);
    words.push_back((static_cast<std::uint64_t>(v[i]) << 32) | static_cast<std::uint64_t>(v[i + 1]));
  }
  return words;
}

}  // namespace

StateDict generator_state(const Generator& gen) {
  // The standard's textual form of the engine is its whole state (for mt19937_64: 312 words and the position).
  std::ostringstream ss;
  ss << gen.engine();
  std::istringstream in(ss.str());
  std::vector<std::uint64_t> words;
  for (std::uint64_t w; in >> w;) words.push_back(w);
  StateDict sd;
  sd.insert("engine", words_tensor(words));
  sd.insert("seed", words_tensor({gen.initial_seed()}));
  return sd;
}

void load_generator_state(Generator& gen, const StateDict& state) {
  const auto words = tensor_words(state.at("engine"), "generator state 'engine'");
  const auto seed = tensor_words(state.at("seed"), "generator state 'seed'");
  if (seed.size() != 1) fail("generator state 'seed' must hold one word, got {}", seed.size());
  if (state.size() != 2) fail("generator state must hold exactly 'engine' and 'seed', got {} keys", state.size());
  std::ostringstream ss;
  for (auto w : words) ss << w << ' ';
  std::istringstream in(ss.str());
  std::mt19937_64 engine;
  in >> engine;
  // A forged count of words is refused here: the engine reads exactly its state size and checks the position.
  std::uint64_t extra = 0;
  if (in.fail() || (in >> extra))
    fail("generator state 'engine' holds {} words, not the state of an mt19937_64 ({} words)", words.size(),
         std::mt19937_64::state_size + 1);
  Generator restored(seed[0]);
  restored.engine() = engine;
  gen = restored;
}

void Checkpoint::add_entry(const std::string& name, bool scalar, std::function<StateDict()> save,
                           std::function<void(const StateDict&)> load) {
  if (name.empty()) fail("Checkpoint::add: the name is empty");
  for (const auto& e : entries_) {
    const bool clash = e.name == name || name.rfind(e.name + ".", 0) == 0 || e.name.rfind(name + ".", 0) == 0;
    if (clash) fail("Checkpoint::add: '{}' clashes with '{}', added before (names and prefixes must be unique)", name, e.name);
  }
  entries_.push_back(Entry{name, scalar, std::move(save), std::move(load)});
}

Checkpoint& Checkpoint::add(const std::string& name, Generator& gen) {
  add_entry(name, false, [&gen] { return generator_state(gen); },
            [&gen](const StateDict& s) { load_generator_state(gen, s); });
  return *this;
}

Checkpoint& Checkpoint::add(const std::string& name, std::uint64_t& counter) {
  add_entry(
      name, true,
      [&counter] {
        StateDict s;
        s.insert("value", words_tensor({counter}));
        return s;
      },
      [&counter, name](const StateDict& s) {
        const auto w = tensor_words(s.at("value"), "counter '" + name + "'");
        if (w.size() != 1) fail("counter '{}' must hold one word, got {}", name, w.size());
        counter = w[0];
      });
  return *this;
}

Checkpoint& Checkpoint::add(const std::string& name, double& value) {
  add_entry(
      name, true,
      [&value] {
        StateDict s;
        s.insert("value", from_vector(std::vector<double>{value}, {1}, kFloat64));
        return s;
      },
      [&value, name](const StateDict& s) {
        const Tensor& t = s.at("value");
        if (t.numel() != 1) fail("value '{}' must hold one number, got shape {}", name, shape_str(t.shape()));
        value = t.to_vector()[0];
      });
  return *this;
}

Checkpoint& Checkpoint::add(const std::string& name, std::vector<double>& values) {
  add_entry(
      name, true,
      [&values] {
        StateDict s;
        s.insert("value", from_vector(values, {values.size()}, kFloat64));
        return s;
      },
      [&values, name](const StateDict& s) {
        const Tensor& t = s.at("value");
        if (t.ndim() != 1) fail("values '{}' must be a vector, got shape {}", name, shape_str(t.shape()));
        values = t.to_vector();
      });
  return *this;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> n;
  for (const auto& e : entries_) n.push_back(e.name);
  return n;
}

StateDict Checkpoint::state_dict() const {
  StateDict out;
  for (const auto& e : entries_) {
    const StateDict s = e.save();
    if (e.scalar) {
      out.insert(e.name, s.at("value").clone());
    } else {
      for (const auto& [k, t] : s) out.insert(e.name + "." + k, t.defined() ? t.clone() : t);
    }
  }
  return out;
}

void Checkpoint::load_state_dict(const StateDict& state) {
  // 1. The layout: every entry present, no key that belongs to none.
  std::vector<std::string> missing, unknown;
  for (const auto& e : entries_) {
    const bool present = e.scalar ? state.contains(e.name) : state.sub(e.name).size() > 0 || e.save().size() == 0;
    if (!present) missing.push_back(e.name);
  }
  for (const auto& [k, t] : state) {
    bool known = false;
    for (const auto& e : entries_) known = known || (e.scalar ? k == e.name : k.rfind(e.name + ".", 0) == 0);
    if (!known) unknown.push_back(k);
  }
  if (!missing.empty() || !unknown.empty()) {
    std::vector<std::string> problems;
    if (!missing.empty()) problems.push_back(fmt::format("no entries for {}", fmt::join(missing, ", ")));
    if (!unknown.empty())
      problems.push_back(fmt::format("{} unknown key(s): {}{}", unknown.size(),
                                     fmt::join(unknown.begin(), unknown.begin() + std::min<std::ptrdiff_t>(
                                                                                     unknown.size(), 6), ", "),
                                     unknown.size() > 6 ? ", ..." : ""));
    fail("Checkpoint: the state does not match what was added ({}): is it a checkpoint of another run or "
         "program?",
         fmt::join(problems, "; "));
  }
  // 2. A snapshot of every object (copies), to undo a partial load.
  const StateDict before = state_dict();
  // 3. Load in order; if one refuses, restore the ones already loaded.
  std::size_t loaded = 0;
  try {
    for (; loaded < entries_.size(); ++loaded) {
      const Entry& e = entries_[loaded];
      StateDict part;
      if (e.scalar) part.insert("value", state.at(e.name));
      else part = state.sub(e.name);
      try {
        e.load(part);
      } catch (const std::exception& ex) {
        fail("'{}': {}", e.name, ex.what());
      }
    }
  } catch (...) {
    for (std::size_t i = 0; i < loaded; ++i) {
      const Entry& e = entries_[i];
      StateDict part;
      if (e.scalar) part.insert("value", before.at(e.name));
      else part = before.sub(e.name);
      e.load(part);  // the state it had a moment ago: accepted
    }
    throw;
  }
}

void Checkpoint::save(const std::string& path) const {
  save_npz(path, state_dict());
}

void Checkpoint::load(const std::string& path) {
  try {
    load_state_dict(load_npz(path));
  } catch (const std::exception& e) {
    const std::string what = e.what();
    // load_npz names the file already; the state errors do not.
    if (what.find(path) != std::string::npos) fail("Checkpoint::load: {}; nothing was changed", what);
    fail("Checkpoint::load('{}'): {}; nothing was changed", path, what);
  }
}

}  // namespace xg
