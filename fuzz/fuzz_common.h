// Helpers of the libFuzzer targets: the input written to a private file the reader under test opens.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "xgrad/common.h"

namespace xgfuzz {

// A file under $TMPDIR (default /tmp) named for this process, holding `size` bytes of `data`.
inline std::string write_input(const std::string& suffix, const std::uint8_t* data, std::size_t size) {
  const char* tmp = std::getenv("TMPDIR");
  const std::string path =
      std::string(tmp && *tmp ? tmp : "/tmp") + "/xgrad-fuzz-" + std::to_string(::getpid()) + suffix;
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data),
                                                                 static_cast<std::streamsize>(size));
  return path;
}

// Every reader error must be an xg::Error that names the file: anything else (another exception type, a message
// without the file name) is a finding. Crashes, leaks, UB and huge allocations are caught by the sanitizers and
// libFuzzer's -rss_limit_mb / -malloc_limit_mb.
inline void check_error(const xg::Error& e, const std::string& path) {
  if (std::strstr(e.what(), path.c_str()) == nullptr) {
    std::fprintf(stderr, "error message does not name the file '%s': %s\n", path.c_str(), e.what());
    std::abort();
  }
}

}  // namespace xgfuzz
