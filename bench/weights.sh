#!/usr/bin/env bash
# --weights and Token Merging against float32, side by side in one process per comparison: speed per stage,
# the UNet call's relative error and the image's PSNR (results/weights-*.json), then each format alone for its
# peak resident memory (results/memory-*.json). Usage: bench/weights.sh [path/to/tide] [threads] [arch] [size]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tide="${1:-$here/../build/tide}"
threads="${2:-2}"
arch="${3:-sd15}"
size="${4:-512}"
out="$here/results"
mkdir -p "$out"
common=(--arch "$arch" --width "$size" --height "$size" --steps 2 --runs "${RUNS:-2}" --warmup 1 --threads "$threads")

for w in ${FORMATS:-f16 bf16 int8}; do
  "$tide" bench "${common[@]}" --weights "$w" --compare-weights f32 --json "$out/weights-$arch-$size-$w-vs-f32.json"
done
for r in ${TOME_RATIOS:-0.3 0.5}; do
  "$tide" bench "${common[@]}" --tome "$r" --compare-tome --json "$out/weights-$arch-$size-tome$r-vs-f32.json"
done
"$tide" bench "${common[@]}" --weights int8 --tome 0.5 --compare-weights f32 --compare-tome --json "$out/weights-$arch-$size-int8-tome0.5-vs-f32.json"
# Peak resident memory of each format alone (a compared side would load a second model).
for w in f32 f16 int8; do
  "$tide" bench --arch "$arch" --width "$size" --height "$size" --steps 2 --runs 1 --warmup 0 --threads "$threads" \
    --weights "$w" --json "$out/memory-$arch-$size-$w.json"
done
