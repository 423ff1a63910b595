// Tests of xgrad-lab, the bundled experiments: runs the real program on Fashion-MNIST in its CI-sized mode
// (--quick; --tiny under AddressSanitizer, where everything is several times slower) and checks what it
// writes — files, CSV columns, JSON keys, the report — plus one qualitative finding that must hold with the
// fixed seed: at a high learning rate the MLP with BatchNorm trains and the plain MLP does not.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "xgrad/blas.h"

namespace fs = std::filesystem;

#if defined(__SANITIZE_ADDRESS__)
#define XGRAD_LAB_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define XGRAD_LAB_SANITIZED 1
#endif
#endif

namespace {

#ifdef XGRAD_LAB_SANITIZED
const char* const kMode = "--tiny";
const double kBnTrains = 0.45;  // --tiny: 300 steps on 2,000 images, accuracy on 300 test images
#else
const char* const kMode = "--quick";
const double kBnTrains = 0.6;
#endif
const char* const kData = "/usr/share/datasets/fashion-mnist";

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("xgrad_test_lab_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Runs xgrad-lab with `args` (and environment assignments `env`, e.g. "VAR=value "); returns its exit code,
// with stdout+stderr in `log`.
int run_lab(const std::string& args, const fs::path& dir, std::string& log, const std::string& env = "") {
  const fs::path out = dir / "log.txt";
  const std::string cmd = env + "'" + XGRAD_BINARY_DIR + "/bin/xgrad-lab' " + args + " > '" + out.string() + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  log = read_text(out);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// A CSV file (no quoted fields: xgrad-lab's metrics have none).
struct Csv {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::size_t col(const std::string& name) const {
    for (std::size_t i = 0; i < header.size(); ++i)
      if (header[i] == name) return i;
    FAIL("no column " << name);
    return 0;
  }
};
std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  for (std::string f; std::getline(ss, f, ',');) out.push_back(f);
  if (!line.empty() && line.back() == ',') out.push_back("");
  return out;
}
Csv read_csv(const fs::path& p) {
  Csv c;
  std::ifstream in(p);
  std::string line;
  if (std::getline(in, line)) c.header = split(line);
  while (std::getline(in, line)) c.rows.push_back(split(line));
  return c;
}

bool data_available() { return fs::exists(fs::path(kData) / "train-images-idx3-ubyte.gz"); }

bool lab_available() {
#ifdef XGRAD_LAB_BUILT
  return true;
#else
  MESSAGE("xgrad-lab is not built (XGRAD_BUILD_EXAMPLES=OFF): skipping");
  return false;
#endif
}

}  // namespace

TEST_CASE("xgrad-lab: every subcommand has --help with the common flags") {
  if (!lab_available()) return;
  const auto dir = temp_dir("help");
  for (const char* sub : {"lr-sweep", "convergence", "noisy-bn", "all"}) {
    INFO(sub);
    std::string log;
    CHECK(run_lab(std::string(sub) + " --help", dir, log) == 0);
    for (const char* flag : {"--seed", "--quick", "--bn-impl", "--threads", "--data", "--out"})
      CHECK_MESSAGE(log.find(flag) != std::string::npos, flag << " missing from:\n" << log);
    CHECK(log.find("--tiny") == std::string::npos);  // hidden
  }
  fs::remove_all(dir);
}

TEST_CASE("xgrad-lab: bad arguments give a clear error and a non-zero exit") {
  if (!lab_available()) return;
  const auto dir = temp_dir("errors");
  std::string log;
  CHECK(run_lab("convergence --tiny --data '" + (dir / "nowhere").string() + "' --out '" + (dir / "o").string() + "'",
                dir, log) == 1);
  CHECK_MESSAGE(log.find("nowhere' is not a folder") != std::string::npos, log);
  CHECK_FALSE(fs::exists(dir / "o" / "report.md"));  // no report for a run that failed
  CHECK(run_lab("lr-sweep --bn-impl magic", dir, log) != 0);
  CHECK_MESSAGE(log.find("--bn-impl") != std::string::npos, log);
  CHECK(run_lab("", dir, log) != 0);  // a subcommand is required
  CHECK(run_lab("convergence --tiny --out '" + (dir / "o").string() + "'", dir, log, "XGRAD_SGEMM=magic ") == 1);
  CHECK_MESSAGE(log.find("XGRAD_SGEMM must be 'onednn' or 'openblas', got 'magic'") != std::string::npos, log);
  CHECK_FALSE(fs::exists(dir / "o" / "report.md"));
  fs::remove_all(dir);
}

TEST_CASE("xgrad-lab all: files, columns, keys, no NaN in the BN arm, and BN trains where plain does not") {
  if (!lab_available()) return;
  REQUIRE_MESSAGE(data_available(), "Fashion-MNIST is missing: apt-get install dataset-fashion-mnist (scripts/setup.sh)");
  const auto dir = temp_dir("all");
  const fs::path out = dir / "out";
  std::string log;
  REQUIRE_MESSAGE(run_lab(std::string("all ") + kMode + " --seed 1 --out '" + out.string() + "'", dir, log) == 0, log);

  // ---- files ------------------------------------------------------------------------------------------------
  for (const char* f : {"metrics.csv", "summary.json", "report.md"}) CHECK_MESSAGE(fs::exists(out / f), f);
  for (const char* fig : {"convergence", "lr_sweep_accuracy", "lr_sweep_loss", "noisy_bn_accuracy", "noisy_bn_histograms"})
    for (const char* ext : {".png", ".svg", ".gp"}) {
      const fs::path p = out / (std::string(fig) + ext);
      CHECK_MESSAGE(fs::exists(p), p);
      if (fs::exists(p)) CHECK(fs::file_size(p) > 100);
    }
  for (const auto& e : fs::directory_iterator(out))  // nothing half-written left behind
    CHECK_MESSAGE(e.path().extension() != ".tmp", e.path());
  const std::string png = read_text(out / "convergence.png");
  CHECK(png.substr(1, 3) == "PNG");

  // ---- metrics.csv ------------------------------------------------------------------------------------------
  const Csv csv = read_csv(out / "metrics.csv");
  CHECK(csv.header == std::vector<std::string>{"experiment", "model", "optimizer", "arm", "lr", "seed", "step", "metric", "value"});
  REQUIRE(csv.rows.size() > 100);
  const std::size_t c_ex = csv.col("experiment"), c_model = csv.col("model"), c_arm = csv.col("arm"),
                    c_lr = csv.col("lr"), c_seed = csv.col("seed"), c_step = csv.col("step"),
                    c_metric = csv.col("metric"), c_value = csv.col("value");
  std::map<std::string, int> per_experiment;
  std::map<std::string, bool> diverged_runs;  // runs that recorded a "diverged" row
  auto run_key = [&](const std::vector<std::string>& r) {
    return r[c_ex] + "|" + r[c_model] + "|" + r[c_arm] + "|" + r[c_lr] + "|" + r[c_seed];
  };
  for (const auto& r : csv.rows) {
    REQUIRE(r.size() == csv.header.size());
    ++per_experiment[r[c_ex]];
    if (r[c_metric] == "diverged") diverged_runs[run_key(r)] = true;
  }
  CHECK(per_experiment["lr-sweep"] > 0);
  CHECK(per_experiment["convergence"] > 0);
  CHECK(per_experiment["noisy-bn"] > 0);
  std::size_t bn_values = 0;
  for (const auto& r : csv.rows) {
    const double v = std::strtod(r[c_value].c_str(), nullptr);
    if (r[c_arm] == "bn" && !diverged_runs.count(run_key(r))) {
      ++bn_values;
      CHECK_MESSAGE(std::isfinite(v), "non-finite value in the BN arm: " << r[c_ex] << " " << r[c_metric] << " lr "
                                                                         << r[c_lr] << " step " << r[c_step]);
    }
    if (r[c_metric] == "test_acc" && std::isfinite(v)) CHECK((v >= 0 && v <= 1));
  }
  CHECK(bn_values > 50);
  for (const char* m : {"train_loss", "train_acc", "test_acc", "test_loss", "p15", "p50", "p85"}) {
    bool found = false;
    for (const auto& r : csv.rows) found = found || r[c_metric] == m;
    CHECK_MESSAGE(found, "metric " << m << " missing");
  }

  // ---- the qualitative finding: MLP + SGD at lr 3 ---------------------------------------------------------------
  // The final test accuracy (largest step) of each arm; a diverged run counts as not training.
  auto final_acc = [&](const std::string& arm) {
    double acc = -1, step = -1;
    for (const auto& r : csv.rows)
      if (r[c_ex] == "lr-sweep" && r[c_model] == "mlp" && r[c_arm] == arm && r[c_lr] == "3" && r[c_seed] == "0" &&
          r[c_metric] == "test_acc" && std::strtod(r[c_step].c_str(), nullptr) > step) {
        step = std::strtod(r[c_step].c_str(), nullptr);
        acc = std::strtod(r[c_value].c_str(), nullptr);
      }
    return diverged_runs.count("lr-sweep|mlp|" + arm + "|3|0") ? 0.0 : acc;
  };
  const double plain = final_acc("plain"), bn = final_acc("bn");
  INFO("final test accuracy at lr 3: plain " << plain << ", BN " << bn);
  CHECK(bn > kBnTrains);  // BN trains ...
  CHECK(plain < 0.3);      // ... the plain network does not (diverged or stuck near chance, 0.1)

  // ---- summary.json and report.md ------------------------------------------------------------------------------
  const std::string js = read_text(out / "summary.json");
  for (const char* key : {"\"config\"", "\"seed\": 1", "\"mode\"", "\"bn_impl_used\"", "\"versions\"", "\"xgrad\"", "\"sgemm\"",
                          "\"timings\"", "\"steps_per_second\"", "\"verdicts\"", "\"lr-sweep\"", "\"convergence\"",
                          "\"noisy-bn\"", "\"largest_lr_that_trains\"", "\"runs\""})
    CHECK_MESSAGE(js.find(key) != std::string::npos, key);
  CHECK(js.find("NaN") == std::string::npos);  // JSON has no NaN: written as null
  const std::string md = read_text(out / "report.md");
  CHECK(md.find("## Verdicts") != std::string::npos);
  CHECK(md.find("with BN it trains up to") != std::string::npos);
  for (const char* img : {"(convergence.png)", "(lr_sweep_accuracy.png)", "(noisy_bn_histograms.png)"})
    CHECK_MESSAGE(md.find(img) != std::string::npos, img);
  fs::remove_all(dir);
}

// With float32 GEMMs on oneDNN (cut into independent pieces of the output, xgrad/blas.h) and xgrad's own
// kernels (thread-count-independent blocking, xgrad/parallel.h), the thread count does not change the bits
// either; with OpenBLAS's sgemm it would, so then both runs use 2 threads.
TEST_CASE("xgrad-lab: the same seed gives the same metrics (for any thread count), another seed others") {
  if (!lab_available()) return;
  REQUIRE(data_available());
  const auto dir = temp_dir("seed");
  std::string log;
  const std::string common = " lr-sweep --tiny --models mlp --lrs 0.1 --out '";
  const std::string threads_b = xg::blas::have_onednn() ? "1" : "2";
  REQUIRE_MESSAGE(run_lab(common.substr(1) + (dir / "a").string() + "' --seed 5 --threads 2", dir, log) == 0, log);
  REQUIRE_MESSAGE(run_lab(common.substr(1) + (dir / "b").string() + "' --seed 5 --threads " + threads_b, dir, log) == 0,
                  log);
  REQUIRE_MESSAGE(run_lab(common.substr(1) + (dir / "c").string() + "' --seed 6", dir, log) == 0, log);
  const std::string a = read_text(dir / "a" / "metrics.csv"), b = read_text(dir / "b" / "metrics.csv"),
                    c = read_text(dir / "c" / "metrics.csv");
  CHECK(a.size() > 200);
  CHECK(a == b);
  CHECK(a != c);
  // A single subcommand's report holds only its own section.
  const std::string md = read_text(dir / "a" / "report.md");
  CHECK(md.find("Learning-rate tolerance") != std::string::npos);
  CHECK(md.find("Noisy BatchNorm") == std::string::npos);
  fs::remove_all(dir);
}

#ifdef XGRAD_LAB_BUILT
#include "lab.h"

// Plain-line mode (not a terminal): "<label>: <percent>% (<done>/<total>, % weighted by cost) ...". Ten cheap
// units of cost 1 and two expensive ones of cost 45: after the cheap ones 10% of the cost is done, not
// 10/12 = 83%.
TEST_CASE("Progress: with unit costs the percentage and the ETA follow the cost, not the unit count") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  {
    lab::Progress p("job", 12, f);
    p.set_total_cost(100.0);
    p.set_unit_cost(1.0);
    p.advance(10, "cheap");
    p.set_unit_cost(45.0);
    p.advance(1, "expensive");
    p.advance(1, "expensive");
  }
  std::rewind(f);
  std::string out;
  for (int ch = std::fgetc(f); ch != EOF; ch = std::fgetc(f)) out += static_cast<char>(ch);
  std::fclose(f);
  INFO(out);
  CHECK(out.find("job:  10% (10/12, % weighted by cost)") != std::string::npos);
  CHECK(out.find("job:  55% (11/12, % weighted by cost)") != std::string::npos);
  CHECK(out.find("job: 100% (12/12, % weighted by cost)") != std::string::npos);
  CHECK(out.find("83%") == std::string::npos);
}

TEST_CASE("Progress: without unit costs the percentage counts units") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  {
    lab::Progress p("job", 4, f);
    p.advance(1);
    p.advance(1);
  }
  std::rewind(f);
  std::string out;
  for (int ch = std::fgetc(f); ch != EOF; ch = std::fgetc(f)) out += static_cast<char>(ch);
  std::fclose(f);
  CHECK(out.find("job:  50% (2/4)") != std::string::npos);
}
#endif

TEST_CASE("xgrad-lab: options are validated before any training (--lr, --batch, --steps)") {
  if (!lab_available()) return;
  const auto dir = temp_dir("validate");
  const std::string out = " --out '" + (dir / "o").string() + "'";
  std::string log;
  const struct {
    const char* args;
    const char* message;
  } cases[] = {
      {"convergence --tiny --lr -0.1", "xgrad-lab: error: convergence: --lr must be a finite number > 0, got -0.1"},
      {"convergence --tiny --lr inf", "xgrad-lab: error: convergence: --lr must be a finite number > 0, got inf"},
      {"noisy-bn --tiny --lr nan", "xgrad-lab: error: noisy-bn: --lr must be a finite number > 0, got nan"},
      {"convergence --tiny --batch 1", "xgrad-lab: error: convergence: --batch must be >= 2, got 1"},
      {"noisy-bn --tiny --steps 0", "xgrad-lab: error: noisy-bn: --steps must be >= 1, got 0"},
      {"lr-sweep --tiny --lrs 0.1,-3", "xgrad-lab: error: lr-sweep: every --lrs value must be a finite number > 0, got -3"},
      {"lr-sweep --tiny --batch 0", "xgrad-lab: error: lr-sweep: --batch must be >= 2, got 0"},
      {"all --tiny --lr 0.1", ""},  // (all has no --lr: a CLI error, also before training)
  };
  for (const auto& c : cases) {
    CAPTURE(c.args);
    CHECK(run_lab(std::string(c.args) + out, dir, log) != 0);
    if (*c.message) {
      CHECK_MESSAGE(log.find(c.message) != std::string::npos, log);
      CHECK_MESSAGE(run_lab(std::string(c.args) + out, dir, log) == 1, log);
    }
    CHECK_MESSAGE(log.find('%') == std::string::npos, log);  // no progress bar was drawn
    CHECK_FALSE(fs::exists(dir / "o" / "report.md"));
  }
  fs::remove_all(dir);
}
