// xgrad-lab's checkpoints (examples/lab/resume.h): a sweep killed with SIGKILL at a random point of a random
// training run and resumed with `--resume DIR` writes a metrics.csv byte-identical to the uninterrupted run's;
// SIGINT stops it cleanly (status 130, a message saying how to continue); --resume's errors are clear.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>

namespace fs = std::filesystem;

namespace {

const std::string kExe = std::string(XGRAD_BINARY_DIR) + "/bin/xgrad-lab";
const char* const kData = "/usr/share/datasets/fashion-mnist";
// Four runs (two learning rates, with and without BN) of 300 steps, checkpointed every 20 steps.
const char* const kSweep = "lr-sweep --tiny --models mlp --lrs 0.1,1 --checkpoint-every 20";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("xgrad_test_lab_resume_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

int run_lab(const std::string& args, const fs::path& log) {
  const std::string cmd = "'" + kExe + "' " + args + " > '" + log.string() + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// Starts the sweep into `out`, waits until training run `run` has written its first checkpoint, waits `extra` ms
// more, and sends `sig`. Returns the wait status.
int start_and_signal(const fs::path& out, int run, int extra_ms, int sig, const fs::path& log) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const std::string cmd = "exec '" + kExe + "' " + kSweep + " --out '" + out.string() + "' > '" + log.string() + "' 2>&1";
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const fs::path marker = out / "checkpoints" / ("run-" + std::to_string(run) + ".npz");
  for (int i = 0; i < 6000 && !fs::exists(marker); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::this_thread::sleep_for(std::chrono::milliseconds(extra_ms));
  ::kill(pid, sig);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

}  // namespace

TEST_CASE("a sweep killed with SIGKILL at a random point and resumed writes a bit-identical metrics.csv") {
  REQUIRE_MESSAGE(fs::exists(fs::path(kData) / "train-images-idx3-ubyte.gz"),
                  "Fashion-MNIST is missing: apt-get install dataset-fashion-mnist (scripts/setup.sh)");
  const fs::path dir = temp_dir("kill");
  REQUIRE(run_lab(std::string(kSweep) + " --out '" + (dir / "ref").string() + "'", dir / "ref.log") == 0);
  const std::string expected = slurp(dir / "ref" / "metrics.csv");
  REQUIRE(expected.size() > 1000);
  CHECK_FALSE(fs::exists(dir / "ref" / "checkpoints"));  // removed once the run is complete

  std::random_device rd;
  std::mt19937 pick(rd());
  for (int round = 0; round < 2; ++round) {
    const fs::path out = dir / ("killed" + std::to_string(round));
    const int run = std::uniform_int_distribution<int>(0, 3)(pick);
    const int extra = std::uniform_int_distribution<int>(0, 250)(pick);
    CAPTURE(run);
    CAPTURE(extra);
    const int status = start_and_signal(out, run, extra, SIGKILL, dir / "killed.log");
    if (!WIFSIGNALED(status)) {
      MESSAGE("the sweep finished before the kill (run " << run << " + " << extra << " ms); nothing to resume");
      continue;
    }
    CHECK_FALSE(fs::exists(out / "metrics.csv"));
    REQUIRE(run_lab("lr-sweep --resume '" + out.string() + "'", dir / "resume.log") == 0);
    CHECK_MESSAGE(slurp(out / "metrics.csv") == expected, slurp(dir / "resume.log"));
    CHECK_FALSE(fs::exists(out / "checkpoints"));
  }
  fs::remove_all(dir);
}

TEST_CASE("SIGINT stops a sweep cleanly with a message and status 130; --resume then completes it") {
  REQUIRE(fs::exists(fs::path(kData) / "train-images-idx3-ubyte.gz"));
  const fs::path dir = temp_dir("sigint");
  REQUIRE(run_lab(std::string(kSweep) + " --out '" + (dir / "ref").string() + "'", dir / "ref.log") == 0);
  const fs::path out = dir / "stopped";
  const int status = start_and_signal(out, 1, 30, SIGINT, dir / "stopped.log");
  INFO("wait status " << status << "; log: " << slurp(dir / "stopped.log"));
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 130);
  const std::string log = slurp(dir / "stopped.log");
  CHECK(log.find("xgrad-lab: stopped by SIGINT: training run 1 (mlp sgd lr=0.1 bn seed 1) at step ") !=
        std::string::npos);
  CHECK(log.find("continue with:\n  xgrad-lab lr-sweep --resume " + out.string() + "\n") != std::string::npos);
  CHECK(log.find("100%") == std::string::npos);  // the progress bar does not claim to be done
  CHECK(fs::exists(out / "checkpoints" / "run-1.npz"));
  REQUIRE(run_lab("lr-sweep --resume '" + out.string() + "'", dir / "resume.log") == 0);
  CHECK(slurp(out / "metrics.csv") == slurp(dir / "ref" / "metrics.csv"));
  fs::remove_all(dir);
}

TEST_CASE("--resume refuses another subcommand, other flags, and a folder with nothing to resume") {
  REQUIRE(fs::exists(fs::path(kData) / "train-images-idx3-ubyte.gz"));
  const fs::path dir = temp_dir("errors");
  const fs::path out = dir / "stopped";
  start_and_signal(out, 0, 0, SIGTERM, dir / "stopped.log");
  REQUIRE(fs::exists(out / "checkpoints" / "args.txt"));
  const fs::path log = dir / "log.txt";
  CHECK(run_lab("convergence --resume '" + out.string() + "'", log) == 1);
  CHECK(slurp(log) == "xgrad-lab: error: --resume " + out.string() +
                          ": the interrupted run was `xgrad-lab lr-sweep`, not `convergence`\n");
  CHECK(run_lab("lr-sweep --tiny --lrs 0.3 --resume '" + out.string() + "'", log) == 1);
  CHECK(slurp(log) == "xgrad-lab: error: --resume " + out.string() +
                          ": the flags differ from the interrupted run's: given `--tiny --lrs 0.3`, the run was "
                          "started with `--tiny --models mlp --lrs 0.1,1 --checkpoint-every 20`; give --resume "
                          "alone (the flags come from " +
                          (out / "checkpoints" / "args.txt").string() + ") or exactly the same flags\n");
  CHECK(run_lab("lr-sweep --resume '" + (dir / "nothing").string() + "'", log) == 1);
  CHECK(slurp(log) == "xgrad-lab: error: --resume " + (dir / "nothing").string() + ": there is no interrupted run in '" +
                          (dir / "nothing").string() + "' (no " + (dir / "nothing" / "checkpoints" / "args.txt").string() +
                          "): the run finished (its checkpoints are removed at the end), or the folder was not "
                          "written by xgrad-lab\n");
  fs::remove_all(dir);
}
