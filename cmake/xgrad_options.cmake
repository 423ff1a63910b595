# Compile flags shared by every xgrad target: xgrad_set_flags(<target>)
function(xgrad_set_flags target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
endfunction()

# Flags that must reach consumers too (ABI-relevant: -march and sanitizers).
add_library(xgrad_build_flags INTERFACE)
add_library(xgrad::build_flags ALIAS xgrad_build_flags)
if(XGRAD_NATIVE)
  target_compile_options(xgrad_build_flags INTERFACE -march=native)
endif()
if(XGRAD_SANITIZE)
  target_compile_options(xgrad_build_flags INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  target_link_options(xgrad_build_flags INTERFACE -fsanitize=address,undefined)
endif()
# xtensor vectorises its expressions with xsimd only when this is defined.
target_compile_definitions(xgrad_build_flags INTERFACE XTENSOR_USE_XSIMD)
install(TARGETS xgrad_build_flags EXPORT xgradTargets)
