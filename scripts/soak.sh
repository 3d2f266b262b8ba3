#!/usr/bin/env bash
# The soak of issue 14: "nothing lost, memory flat". For each runtime, a fresh
# `rocket-cli --runtime RUNTIME` on scripts/bench.json (on a free loopback port) gets one
# publisher at 100 publishes/s to 1,000 subscribers (100,000 deliveries/s) plus 50
# churners/s (each connects, subscribes, receives for 2 s and leaves) for a long while,
# with the server's RSS and CPU read every second. The results go to docs/bench/soak-RUNTIME.json
# (committed), and the "Soak" section of docs/BENCHMARKS.md (table and RSS plot) is
# rewritten from them; the rest of the report is kept as it is. `scripts/bench.sh`
# regenerates the section from the same files.
#
#   scripts/soak.sh                                # 3600 s on tokio, 1200 s on async-std
#   SOAK_TOKIO=300 SOAK_ASYNC_STD=120 scripts/soak.sh   # a short try
#   SOAK_ASYNC_STD=0 scripts/soak.sh               # tokio only (0 skips a runtime)
#   REPORT_ONLY=1 scripts/soak.sh                  # rewrite the section from the JSON files
#
# Other knobs: RATE (publishes/s, 100), SUBSCRIBERS (1000), CHURN (churners/s, 50),
# CHURN_HOLD (seconds each churner stays, 2), CONFIG (scripts/bench.json).
# Logs (server stderr, the load generator's progress) go to target/soak/.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SOAK_TOKIO=${SOAK_TOKIO:-3600}
SOAK_ASYNC_STD=${SOAK_ASYNC_STD:-1200}
RATE=${RATE:-100}
SUBSCRIBERS=${SUBSCRIBERS:-1000}
CHURN=${CHURN:-50}
CHURN_HOLD=${CHURN_HOLD:-2}
CONFIG=${CONFIG:-$ROOT/scripts/bench.json}
OUT=docs/bench
LOGS=target/soak
BENCH=$ROOT/target/release/rocket-bench
CLI=$ROOT/target/release/rocket-cli

report() {
  "$BENCH" report --soak-only --soak "$OUT" --soak-notes scripts/soak-notes.md \
    --out docs/BENCHMARKS.md --plots docs/bench --notes scripts/bench-notes.md
  echo "== rewrote the Soak section of docs/BENCHMARKS.md from $OUT/soak-*.json"
}

if [[ -n "${REPORT_ONLY:-}" ]]; then
  report
  exit 0
fi

# 1,000 subscribers and the churners' sockets, with room to spare.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "== building release binaries"
cargo build --release -p rocket-cli -p rocket-bench

mkdir -p "$LOGS" "$OUT"
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
record_machine_busy
trap stop_server EXIT

COMMIT=$(git rev-parse --short HEAD)
if ! git diff --quiet HEAD -- rocket-proto rocket-server rocket-tokio rocket-async-std rocket-cli; then
  COMMIT="$COMMIT+uncommitted"
fi

failed=0
for runtime in tokio async-std; do
  case $runtime in
    tokio) duration=$SOAK_TOKIO ;;
    async-std) duration=$SOAK_ASYNC_STD ;;
  esac
  if ((duration <= 0)); then
    continue
  fi
  port=$(free_port 9850)
  "$CLI" --runtime "$runtime" --port "$port" --log-level warn "$CONFIG" 2>>"$LOGS/rocket-$runtime.log" &
  SERVER_PID=$!
  listening "$port" || { echo "rocket-cli ($runtime) did not start on port $port" >&2; exit 1; }
  sleep 0.5 # let the server settle
  echo "== soak on $runtime: $duration s, port $port, server pid $SERVER_PID, commit $COMMIT"
  if "$BENCH" run --url "ws://127.0.0.1:$port/bench" --user bench --secret bench \
    --server-pid "$SERVER_PID" --server-name rocket --label "soak-$runtime" \
    --subscribers "$SUBSCRIBERS" --rate "$RATE" --duration "$duration" \
    --churn "$CHURN" --churn-hold "$CHURN_HOLD" --series --sources 8 \
    --commit "$COMMIT" --json "$LOGS/soak-$runtime.json" 2> >(tee "$LOGS/bench-$runtime.log" >&2); then
    cp "$LOGS/soak-$runtime.json" "$OUT/soak-$runtime.json"
  else
    echo "!! the $runtime soak failed (see $LOGS/bench-$runtime.log)" >&2
    failed=1
  fi
  stop_server
  sleep 2
done

report
exit $failed
