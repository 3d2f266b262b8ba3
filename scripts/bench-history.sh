#!/usr/bin/env bash
# The cost of History, side by side in one run: fan-out flat out (1 publisher, 1 channel,
# 1,000 subscribers, 100-byte data) on a plain hub (scripts/bench.json) and on a History hub
# (scripts/bench-history.json: the same hub with "History": {"Size": 100, "TtlMs": 600000}),
# on one node and on a cluster of three nodes joined through one redis-server (subscribers
# spread over the nodes, the publisher on node 1). Every run starts fresh servers; the four
# kinds take turns, REPEAT rounds.
#
#   scripts/bench-history.sh             # 3 rounds of 5 s runs (about 3 minutes)
#   QUICK=1 scripts/bench-history.sh     # one round of 2 s runs, for trying the script out
#
# Results (one JSON per run) go to $RESULTS (target/bench-history-results), with
# HISTORY.md, the table docs/BENCHMARKS.md quotes (medians of the rounds).
# Needs: cargo, redis-server (Debian package redis-server), curl, python3.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
RESULTS=${RESULTS:-target/bench-history-results}
DURATION=${DURATION:-5}
REPEAT=${REPEAT:-3}
if [[ -n "${QUICK:-}" ]]; then
  DURATION=2
  REPEAT=1
fi
BENCH=$ROOT/target/release/rocket-bench
CLI=$ROOT/target/release/rocket-cli
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
  for nodes in 1 3; do
    for hub in plain history; do
      CONFIG=$ROOT/scripts/bench.json
      [[ $hub == history ]] && CONFIG=$ROOT/scripts/bench-history.json
      cluster_bench "$nodes" "$hub-$nodes-node.$i" --subscribers 1000 --duration "$DURATION"
    done
  done
done

COMMIT="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- rocket-proto rocket-server rocket-tokio rocket-cli || echo ' (with uncommitted changes in the server crates)')"
python3 - "$RESULTS" "$REPEAT" "$DURATION" "$COMMIT" "$BACKGROUND" <<'EOF' | tee "$RESULTS/HISTORY.md"
import json, statistics, sys
results, repeat, duration, commit, busy = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]

def runs(hub, nodes):
    out = []
    for i in range(1, repeat + 1):
        try:
            with open(f"{results}/{hub}-{nodes}-node.{i}.json") as f:
                out.append(json.load(f))
        except FileNotFoundError:
            pass
    return out

def per_cpu(run):
    # Deliveries over the CPU seconds of every node (Redis apart, as in the cluster report).
    servers = [n["server"] for n in run["nodes"]] if run.get("nodes") else [run["server"]]
    cpu = sum(s["cpu_seconds"] for s in servers)
    return run["load"]["deliveries"] / cpu if cpu else 0.0

def with_redis(run):
    servers = [n["server"] for n in run["nodes"]] if run.get("nodes") else [run["server"]]
    cpu = sum(s["cpu_seconds"] for s in servers) + (run.get("backplane") or {}).get("cpu_seconds", 0.0)
    return run["load"]["deliveries"] / cpu if cpu else 0.0

print(f"commit {commit}; {repeat} round(s) of {duration} s runs; machine busy before: {busy}% (other jobs)")
print()
print("| hub | nodes | deliveries/s (runs) | median | deliveries per server CPU-s (runs) | median | Redis CPU per publish (median) | lost / dup / reordered |")
print("|---|---|---|---:|---|---:|---:|---|")
medians = {}
for nodes in (1, 3):
    for hub in ("plain", "history"):
        rs = runs(hub, nodes)
        if not rs:
            print(f"| {hub} | {nodes} | (failed) | | | | | |")
            continue
        rate = [r["load"]["deliveries_per_second"] for r in rs]
        cpu = [per_cpu(r) for r in rs]
        both = [with_redis(r) for r in rs]
        redis = [r["backplane"]["cpu_us_per_publish"] for r in rs if r.get("backplane")]
        bad = [sum(r["load"][k] for r in rs) for k in ("lost", "duplicated", "reordered")]
        medians[(hub, nodes)] = (statistics.median(rate), statistics.median(cpu), statistics.median(both))
        fmt = lambda xs: ", ".join(f"{x / 1000:,.0f}k" for x in xs)
        redis_cell = f"{statistics.median(redis):.0f} µs" if redis else "(no Redis)"
        print(f"| {hub} | {nodes} | {fmt(rate)} | {statistics.median(rate) / 1000:,.0f}k "
              f"| {fmt(cpu)} | {statistics.median(cpu) / 1000:,.0f}k | {redis_cell} | {bad[0]} / {bad[1]} / {bad[2]} |")
print()
for nodes in (1, 3):
    if ("plain", nodes) in medians and ("history", nodes) in medians:
        (pr, pc, pb), (hr, hc, hb) = medians[("plain", nodes)], medians[("history", nodes)]
        extra = f"; {hb / pb:.2f}x counting Redis's CPU too" if nodes > 1 else ""
        print(f"History / plain on {nodes} node(s) (medians): {hr / pr:.2f}x the deliveries/s, "
              f"{hc / pc:.2f}x the deliveries per server CPU-second{extra}.")
EOF
if [[ -f "$RESULTS/failures.txt" ]]; then
  echo "some runs failed:" >&2
  cat "$RESULTS/failures.txt" >&2
  exit 1
fi
