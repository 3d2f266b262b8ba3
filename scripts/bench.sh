#!/usr/bin/env bash
# Benchmarks Rocket against a Node.js `ws` peer and a "physical ceiling" server, on this
# machine, over loopback, and writes docs/BENCHMARKS.md with the figures and SVG plots.
#
#   scripts/bench.sh            # the full suite (about 14 minutes)
#   QUICK=1 scripts/bench.sh    # shorter runs, for trying the script out
#   REPEAT=5 scripts/bench.sh   # scenarios 1, 2 and 7 five times each (default 3)
#
# Every server is started fresh for each run (so its RSS baseline and peak are its own) and
# stopped after it. Results (one JSON per run) go to $RESULTS (target/bench-results).
# The report's Soak section is drawn from the committed docs/bench/soak-*.json
# (scripts/soak.sh), which this script does not rerun.
# Needs: cargo, node and npm (the peer's `ws` package is installed from npm here), and
# redis-server (Debian package redis-server) and curl for scenario 7.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
RESULTS=${RESULTS:-target/bench-results}
DURATION=${DURATION:-10}
SWEEP_DURATION=${SWEEP_DURATION:-5}
if [[ -n "${QUICK:-}" ]]; then
  DURATION=3
  SWEEP_DURATION=2
  REPEAT=${REPEAT:-1}
fi
BENCH=$ROOT/target/release/rocket-bench
CLI=$ROOT/target/release/rocket-cli
CONFIG=$ROOT/scripts/bench.json
ROCKET_PORT=9772
TLS_PORT=9773
PEER_PORT=9790
CEILING_PORT=9800
USERS=(--user bench --secret bench)

# One process may hold ~19,900 sockets here (the hard limit is 20,000).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "== building release binaries"
cargo build --release -p rocket-cli -p rocket-bench

echo "== installing the peer's ws package"
(cd scripts/peer && npm install --no-audit --no-fund --silent)

rm -rf "$RESULTS"
mkdir -p "$RESULTS"
# A self-signed certificate for the wss:// scenario (the load generator pins it with --ca).
"$BENCH" cert --out "$RESULTS/tls"

# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
record_machine_busy

trap 'stop_server; stop_nodes' EXIT


# start SERVER: starts rocket, peer or ceiling; sets SERVER_PID and URL.
start() {
  case "$1" in
    rocket)
      "$CLI" --port $ROCKET_PORT --log-level warn "$CONFIG" 2>>"$RESULTS/rocket.log" &
      SERVER_PID=$!
      URL=ws://127.0.0.1:$ROCKET_PORT/bench
      listening $ROCKET_PORT || exit 1
      ;;
    rocket-tls)
      "$CLI" --port $TLS_PORT --log-level warn --tls-cert "$RESULTS/tls/cert.pem" \
        --tls-key "$RESULTS/tls/key.pem" "$CONFIG" 2>>"$RESULTS/rocket.log" &
      SERVER_PID=$!
      URL=wss://127.0.0.1:$TLS_PORT/bench
      listening $TLS_PORT || exit 1
      ;;
    peer)
      node scripts/peer/server.js --port $PEER_PORT "$CONFIG" 2>>"$RESULTS/peer.log" &
      SERVER_PID=$!
      URL=ws://127.0.0.1:$PEER_PORT/bench
      listening $PEER_PORT || exit 1
      ;;
    ceiling)
      "$BENCH" ceiling --listen 127.0.0.1:$CEILING_PORT 2>>"$RESULTS/ceiling.log" &
      SERVER_PID=$!
      URL=ws://127.0.0.1:$CEILING_PORT/bench
      listening $CEILING_PORT || exit 1
      ;;
  esac
  sleep 0.5 # let the server settle before its RSS baseline is read
}

# bench SERVER LABEL ARGS...: one run against a fresh SERVER, saved as LABEL.json.
bench() {
  local server=$1 label=$2
  shift 2
  start "$server"
  echo "== $label"
  "$BENCH" run --url "$URL" "${USERS[@]}" --server-pid "$SERVER_PID" --server-name "$server" \
    --label "$label" --json "$RESULTS/$label.json" --sources 8 "$@" ||
    echo "!! $label failed" | tee -a "$RESULTS/failures.txt"
  stop_server
  sleep 1
}

# Scenarios 1 and 2 decide goals: each runs REPEAT times (servers in turn), and the report
# takes the median run and shows the spread.
REPEAT=${REPEAT:-3}
suffix() {
  if (($1 > 1)); then echo ".$1"; fi
  return 0
}

# 1. Fan-out, flat out: 1 publisher, 1 channel, 1,000 subscribers, 100-byte data.
for i in $(seq 1 "$REPEAT"); do
  for s in rocket peer ceiling; do
    bench $s $s-fanout$(suffix "$i") --subscribers 1000 --duration "$DURATION"
  done
done
# Deliveries against subscriber count (the report takes 1,000 from scenario 1).
for n in 100 300 3000 10000; do
  for s in rocket peer ceiling; do
    bench $s $s-sweep-$n --subscribers $n --duration "$SWEEP_DURATION"
  done
done

# 2. Latency: 100 publishes/s to 1,000 subscribers.
for i in $(seq 1 "$REPEAT"); do
  for s in rocket peer ceiling; do
    bench $s $s-latency$(suffix "$i") --subscribers 1000 --rate 100 --duration "$DURATION"
  done
done

# 3. Many channels: 1,000 channels x 10 subscribers, 10 publishers, flat out.
for s in rocket peer ceiling; do
  bench $s $s-channels --subscribers 10000 --channels 1000 --publishers 10 --duration "$DURATION"
done

# 4. Idle capacity.
for s in rocket peer ceiling; do
  bench $s $s-idle-10000 --mode idle --subscribers 10000 --settle 3
done
bench rocket rocket-idle-19000 --mode idle --subscribers 19000 --settle 3

# 5. Connect storm.
for s in rocket peer ceiling; do
  bench $s $s-storm --mode storm --subscribers 10000 --concurrency 500 --per-process 5000 --settle 1
done

# 6. Publishing over HTTP (Rocket only): the publish API against a WebSocket publisher.
bench rocket rocket-publish-ws --subscribers 1000 --duration "$DURATION"
bench rocket rocket-publish-http --subscribers 1000 --duration "$DURATION" --publish-via http
bench rocket rocket-publish-http-1 --subscribers 1 --duration "$DURATION" --publish-via http

# 7. Cluster: three nodes through Redis, 1 publisher on node 1, 1,000 subscribers spread
# over them, beside one node with the same parameters (scripts/bench-cluster.sh runs this
# alone, three rounds).
cluster_round ""

# 8. TLS (Rocket only): scenario 1 over wss:// and over ws://, in turn, REPEAT times each.
for i in $(seq 1 "$REPEAT"); do
  bench rocket "rocket-fanout-ws$(suffix "$i")" --subscribers 1000 --duration "$DURATION"
  bench rocket-tls "rocket-fanout-wss$(suffix "$i")" --subscribers 1000 --duration "$DURATION" \
    --ca "$RESULTS/tls/cert.pem"
done

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- rocket-proto rocket-server rocket-tokio rocket-cli || echo ' (with uncommitted changes in the server crates)')"
  echo "rustc: $(rustc --version)"
  echo "node: $(node --version), ws $(node -p "require('./scripts/peer/node_modules/ws/package.json').version")"
  echo "Rocket server command: target/release/rocket-cli --port $ROCKET_PORT --log-level warn scripts/bench.json"
  echo "Rocket TLS (wss) server command: target/release/rocket-cli --port $TLS_PORT --log-level warn --tls-cert $RESULTS/tls/cert.pem --tls-key $RESULTS/tls/key.pem scripts/bench.json"
  echo "peer server command: node scripts/peer/server.js --port $PEER_PORT scripts/bench.json"
  echo "ceiling server command: target/release/rocket-bench ceiling --listen 127.0.0.1:$CEILING_PORT"
  echo "cluster commands (scenario 7): redis-server --port PORT --bind 127.0.0.1 --save \"\" --appendonly no; target/release/rocket-cli [--redis redis://127.0.0.1:PORT/0] --port PORT --log-level warn scripts/bench.json"
  echo "redis: $(redis-server --version)"
  echo "durations: $DURATION s measured per run ($SWEEP_DURATION s for the sweep), after 1 s of warm-up"
  echo "machine busy before the runs: $BACKGROUND% of all cores (other jobs)"
} >"$RESULTS/meta.txt"

"$BENCH" report --results "$RESULTS" --out docs/BENCHMARKS.md --plots docs/bench --notes scripts/bench-notes.md
echo "== wrote docs/BENCHMARKS.md"
if [[ -f "$RESULTS/failures.txt" ]]; then
  echo "some runs failed:" >&2
  cat "$RESULTS/failures.txt" >&2
  exit 1
fi
