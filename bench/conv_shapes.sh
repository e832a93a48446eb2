#!/usr/bin/env bash
# Times the 3x3 convolutions of SD 1.5's VAE decoder and UNet (and a few of SD 2.1 at 768) with `tide bench
# --conv` (oneDNN, tide's direct kernel on HWIO weights, Winograd), one JSON per shape in bench/results/conv/;
# then the UNet's small maps at 256 px (levels 3 and 4, guidance batch 2 and training's batch 1), forward and,
# with --backward, the input gradient as frozen-weight training computes it (…-backward.json).
# Usage: bench/conv_shapes.sh [path/to/tide] [threads]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tide="${1:-$here/../build/tide}"
threads="${2:-0}"
out="$here/results/conv"
mkdir -p "$out"
thr=()
[ "$threads" != 0 ] && thr=(--threads "$threads")
# batch in_channels out_channels size [stride] [--backward]
while read -r batch cin cout size stride backward; do
  name="conv-b${batch}-${cin}-${cout}-${size}"
  [ "${stride:-1}" != 1 ] && name="$name-s$stride"
  [ -n "${backward:-}" ] && name="$name-backward"
  "$tide" bench --conv --batch "$batch" --channels "$cin" --out-channels "$cout" --size "$size" --stride "${stride:-1}" \
    --runs "${RUNS:-3}" ${backward:+--backward} "${thr[@]}" --json "$out/$name.json"
done <<'SHAPES'
1 512 512 64
1 512 512 256
1 512 256 256
1 256 256 512
1 256 128 512
1 128 128 512
1 128 3 512
2 320 320 64
2 320 320 32
2 640 320 32
2 640 640 16
2 640 640 32
2 640 640 48
2 1280 1280 24
2 1280 1280 16
2 1280 1280 8
2 1280 1280 4
2 2560 1280 4
2 1280 1280 8 2
1 1280 1280 8
1 1280 1280 8 1 --backward
1 2560 1280 8
1 2560 1280 8 1 --backward
1 640 1280 8
1 640 1280 8 1 --backward
1 1280 1280 4
1 1280 1280 4 1 --backward
1 2560 1280 4
1 2560 1280 4 1 --backward
1 640 640 16 2
1 320 320 64 1 --backward
1 640 640 32 1 --backward
1 1280 1280 16 1 --backward
SHAPES
