#include "xgrad/memory.h"

#include <fmt/format.h>

#include <climits>
#include <initializer_list>
#include <stdexcept>
#include <utility>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace xg {

bool keep_freed_memory(std::size_t max_buffer_bytes, std::size_t trim_bytes) {
#if defined(__GLIBC__)
  for (const auto& [name, v] : {std::pair<const char*, std::size_t>{"max_buffer_bytes", max_buffer_bytes},
                                  std::pair<const char*, std::size_t>{"trim_bytes", trim_bytes}})
    if (v == 0 || v > std::size_t(INT_MAX))
      throw std::invalid_argument(fmt::format(
          "xg::keep_freed_memory: {} = {} is out of range: mallopt takes 1 .. {} (an int)", name, v, INT_MAX));
  // 1 = accepted. A malloc that is not glibc's behind the same symbols (AddressSanitizer's, a preloaded
  // jemalloc) answers 0 and keeps its own policy: report that instead of failing.
  const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, static_cast<int>(max_buffer_bytes)) == 1;
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, static_cast<int>(trim_bytes)) == 1;
  return mmap_ok && trim_ok;
#else
  (void)max_buffer_bytes;
  (void)trim_bytes;
  return false;
#endif
}

}  // namespace xg
