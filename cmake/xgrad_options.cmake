# Compile flags shared by every xgrad target: xgrad_set_flags(<target>)
function(xgrad_set_flags target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
endfunction()

# Flags that must reach consumers too (ABI-relevant: -march and sanitizers).
add_library(xgrad_build_flags INTERFACE)
add_library(xgrad::build_flags ALIAS xgrad_build_flags)
if(XGRAD_NATIVE)
  target_compile_options(xgrad_build_flags INTERFACE -march=native)
  # GCC 12.2 (Debian 12) miscompiles some 256-bit constants when AVX-512 is on: the SLP vectorizer stores
  # `std::vector<double> v{1, 1, 1, 0}` as one 256-bit constant, and the x86 backend then materialises it as a
  # broadcast of 1.0, so v holds {1, 1, 1, 1}. Disabling basic-block SLP vectorization avoids it (loop
  # vectorization, which the hot loops use, is unaffected). tests/test_tensor.cpp has the reproducer.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    target_compile_options(xgrad_build_flags INTERFACE -fno-tree-slp-vectorize)
  endif()
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
