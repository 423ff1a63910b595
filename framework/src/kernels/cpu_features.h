// The x86-64 extensions the start-up check knows (cpu.h): one bit each, shared by cpu_required.cpp (what the
// build's flags enabled) and cpu.cpp (what the CPU has). Names are GCC's, as in __builtin_cpu_supports.
#pragma once

namespace xg::cpu::detail {

enum Feature : int {
  kSse3, kSsse3, kSse41, kSse42, kPopcnt, kAvx, kAvx2, kFma, kBmi, kBmi2, kF16c, kMovbe, kLzcnt, kAes, kPclmul,
  kAvx512f, kAvx512vl, kAvx512bw, kAvx512dq, kAvx512cd, kAvx512vbmi, kAvx512ifma, kAvx512vnni, kAvx512bf16,
  kAvx512vbmi2, kAvx512bitalg, kAvx512vpopcntdq, kAvx512fp16, kGfni, kVpclmulqdq, kVaes, kAvxvnni,
  kFeatureCount
};

inline constexpr const char* kFeatureNames[kFeatureCount] = {
    "sse3",       "ssse3",        "sse4.1",        "sse4.2",          "popcnt",     "avx",        "avx2",
    "fma",        "bmi",          "bmi2",          "f16c",            "movbe",      "lzcnt",      "aes",
    "pclmul",     "avx512f",      "avx512vl",      "avx512bw",        "avx512dq",   "avx512cd",   "avx512vbmi",
    "avx512ifma", "avx512vnni",   "avx512bf16",    "avx512vbmi2",     "avx512bitalg", "avx512vpopcntdq",
    "avx512fp16", "gfni",         "vpclmulqdq",    "vaes",            "avxvnni"};

constexpr unsigned long long bit(Feature f) { return 1ULL << f; }

extern const unsigned long long kRequiredMask;  // cpu_required.cpp
extern const char* const kSimdName;             // cpu_required.cpp
extern const char* const kBuildArch;            // cpu_required.cpp

}  // namespace xg::cpu::detail
