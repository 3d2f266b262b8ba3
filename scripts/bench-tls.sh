#!/usr/bin/env bash
# The wss:// fan-out scenario of scripts/bench.sh (7) on its own: Rocket fan-out, 1 publisher,
# 1 channel, 1,000 subscribers, 100-byte data, flat out, over ws:// and over wss:// in turn
# (a fresh rocket-cli per run), then the figures side by side and TLS / plain.
#
#   scripts/bench-tls.sh               # 3 rounds of 10 s runs
#   QUICK=1 scripts/bench-tls.sh       # 1 round of 3 s runs
#   REPEAT=5 DURATION=5 scripts/bench-tls.sh
#   PORT=9880 TLS_PORT=9881 scripts/bench-tls.sh   # other ports (another benchmark on 9772)
#
# The wss:// server gets a fresh self-signed certificate (`rocket-bench cert`), which the load
# generator pins with --ca. Results (one JSON per run) go to $RESULTS (target/bench-tls).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
RESULTS=${RESULTS:-target/bench-tls}
DURATION=${DURATION:-10}
if [[ -n "${QUICK:-}" ]]; then
  DURATION=3
  REPEAT=${REPEAT:-1}
fi
REPEAT=${REPEAT:-3}
PORT=${PORT:-9772}
TLS_PORT=${TLS_PORT:-9773}
BENCH=$ROOT/target/release/rocket-bench
CLI=$ROOT/target/release/rocket-cli
CONFIG=$ROOT/scripts/bench.json

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "== building release binaries"
cargo build --release -p rocket-cli -p rocket-bench

rm -rf "$RESULTS"
mkdir -p "$RESULTS"
"$BENCH" cert --out "$RESULTS/tls"

# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
record_machine_busy

trap stop_server EXIT
trap 'exit 130' INT TERM

# start PORT ARGS...: a fresh rocket-cli on PORT; sets SERVER_PID.
start() {
  local port=$1
  shift
  if port_open "$port"; then
    echo "port $port is already in use: is another benchmark running? (set PORT / TLS_PORT)" >&2
    exit 1
  fi
  "$CLI" --port "$port" --log-level warn "$@" "$CONFIG" 2>>"$RESULTS/rocket.log" &
  SERVER_PID=$!
  listening "$port" || exit 1
  sleep 0.5 # let the server settle before its RSS baseline is read
}

# bench LABEL URL ARGS...: one fan-out run against the server just started.
bench() {
  local label=$1 url=$2
  shift 2
  echo "== $label"
  "$BENCH" run --url "$url" --user bench --secret bench --server-pid "$SERVER_PID" \
    --server-name rocket --label "$label" --json "$RESULTS/$label.json" --sources 8 \
    --subscribers 1000 --duration "$DURATION" "$@" ||
    echo "!! $label failed" | tee -a "$RESULTS/failures.txt"
  stop_server
  sleep 1
}

for i in $(seq 1 "$REPEAT"); do
  echo "== round $i of $REPEAT"
  start "$PORT"
  bench "rocket-fanout-ws.$i" "ws://127.0.0.1:$PORT/bench"
  start "$TLS_PORT" --tls-cert "$RESULTS/tls/cert.pem" --tls-key "$RESULTS/tls/key.pem"
  bench "rocket-fanout-wss.$i" "wss://127.0.0.1:$TLS_PORT/bench" --ca "$RESULTS/tls/cert.pem"
done

RESULTS=$RESULTS BACKGROUND=$BACKGROUND python3 - <<'PY' | tee "$RESULTS/summary.md"
import glob
import json
import os
import statistics

results = os.environ["RESULTS"]


def runs(label):
    out = []
    for path in sorted(glob.glob(f"{results}/{label}.*.json")):
        with open(path) as f:
            out.append(json.load(f))
    return out


def per_cpu(r):
    return (r.get("server") or {}).get("deliveries_per_cpu_second") or 0.0


print()
print("| transport | run | deliveries/s | server CPU | deliveries per server CPU-s | lost / dup / reordered | p99 ms |")
print("|---|---:|---:|---:|---:|---|---:|")
medians = {}
for name, label in [("ws:// (plain)", "rocket-fanout-ws"), ("wss:// (TLS)", "rocket-fanout-wss")]:
    rs = runs(label)
    for i, r in enumerate(rs, 1):
        load, server = r["load"], r.get("server") or {}
        print(f"| {name} | {i} | {load['deliveries_per_second'] / 1000:.0f}k | "
              f"{server.get('cpu_percent', 0):.0f}% | {per_cpu(r) / 1000:.0f}k | "
              f"{load['lost']} / {load['duplicated']} / {load['reordered']} | {r['latency']['p99_ms']:.1f} |")
    if rs:
        medians[label] = (statistics.median(r["load"]["deliveries_per_second"] for r in rs),
                          statistics.median(per_cpu(r) for r in rs))
print()
if len(medians) == 2:
    (pd, pc), (td, tc) = medians["rocket-fanout-ws"], medians["rocket-fanout-wss"]
    share = tc / pc if pc else 0.0
    print(f"Medians: plain {pd / 1000:.0f}k deliveries/s, {pc / 1000:.0f}k per server CPU-s; "
          f"TLS {td / 1000:.0f}k deliveries/s, {tc / 1000:.0f}k per server CPU-s.")
    print(f"TLS / plain: {td / pd:.2f}x the deliveries/s, {share * 100:.0f}% of the deliveries "
          f"per server CPU-second (goal >= 50%: {'met' if share >= 0.5 else 'NOT met'}).")
print(f"Machine busy before the runs: {os.environ['BACKGROUND']}% of all cores.")
PY

if [[ -f "$RESULTS/failures.txt" ]]; then
  echo "some runs failed:" >&2
  cat "$RESULTS/failures.txt" >&2
  exit 1
fi
