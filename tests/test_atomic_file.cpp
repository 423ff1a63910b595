// The one atomic write path (xgrad/atomic_file.h) under injected faults: a short write, a full disk (the seam's
// ENOSPC and a real RLIMIT_FSIZE), a failed fsync, close or rename, and a process killed between writing and
// renaming. After each: the previous file is intact, the error names the file and the reason, and no temporary
// file is left (or, after a kill, the next write removes it). Also the writers built on it (save_npz, write_idx).
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "xgrad/xgrad.h"

namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("xgrad_test_atomic_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~TempDir() {
    xg::set_write_fault_hook({});
    fs::remove_all(path);
  }
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(dir)) v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const xg::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// A hook that fails `step` with `err` (every call at that step).
xg::WriteFaultHook fail_at(xg::WriteStep step, int err) {
  return [=](xg::WriteStep s, std::size_t) { return s == step ? xg::WriteFault{err} : xg::WriteFault{}; };
}

}  // namespace

TEST_CASE("write_file_atomic writes, replaces, and leaves nothing else in the folder") {
  TempDir d;
  const std::string p = (d.path / "a.txt").string();
  xg::write_file_atomic(p, "first");
  CHECK(slurp(p) == "first");
  xg::write_file_atomic(p, "second, longer");
  CHECK(slurp(p) == "second, longer");
  xg::write_file_atomic(p, "");
  CHECK(slurp(p).empty());
  CHECK(entries(d.path) == std::vector<std::string>{"a.txt"});
}

TEST_CASE("short writes are continued until every byte is written") {
  TempDir d;
  const std::string p = (d.path / "a.bin").string();
  std::string big(100000, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 + 3);
  std::size_t calls = 0;
  xg::set_write_fault_hook([&](xg::WriteStep s, std::size_t) {
    if (s == xg::WriteStep::Write) ++calls;
    return s == xg::WriteStep::Write ? xg::WriteFault{0, 777} : xg::WriteFault{};  // 777 bytes per write(2)
  });
  xg::write_file_atomic(p, big);
  xg::set_write_fault_hook({});
  CHECK(slurp(p) == big);
  CHECK(calls == (big.size() + 776) / 777);
}

TEST_CASE("a failure at any step leaves the previous file intact, says why, and removes the temporary file") {
  TempDir d;
  const std::string p = (d.path / "ck.bin").string();
  xg::write_file_atomic(p, "the previous checkpoint");
  struct Case {
    xg::WriteStep step;
    int err;
    const char* reason;
  };
  for (const Case& c : {Case{xg::WriteStep::Open, EACCES, "Permission denied"},
                        Case{xg::WriteStep::Write, ENOSPC, "No space left on device"},
                        Case{xg::WriteStep::Sync, EIO, "Input/output error"},
                        Case{xg::WriteStep::Close, EIO, "Input/output error"},
                        Case{xg::WriteStep::Rename, EXDEV, "Invalid cross-device link"}}) {
    CAPTURE(xg::to_string(c.step));
    xg::set_write_fault_hook(fail_at(c.step, c.err));
    const std::string msg = error_of([&] { xg::write_file_atomic(p, "a new checkpoint", "save_npz"); });
    xg::set_write_fault_hook({});
    CHECK(msg.find("save_npz: ") == 0);
    CHECK(msg.find(c.reason) != std::string::npos);
    CHECK(msg.find("'" + p + "' was not changed") != std::string::npos);
    CHECK(slurp(p) == "the previous checkpoint");
    CHECK(entries(d.path) == std::vector<std::string>{"ck.bin"});
  }
  // The exact message of a full disk, with its advice.
  xg::set_write_fault_hook(fail_at(xg::WriteStep::Write, ENOSPC));
  const std::string msg = error_of([&] { xg::write_file_atomic(p, "x", "save_npz"); });
  CHECK(msg.find("save_npz: writing '" + p + ".tmp-") == 0);
  CHECK(msg.find("failed: No space left on device (the disk or your quota is full: free some space); '" + p +
                 "' was not changed") != std::string::npos);
}

TEST_CASE("a short write followed by a full disk keeps the previous file") {
  TempDir d;
  const std::string p = (d.path / "m.csv").string();
  xg::write_file_atomic(p, "old");
  xg::set_write_fault_hook([](xg::WriteStep s, std::size_t written) {
    if (s != xg::WriteStep::Write) return xg::WriteFault{};
    return written == 0 ? xg::WriteFault{0, 5} : xg::WriteFault{ENOSPC};  // 5 bytes land, then the disk is full
  });
  const std::string msg = error_of([&] { xg::write_file_atomic(p, "0123456789 new content"); });
  CHECK(msg.find("No space left on device") != std::string::npos);
  CHECK(slurp(p) == "old");
  CHECK(entries(d.path) == std::vector<std::string>{"m.csv"});
}

TEST_CASE("a real file-size limit (RLIMIT_FSIZE) fails the write cleanly") {
  TempDir d;
  const std::string p = (d.path / "big.npz").string();
  xg::write_file_atomic(p, "small old file");
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {  // child: a 4 KiB file-size limit, then a 1 MiB write
    ::signal(SIGXFSZ, SIG_IGN);
    rlimit lim{4096, 4096};
    ::setrlimit(RLIMIT_FSIZE, &lim);
    const std::string msg = error_of([&] { xg::write_file_atomic(p, std::string(1 << 20, 'x')); });
    const bool ok = msg.find("File too large") != std::string::npos &&
                    msg.find("was not changed") != std::string::npos && slurp(p) == "small old file" &&
                    entries(d.path) == std::vector<std::string>{"big.npz"};
    ::_exit(ok ? 0 : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(slurp(p) == "small old file");
}

TEST_CASE("a process killed between writing and renaming leaves the old file; the next write cleans up") {
  TempDir d;
  const std::string p = (d.path / "ck.npz").string();
  xg::write_file_atomic(p, "checkpoint 1");
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    xg::set_write_fault_hook([](xg::WriteStep s, std::size_t) {
      if (s == xg::WriteStep::Rename) ::raise(SIGKILL);  // the data are written and synced, not yet renamed
      return xg::WriteFault{};
    });
    xg::write_file_atomic(p, "checkpoint 2, never renamed");
    ::_exit(3);  // not reached
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGKILL);
  CHECK(slurp(p) == "checkpoint 1");
  const auto left = entries(d.path);
  REQUIRE(left.size() == 2);  // the dead process's temporary file
  CHECK(left[1].find("ck.npz.tmp-" + std::to_string(pid) + "-") == 0);
  CHECK(slurp(d.path / left[1]) == "checkpoint 2, never renamed");
  xg::write_file_atomic(p, "checkpoint 3");
  CHECK(slurp(p) == "checkpoint 3");
  CHECK(entries(d.path) == std::vector<std::string>{"ck.npz"});
}

TEST_CASE("a missing folder is named") {
  TempDir d;
  const std::string p = (d.path / "no" / "such" / "x.json").string();
  const std::string msg = error_of([&] { xg::write_file_atomic(p, "{}"); });
  CHECK(msg.find("write_file_atomic: cannot create '" + p + ".tmp-") == 0);
  CHECK(msg.find("No such file or directory (does the folder exist?)") != std::string::npos);
}

TEST_CASE("AtomicFile: a file another program writes appears only on commit") {
  TempDir d;
  const std::string p = (d.path / "plot.png").string();
  xg::write_file_atomic(p, "old image");
  {
    xg::AtomicFile f(p);
    CHECK(fs::path(f.temp_path()).parent_path() == d.path);
    std::ofstream(f.temp_path()) << "half an ima";
    // destroyed without commit (e.g. the program failed): the temporary file goes, the old image stays
  }
  CHECK(slurp(p) == "old image");
  CHECK(entries(d.path) == std::vector<std::string>{"plot.png"});
  {
    xg::AtomicFile f(p);
    std::ofstream(f.temp_path()) << "new image";
    f.commit();
    CHECK_THROWS_WITH_AS(f.commit(), doctest::Contains("already committed"), xg::Error);
  }
  CHECK(slurp(p) == "new image");
  xg::AtomicFile never_written(p);
  CHECK_THROWS_WITH_AS(never_written.commit(), doctest::Contains("cannot be opened: No such file or directory"),
                       xg::Error);
  CHECK(slurp(p) == "new image");
}

TEST_CASE("save_npz and write_idx go through the same path: a failed save keeps the old file loadable") {
  TempDir d;
  const std::string npz = (d.path / "model.npz").string();
  xg::StateDict sd;
  sd.insert("w", xg::from_vector(std::vector<double>{1, 2, 3}, {3}, xg::kFloat64));
  xg::save_npz(npz, sd);
  xg::StateDict sd2;
  sd2.insert("w", xg::from_vector(std::vector<double>{4, 5, 6}, {3}, xg::kFloat64));
  for (xg::WriteStep step : {xg::WriteStep::Write, xg::WriteStep::Sync, xg::WriteStep::Rename}) {
    xg::set_write_fault_hook(fail_at(step, ENOSPC));
    CHECK_THROWS_WITH_AS(xg::save_npz(npz, sd2), doctest::Contains("save_npz: "), xg::Error);
    xg::set_write_fault_hook({});
    const auto back = xg::load_npz(npz);
    CHECK(back.at("w").to_vector() == std::vector<double>{1, 2, 3});
  }
  const std::string idx = (d.path / "labels-idx1-ubyte.gz").string();
  xg::data::write_idx(idx, {{3}, {1, 2, 3}});
  xg::set_write_fault_hook(fail_at(xg::WriteStep::Write, ENOSPC));
  const std::string msg = error_of([&] { xg::data::write_idx(idx, {{2}, {9, 9}}); });
  CHECK(msg.find("write_idx: writing '" + idx + ".tmp-") == 0);
  xg::set_write_fault_hook({});
  CHECK(xg::data::read_idx(idx).values == std::vector<std::uint8_t>{1, 2, 3});
  CHECK(entries(d.path) == std::vector<std::string>{"labels-idx1-ubyte.gz", "model.npz"});
}
