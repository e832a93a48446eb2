#!/usr/bin/env bash
# Load on `tide serve` from the outside: CLIENTS threads send REQUESTS POST /sdapi/v1/txt2img in all (each with
# its own seed) at a server started with --max-queue QUEUE over a tiny random-weight model (or MODELS), and
# report requests/s, how many got 200 and 503, latency percentiles of each, and the server's resident memory
# (VmRSS) after one warm-up request and after the load. Every 200 is checked to carry its request's seed.
# A client refused with 503 waits BACKOFF seconds before its next request (0: at once).
# usage: [CLIENTS=8] [REQUESTS=400] [QUEUE=4] [STEPS=2] [SIZE=32] [THREADS=1] [BACKOFF=0.1] [MODELS=dir] bench/serve_load.sh [tide]
set -euo pipefail
tide=${1:-$(dirname "$0")/../build/tide}
CLIENTS=${CLIENTS:-8} REQUESTS=${REQUESTS:-400} QUEUE=${QUEUE:-4} STEPS=${STEPS:-2} SIZE=${SIZE:-32} THREADS=${THREADS:-1} BACKOFF=${BACKOFF:-0.1}
work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

models=${MODELS:-}
if [ -z "$models" ]; then
  models=$work/models
  mkdir -p "$models"
  "$tide" make-tiny "$models/tiny" >/dev/null 2>&1
fi
OMP_NUM_THREADS=$THREADS "$tide" serve --models "$models" --port 0 --threads "$THREADS" --max-queue "$QUEUE" \
  >"$work/serve.out" 2>"$work/serve.err" &
server_pid=$!
port=
for _ in $(seq 1 300); do  # the address is printed once it listens
  port=$(grep -o 'listening on http://127\.0\.0\.1:[0-9]*' "$work/serve.out" 2>/dev/null | grep -o '[0-9]*$' || true)
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/serve.err" >&2; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { echo "tide serve did not print its address" >&2; exit 1; }

echo "tide serve pid $server_pid port $port: clients $CLIENTS, requests $REQUESTS, queue $QUEUE, steps $STEPS, size $SIZE, threads $THREADS, backoff $BACKOFF s"
python3 - "$port" "$server_pid" "$CLIENTS" "$REQUESTS" "$STEPS" "$SIZE" "$BACKOFF" <<'EOF'
import json, sys, threading, time, urllib.error, urllib.request

port, pid, clients, requests, steps, size = map(int, sys.argv[1:7])
backoff = float(sys.argv[7])
url = f"http://127.0.0.1:{port}"

def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def txt2img(seed):
    body = json.dumps({"prompt": "a fox", "seed": seed, "steps": steps, "width": size, "height": size}).encode()
    req = urllib.request.Request(url + "/sdapi/v1/txt2img", body, {"Content-Type": "application/json"})
    start = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            status, headers, data = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, headers, data = e.code, e.headers, e.read()
    return status, headers, data, time.monotonic() - start

status, _, data, _ = txt2img(1)  # loads the model
assert status == 200, data
rss_before = rss_kib()

lock = threading.Lock()
next_index = [0]
latencies = {200: [], 503: []}
problems = []

def client():
    while True:
        with lock:
            i = next_index[0]
            if i >= requests:
                return
            next_index[0] += 1
        seed = 1000 + i
        try:
            status, headers, data, seconds = txt2img(seed)
        except Exception as e:  # connection errors
            with lock:
                problems.append(f"seed {seed}: {e}")
            continue
        problem = None
        if status == 200:
            reply = json.loads(data)
            if json.loads(reply["info"])["seed"] != seed or len(reply["images"]) != 1:
                problem = f"seed {seed}: wrong images"
        elif status == 503:
            if headers.get("Retry-After") is None:
                problem = f"seed {seed}: 503 without Retry-After"
        else:
            problem = f"seed {seed}: status {status}"
        with lock:
            if problem:
                problems.append(problem)
            else:
                latencies[status].append(seconds)
        if status == 503 and backoff > 0:
            time.sleep(backoff)

start = time.monotonic()
threads = [threading.Thread(target=client) for _ in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.monotonic() - start
rss_after = rss_kib()

def percentiles(values):
    if not values:
        return "-"
    v = sorted(values)
    pick = lambda p: v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]
    return "p50 %.3f s, p90 %.3f s, p99 %.3f s, max %.3f s" % (pick(50), pick(90), pick(99), v[-1])

ok, refused = len(latencies[200]), len(latencies[503])
with urllib.request.urlopen(url + "/metrics", timeout=60) as r:
    metrics = dict(l.rsplit(" ", 1) for l in r.read().decode().splitlines() if l and not l.startswith("#"))
print(f"wall {elapsed:.2f} s: {requests / elapsed:.1f} requests/s, {ok / elapsed:.1f} images/s")
print(f"200: {ok}  ({percentiles(latencies[200])})")
print(f"503: {refused}  ({percentiles(latencies[503])})")
print(f"other: {len(problems)}")
for p in problems[:10]:
    print("  " + p)
jobs = {k: metrics['tide_jobs_total{status="%s"}' % k] for k in ("done", "failed", "cancelled")}
print(f"/metrics: jobs done {jobs['done']} (warm-up included), failed {jobs['failed']}, cancelled {jobs['cancelled']}")
print(f"server RSS: {rss_before / 1024:.1f} MiB after warm-up, {rss_after / 1024:.1f} MiB after the load "
      f"({100 * (rss_after - rss_before) / rss_before:+.1f}%)")
sys.exit(1 if problems else 0)
EOF
