// xgrad-lab's stop signals (examples/lab/resume.h): SIGINT/SIGTERM never run a handler on a thread that computes.
//
// Why it matters: oneDNN's AVX-512 sgemm kernel runs with its stack pointer inside a heap-allocated workspace, so
// a signal handled on a thread in that kernel has its frame written into the heap in front of the workspace
// (docs/checkpoints.md, "Why a watcher thread"). install_stop_handlers() therefore blocks both signals in the
// calling thread — and so in every thread created afterwards, xgrad's pool included — and a watcher thread takes
// them with sigwait. This file is its own process: blocking signals changes the whole test process.
#include <doctest/doctest.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>

#include "xgrad/parallel.h"

#ifdef XGRAD_LAB_BUILT
#include "resume.h"

namespace {
bool blocked_here(int sig) {
  sigset_t s;
  pthread_sigmask(SIG_BLOCK, nullptr, &s);
  return sigismember(&s, sig) == 1;
}
}  // namespace

TEST_CASE("install_stop_handlers: SIGINT/SIGTERM are blocked in the caller and in the pool's threads") {
  lab::install_stop_handlers();
  CHECK(blocked_here(SIGINT));
  CHECK(blocked_here(SIGTERM));

  const int before = xg::get_num_threads();
  xg::set_num_threads(3);  // new workers, created after the handlers were installed (as in xgrad-lab's main)
  std::mutex mu;
  std::set<std::thread::id> threads;
  std::atomic<int> unblocked{0};
  xg::parallel_for(0, 3, 1, [&](std::size_t, std::size_t) {
    if (!blocked_here(SIGINT) || !blocked_here(SIGTERM)) ++unblocked;
    {
      std::lock_guard<std::mutex> lk(mu);
      threads.insert(std::this_thread::get_id());
    }
    // Hold this piece until another thread has taken one (at most 5 s), so that workers, not only the caller,
    // are checked — the caller would otherwise take every piece on a busy machine.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (;;) {
      {
        std::lock_guard<std::mutex> lk(mu);
        if (threads.size() >= 2) break;
      }
      if (std::chrono::steady_clock::now() > deadline) break;
      std::this_thread::yield();
    }
  });
  xg::set_num_threads(before);
  REQUIRE_MESSAGE(threads.size() >= 2, "the pool's workers never took a piece: the check above saw only the caller");
  CHECK(unblocked.load() == 0);
}

TEST_CASE("install_stop_handlers: a SIGTERM sent to the process reaches the watcher and sets the stop flag") {
  lab::install_stop_handlers();  // (again: it adds a second watcher, harmless)
  lab::reset_stop_signal();
  REQUIRE(lab::stop_signal() == 0);
  REQUIRE(::kill(::getpid(), SIGTERM) == 0);  // blocked here: a watcher's sigwait takes it, no handler runs here
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (lab::stop_signal() == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CHECK(lab::stop_signal() == SIGTERM);
  lab::reset_stop_signal();
}
#endif  // without xgrad-lab (XGRAD_BUILD_EXAMPLES=OFF) this file has no test case
