// The build's CPU target and the start-up check (xgrad/cpu.h): what the build requires matches its -march
// level, this CPU has all of it (the test is running), and on a CPU that lacks an extension the program stops at
// start-up with a message naming it and status 1 (simulated with XGRAD_CPU_HIDE).
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "testing.h"
#include "xgrad/cpu.h"

namespace {
bool has(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

// Runs this test binary again (no test case selected) with `env`; returns its exit status and output.
int rerun_self(const std::string& env, std::string& out) {
  const std::string log = std::string(XGRAD_BINARY_DIR) + "/test_cpu_rerun.log";
  const std::string cmd = env + " '" + XGRAD_BINARY_DIR + "/bin/test_cpu' --test-case=none > '" + log + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream f(log);
  std::stringstream ss;
  ss << f.rdbuf();
  out = ss.str();
  std::remove(log.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}
}  // namespace

TEST_CASE("cpu: the build's requirements follow its -march level, and this CPU meets them") {
  const std::string arch = xg::cpu::build_arch();
  const auto req = xg::cpu::required_features();
  INFO("arch ", arch, ", cpu ", xg::cpu::cpu_name(), ", simd ", xg::cpu::simd_name());
  CHECK(xg::cpu::missing_features().empty());  // we are running, so nothing can be missing
  if (arch == "x86-64") {
    CHECK(req.empty());
    CHECK(xg::cpu::simd_name() == "SSE2");
  } else if (arch == "x86-64-v3") {
    for (const char* f : {"avx", "avx2", "fma", "bmi", "bmi2", "f16c", "movbe", "sse4.2", "popcnt"}) CHECK(has(req, f));
    CHECK_FALSE(has(req, "avx512f"));
    CHECK(xg::cpu::simd_name() == "AVX2");
  } else if (arch == "x86-64-v4") {
    for (const char* f : {"avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"}) CHECK(has(req, f));
    CHECK(xg::cpu::simd_name() == "AVX-512");
  } else if (arch == "native") {
    CHECK(has(req, "sse3") == bool(__builtin_cpu_supports("sse3")));
  }
  CHECK(xg::cpu::cpu_name() != "");
}

TEST_CASE("cpu: a CPU without a required extension gets a clear error at start-up, not an illegal instruction") {
  const auto req = xg::cpu::required_features();
  std::string out;
  if (req.empty()) {  // the x86-64 baseline build runs anywhere: hiding an extension changes nothing
    CHECK(rerun_self("XGRAD_CPU_HIDE=avx2,fma", out) == 0);
    return;
  }
  const std::string victim = has(req, "avx2") ? "avx2" : req.back();
  CHECK(rerun_self("XGRAD_CPU_HIDE=" + victim, out) == 1);
  INFO(out);
  CHECK(out.find("lacks: " + victim) != std::string::npos);
  CHECK(out.find("'" + xg::cpu::build_arch() + "'") != std::string::npos);
  CHECK(out.find("-DXGRAD_ARCH=x86-64") != std::string::npos);
  CHECK(rerun_self("XGRAD_CPU_HIDE=nosuchthing", out) == 0);  // names it does not require change nothing
  // any program linked with xgrad, not only one that calls xg::cpu: xgrad-lab (tensor.cpp pulls the check in)
  const std::string lab = std::string(XGRAD_BINARY_DIR) + "/bin/xgrad-lab";
  if (std::ifstream(lab).good()) {
    const std::string cmd = "XGRAD_CPU_HIDE=" + victim + " '" + lab + "' --help > /dev/null 2>&1";
    const int rc = std::system(cmd.c_str());
    CHECK((WIFEXITED(rc) && WEXITSTATUS(rc) == 1));
  }
}
