#!/usr/bin/env bash
# Installs what tide needs on Debian 12 (as root, or with sudo) and builds it into ./build.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev libopenblas0-openmp   # libopenblas0-openmp: else apt may pick the slow reference BLAS
  libre2-dev nlohmann-json3-dev libpng-dev libcurl4-openssl-dev libgtest-dev
  libopenmpi-dev openmpi-bin         # tide train-ti: data-parallel training under mpirun
  libjpeg62-turbo-dev                # tide train-ti: JPEG training images
  libcpp-httplib-dev                 # tide serve: HTTP server (header-only)
  libdnnl-dev                        # int8 compute (oneDNN, the library libtorch uses)
)
scripts/install_packages.sh "${packages[@]}"

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${TIDE_CMAKE_ARGS:-}
# The first build makes only the tide binary (short); scripts/test.sh builds everything.
cmake --build build -j "$(nproc)" --target "${TIDE_SETUP_TARGET:-tide}"
