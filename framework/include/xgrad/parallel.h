// xgrad — a tiny persistent thread pool for the hand-written kernels.
//
//   xg::set_num_threads(2);
//   xg::parallel_for(0, n, /*grain=*/64, [&](std::size_t lo, std::size_t hi) {
//     for (std::size_t i = lo; i < hi; ++i) out[i] = f(in[i]);
//   });
//
// Contract
// --------
// * The pool owns get_num_threads()-1 worker threads, created once (lazily, on the first parallel_for that
//   needs them) and reused by every call; the calling thread always does the first share itself.
// * The range [begin, end) is cut into at most get_num_threads() CONTIGUOUS pieces of near-equal length
//   (static partition: piece i = [begin + i*len/k, begin + (i+1)*len/k)); each piece holds at least `grain`
//   indices, so a range of at most `grain` indices (or one thread) runs inline on the caller as fn(begin, end).
// * fn is called once per non-empty piece; every index is covered exactly once. parallel_for returns when all
//   pieces are done (their writes are visible to the caller). The cut is fixed; which thread runs a piece is
//   not: pieces a worker has not started yet (it may be descheduled on a busy machine) are taken by the
//   caller once its own piece is done.
// * An exception thrown by fn on any thread is caught and rethrown on the caller (the one from the lowest piece
//   if several throw) after all pieces have finished.
// * A parallel_for called from inside fn (nested), or while another thread owns the pool, runs inline on the
//   calling thread: never a deadlock, only less parallelism.
//
// Determinism rule for kernels that use it: results must NOT depend on the partition. A kernel that reduces
// must block its reduction with a fixed blocking that depends only on the problem shape (never on the number
// of threads or on lo/hi), and combine the partial results in a fixed order, so one thread and many threads
// produce the same bits. xg::kernels::batch_norm_* follow this rule.
#pragma once

#include <cstddef>
#include <functional>

namespace xg {

/// Set the number of threads used by parallel_for (n >= 1, else std::invalid_argument) — and so by float32
/// GEMMs on oneDNN, which run as pieces on this pool — and by OpenBLAS (calls openblas_set_num_threads(n)). Joins and recreates the workers: do not call it while a parallel_for
/// is running.
void set_num_threads(int n);

/// Number of threads parallel_for may use. Default: the environment variable XGRAD_NUM_THREADS if it holds a
/// positive integer, else std::thread::hardware_concurrency() (2 if unknown), capped at 64.
int get_num_threads();

/// Run fn(lo, hi) over a static contiguous partition of [begin, end) (see the contract above).
/// grain: the smallest piece worth a thread (0 is treated as 1).
void parallel_for(std::size_t begin, std::size_t end, std::size_t grain,
                  const std::function<void(std::size_t lo, std::size_t hi)>& fn);

/// True while the current thread is executing a piece of a parallel_for (on a worker or on the caller).
bool in_parallel_region();

}  // namespace xg
