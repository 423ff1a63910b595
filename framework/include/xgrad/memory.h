// xgrad — keeping freed tensor memory in the process.
//
// Every op returns a fresh tensor, so a training step allocates and frees the same large buffers again and
// again. By default glibc gives buffers of more than 128 KiB their own mmap (a threshold it raises as it
// goes) and trims the top of its heap when more than 128 KiB are free; either way the memory goes back to
// the kernel, and the next step page-faults it in again, 4 KiB at a time. Where a page fault is expensive (a
// virtual machine that exits to the hypervisor on each), that can cost more than the arithmetic: measured on
// a 2-vCPU VM, one step of the 784-100-100-100-10 MLP took 1.02 ms by default and 0.47 ms with the memory
// kept (bench_training_step).
//
//   int main() {
//     xg::keep_freed_memory();   // once, before the training loop
//     ...
//   }
//
// PyTorch's CPU allocator has the same problem and the same remedy (GLIBC_TUNABLES or a caching allocator
// such as jemalloc); xgrad-lab and bench_training_step call this at start-up.
#pragma once

#include <cstddef>

namespace xg {

/// Asks glibc (mallopt) to keep freed memory in the process for reuse: buffers of up to `max_buffer_bytes`
/// come from the heap instead of their own mmap, and the heap is trimmed only when more than `trim_bytes` are
/// free at its top. The same as running the program with
///   GLIBC_TUNABLES=glibc.malloc.mmap_threshold=<max_buffer_bytes>:glibc.malloc.trim_threshold=<trim_bytes>.
/// Process-wide: it changes every malloc of the program, other libraries' included, and the program's
/// resident memory stays near its peak. Returns true if glibc took both settings; false where the allocator is
/// not glibc's (another C library, AddressSanitizer's, a preloaded jemalloc), which keep their own policy.
/// Throws std::invalid_argument for a value of 0 or above INT_MAX (mallopt takes an int).
bool keep_freed_memory(std::size_t max_buffer_bytes = std::size_t(256) << 20,
                       std::size_t trim_bytes = std::size_t(1) << 30);

}  // namespace xg
