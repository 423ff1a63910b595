# Compile flags shared by every xgrad target: xgrad_set_flags(<target>)
function(xgrad_set_flags target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
endfunction()

# Flags that must reach consumers too (ABI-relevant: -march and sanitizers).
add_library(xgrad_build_flags INTERFACE)
add_library(xgrad::build_flags ALIAS xgrad_build_flags)
set(XGRAD_TARGET_ARCH ${XGRAD_ARCH})  # what the build uses: XGRAD_ARCH, or native when XGRAD_NATIVE=ON
if(XGRAD_NATIVE)
  set(XGRAD_TARGET_ARCH native)
endif()
if(NOT XGRAD_TARGET_ARCH MATCHES "^(x86-64|x86-64-v2|x86-64-v3|x86-64-v4|native|default)$")
  message(FATAL_ERROR "XGRAD_ARCH='${XGRAD_ARCH}' is not one of x86-64-v3 (the default: AVX2 + FMA), x86-64, "
                      "x86-64-v2, x86-64-v4 (AVX-512), native (the build machine's CPU) or default (no -march).")
endif()
set(XGRAD_MARCH_FLAG "")
if(NOT XGRAD_TARGET_ARCH STREQUAL "default")
  set(XGRAD_MARCH_FLAG -march=${XGRAD_TARGET_ARCH})
  target_compile_options(xgrad_build_flags INTERFACE ${XGRAD_MARCH_FLAG})
endif()
message(STATUS "xgrad: compiling for ${XGRAD_TARGET_ARCH} (${XGRAD_MARCH_FLAG})")
if(XGRAD_TARGET_ARCH MATCHES "^(native|x86-64-v4)$" AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  # GCC 12.2 (Debian 12) miscompiles some 256-bit constants when AVX-512 is on: the SLP vectorizer stores
  # `std::vector<double> v{1, 1, 1, 0}` as one 256-bit constant, and the x86 backend then materialises it as a
  # broadcast of 1.0, so v holds {1, 1, 1, 1}. Disabling basic-block SLP vectorization avoids it (loop
  # vectorization, which the hot loops use, is unaffected). tests/test_tensor.cpp has the reproducer.
  target_compile_options(xgrad_build_flags INTERFACE -fno-tree-slp-vectorize)
endif()
if(XGRAD_SANITIZE)
  target_compile_options(xgrad_build_flags INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  target_link_options(xgrad_build_flags INTERFACE -fsanitize=address,undefined)
  # xg::empty fills with NaN, so a read of a value that was never written shows up in the tests
  target_compile_definitions(xgrad_build_flags INTERFACE XGRAD_POISON_EMPTY)
endif()
# xtensor vectorises its expressions with xsimd only when this is defined.
target_compile_definitions(xgrad_build_flags INTERFACE XTENSOR_USE_XSIMD)
install(TARGETS xgrad_build_flags EXPORT xgradTargets)
