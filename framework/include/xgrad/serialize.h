// xgrad/serialize.h — tensors to and from files numpy can read (.npy, and .npz = a zip of .npy files).
//
// Writes are atomic: the data goes to "<path>.tmp-<pid>" and is renamed over <path> only when complete, so a
// crash never leaves a half-written checkpoint. Reading a truncated, corrupt or foreign file is an xg::Error
// naming the file and what is wrong — never a crash.
//
//   xg::save_npz("model.npz", model->state_dict());
//   auto sd = xg::load_npz("model.npz");        // numpy: np.load("model.npz")["fc1.weight"]
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "xgrad/tensor.h"

namespace xg {

/// Named tensors in a fixed order (module state, optimizer state, or both under prefixes).
class StateDict {
 public:
  using Item = std::pair<std::string, Tensor>;
  void insert(const std::string& name, const Tensor& t);  // error if the name is already present
  void set(const std::string& name, const Tensor& t);     // insert or replace
  bool contains(const std::string& name) const;
  const Tensor& at(const std::string& name) const;        // error naming the missing key and listing some keys
  std::vector<std::string> keys() const;
  std::size_t size() const { return items_.size(); }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }
  /// The entries whose names start with prefix + ".", with the prefix removed.
  StateDict sub(const std::string& prefix) const;
  /// Adds every entry of `other` under prefix + ".".
  void merge(const std::string& prefix, const StateDict& other);

 private:
  std::vector<Item> items_;
};

/// One tensor as a .npy file (C order), its dtype kept: float32 '<f4', float64 '<f8', int64 '<i8', int32 '<i4',
/// bool '|b1'. Loading also takes numpy's other integer types (int8/int16/uint8/uint16 as int32, uint32/uint64
/// as int64, values exact; a uint64 beyond int64 is an error), Fortran order and big-endian data.
void save_npy(const std::string& path, const Tensor& t);
Tensor load_npy(const std::string& path);

/// Many named tensors as an uncompressed .npz (zip of "<name>.npy" entries, with CRCs from zlib).
void save_npz(const std::string& path, const StateDict& tensors);
StateDict load_npz(const std::string& path);

}  // namespace xg
