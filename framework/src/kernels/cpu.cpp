// The start-up check of cpu.h. This file is compiled for the x86-64 baseline whatever XGRAD_ARCH says
// (framework/CMakeLists.txt), so it runs on any x86-64 CPU; it runs as a constructor of priority 101, before
// the static initialisers of the rest of xgrad and of the program (default priority), which may already use the
// build's extensions.
#include "xgrad/cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define XGRAD_X86 1
#endif

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unistd.h>

#include "cpu_features.h"

namespace xg::cpu {
namespace {
using namespace detail;

#if defined(XGRAD_X86) && defined(__clang__) && __clang_major__ < 15
// clang 14 (the fuzz build, docs/fuzzing.md) does not know some of __builtin_cpu_supports' names: read those
// bits from CPUID directly (leaf, subleaf, register, bit).
bool cpuid_bit(unsigned leaf, unsigned sub, int reg, int bit) {
  unsigned r[4] = {0, 0, 0, 0};
  if (!__get_cpuid_count(leaf, sub, &r[0], &r[1], &r[2], &r[3])) return false;
  return (r[reg] >> bit) & 1u;
}
#define XG_CPU_SUPPORTS_F16C cpuid_bit(1, 0, 2, 29)
#define XG_CPU_SUPPORTS_MOVBE cpuid_bit(1, 0, 2, 22)
#define XG_CPU_SUPPORTS_LZCNT cpuid_bit(0x80000001u, 0, 2, 5)
#define XG_CPU_SUPPORTS_AVX512FP16 cpuid_bit(7, 0, 3, 23)
#define XG_CPU_SUPPORTS_VAES cpuid_bit(7, 0, 2, 9)
#define XG_CPU_SUPPORTS_AVXVNNI cpuid_bit(7, 1, 0, 4)
#else
#define XG_CPU_SUPPORTS_F16C __builtin_cpu_supports("f16c")
#define XG_CPU_SUPPORTS_MOVBE __builtin_cpu_supports("movbe")
#define XG_CPU_SUPPORTS_LZCNT __builtin_cpu_supports("lzcnt")
#define XG_CPU_SUPPORTS_AVX512FP16 __builtin_cpu_supports("avx512fp16")
#define XG_CPU_SUPPORTS_VAES __builtin_cpu_supports("vaes")
#define XG_CPU_SUPPORTS_AVXVNNI __builtin_cpu_supports("avxvnni")
#endif

// __builtin_cpu_supports wants a string literal, hence the switch.
bool cpu_has(Feature f) {
#ifndef XGRAD_X86
  return true;  // not x86: the -march levels do not apply
#else
  switch (f) {
    case kSse3: return __builtin_cpu_supports("sse3");
    case kSsse3: return __builtin_cpu_supports("ssse3");
    case kSse41: return __builtin_cpu_supports("sse4.1");
    case kSse42: return __builtin_cpu_supports("sse4.2");
    case kPopcnt: return __builtin_cpu_supports("popcnt");
    case kAvx: return __builtin_cpu_supports("avx");
    case kAvx2: return __builtin_cpu_supports("avx2");
    case kFma: return __builtin_cpu_supports("fma");
    case kBmi: return __builtin_cpu_supports("bmi");
    case kBmi2: return __builtin_cpu_supports("bmi2");
    case kF16c: return XG_CPU_SUPPORTS_F16C;
    case kMovbe: return XG_CPU_SUPPORTS_MOVBE;
    case kLzcnt: return XG_CPU_SUPPORTS_LZCNT;
    case kAes: return __builtin_cpu_supports("aes");
    case kPclmul: return __builtin_cpu_supports("pclmul");
    case kAvx512f: return __builtin_cpu_supports("avx512f");
    case kAvx512vl: return __builtin_cpu_supports("avx512vl");
    case kAvx512bw: return __builtin_cpu_supports("avx512bw");
    case kAvx512dq: return __builtin_cpu_supports("avx512dq");
    case kAvx512cd: return __builtin_cpu_supports("avx512cd");
    case kAvx512vbmi: return __builtin_cpu_supports("avx512vbmi");
    case kAvx512ifma: return __builtin_cpu_supports("avx512ifma");
    case kAvx512vnni: return __builtin_cpu_supports("avx512vnni");
    case kAvx512bf16: return __builtin_cpu_supports("avx512bf16");
    case kAvx512vbmi2: return __builtin_cpu_supports("avx512vbmi2");
    case kAvx512bitalg: return __builtin_cpu_supports("avx512bitalg");
    case kAvx512vpopcntdq: return __builtin_cpu_supports("avx512vpopcntdq");
    case kAvx512fp16: return XG_CPU_SUPPORTS_AVX512FP16;
    case kGfni: return __builtin_cpu_supports("gfni");
    case kVpclmulqdq: return __builtin_cpu_supports("vpclmulqdq");
    case kVaes: return XG_CPU_SUPPORTS_VAES;
    case kAvxvnni: return XG_CPU_SUPPORTS_AVXVNNI;
    default: return false;
  }
#endif
}

// Is `name` in the comma-separated list XGRAD_CPU_HIDE?
bool hidden(const char* name) {
  const char* list = std::getenv("XGRAD_CPU_HIDE");
  if (!list) return false;
  const std::size_t len = std::strlen(name);
  for (const char* p = list; *p;) {
    const char* e = std::strchr(p, ',');
    const std::size_t n = e ? std::size_t(e - p) : std::strlen(p);
    if (n == len && std::strncmp(p, name, n) == 0) return true;
    if (!e) break;
    p = e + 1;
  }
  return false;
}

unsigned long long missing_mask() {
#ifdef XGRAD_X86
  __builtin_cpu_init();
#endif
  unsigned long long m = 0;
  for (int f = 0; f < kFeatureCount; ++f)
    if ((kRequiredMask & bit(Feature(f))) && (!cpu_has(Feature(f)) || hidden(kFeatureNames[f]))) m |= bit(Feature(f));
  return m;
}

std::vector<std::string> names(unsigned long long mask) {
  std::vector<std::string> out;
  for (int f = 0; f < kFeatureCount; ++f)
    if (mask & bit(Feature(f))) out.emplace_back(kFeatureNames[f]);
  return out;
}

// Runs before every default-priority initialiser of the program. Plain C I/O only: iostreams may not exist yet.
__attribute__((constructor(101))) void check_at_startup() {
  const unsigned long long m = missing_mask();
  if (m == 0) return;
  std::string need, miss;
  for (const auto& n : names(kRequiredMask)) need += " " + n;
  for (const auto& n : names(m)) miss += " " + n;
  std::fprintf(stderr,
               "xgrad: this program was built for the x86-64 level '%s', which uses these CPU extensions:%s.\n"
               "xgrad: this CPU (%s) lacks:%s.\n"
               "xgrad: rebuild xgrad on this machine, or configure it with -DXGRAD_ARCH=x86-64 for a build that runs on "
               "any x86-64 CPU (docs/getting-started.md, section 1).\n",
               kBuildArch, need.c_str(), cpu_name().c_str(), miss.c_str());
  std::fflush(stderr);
  _exit(1);
}
}  // namespace

std::string build_arch() { return kBuildArch; }
std::vector<std::string> required_features() { return names(kRequiredMask); }
std::vector<std::string> missing_features() { return names(missing_mask()); }
std::string simd_name() { return kSimdName; }

std::string cpu_name() {
#ifndef XGRAD_X86
  return "unknown";
#else
  unsigned regs[12] = {};
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(0x80000000u, &eax, &ebx, &ecx, &edx) || eax < 0x80000004u) return "unknown";
  for (unsigned i = 0; i < 3; ++i) __get_cpuid(0x80000002u + i, &regs[4 * i], &regs[4 * i + 1], &regs[4 * i + 2], &regs[4 * i + 3]);
  char s[49] = {};
  std::memcpy(s, regs, 48);
  std::string r(s);
  const auto b = r.find_first_not_of(' '), e = r.find_last_not_of(' ');
  return b == std::string::npos ? "unknown" : r.substr(b, e - b + 1);
#endif
}

// Referenced from tensor.cpp so that a static link always pulls this file (and its constructor) in.
extern const int kCpuCheckLinked = 1;

}  // namespace xg::cpu
