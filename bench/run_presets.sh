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
bf16=()
grep -qE 'avx512_bf16|amx_bf16' /proc/cpuinfo && bf16=(yes)

# Attention alone at SD 1.5's first level (512 px, guidance batch), self- and cross-attention.
"$tide" bench --attention --peak --runs 5 "${thr[@]}" --json "$out/attention-sd15-4096.json"
"$tide" bench --attention --context-tokens 77 --runs 5 "${thr[@]}" --json "$out/attention-sd15-4096x77.json"
# The same with backward, as textual-inversion training runs it (batch 1 and 2, and cross-attention).
"$tide" bench --attention --backward --batch 1 --runs 9 "${thr[@]}" --json "$out/attention-backward-sd15-4096-b1.json"
"$tide" bench --attention --backward --batch 2 --runs 5 "${thr[@]}" --json "$out/attention-backward-sd15-4096-b2.json"
"$tide" bench --attention --backward --batch 1 --context-tokens 77 --runs 7 "${thr[@]}" \
  --json "$out/attention-backward-sd15-4096x77-b1.json"

# SD 1.5 at 512x512: one step side by side with plain libtorch (per-stage ratios), then the
# end-to-end DPM-Solver++ 20-step run and its peak memory, in float32 and (where native) bf16.
"$tide" bench --arch sd15 --width 512 --height 512 --steps 1 --runs 1 --warmup 1 --compare-plain --peak \
  "${thr[@]}" --json "$out/sd15-512-compare-plain.json"
"$tide" bench --arch sd15 --width 512 --height 512 --steps 20 --scheduler dpm++2m --runs 1 --warmup 0 \
  "${thr[@]}" --json "$out/sd15-512-20steps.json"
if [ -n "${bf16[*]}" ]; then
  "$tide" bench --arch sd15 --width 512 --height 512 --steps 20 --scheduler dpm++2m --runs 1 --warmup 0 \
    --dtype bf16 "${thr[@]}" --json "$out/sd15-512-20steps-bf16.json"
  "$tide" bench --arch sd15 --width 512 --height 512 --steps 1 --runs 1 --warmup 1 --dtype bf16 \
    --compare-dtype float32 "${thr[@]}" --json "$out/sd15-512-bf16-vs-float32.json"
fi
# SD 2.1 at 768 and SDXL at 1024: a few steps.
"$tide" bench --arch sd21 --width 768 --height 768 --steps 2 --runs 1 --warmup 0 "${thr[@]}" \
  --json "$out/sd21-768.json"
"$tide" bench --arch sdxl --width 1024 --height 1024 --steps 2 --runs 1 --warmup 0 "${thr[@]}" \
  --json "$out/sdxl-1024.json"
if [ -n "${bf16[*]}" ]; then
  "$tide" bench --arch sdxl --width 1024 --height 1024 --steps 2 --runs 1 --warmup 0 --dtype bf16 "${thr[@]}" \
    --json "$out/sdxl-1024-bf16.json"
fi
