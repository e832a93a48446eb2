#!/usr/bin/env bash
# Runs `tide bench` on the built-in presets and records the JSON results in bench/results/.
# Full-size models are slow on small machines: sd15 takes minutes on 2 cores, sd21 768 and sdxl 1024
# much longer. Usage: bench/run_presets.sh [path/to/tide] [threads]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tide="${1:-$here/../build/tide}"
threads="${2:-0}"
out="$here/results"
mkdir -p "$out"
thr=()
[ "$threads" != 0 ] && thr=(--threads "$threads")

# Attention alone at SD 1.5's first level (512 px, guidance batch), self- and cross-attention.
"$tide" bench --attention --peak --runs 5 "${thr[@]}" --json "$out/attention-sd15-4096.json"
"$tide" bench --attention --context-tokens 77 --runs 5 "${thr[@]}" --json "$out/attention-sd15-4096x77.json"
# The VAE decoder's mid-block attention at 512 px: one head of 512, 4096 tokens, batch 1.
"$tide" bench --attention --batch 1 --heads 1 --head-dim 512 --runs 3 "${thr[@]}" --json "$out/attention-vae-4096.json"

# SD 1.5 at 512x512: DPM-Solver++ 2M, 20 steps, side by side with plain libtorch.
"$tide" bench --arch sd15 --width 512 --height 512 --steps 20 --scheduler dpm++2m --runs 1 --warmup 1 \
  --compare-plain --peak "${thr[@]}" --json "$out/sd15-512.json"
# SD 2.1 at 768 and SDXL at 1024: a few steps.
"$tide" bench --arch sd21 --width 768 --height 768 --steps 2 --runs 1 --warmup 0 --compare-plain --peak \
  "${thr[@]}" --json "$out/sd21-768.json"
"$tide" bench --arch sdxl --width 1024 --height 1024 --steps 2 --runs 1 --warmup 0 --compare-plain --peak \
  "${thr[@]}" --json "$out/sdxl-1024.json"
