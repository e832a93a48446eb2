#!/usr/bin/env bash
# Sharing the machine: tide bench with its default thread count (adapting to the load), with 1 thread and
# with one thread per core, first on a quiet machine and then beside --hog processes that keep cores busy
# (default: one). Architectures with random weights: no download. One JSON per run, then a summary table of
# the end-to-end and text-encoder times.
# Usage: bench/sharing.sh [TIDE_BINARY] [RESULTS_DIR]
#   ARCH (default sd15), SIZE (default 256), STEPS (default 10), HOGS (default 1), RUNS (default 1)
set -euo pipefail
tide=$(realpath "${1:-build/tide}")
out=${2:-bench/results}
arch=${ARCH:-sd15}
size=${SIZE:-256}
steps=${STEPS:-10}
hogs=${HOGS:-1}
runs=${RUNS:-1}
cores=$(nproc)
mkdir -p "$out"
common=(--arch "$arch" --width "$size" --height "$size" --steps "$steps" --runs "$runs" --warmup 1)

names=()
for load in quiet loaded; do
  hog=()
  [ "$load" = loaded ] && hog=(--hog "$hogs")
  for threads in default 1 "$cores"; do
    flag=()
    [ "$threads" != default ] && flag=(--threads "$threads")
    name="sharing-$arch-$size-$load-threads-$threads"
    # OMP_NUM_THREADS would fix the count: the default run must adapt.
    env -u OMP_NUM_THREADS "$tide" bench "${common[@]}" "${hog[@]}" "${flag[@]}" --json "$out/$name.json" >/dev/null
    names+=("$name")
  done
done

python3 - "$out" "${names[@]}" <<'PY'
import json, sys
out, names = sys.argv[1], sys.argv[2:]
print(f"{'run':44} {'total_s':>8} {'text_encoder_s':>15} {'threads used':>13}")
for n in names:
    r = json.load(open(f"{out}/{n}.json"))
    st = {s["stage"]: s["median_s"] for s in r["stages"]}
    used = r["threads_used"]
    print(f"{n:44} {st['total']:8.2f} {st['text_encoder']:15.3f} {used[0]:>6}-{used[1]}")
PY
