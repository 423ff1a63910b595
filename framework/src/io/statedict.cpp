// StateDict: named tensors in insertion order (the in-memory side of serialize.h).
#include <algorithm>

#include "xgrad/serialize.h"

namespace xg {

void StateDict::insert(const std::string& name, const Tensor& t) {
  if (contains(name)) fail("StateDict: key '{}' is already present", name);
  items_.emplace_back(name, t);
}

void StateDict::set(const std::string& name, const Tensor& t) {
  auto it = std::find_if(items_.begin(), items_.end(), [&](const Item& i) { return i.first == name; });
  if (it == items_.end())
    items_.emplace_back(name, t);
  else
    it->second = t;
}

bool StateDict::contains(const std::string& name) const {
  return std::any_of(items_.begin(), items_.end(), [&](const Item& i) { return i.first == name; });
}

const Tensor& StateDict::at(const std::string& name) const {
  auto it = std::find_if(items_.begin(), items_.end(), [&](const Item& i) { return i.first == name; });
  if (it == items_.end()) {
    std::vector<std::string> some;
    for (std::size_t i = 0; i < std::min<std::size_t>(items_.size(), 8); ++i) some.push_back(items_[i].first);
    fail("StateDict: no key '{}' (it has {} keys: {}{})", name, items_.size(), fmt::join(some, ", "),
         items_.size() > 8 ? ", ..." : "");
  }
  return it->second;
}

std::vector<std::string> StateDict::keys() const {
  std::vector<std::string> k;
  for (const auto& i : items_) k.push_back(i.first);
  return k;
}

StateDict StateDict::sub(const std::string& prefix) const {
  StateDict out;
  const std::string p = prefix + ".";
  for (const auto& [name, t] : items_)
    if (name.rfind(p, 0) == 0) out.items_.emplace_back(name.substr(p.size()), t);
  return out;
}

void StateDict::merge(const std::string& prefix, const StateDict& other) {
  for (const auto& [name, t] : other.items_) insert(prefix.empty() ? name : prefix + "." + name, t);
}

}  // namespace xg
