// Compiled with the same flags as the rest of xgrad: records which extensions those flags let the compiler use.
// Data only (no code runs here), so the start-up check (cpu.cpp) can read it on any CPU.
#include "cpu_features.h"

#ifndef XGRAD_ARCH_NAME
#define XGRAD_ARCH_NAME "default"
#endif

namespace xg::cpu::detail {

extern const unsigned long long kRequiredMask = 0ULL
#ifdef __SSE3__
    | bit(kSse3)
#endif
#ifdef __SSSE3__
    | bit(kSsse3)
#endif
#ifdef __SSE4_1__
    | bit(kSse41)
#endif
#ifdef __SSE4_2__
    | bit(kSse42)
#endif
#ifdef __POPCNT__
    | bit(kPopcnt)
#endif
#ifdef __AVX__
    | bit(kAvx)
#endif
#ifdef __AVX2__
    | bit(kAvx2)
#endif
#ifdef __FMA__
    | bit(kFma)
#endif
#ifdef __BMI__
    | bit(kBmi)
#endif
#ifdef __BMI2__
    | bit(kBmi2)
#endif
#ifdef __F16C__
    | bit(kF16c)
#endif
#ifdef __MOVBE__
    | bit(kMovbe)
#endif
#ifdef __LZCNT__
    | bit(kLzcnt)
#endif
#ifdef __AES__
    | bit(kAes)
#endif
#ifdef __PCLMUL__
    | bit(kPclmul)
#endif
#ifdef __AVX512F__
    | bit(kAvx512f)
#endif
#ifdef __AVX512VL__
    | bit(kAvx512vl)
#endif
#ifdef __AVX512BW__
    | bit(kAvx512bw)
#endif
#ifdef __AVX512DQ__
    | bit(kAvx512dq)
#endif
#ifdef __AVX512CD__
    | bit(kAvx512cd)
#endif
#ifdef __AVX512VBMI__
    | bit(kAvx512vbmi)
#endif
#ifdef __AVX512IFMA__
    | bit(kAvx512ifma)
#endif
#ifdef __AVX512VNNI__
    | bit(kAvx512vnni)
#endif
#ifdef __AVX512BF16__
    | bit(kAvx512bf16)
#endif
#ifdef __AVX512VBMI2__
    | bit(kAvx512vbmi2)
#endif
#ifdef __AVX512BITALG__
    | bit(kAvx512bitalg)
#endif
#ifdef __AVX512VPOPCNTDQ__
    | bit(kAvx512vpopcntdq)
#endif
#ifdef __AVX512FP16__
    | bit(kAvx512fp16)
#endif
#ifdef __GFNI__
    | bit(kGfni)
#endif
#ifdef __VPCLMULQDQ__
    | bit(kVpclmulqdq)
#endif
#ifdef __VAES__
    | bit(kVaes)
#endif
#ifdef __AVXVNNI__
    | bit(kAvxvnni)
#endif
    ;

extern const char* const kSimdName =
#if defined(__AVX512F__)
    "AVX-512";
#elif defined(__AVX2__)
    "AVX2";
#elif defined(__AVX__)
    "AVX";
#else
    "SSE2";
#endif

extern const char* const kBuildArch = XGRAD_ARCH_NAME;

}  // namespace xg::cpu::detail
