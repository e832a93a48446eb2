#!/usr/bin/env bash
# Pictures in seconds, measured side by side with tide generate's default recipe in one process each (tide
# bench --compare-default: 20 steps DPM++ 2M, guidance 7.5, the full VAE, same optimizations): 4-step LCM
# with guidance 1 and the TAESD decoder (SD 1.5), 1-step Euler-a with guidance 0 and TAESDXL (SDXL-Turbo's
# recipe), and DeepCache at several intervals against the same run uncached (--compare-cache, with the
# image's PSNR against the uncached one; no warm-up pass there, which counts the first pass's one-time costs
# against the cached side). Architectures with random weights: no download.
# Usage: bench/fast_pictures.sh [TIDE_BINARY] [RESULTS_DIR]
#   SIZE (default 512), THREADS (default 2), INTERVALS (default "2 3 5"), PARTS (default "lcm turbo cache")
set -euo pipefail
tide=$(realpath "${1:-build/tide}")
out=${2:-bench/results}
size=${SIZE:-512}
threads=${THREADS:-2}
intervals=${INTERVALS:-2 3 5}
parts=${PARTS:-lcm turbo cache}
mkdir -p "$out"
common=(--width "$size" --height "$size" --threads "$threads" --runs 1 --warmup 1)

for part in $parts; do
  case $part in
    lcm)
      "$tide" bench --arch sd15 "${common[@]}" --scheduler lcm --steps 4 --guidance 1 --decoder taesd \
        --compare-default --json "$out/fast-sd15-lcm4-taesd-$size-${threads}threads.json" ;;
    turbo)
      "$tide" bench --arch sdxl "${common[@]}" --scheduler euler-a --steps 1 --guidance 0 --decoder taesdxl \
        --compare-default --json "$out/fast-sdxl-turbo1-taesdxl-$size-${threads}threads.json" ;;
    cache)
      for n in $intervals; do
        "$tide" bench --arch sd15 "${common[@]}" --warmup 0 --cache-interval "$n" --compare-cache \
          --json "$out/fast-sd15-deepcache$n-$size-${threads}threads.json"
      done ;;
    *) echo "unknown part $part (lcm, turbo, cache)" >&2; exit 1 ;;
  esac
done
