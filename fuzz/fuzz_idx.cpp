// libFuzzer target: xg::data::read_idx on raw IDX files and on gzip-compressed ones. The first input byte picks
// the form: 0 = the rest as a plain file, 1 = the rest gzip-compressed into a .gz file (valid gzip, hostile
// content), 2 = the rest as a file named .gz (a hostile gzip stream).
#include <zlib.h>

#include <string>
#include <vector>

#include "fuzz_common.h"
#include "xgrad/data.h"

namespace {
std::string gzip(const std::uint8_t* data, std::size_t size) {
  z_stream z{};
  deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, static_cast<uLong>(size)), '\0');
  z.next_in = const_cast<Bytef*>(data);
  z.avail_in = static_cast<uInt>(size);
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const int mode = data[0] % 3;
  std::string path;
  if (mode == 1) {
    const std::string z = gzip(data + 1, size - 1);
    path = xgfuzz::write_input("-idx.gz", reinterpret_cast<const std::uint8_t*>(z.data()), z.size());
  } else {
    path = xgfuzz::write_input(mode == 0 ? "-idx" : "-idx.gz", data + 1, size - 1);
  }
  try {
    const xg::data::IdxArray a = xg::data::read_idx(path);
    std::size_t n = 1;
    for (auto d : a.dims) n *= d;
    if (n != a.values.size()) std::abort();  // a successful read must be consistent
  } catch (const xg::Error& e) {
    xgfuzz::check_error(e, path);
  }
  std::remove(path.c_str());
  return 0;
}
