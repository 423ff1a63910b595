// libFuzzer target: xg::load_npy and xg::load_npz. The first input byte picks the reader (even: .npy, odd: .npz);
// the rest is the file.
#include <cstdio>
#include <string>

#include "fuzz_common.h"
#include "xgrad/serialize.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool npz = data[0] % 2 == 1;
  const std::string path = xgfuzz::write_input(npz ? ".npz" : ".npy", data + 1, size - 1);
  try {
    if (npz) {
      const xg::StateDict sd = xg::load_npz(path);
      for (const auto& [name, t] : sd)
        if (t.defined() && t.numel() > 0) (void)t.to_vector();  // every loaded tensor is readable
    } else {
      const xg::Tensor t = xg::load_npy(path);
      if (t.numel() > 0) (void)t.to_vector();
    }
  } catch (const xg::Error& e) {
    xgfuzz::check_error(e, path);
  }
  std::remove(path.c_str());
  return 0;
}
