// Exact resume through a real crash: examples/checkpoint_resume (an MLP with BatchNorm + Dropout, Adam, StepLR,
// a shuffling DataLoader, checkpoints every 10 steps) is killed with SIGKILL at a random step, resumed with
// --resume, and must write a metrics.csv byte-identical to an uninterrupted run's.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

namespace fs = std::filesystem;

namespace {

const fs::path kExe = fs::path(XGRAD_BINARY_DIR) / "bin" / "checkpoint_resume";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int run(const std::string& args) {
  const std::string cmd = "'" + kExe.string() + "' " + args + " > /dev/null 2>&1";
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// Starts the example writing into `dir`, reads its "step <n>" lines and kills it with SIGKILL once it printed
// step `kill_at`. Returns the last step it printed.
long run_and_kill(const fs::path& dir, long kill_at, const std::string& extra) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    ::close(fds[1]);
    const std::string d = dir.string();
    if (extra.empty())
      ::execl(kExe.c_str(), kExe.c_str(), d.c_str(), "--steps", "240", static_cast<char*>(nullptr));
    else
      ::execl(kExe.c_str(), kExe.c_str(), d.c_str(), "--steps", "240", extra.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  FILE* in = ::fdopen(fds[0], "r");
  char line[256];
  long last = -1;
  while (std::fgets(line, sizeof line, in)) {
    long s = 0;
    if (std::sscanf(line, "step %ld", &s) == 1) last = s;
    if (last >= kill_at) {
      ::kill(pid, SIGKILL);
      break;
    }
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::fclose(in);
  CHECK(WIFSIGNALED(status));
  return last;
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("xgrad_test_resume_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

}  // namespace

TEST_CASE("killed with SIGKILL at a random step and resumed: metrics.csv is bit-identical") {
  REQUIRE_MESSAGE(fs::exists(kExe), "build the example: cmake --build build --target checkpoint_resume");
  TempDir ref("ref"), killed("killed");
  REQUIRE(run("'" + ref.path.string() + "' --steps 240") == 0);
  const std::string expected = slurp(ref.path / "metrics.csv");
  REQUIRE(expected.size() > 240 * 10);

  std::random_device rd;
  std::mt19937 pick(rd());
  for (int round = 0; round < 3; ++round) {
    fs::remove_all(killed.path);
    fs::create_directories(killed.path);
    // Killed once, resumed; in the last round killed a second time while resuming.
    const long kill_at = std::uniform_int_distribution<long>(12, 200)(pick);
    CAPTURE(kill_at);
    const long reached = run_and_kill(killed.path, kill_at, "");
    MESSAGE("round " << round << ": killed at step " << reached);
    CHECK_FALSE(fs::exists(killed.path / "metrics.csv"));
    REQUIRE(fs::exists(killed.path / "checkpoint.npz"));
    if (round == 2) {
      const long again = std::uniform_int_distribution<long>(reached + 1, 230)(pick);
      run_and_kill(killed.path, again, "--resume");
      MESSAGE("  and again at step " << again << " after resuming");
    }
    REQUIRE(run("'" + killed.path.string() + "' --steps 240 --resume") == 0);
    const std::string got = slurp(killed.path / "metrics.csv");
    CHECK(got.size() == expected.size());
    CHECK_MESSAGE(got == expected, "resumed metrics differ from the uninterrupted run's");
    // The checkpoints were written atomically: no temporary file is left in the folder.
    for (const auto& e : fs::directory_iterator(killed.path))
      CHECK_MESSAGE(e.path().filename().string().find(".tmp-") == std::string::npos, e.path());
  }
}
