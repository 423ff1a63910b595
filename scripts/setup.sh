#!/usr/bin/env bash
# Sets xgrad up on Debian 12: installs the Debian packages it needs (idempotent — only what is missing, so it is
# quick when everything is there), then configures and builds (Release) into ./build.
#
#   bash scripts/setup.sh                 # packages + configure + build
#   XGRAD_BUILD_DIR=b XGRAD_CMAKE_ARGS="-DXGRAD_SANITIZE=ON" bash scripts/setup.sh   # another build
set -euo pipefail
cd "$(dirname "$0")/.."

# Every dependency of the project, by Debian package name (see README.md, "Dependencies").
PACKAGES=(
  build-essential cmake      # g++ 12, make, CMake 3.25
  libxtensor-dev libxsimd-dev xtl-dev   # tensors and SIMD
  libopenblas-dev            # GEMM for matmul / Linear / Conv2d (float64)
  libdnnl-dev                # oneDNN: float32 GEMM (JIT kernels for the CPU at hand)
  libfmt-dev                 # formatting
  zlib1g-dev                 # .gz IDX files
  libzip-dev pkgconf         # .npz archives (checkpoints); CMake finds libzip through pkg-config
  libcli11-dev               # xgrad-lab's command line
  libopenmpi-dev openmpi-bin # xg::dist (MPI): data parallelism, SyncBatchNorm, sweeps across ranks
  doctest-dev                # tests
  libbenchmark-dev           # bench/
  gnuplot-nox                # the experiments' plots
  graphviz                   # rendering autograd graphs (xg::render)
  clang libclang-rt-14-dev   # fuzz/: libFuzzer + ASan/UBSan runtimes (a separate clang build; the normal one is g++)
  dataset-fashion-mnist      # the experiments' data: /usr/share/datasets/fashion-mnist
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#PACKAGES[@]} Debian packages present"
fi

BUILD_DIR=${XGRAD_BUILD_DIR:-build}
# shellcheck disable=SC2086
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=${XGRAD_BUILD_TYPE:-Release} ${XGRAD_CMAKE_ARGS:-}
cmake --build "$BUILD_DIR" -j"$(nproc)"
echo "setup: built into $BUILD_DIR/ (executables in $BUILD_DIR/bin)"
