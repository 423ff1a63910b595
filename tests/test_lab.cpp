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
  for (const char* sub : {"lr-sweep", "convergence", "noisy-bn", "landscape", "ics", "dln", "lp-norm", "all"}) {
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
  for (const char* fig : {"convergence", "lr_sweep_accuracy", "lr_sweep_loss", "noisy_bn_accuracy", "noisy_bn_histograms",
                          "landscape", "ics", "dln", "lp_norm"})
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
  for (const char* e : {"landscape", "ics", "dln", "lp-norm"}) CHECK_MESSAGE(per_experiment[e] > 0, e);
  // The seed column holds each run's actual seed: --seed 1 + the seed index (1, and 2 for a second seed).
  std::map<std::string, std::map<std::string, bool>> seeds_of;  // experiment -> seeds seen
  for (const auto& r : csv.rows) seeds_of[r[c_ex]][r[c_seed]] = true;
  for (const auto& [e, seeds] : seeds_of) {
    INFO(e);
    CHECK(seeds.count("1") == 1);
    CHECK(seeds.count("0") == 0);
  }
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
      if (r[c_ex] == "lr-sweep" && r[c_model] == "mlp" && r[c_arm] == arm && r[c_lr] == "3" && r[c_seed] == "1" &&
          r[c_metric] == "test_acc" && std::strtod(r[c_step].c_str(), nullptr) > step) {
        step = std::strtod(r[c_step].c_str(), nullptr);
        acc = std::strtod(r[c_value].c_str(), nullptr);
      }
    return diverged_runs.count("lr-sweep|mlp|" + arm + "|3|1") ? 0.0 : acc;
  };
  const double plain = final_acc("plain"), bn = final_acc("bn");
  INFO("final test accuracy at lr 3: plain " << plain << ", BN " << bn);
  CHECK(bn > kBnTrains);  // BN trains ...
  CHECK(plain < 0.3);      // ... the plain network does not (diverged or stuck near chance, 0.1)

#ifndef XGRAD_LAB_SANITIZED
  // noisy-bn's standard arm trains (He init): every seed's final test accuracy well above chance (0.1).
  for (const auto& r : csv.rows)
    if (r[c_ex] == "noisy-bn" && r[c_arm] == "standard" && r[c_metric] == "test_acc" && r[c_step] == "400")
      CHECK_MESSAGE(std::strtod(r[c_value].c_str(), nullptr) > 0.4, "noisy-bn standard, seed " << r[c_seed]);
#endif

  // ---- summary.json and report.md ------------------------------------------------------------------------------
  const std::string js = read_text(out / "summary.json");
  for (const char* key : {"\"config\"", "\"seed\": 1", "\"mode\"", "\"bn_impl_used\"", "\"versions\"", "\"xgrad\"", "\"sgemm\"",
                          "\"timings\"", "\"steps_per_second\"", "\"verdicts\"", "\"lr-sweep\"", "\"convergence\"",
                          "\"noisy-bn\"", "\"largest_lr_that_trains\"", "\"runs\""})
    CHECK_MESSAGE(js.find(key) != std::string::npos, key);
  CHECK(js.find("NaN") == std::string::npos);  // JSON has no NaN: written as null
  // The subsets actually used in this reduced run, beside the files' sizes.
  CHECK(js.find("\"train_samples\": 60000,") == std::string::npos);
  CHECK(js.find("\"train_samples_in_data\": 60000") != std::string::npos);
  for (const char* key : {"\"landscape\"", "\"ics\"", "\"dln\"", "\"lp-norm\""})
    CHECK_MESSAGE(js.find(key) != std::string::npos, key);
  const std::string md = read_text(out / "report.md");
  CHECK(md.find("## Verdicts") != std::string::npos);
  CHECK(md.find("with BN it trains up to") != std::string::npos);
  CHECK(md.find("seed 1 (run k of an arm uses seed 1 + k") != std::string::npos);
  for (const char* v : {"Landscape (Santurkar Fig. 4), MLP:", "Internal covariate shift (Santurkar Def. 2.1)",
                        "Deep linear network (", "ℓp normalisation (Santurkar §3.3)"})
    CHECK_MESSAGE(md.find(v) != std::string::npos, v);
  for (const char* img : {"(convergence.png)", "(lr_sweep_accuracy.png)", "(noisy_bn_histograms.png)", "(landscape.png)",
                          "(ics.png)", "(dln.png)", "(lp_norm.png)"})
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

// Issue 16's subcommands (examples/lab/bn_limits.h): batch-size, inference, regularisation at --tiny on the
// dataset of --data: files, metrics, verdicts, the dataset named in the report, and no NaN where nothing diverged.
TEST_CASE("xgrad-lab batch-size / inference / regularisation: files, metrics and verdicts") {
  if (!lab_available()) return;
  REQUIRE(data_available());
  const auto dir = temp_dir("limits");
  struct Sub {
    const char* name;
    const char* figure;
    const char* metric;
    const char* verdict;
  };
  for (const Sub& s : {Sub{"batch-size", "batch_size_error", "test_err", "Batch size (Wu & He Fig. 1"},
                       Sub{"inference", "inference_statistics", "test_acc", "Inference statistics"},
                       Sub{"regularisation", "regularisation_gap", "gap", "Regularisation"}}) {
    INFO(s.name);
    std::string log;
    CHECK(run_lab(std::string(s.name) + " --help", dir, log) == 0);
    CHECK(log.find("--seeds") != std::string::npos);
    const fs::path out = dir / s.name;
    REQUIRE_MESSAGE(run_lab(std::string(s.name) + " " + kMode + " --out '" + out.string() + "'", dir, log) == 0, log);
    for (const char* ext : {".png", ".svg", ".gp"})
      CHECK_MESSAGE(fs::exists(out / (std::string(s.figure) + ext)), s.figure << ext);
    const Csv csv = read_csv(out / "metrics.csv");
    const std::size_t c_metric = csv.col("metric"), c_value = csv.col("value");
    std::size_t n = 0;
    for (const auto& r : csv.rows)
      if (r[c_metric] == s.metric) {
        ++n;
        CHECK(std::isfinite(std::strtod(r[c_value].c_str(), nullptr)));
      }
    CHECK(n > 0);
    const std::string md = read_text(out / "report.md");
    CHECK(md.find(s.verdict) != std::string::npos);
    CHECK(md.find("fashion-mnist") != std::string::npos);  // the --data folder's name, not a hard-coded title
    CHECK(read_text(out / "summary.json").find("\"verdict\"") != std::string::npos);
  }
  fs::remove_all(dir);
}
#ifdef XGRAD_LAB_BUILT
#include "probes.h"
#include "why_bn.h"

// L(x) = ½ Σ_k a_k x_k² (A = diag(a)): ∇L = A·x, ∇L(x) − ∇L(x − η·g) = η·A·g with g = A·x, so the ratio of the
// effective β is ‖A·g‖/‖g‖ — exactly a_k when x lies along axis k (the largest eigenvalue is the true β), and
// ‖A²x‖/‖Ax‖ in general; L(x − η·g) = ½ Σ a_k (1 − η a_k)² x_k².
TEST_CASE("probe_landscape: a quadratic whose beta-smoothness is known exactly") {
  const std::vector<double> a{4.0, 1.0, 0.25};
  xg::Tensor x = xg::from_vector({0.0, 0.0, 0.0}, {3}, xg::kFloat64, true);
  const xg::Tensor A = xg::from_vector(a, {3}, xg::kFloat64);
  const lab::probes::LossFn loss = [&] { return (A * x * x).sum() * 0.5; };
  const std::vector<double> etas{0.01, 0.1, 0.2};
  for (int k = 0; k < 3; ++k) {  // along each eigenvector: β = a_k at every η
    CAPTURE(k);
    {
      xg::NoGradGuard g;
      x.zero_();
      x.set({k}, 2.0);
    }
    const auto r = lab::probes::probe_landscape(loss, {x}, etas);
    CHECK(r.beta == doctest::Approx(a[static_cast<std::size_t>(k)]).epsilon(1e-12));
    CHECK(r.grad_norm == doctest::Approx(2.0 * a[static_cast<std::size_t>(k)]));
    for (std::size_t e = 0; e < etas.size(); ++e) {  // ‖η A g‖ = η a_k · 2 a_k
      CHECK(r.grad_distances[e] == doctest::Approx(etas[e] * 2.0 * a[static_cast<std::size_t>(k)] * a[static_cast<std::size_t>(k)]));
      const double f = 1 - etas[e] * a[static_cast<std::size_t>(k)];
      CHECK(r.losses[e] == doctest::Approx(0.5 * a[static_cast<std::size_t>(k)] * f * f * 4.0));
    }
    CHECK(x.at({k}) == 2.0);  // restored exactly
  }
  // A general point x = (1, 1, 1): g = a, A·g = a², ratio sqrt(Σa⁴)/sqrt(Σa²) — below the largest eigenvalue.
  {
    xg::NoGradGuard g;
    x.fill_(1.0);
  }
  const auto r = lab::probes::probe_landscape(loss, {x}, etas);
  const double want = std::sqrt(256.0 + 1.0 + 1.0 / 256.0) / std::sqrt(16.0 + 1.0 + 1.0 / 16.0);
  CHECK(r.beta == doctest::Approx(want).epsilon(1e-12));
  CHECK(r.beta < 4.0);
  CHECK(r.loss == doctest::Approx(0.5 * (4.0 + 1.0 + 0.25)));
  CHECK(r.loss_min <= r.loss);
  CHECK_FALSE(x.grad().defined());  // the probe never touches .grad()
  CHECK_THROWS_AS(lab::probes::probe_landscape(loss, {x}, {-1.0}), xg::Error);
}

// Two scalar layers f(x) = w2·w1·x, L = ½(f − y)²: G1 = r·w2·x, G2 = r·w1·x with r = w2·w1·x − y. After
// layer 1's SGD step w1' = w1 − lr·G1, G2' = (w2·w1'·x − y)·w1'·x. (Layer 1 has no preceding layer: G1' = G1.)
TEST_CASE("probe_ics: a two-layer linear net whose G and G' are written by hand") {
  const double w1v = 0.5, w2v = -1.5, xv = 2.0, yv = 1.0, lr = 0.1;
  xg::Tensor w1 = xg::from_vector({w1v}, {1, 1}, xg::kFloat64, true);
  xg::Tensor w2 = xg::from_vector({w2v}, {1, 1}, xg::kFloat64, true);
  const xg::Tensor x = xg::from_vector({xv}, {1, 1}, xg::kFloat64);
  const xg::Tensor y = xg::from_vector({yv}, {1, 1}, xg::kFloat64);
  const lab::probes::LossFn loss = [&] {
    const xg::Tensor d = x.matmul(w1).matmul(w2) - y;
    return (d * d).sum() * 0.5;
  };
  const double r = w2v * w1v * xv - yv;          // −2.5
  const double G1 = r * w2v * xv, G2 = r * w1v * xv;  // 7.5, −2.5
  const double w1n = w1v - lr * G1;              // −0.25
  const double G2p = (w2v * w1n * xv - yv) * w1n * xv;  // (0.75 − 1)·(−0.5) = 0.125
  const auto ics = lab::probes::probe_ics(loss, {{w1, {w1}}, {w2, {w2}}}, lr);
  REQUIRE(ics.distance.size() == 2);
  CHECK(ics.distance[0] == 0.0);
  CHECK(ics.cosine[0] == 1.0);
  CHECK(ics.grad_norm[0] == doctest::Approx(std::abs(G1)));
  CHECK(ics.grad_norm[1] == doctest::Approx(std::abs(G2)));
  CHECK(ics.distance[1] == doctest::Approx(std::abs(G2 - G2p)));  // 2.625
  CHECK(ics.cosine[1] == doctest::Approx(-1.0));                  // opposite signs: cos = −1
  CHECK(w1.at({0, 0}) == w1v);  // restored
  CHECK(w2.at({0, 0}) == w2v);
  CHECK_FALSE(w1.grad().defined());
  CHECK_FALSE(w2.grad().defined());

  // Three layers, vectors: only the layers BEFORE the measured one move. W3's G' must use W1' and W2' (both
  // updated); checked against the same gradients computed directly with autograd at the moved point.
  xg::Generator gen(3);
  xg::Tensor a = xg::randn({2, 3}, xg::kFloat64, &gen).requires_grad_();
  xg::Tensor b = xg::randn({3, 3}, xg::kFloat64, &gen).requires_grad_();
  xg::Tensor c = xg::randn({3, 1}, xg::kFloat64, &gen).requires_grad_();
  const xg::Tensor X = xg::randn({4, 2}, xg::kFloat64, &gen);
  const lab::probes::LossFn l3 = [&] { return X.matmul(a).matmul(b).matmul(c).pow(2.0).sum(); };
  const auto G = lab::probes::gradient(l3, {a, b, c});
  const auto got = lab::probes::probe_ics(l3, {{a, {a}}, {b, {b}}, {c, {c}}}, lr);
  xg::Tensor a2 = (a - G[0] * lr).detach().requires_grad_(), b2 = (b - G[1] * lr).detach().requires_grad_();
  const lab::probes::LossFn moved_b = [&] { return X.matmul(a2).matmul(b).matmul(c).pow(2.0).sum(); };
  const lab::probes::LossFn moved_c = [&] { return X.matmul(a2).matmul(b2).matmul(c).pow(2.0).sum(); };
  const auto Gb = lab::probes::gradient(moved_b, {b})[0], Gc = lab::probes::gradient(moved_c, {c})[0];
  CHECK(got.distance[1] == doctest::Approx(lab::probes::distance({G[1]}, {Gb})).epsilon(1e-12));
  CHECK(got.distance[2] == doctest::Approx(lab::probes::distance({G[2]}, {Gc})).epsilon(1e-12));
}

TEST_CASE("seed-robust verdicts on synthetic metrics") {
  using lab::compare_smaller;
  // BN's values below the standard network's for every seed at 3 of 4 points, overlapping at one.
  const std::vector<std::vector<double>> bn{{1, 2}, {1, 1.5}, {2, 3}, {5, 6}};
  const std::vector<std::vector<double>> st{{10, 12}, {4, 6}, {3.5, 9}, {5.5, 7}};
  const auto c = compare_smaller(bn, st);
  CHECK(c.points == 4);
  CHECK(c.separated == 3);
  CHECK(c.reversed == 0);
  CHECK(c.holds());
  // median of mean(st)/mean(bn): 11/1.5, 5/1.25, 6.25/2.5, 6.25/5.5 → sorted middle two: 2.5 and 4 → 3.25
  CHECK(c.median_ratio == doctest::Approx(3.25));
  const std::string v = lab::smaller_verdict("beta", "BN", "standard", c, "steps");
  CHECK(v.find("3.25x smaller") != std::string::npos);
  CHECK(v.find("3 of 4 steps") != std::string::npos);
  // One seed of BN spanning the standard network's range: not separated anywhere → no verdict either way.
  const std::vector<std::vector<double>> wide{{0.5, 20}, {0.5, 20}, {0.5, 20}};
  const auto w = compare_smaller(wide, {{5, 6}, {5, 6}, {5, 6}});
  CHECK_FALSE(w.holds());
  CHECK_FALSE(w.reverse_holds());
  CHECK(lab::smaller_verdict("beta", "BN", "standard", w, "steps").find("NOT consistently") != std::string::npos);
  // The reverse: every seed larger.
  const auto r = compare_smaller({{9, 10}, {9, 10}}, {{1, 2}, {1, 2}});
  CHECK(r.reverse_holds());
  CHECK(lab::smaller_verdict("beta", "BN", "standard", r, "steps").find("LARGER") != std::string::npos);
  // NaN seeds are skipped; a point with none is not counted.
  const auto n = compare_smaller({{NAN, 1}, {NAN, NAN}}, {{2, 3}, {2, 3}});
  CHECK(n.points == 1);
  CHECK(n.separated == 1);
  // spread / band
  const auto s = lab::spread({3, NAN, 1, 2});
  CHECK(s.n == 3);
  CHECK(s.mean == 2.0);
  CHECK(s.min == 1.0);
  CHECK(s.max == 3.0);
  const auto b = lab::band({0, 1, 2}, {{1, 2, 3}, {3, 4}});  // cut to the shorter run
  CHECK(b.x.size() == 2);
  CHECK(b.mean[1] == 3.0);
  CHECK(b.min[1] == 2.0);
  CHECK(b.max[1] == 4.0);
}
#endif
#ifdef XGRAD_LAB_BUILT
#include "bn_limits.h"
#include "validate.h"
#include "why_bn_cli.h"
#endif
TEST_CASE("xgrad-lab: options are validated before any training (--lr, --batch, --steps)") {
  if (!lab_available()) return;
  const auto dir = temp_dir("validate");
  const std::string out = " --out '" + (dir / "o").string() + "'";
  std::string log;
#ifdef XGRAD_LAB_BUILT
  // Every mode's own configurations pass (what `all` and each subcommand run without options); --full is too
  // long to run, so its defaults are checked here only.
  for (const char* mode : {"default", "quick", "tiny", "full"}) {
    CAPTURE(mode);
    lab::LabOptions o;
    o.mode = mode;
    o.out = (dir / "modes").string();
    const lab::Lab l(o);
    CHECK_NOTHROW(lab::validate(lab::lr_sweep_config(l)));
    CHECK_NOTHROW(lab::validate(lab::convergence_config(l)));
    CHECK_NOTHROW(lab::validate(lab::noisy_bn_config(l)));
    CHECK_NOTHROW(lab::WhyBnCli::validate_all(l));
    CHECK_NOTHROW(lab::validate(lab::batch_size_config(l)));
    CHECK_NOTHROW(lab::validate(lab::inference_config(l)));
    CHECK_NOTHROW(lab::validate(lab::regularisation_config(l)));
#if XGRAD_LAB_DIST
    CHECK_NOTHROW(lab::validate(lab::ddp_config(l)));
#endif
  }
#endif
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
      // landscape, ics, dln, lp-norm (why_bn_cli.cpp)
      {"landscape --tiny --mlp-lr -1", "xgrad-lab: error: landscape: --mlp-lr must be a finite number > 0, got -1"},
      {"landscape --tiny --cnn-lr inf", "xgrad-lab: error: landscape: --cnn-lr must be a finite number > 0, got inf"},
      {"landscape --tiny --step-multiples 0.5,nan",
       "xgrad-lab: error: landscape: every --step-multiples value must be a finite number > 0, got nan"},
      {"landscape --tiny --batch 1", "xgrad-lab: error: landscape: --batch must be >= 2, got 1"},
      {"landscape --tiny --mlp-steps 0", "xgrad-lab: error: landscape: --mlp-steps must be >= 1, got 0"},
      {"landscape --tiny --probes 5",  // --tiny: 2 CNN steps
       "xgrad-lab: error: landscape: --probes must be <= --cnn-steps (2; at most one probe point per training step), "
       "got 5"},
      {"ics --tiny --lr -0.1", "xgrad-lab: error: ics: --lr must be a finite number > 0, got -0.1"},
      {"ics --tiny --steps 0", "xgrad-lab: error: ics: --steps must be >= 1, got 0"},
      {"ics --tiny --batch 5000",
       "xgrad-lab: error: ics: --batch 5000 is larger than the 2000 training samples this mode uses"},
      {"dln --tiny --lr nan", "xgrad-lab: error: dln: --lr must be a finite number > 0, got nan"},
      {"dln --tiny --layers 1", "xgrad-lab: error: dln: --layers must be in [2, 1000], got 1"},
      {"dln --tiny --samples 1", "xgrad-lab: error: dln: --samples must be in [2, 1000000], got 1"},
      {"dln --tiny --probes 0", "xgrad-lab: error: dln: --probes must be >= 1, got 0"},
      {"lp-norm --tiny --lrs 1,inf",
       "xgrad-lab: error: lp-norm: every --lrs value must be a finite number > 0, got inf"},
      {"lp-norm --tiny --steps 0", "xgrad-lab: error: lp-norm: --steps must be >= 1, got 0"},
      {"lp-norm --tiny --batch 1", "xgrad-lab: error: lp-norm: --batch must be >= 2, got 1"},
      // batch-size, inference, regularisation (bn_limits.cpp)
      {"batch-size --tiny --lr -0.05", "xgrad-lab: error: batch-size: --lr must be a finite number > 0, got -0.05"},
      {"batch-size --tiny --batches 2,1", "xgrad-lab: error: batch-size: every --batches value must be >= 2, got 1"},
      {"batch-size --tiny --batches 256",  // --tiny: 128 training samples
       "xgrad-lab: error: batch-size: every --batches value must be <= the 128 training samples (--train-samples), "
       "got 256"},
      {"batch-size --tiny --epochs 0", "xgrad-lab: error: batch-size: --epochs must be >= 1, got 0"},
      {"inference --tiny --lr inf", "xgrad-lab: error: inference: --lr must be a finite number > 0, got inf"},
      {"inference --tiny --momenta 0.1,0",
       "xgrad-lab: error: inference: every --momenta value must be in (0, 1], got 0"},
      {"inference --tiny --batches 1", "xgrad-lab: error: inference: every --batches value must be >= 2, got 1"},
      {"inference --tiny --train-samples 1000 --batches 500",  // --tiny: 200 test samples
       "xgrad-lab: error: inference: every --batches value must be <= the 200 test samples it evaluates batch by "
       "batch, got 500"},
      {"regularisation --tiny --lr nan", "xgrad-lab: error: regularisation: --lr must be a finite number > 0, got nan"},
      {"regularisation --tiny --batch 500",  // --tiny: 200 training samples
       "xgrad-lab: error: regularisation: --batch 500 is larger than the 200 training samples (--train-samples)"},
      {"regularisation --tiny --dropout 1", "xgrad-lab: error: regularisation: --dropout must be in (0, 1), got 1"},
      {"regularisation --tiny --epochs 0", "xgrad-lab: error: regularisation: --epochs must be >= 1, got 0"},
#if XGRAD_LAB_DIST
      // ddp: checked before its "needs at least 2 MPI ranks" (so without mpirun here)
      {"ddp --tiny --lr -1", "xgrad-lab: error: ddp: --lr must be a finite number > 0, got -1"},
      {"ddp --tiny --steps 0", "xgrad-lab: error: ddp: --steps must be >= 1, got 0"},
      {"ddp --tiny --batch 3",
       "xgrad-lab: error: ddp: --batch must be >= 4 (at least 2 samples on each of at least 2 ranks), got 3"},
#endif
      {"all --tiny --lr 0.1", ""},  // (all has no --lr: a CLI error, also before training)
      {"all --tiny --probes 0", ""},  // nor the other experiments' options (their mode defaults are checked above)
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
