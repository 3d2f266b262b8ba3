#!/usr/bin/env bash
# Scenario 7 of scripts/bench.sh alone: three Rocket nodes joined through one redis-server
# (one publisher on node 1, 1,000 subscribers spread over the nodes), each run beside the
# same run against one node, flat out and at 100 publishes/s; and one node with a third of
# the subscribers (a cluster node's share without the backplane).
#
#   scripts/bench-cluster.sh             # 3 rounds (about 5 minutes)
#   REPEAT=1 scripts/bench-cluster.sh    # one round
#   QUICK=1 scripts/bench-cluster.sh     # one round of 3 s runs, for trying the script out
#
# Results (one JSON per run) go to $RESULTS (target/bench-cluster-results), with
# CLUSTER.md, the report's Cluster section made from them; scripts/bench.sh runs one
# round of the same and puts the section into docs/BENCHMARKS.md.
# Needs: cargo, redis-server (Debian package redis-server), curl.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
RESULTS=${RESULTS:-target/bench-cluster-results}
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-3}
if [[ -n "${QUICK:-}" ]]; then
  DURATION=3
  REPEAT=1
fi
BENCH=$ROOT/target/release/rocket-bench
CLI=$ROOT/target/release/rocket-cli
CONFIG=$ROOT/scripts/bench.json
USERS=(--user bench --secret bench)

command -v redis-server >/dev/null || {
  echo "redis-server is missing: apt-get install redis-server" >&2
  exit 1
}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "== building release binaries"
cargo build --release -p rocket-cli -p rocket-bench

rm -rf "$RESULTS"
mkdir -p "$RESULTS"

# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
record_machine_busy

trap stop_nodes EXIT

for i in $(seq 1 "$REPEAT"); do
  if ((i > 1)); then
    cluster_round ".$i"
  else
    cluster_round ""
  fi
done

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- rocket-proto rocket-server rocket-tokio rocket-cli || echo ' (with uncommitted changes in the server crates)')"
  echo "rustc: $(rustc --version)"
  echo "redis: $(redis-server --version)"
  echo "node commands: target/release/rocket-cli [--redis redis://127.0.0.1:PORT/0] --port PORT --log-level warn scripts/bench.json"
  echo "redis command: redis-server --port PORT --bind 127.0.0.1 --save \"\" --appendonly no"
  echo "durations: $DURATION s measured per run, after 1 s of warm-up; $REPEAT round(s)"
  echo "machine busy before the runs: $BACKGROUND% of all cores (other jobs)"
} >"$RESULTS/meta.txt"

"$BENCH" report --cluster-only --results "$RESULTS" --out "$RESULTS/CLUSTER.md" --plots "$RESULTS/plots"
echo "== wrote $RESULTS/CLUSTER.md"
if [[ -f "$RESULTS/failures.txt" ]]; then
  echo "some runs failed:" >&2
  cat "$RESULTS/failures.txt" >&2
  exit 1
fi
