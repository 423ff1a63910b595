// resume.cpp — stop handlers, --resume's argument handling (see resume.h).
#include "resume.h"

#include <algorithm>
#include <fstream>
#include <thread>

#include <pthread.h>
#include <signal.h>

#include <fmt/format.h>
#include <xgrad/xgrad.h>

#include "cells.h"  // job_rank(), job_size()

namespace lab {

namespace {
volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_stop_signal(int sig) { g_stop = sig; }

// "--flag value" pairs and bare flags, as given (the subcommand is args[0]).
std::vector<std::string> read_lines(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> v;
  for (std::string l; std::getline(in, l);) v.push_back(l);
  return v;
}
}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  // SA_RESTART: a system call the signal interrupts resumes instead of failing with EINTR; the flag is read at
  // the next step.
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  // The signals are taken by one watcher thread (sigwait), never by this thread or the threads it creates from
  // now on (xgrad's pool, which runs oneDNN's JIT sgemm pieces). Root cause (docs/checkpoints.md, "Why a watcher
  // thread"): oneDNN's AVX-512 sgemm kernel moves its stack pointer into a heap-allocated workspace while it
  // runs, so a handler taken on such a thread has its signal frame (~3 KB with the AVX-512 state) written below
  // that pointer, into the heap chunk in front of the workspace: "corrupted size vs. prev_size" a few steps
  // later, in ~1 of 12 interrupted runs. Threads that already exist (OpenBLAS's, created when the library
  // loads) keep the handler above; they never run oneDNN's kernels. Called first thing in main, before any
  // thread of ours exists.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) == 0) g_stop = sig;
    }
  }).detach();
}

int stop_signal() { return g_stop; }
void reset_stop_signal() { g_stop = 0; }

std::vector<std::string> resume_arguments(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  auto it = std::find_if(args.begin(), args.end(), [](const std::string& a) {
    return a == "--resume" || a.rfind("--resume=", 0) == 0;
  });
  if (it == args.end()) return args;
  std::string dir;
  if (*it == "--resume") {
    if (it + 1 == args.end()) xg::fail("--resume needs the output folder of the interrupted run: --resume DIR");
    dir = *(it + 1);
    it = args.erase(it, it + 2);
  } else {
    dir = it->substr(std::string("--resume=").size());
    args.erase(it);
  }
  const fs::path file = fs::path(dir) / "checkpoints" / "args.txt";
  std::error_code ec;
  if (!fs::exists(file, ec))
    xg::fail("--resume {}: there is no interrupted run in '{}' (no {}): the run finished (its checkpoints are "
             "removed at the end), or the folder was not written by xgrad-lab",
             dir, dir, file.string());
  const std::vector<std::string> stored = read_lines(file);
  if (stored.empty()) xg::fail("--resume {}: '{}' is empty", dir, file.string());
  // args = [program, subcommand, flags...]; stored = [subcommand, flags...].
  if (args.size() < 2) xg::fail("--resume {}: give the subcommand of the interrupted run ({})", dir, stored[0]);
  if (args[1] != stored[0])
    xg::fail("--resume {}: the interrupted run was `xgrad-lab {}`, not `{}`", dir, stored[0], args[1]);
  // Flags given besides --resume must be the stored ones (the same tokens in the same order, --out aside).
  std::vector<std::string> given(args.begin() + 2, args.end()), kept;
  std::vector<std::string> stored_flags;
  for (std::size_t i = 1; i < stored.size(); ++i) {
    if (stored[i] == "--out" && i + 1 < stored.size()) {
      ++i;
      continue;
    }
    if (stored[i].rfind("--out=", 0) == 0) continue;
    stored_flags.push_back(stored[i]);
  }
  if (!given.empty() && given != stored_flags) {
    auto join = [](const std::vector<std::string>& v) {
      std::string s;
      for (const auto& a : v) s += (s.empty() ? "" : " ") + a;
      return s.empty() ? std::string("(none)") : s;
    };
    xg::fail("--resume {}: the flags differ from the interrupted run's: given `{}`, the run was started with `{}`; "
             "give --resume alone (the flags come from {}) or exactly the same flags",
             dir, join(given), join(stored_flags), file.string());
  }
  std::vector<std::string> out{args[0], stored[0]};
  out.insert(out.end(), stored_flags.begin(), stored_flags.end());
  out.insert(out.end(), {"--out", dir, "--resume", dir});
  return out;
}

void record_arguments(const Lab& lab, const std::vector<std::string>& args) {
  if (lab.options().resume) return;
  std::error_code ec;
  fs::remove_all(lab.checkpoint_dir(), ec);  // an earlier interrupted command's: this one starts afresh
  std::string text;
  for (std::size_t i = 1; i < args.size(); ++i) text += args[i] + "\n";
  write_file_atomic(lab.checkpoint_dir() / "args.txt", text);
}

int report_interrupted(const Interrupted& e, const Lab& lab) {
  const std::string name = e.signal() == SIGINT ? "SIGINT" : e.signal() == SIGTERM ? "SIGTERM" : "a signal";
  std::string sub = lab.options().command_line;
  const auto sp = sub.find(' ', std::string("xgrad-lab ").size());
  sub = sub.substr(std::string("xgrad-lab ").size(), sp == std::string::npos ? std::string::npos
                                                                               : sp - std::string("xgrad-lab ").size());
  if (job_size() > 1) {  // under mpirun: no checkpoints; the finished runs are the recorded cells (cells.h)
    if (job_rank() == 0)
      fmt::print(stderr,
                 "\nxgrad-lab: stopped by {} (rank 0 of {}): {}.\nxgrad-lab: no report was written; the finished "
                 "runs are recorded in {}; continue by running the same mpirun command again (any number of "
                 "ranks): the recorded runs are skipped\n",
                 name, job_size(), e.what(), (lab.out() / "cells").string());
    else
      fmt::print(stderr, "xgrad-lab: rank {} of {} stopped by {}: {}\n", job_rank(), job_size(), name, e.what());
    return 128 + e.signal();
  }
  fmt::print(stderr,
             "\nxgrad-lab: stopped by {}: {}.\nxgrad-lab: the checkpoints are in {}; continue with:\n"
             "  xgrad-lab {} --resume {}\n",
             name, e.what(), lab.checkpoint_dir().string(), sub, lab.out().string());
  return 128 + e.signal();
}

}  // namespace lab
