// xgrad — which CPU a build targets, and whether this CPU can run it.
//
// xgrad is compiled for one x86-64 level, chosen at configure time (CMake XGRAD_ARCH; docs/getting-started.md
// §1): x86-64-v3 by default (AVX2 + FMA: every x86-64 CPU since 2013-2015), x86-64 (any x86-64), x86-64-v4
// (AVX-512) or native (whatever the build machine has). A program linked with xgrad checks at start-up, before
// any of xgrad's code runs, that the CPU has every instruction-set extension the build was compiled to use; if
// one is missing it prints which, and how to rebuild, and exits with status 1 instead of dying later of an
// illegal instruction.
#pragma once

#include <string>
#include <vector>

namespace xg::cpu {

/// The -march level xgrad was built for: "x86-64-v3", "x86-64", "x86-64-v4", "native", or "default" (no -march).
std::string build_arch();

/// The instruction-set extensions (GCC's names: "avx2", "fma", "avx512f", ...) that the build's compiler flags
/// enabled beyond the x86-64 baseline (SSE2), so that xgrad's code may use them.
std::vector<std::string> required_features();

/// Those of required_features() that this CPU lacks (empty: the build runs here). The environment variable
/// XGRAD_CPU_HIDE (a comma-separated list of names) makes the check treat those as absent — a test aid, to see
/// the start-up error on a CPU that has everything.
std::vector<std::string> missing_features();

/// The CPU's brand string (CPUID), e.g. "AMD EPYC 9R45 ...", or "unknown".
std::string cpu_name();

/// The widest vector extension of the CPU in use by xgrad's own kernels in this build: "AVX-512", "AVX2",
/// "SSE2" (from the compiler flags, as xsimd sees them).
std::string simd_name();

}  // namespace xg::cpu
