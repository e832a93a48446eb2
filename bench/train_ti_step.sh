#!/usr/bin/env bash
# Seconds per textual-inversion training step for the SD 1.5 architecture with random weights (no download),
# at 256 and 512 px, with the VAE latents cached per image variant (tide's default) and re-encoded every step
# (--no_latent_cache). Usage: bench/train_ti_step.sh [TIDE_BINARY] [RESULTS_FILE]
#   TOKENIZER_MODEL  a folder with tokenizer/ (default: $TIDE_FIXTURES/pipelines/sd1-tiny, a full CLIP vocab)
#   STEPS_256, STEPS_512, THREADS  steps per measurement (the first, warm-up step is not counted), threads
set -euo pipefail
tide=${1:-build/tide}
results=${2:-/dev/stdout}
model=${TOKENIZER_MODEL:-${TIDE_FIXTURES:-/work/shared/fixtures}/pipelines/sd1-tiny}
steps_256=${STEPS_256:-6}
steps_512=${STEPS_512:-4}
threads=${THREADS:-$(nproc)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One 600x500 RGB training image (PNG), written with the standard library only.
python3 - "$work/images" <<'PY'
import os, struct, sys, zlib
out = sys.argv[1]; os.makedirs(out)
def png(path, w, h, px):
    raw = b"".join(b"\0" + bytes(px(x, y)[c] for x in range(w) for c in range(3)) for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
png(f"{out}/a.png", 600, 500, lambda x, y: ((x * 3) % 256, (y * 5) % 256, (x + y) % 256))
PY

# Median over the logged steps after the first: "s/step" and "s/step without encoder" (the step's time less
# the seconds it spent in the VAE encoder). The cached path encodes each of the image's two flip variants on
# first use; the median leaves that out.
measure() {  # resolution steps extra-flags...
  local res=$1 steps=$2; shift 2
  local out="$work/out-$res-$#"
  rm -rf "$out"
  "$tide" train-ti --random_weights sd15 --pretrained_model_name_or_path "$model" --train_data_dir "$work/images" \
    --placeholder_token '<bench>' --initializer_token toy --resolution "$res" --train_batch_size 1 --repeats 10 \
    --max_train_steps "$steps" --seed 0 --save_steps 0 --checkpointing_steps 0 --threads "$threads" \
    --output_dir "$out" "$@" > /dev/null 2> "$out.log" || { cat "$out.log" >&2; exit 1; }
  python3 - "$out/train_log.jsonl" <<'PY'
import json, statistics, sys
steps = [json.loads(line) for line in open(sys.argv[1])][1:]
step = statistics.median(s["seconds"] for s in steps)
rest = statistics.median(s["seconds"] - s["encode_seconds"] for s in steps)
print(f"{step:.2f} {rest:.2f}")
PY
}

{
  echo "# tide train-ti, SD 1.5 architecture (random weights), batch 1, float32, $threads threads"
  echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores," \
       "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# A: s/step, latents cached (default)   B: s/step, VAE encoder every step (--no_latent_cache)"
  echo "# C: B's steps less their encoder seconds (same steps, so robust to machine load)   B/A and B/C: speed-up"
  echo "res    A        B        C        B/A     B/C"
  for res in 256 512; do
    steps=$([ "$res" = 256 ] && echo "$steps_256" || echo "$steps_512")
    read -r cached _ < <(measure "$res" "$steps")
    read -r plain without_encoder < <(measure "$res" "$steps" --no_latent_cache)
    python3 -c "print(f'$res    {$cached:<8.2f} {$plain:<8.2f} {$without_encoder:<8.2f} {$plain/$cached:<7.2f} {$plain/$without_encoder:.2f}')"
  done
} | tee -a "$results"
