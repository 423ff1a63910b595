// xgrad — persistent thread pool behind xg::parallel_for (see xgrad/parallel.h for the contract).
//
// Design: one global pool with get_num_threads()-1 workers. A call publishes a job (fn, range, number of
// pieces) under a new epoch and runs piece 0 itself; the other pieces are CLAIMED (one CAS each) by whoever
// comes first — the workers, or the caller once its own piece is done. The cut of the range is static; only
// who runs a piece is not, so a worker that is descheduled on a busy machine delays nothing (the caller
// simply takes its piece). The caller waits for the number of finished pieces, never for idle workers.
// Waiting is a short spin (the kernels issue calls back to back) followed by a condition-variable wait, so
// idle workers cost nothing on a shared machine. Workers start from epoch 0 (the value at construction),
// never from a value they load themselves: a worker that starts late still sees job 1.
#include "xgrad/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define XG_CPU_RELAX() _mm_pause()
#else
#define XG_CPU_RELAX() ((void)0)
#endif

extern "C" void openblas_set_num_threads(int);

namespace xg {
namespace {

thread_local bool t_in_parallel = false;

struct RegionFlag {  // marks the current thread as "inside a parallel_for piece" (nested calls run inline)
  bool prev;
  RegionFlag() : prev(t_in_parallel) { t_in_parallel = true; }
  ~RegionFlag() { t_in_parallel = prev; }
};

// Spin on `pred` for up to ~spin_us microseconds, then give up (caller falls back to a blocking wait).
template <class Pred>
bool spin_until(Pred pred, int spin_us) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us);
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (pred()) return true;
      XG_CPU_RELAX();
    }
    if (std::chrono::steady_clock::now() > deadline) return pred();
  }
}

class Pool {
 public:
  explicit Pool(int nthreads) : errors_(static_cast<std::size_t>(nthreads)) {
    workers_.reserve(static_cast<std::size_t>(nthreads - 1));
    for (int i = 1; i < nthreads; ++i) workers_.emplace_back([this] { worker_loop(); });
  }

  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_.store(true, std::memory_order_relaxed);
      state_.store(pack(++epoch_, 0, 0), std::memory_order_release);  // an empty epoch wakes everyone
    }
    cv_work_.notify_all();
    for (auto& t : workers_) t.join();
  }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Returns false (without running anything) if another thread currently owns the pool.
  bool try_run(std::size_t begin, std::size_t len, std::size_t pieces,
               const std::function<void(std::size_t, std::size_t)>& fn) {
    std::unique_lock<std::mutex> own(owner_, std::try_to_lock);
    if (!own.owns_lock()) return false;
    fn_ = &fn;
    begin_ = begin;
    len_ = len;
    for (std::size_t i = 0; i < pieces; ++i) errors_[i] = nullptr;
    done_.store(0, std::memory_order_relaxed);
    const std::uint32_t epoch = ++epoch_;
    {
      std::lock_guard<std::mutex> lk(mu_);  // a worker between its check and its wait holds mu_: no lost wake-up
      state_.store(pack(epoch, pieces, 1), std::memory_order_release);  // piece 0 is the caller's
    }
    cv_work_.notify_all();

    run_piece(0, pieces);
    std::size_t p = 0;
    while (claim(epoch, p)) run_piece(p, pieces);  // whatever no worker has started yet

    if (!spin_until([&] { return done_.load(std::memory_order_acquire) == pieces; }, 200)) {
      std::unique_lock<std::mutex> lk(mu_);
      cv_done_.wait(lk, [&] { return done_.load(std::memory_order_acquire) == pieces; });
    }
    fn_ = nullptr;
    for (std::size_t i = 0; i < pieces; ++i)
      if (errors_[i]) std::rethrow_exception(errors_[i]);
    return true;
  }

 private:
  // state_ = epoch (32 bits) | pieces (16) | next unclaimed piece (16), so a claim is one CAS that also
  // checks the epoch: a worker that wakes late can never take a piece of a newer job by mistake.
  static std::uint64_t pack(std::uint32_t epoch, std::size_t pieces, std::size_t next) {
    return (std::uint64_t(epoch) << 32) | (std::uint64_t(pieces) << 16) | std::uint64_t(next);
  }

  bool claim(std::uint32_t epoch, std::size_t& piece) {
    std::uint64_t s = state_.load(std::memory_order_acquire);
    for (;;) {
      if (std::uint32_t(s >> 32) != epoch) return false;
      const std::size_t pieces = (s >> 16) & 0xffff, next = s & 0xffff;
      if (next >= pieces) return false;
      if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        piece = next;
        return true;
      }
    }
  }

  // Run piece i of a job cut into `pieces` (claimed by this thread, so fn_/begin_/len_ are that job's).
  void run_piece(std::size_t i, std::size_t pieces) {
    const std::size_t lo = begin_ + i * len_ / pieces;
    const std::size_t hi = begin_ + (i + 1) * len_ / pieces;
    if (lo < hi) {
      RegionFlag flag;
      try {
        (*fn_)(lo, hi);
      } catch (...) {
        errors_[i] = std::current_exception();
      }
    }
    if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == pieces) {
      std::lock_guard<std::mutex> lk(mu_);  // the caller checks done_ under mu_ before it sleeps
      cv_done_.notify_one();
    }
  }

  void worker_loop() {
    std::uint32_t seen = 0;
    auto epoch_now = [&] { return std::uint32_t(state_.load(std::memory_order_acquire) >> 32); };
    for (;;) {
      if (!spin_until([&] { return epoch_now() != seen; }, 100)) {
        std::unique_lock<std::mutex> lk(mu_);
        cv_work_.wait(lk, [&] { return epoch_now() != seen; });
      }
      if (stop_.load(std::memory_order_relaxed)) return;
      const std::uint64_t s = state_.load(std::memory_order_acquire);
      seen = std::uint32_t(s >> 32);
      std::size_t p = 0;
      while (claim(seen, p)) run_piece(p, (s >> 16) & 0xffff);
    }
  }

  std::vector<std::thread> workers_;
  std::mutex owner_;
  // The current job: written by the owner before it publishes an epoch, read by whoever claims a piece.
  const std::function<void(std::size_t, std::size_t)>* fn_ = nullptr;
  std::size_t begin_ = 0, len_ = 0;
  std::vector<std::exception_ptr> errors_;
  std::uint32_t epoch_ = 0;  // owner only
  std::atomic<std::uint64_t> state_{0};
  std::atomic<std::size_t> done_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;                    // only for the blocking (non-spinning) waits
  std::condition_variable cv_work_;  // workers: a new epoch was published
  std::condition_variable cv_done_;  // caller: done_ reached the number of pieces
};

int default_num_threads() {
  if (const char* env = std::getenv("XGRAD_NUM_THREADS")) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v >= 1) return static_cast<int>(std::min<long>(v, 1024));
  }
  const unsigned hc = std::thread::hardware_concurrency();
  if (hc == 0) return 2;
  return static_cast<int>(std::min<unsigned>(hc, 64));
}

struct Global {
  std::mutex mu;  // guards num_threads and pool (creation / replacement)
  int num_threads = default_num_threads();
  std::shared_ptr<Pool> pool;  // callers hold a copy while they use it, so a replacement never pulls it away
};

Global& global() {
  static Global g;
  return g;
}

}  // namespace

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("xg::set_num_threads: n must be >= 1, got " + std::to_string(n));
  auto& g = global();
  {
    std::lock_guard<std::mutex> lock(g.mu);
    if (g.pool && g.pool->size() != n) g.pool.reset();  // joins the old workers
    g.num_threads = n;
  }
  openblas_set_num_threads(n);
}

int get_num_threads() {
  auto& g = global();
  std::lock_guard<std::mutex> lock(g.mu);
  return g.num_threads;
}

bool in_parallel_region() { return t_in_parallel; }

void parallel_for(std::size_t begin, std::size_t end, std::size_t grain,
                  const std::function<void(std::size_t lo, std::size_t hi)>& fn) {
  if (end <= begin) return;
  const std::size_t len = end - begin;
  if (grain == 0) grain = 1;

  std::shared_ptr<Pool> pool;
  std::size_t pieces = 1;
  if (!t_in_parallel && len > grain) {
    auto& g = global();
    std::lock_guard<std::mutex> lock(g.mu);
    if (g.num_threads > 1) {
      pieces = std::min<std::size_t>({static_cast<std::size_t>(g.num_threads), len / grain, 0xffff});
      if (pieces > 1) {
        if (!g.pool) g.pool = std::make_shared<Pool>(g.num_threads);
        pool = g.pool;
      }
    }
  }
  if (pool && pieces > 1 && pool->try_run(begin, len, pieces, fn)) return;

  RegionFlag flag;  // inline: nested calls made by fn stay inline as well
  fn(begin, end);
}

}  // namespace xg
