// xgrad — persistent thread pool behind xg::parallel_for (see xgrad/parallel.h for the contract).
//
// Design: one global pool with get_num_threads()-1 workers. A call publishes a job (fn, range, number of
// pieces), bumps an epoch counter and runs piece 0 itself; worker i runs piece i. Every worker acknowledges
// every epoch (decrements `pending_`), so the caller may overwrite the job fields as soon as pending_ hits 0.
// Waiting is a short spin (the kernels issue calls back to back) followed by a condition-variable wait, so
// idle workers cost nothing on a shared machine. Every worker starts from epoch 0 (the value at
// construction), never from a value it loads itself: a worker that starts late must still see job 1.
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
    for (int i = 1; i < nthreads; ++i) workers_.emplace_back([this, i] { worker_loop(i, 0); });
  }

  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_.store(true, std::memory_order_relaxed);
      epoch_.fetch_add(1, std::memory_order_release);
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
    pieces_ = pieces;
    for (auto& e : errors_) e = nullptr;
    pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lk(mu_);  // a worker between its check and its wait holds mu_: no lost wake-up
      epoch_.fetch_add(1, std::memory_order_release);
    }
    cv_work_.notify_all();

    run_piece(0);

    if (!spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; }, 200)) {
      std::unique_lock<std::mutex> lk(mu_);
      cv_done_.wait(lk, [&] { return pending_.load(std::memory_order_acquire) == 0; });
    }
    fn_ = nullptr;
    for (auto& e : errors_)
      if (e) std::rethrow_exception(e);
    return true;
  }

 private:
  void run_piece(std::size_t i) {
    if (i >= pieces_) return;
    const std::size_t lo = begin_ + i * len_ / pieces_;
    const std::size_t hi = begin_ + (i + 1) * len_ / pieces_;
    if (lo == hi) return;
    RegionFlag flag;
    try {
      (*fn_)(lo, hi);
    } catch (...) {
      errors_[i] = std::current_exception();
    }
  }

  void worker_loop(int index, std::uint32_t seen) {
    for (;;) {
      if (!spin_until([&] { return epoch_.load(std::memory_order_acquire) != seen; }, 100)) {
        std::unique_lock<std::mutex> lk(mu_);
        cv_work_.wait(lk, [&] { return epoch_.load(std::memory_order_acquire) != seen; });
      }
      seen = epoch_.load(std::memory_order_acquire);
      if (stop_.load(std::memory_order_relaxed)) return;
      run_piece(static_cast<std::size_t>(index));
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lk(mu_);  // the caller checks pending_ under mu_ before it sleeps
        cv_done_.notify_one();
      }
    }
  }

  std::vector<std::thread> workers_;
  std::mutex owner_;
  const std::function<void(std::size_t, std::size_t)>* fn_ = nullptr;
  std::size_t begin_ = 0, len_ = 0, pieces_ = 0;
  std::vector<std::exception_ptr> errors_;
  std::atomic<std::uint32_t> epoch_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;                    // only for the blocking (non-spinning) waits
  std::condition_variable cv_work_;  // workers: a new epoch was published
  std::condition_variable cv_done_;  // caller: pending_ reached 0
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
      pieces = std::min<std::size_t>(static_cast<std::size_t>(g.num_threads), len / grain);
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
