// Include first in sources that inline xsimd's math (exp, log, tanh, rounding) with AVX-512 enabled.
//
// GCC 12's own intrinsics header (avx512fintrin.h) makes "undefined" vectors with `__m512 __Y = __Y;`, which
// -Wall reports as -Wuninitialized / -Wmaybe-uninitialized wherever xsimd's AVX-512 kernels get inlined. The
// warning is about the compiler's header, not about xgrad's code, so it is silenced in these sources only.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
