#!/usr/bin/env bash
# A textual-inversion step against one UNet forward call, side by side in one session: for each resolution
# and thread count, tide train-ti's step (latents cached, the encoder's seconds left out) with every
# optimization, the same step the way tide trained before the frozen-weight backward (--without
# frozen_backward,reuse_memory: plain autograd convolutions, fresh pages every step), optionally the step in
# bf16, with gradient checkpointing and with every optimization off (plain libtorch autograd and module code,
# as diffusers' script runs them), their peak memory, and one UNet call at batch 1 (tide bench, guidance 1).
# SD 1.5 architecture with random weights: no download.
# Usage: bench/train_ti_speed.sh [TIDE_BINARY] [RESULTS_FILE]
#   RESOLUTIONS (default "256 512"), THREADS (default "1 2"), STEPS (default 4: the first is not counted)
#   EXTRA="bf16 checkpointing plain f16 f16+checkpointing" adds those columns; TOKENIZER_MODEL: a folder with tokenizer/
set -euo pipefail
tide=$(realpath "${1:-build/tide}")
results=${2:-/dev/stdout}
model=${TOKENIZER_MODEL:-${TIDE_FIXTURES:-/work/shared/fixtures}/pipelines/sd1-tiny}
resolutions=${RESOLUTIONS:-256 512}
thread_counts=${THREADS:-1 2}
steps=${STEPS:-4}
extra=${EXTRA:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work/images" <<'PY'
import os, struct, sys, zlib
out = sys.argv[1]; os.makedirs(out)
w, h = 600, 500
raw = b"".join(b"\0" + bytes(((x * 3) % 256, (y * 5) % 256, (x + y) % 256)[c] for x in range(w) for c in range(3))
               for y in range(h))
chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
open(f"{out}/a.png", "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                                 + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
PY

# "seconds peak_GiB": the median step less its encoder seconds over the steps after the first, and the
# process's maximum resident memory.
step() {  # resolution threads extra-flags...
  local res=$1 threads=$2; shift 2
  local out="$work/out"
  rm -rf "$out"
  /usr/bin/time -f "%M" -o "$work/rss" "$tide" train-ti --random_weights sd15 --pretrained_model_name_or_path "$model" \
    --train_data_dir "$work/images" --placeholder_token '<bench>' --initializer_token toy --resolution "$res" \
    --train_batch_size 1 --repeats 10 --max_train_steps "$steps" --seed 0 --save_steps 0 --checkpointing_steps 0 \
    --threads "$threads" --output_dir "$out" "$@" > /dev/null 2> "$work/log" || { cat "$work/log" >&2; exit 1; }
  python3 - "$out/train_log.jsonl" "$(cat "$work/rss")" <<'PY'
import json, statistics, sys
steps = [json.loads(line) for line in open(sys.argv[1])][1:]
print(f"{statistics.median(s['seconds'] - s['encode_seconds'] for s in steps):.2f} {int(sys.argv[2]) / 2**20:.2f}")
PY
}

unet_call() {  # resolution threads -> seconds of one UNet call at batch 1
  "$tide" bench --arch sd15 --width "$1" --height "$1" --guidance 1 --steps 1 --runs 3 --threads "$2" \
    --json "$work/bench.json" > /dev/null 2>&1
  python3 -c "import json; print(next(s['median_s'] for s in json.load(open('$work/bench.json'))['stages'] if s['stage'] == 'unet'))"
}

{
  echo "# tide train-ti step vs one UNet call, SD 1.5 architecture (random weights), batch 1, float32"
  echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores," \
       "tide $(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo '?'), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# step: s/step less encoder (median of $((steps - 1)) steps) and peak GiB; before: --without frozen_backward,reuse_memory"
  header="res  thr  unet_call  step   GiB    before  GiB    before/step  step/unet_call"
  for e in $extra; do header+="  $e  GiB"; done
  echo "$header"
  for res in $resolutions; do
    for threads in $thread_counts; do
      read -r now now_gib < <(step "$res" "$threads")
      read -r before before_gib < <(step "$res" "$threads" --without frozen_backward,reuse_memory)
      call=$(unet_call "$res" "$threads")
      line=$(python3 -c "print(f'$res  $threads    {$call:<9.2f}  {$now:<6.2f} {$now_gib:<6.2f} {$before:<7.2f} {$before_gib:<6.2f} {$before/$now:<12.2f} {$now/$call:.2f}')")
      for e in $extra; do
        case $e in
          bf16) read -r s g < <(step "$res" "$threads" --mixed_precision bf16) ;;
          f16) read -r s g < <(step "$res" "$threads" --weights f16) ;;
          f16+checkpointing) read -r s g < <(step "$res" "$threads" --weights f16 --gradient_checkpointing) ;;
          checkpointing) read -r s g < <(step "$res" "$threads" --gradient_checkpointing) ;;
          plain) read -r s g < <(step "$res" "$threads" \
                   --without blocked_attention,channels_last,in_place,winograd,reuse_memory,frozen_backward) ;;
          *) echo "unknown EXTRA column $e" >&2; exit 2 ;;
        esac
        line+="  $s  $g"
      done
      echo "$line"
    done
  done
} | tee -a "$results"
