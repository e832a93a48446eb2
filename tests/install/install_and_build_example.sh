#!/usr/bin/env bash
# Installs tide into a temporary prefix, builds examples/ against it with find_package(tide), and runs the
# example on a tiny model: the installed library, headers and CMake package work for a program outside.
# Usage: install_and_build_example.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
source_dir=$1 build_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" > "$work/install.log"
test -x "$work/prefix/bin/tide"
test -f "$work/prefix/include/tide/pipeline/stable_diffusion.h"
test -f "$work/prefix/include/tide/version.h"
cmake -S "$source_dir/examples" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/configure.log"
cmake --build "$work/build" > "$work/build.log" || { cat "$work/build.log"; exit 1; }
"$work/prefix/bin/tide" make-tiny "$work/tiny" 2> /dev/null
"$work/build/text_to_image" "$work/tiny" "a red robot" "$work/robot.png" 7
test -s "$work/robot.png"
echo "installed tide, built examples/text_to_image against it and made $work/robot.png"
