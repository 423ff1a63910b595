// xg::keep_freed_memory: argument checks, and that freed memory really stays in the process afterwards.
#include <doctest/doctest.h>

#include <climits>
#include <cstdlib>
#include <stdexcept>

#include "xgrad/memory.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

TEST_CASE("keep_freed_memory rejects values mallopt cannot take, naming them") {
  CHECK_THROWS_WITH_AS(xg::keep_freed_memory(0), doctest::Contains("max_buffer_bytes = 0 is out of range"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(xg::keep_freed_memory(std::size_t(1) << 20, std::size_t(INT_MAX) + 1),
                       doctest::Contains("trim_bytes = 2147483648 is out of range: mallopt takes 1 .. 2147483647"),
                       std::invalid_argument);
}

TEST_CASE("after keep_freed_memory a freed 8 MiB buffer stays in the heap for the next allocation") {
  const bool applied = xg::keep_freed_memory();
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
  REQUIRE(applied);  // plain glibc takes both settings
  const std::size_t n = std::size_t(8) << 20;
  char* volatile p = static_cast<char*>(std::malloc(n));
  REQUIRE(p != nullptr);
  for (std::size_t i = 0; i < n; i += 4096) p[i] = 1;  // fault the pages in
  std::free(p);
  // By default this buffer would have had its own mmap, returned to the kernel by free(). Kept, it is free
  // memory of the heap (not trimmed: less than the 1 GiB trim threshold).
  const struct mallinfo2 m = mallinfo2();
  CHECK(m.fordblks >= n);
  CHECK(m.hblkhd < n);  // no mmapped block of that size is left
#else
  CHECK(!applied);  // AddressSanitizer's allocator (or another libc) keeps its own policy and says so
#endif
}
