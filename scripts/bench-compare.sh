#!/usr/bin/env bash
# A/B benchmark of two versions of rocket-cli in one run, so that a change's before and after
# figures are measured under the same machine conditions (this machine is small and noisy:
# figures from two separate runs of scripts/bench.sh are not comparable to a few percent).
#
#   scripts/bench-compare.sh BASE_REV            # BASE_REV against the working tree
#   scripts/bench-compare.sh BASE_REV NEW_REV    # two git revisions
#   QUICK=1 scripts/bench-compare.sh HEAD~1      # short runs, for trying the script out
#   REPEAT=5 scripts/bench-compare.sh HEAD~1     # five rounds (default 3; 1 with QUICK)
#   PORT=9882 scripts/bench-compare.sh HEAD~1    # the servers' port (default 9772)
#
# A git revision is checked out with `git worktree add --detach` under
# target/bench-compare/<commit>/ (reused if present) and built there with
# CARGO_TARGET_DIR=target/bench-compare/cargo-target; its rocket-cli is copied to
# target/bench-compare/bin/<commit>/, and a commit already there is not built again.
# The working tree is built in the normal target dir. The load generator is always the
# working tree's rocket-bench, for both versions. Each version's server reads its own
# scripts/bench.json (the working tree's if that revision has none).
#
# Scenarios, as in scripts/bench.sh: 1. fan-out flat out, 1 publisher, 1 channel, 1,000
# subscribers, 100-byte data; 2. latency, the same at 100 publishes/s (p99 and server CPU
# per delivery); 3. many channels, 1,000 channels x 10 subscribers, 10 publishers, flat out
# (deliveries/s and p99); 4. idle capacity, 10,000 authenticated, subscribed idle
# connections. Each round runs each scenario against base, then new, every run against a
# fresh server process. JSON results (one file per run) go to $RESULTS
# (target/bench-compare/results, emptied first); the table at the end (also written to
# $RESULTS/summary.md) shows per version the median and the min-max of the runs, and
# the new/base ratio of the medians. The script exits non-zero when a run failed or lost
# messages or connections (listed under the table).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

usage() {
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
}
if (($# < 1 || $# > 2)); then
  usage
  exit 2
fi
BASE_REV=$1
NEW_REV=${2:-}

WORK=$ROOT/target/bench-compare
RESULTS=${RESULTS:-$WORK/results}
DURATION=${DURATION:-10}
if [[ -n "${QUICK:-}" ]]; then
  DURATION=3
  REPEAT=${REPEAT:-1}
fi
REPEAT=${REPEAT:-3}
PORT=${PORT:-9772}
USERS=(--user bench --secret bench)

# One process may hold ~19,900 sockets here (the hard limit is 20,000).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# describe REV SHA: "REV = abc1234", or just "abc1234" when REV is that hash already.
describe() {
  local short
  short=$(git rev-parse --short "$2")
  if [[ $2 == "$1"* ]]; then echo "$short"; else echo "$1 = $short"; fi
}

# resolve REV: prints its full commit hash, or fails.
resolve() {
  git rev-parse --verify --quiet "$1^{commit}" || {
    echo "not a git revision: $1" >&2
    exit 2
  }
}
BASE_SHA=$(resolve "$BASE_REV")
BASE_DESC=$(describe "$BASE_REV" "$BASE_SHA")
if [[ -n "$NEW_REV" ]]; then
  NEW_SHA=$(resolve "$NEW_REV")
  NEW_DESC=$(describe "$NEW_REV" "$NEW_SHA")
else
  NEW_SHA=""
  NEW_DESC="working tree ($(git rev-parse --short HEAD)$(git diff --quiet HEAD -- rocket-proto rocket-server rocket-tokio rocket-cli || echo ' + uncommitted changes in the server crates'))"
fi

mkdir -p "$WORK/bin"

# build_rev SHA: makes $WORK/bin/SHA/rocket-cli and $WORK/bin/SHA/bench.json.
build_rev() {
  local sha=$1
  local short dir bin
  short=$(git rev-parse --short=12 "$sha")
  dir=$WORK/$short
  bin=$WORK/bin/$sha
  if [[ -x "$bin/rocket-cli" && -f "$bin/bench.json" ]]; then
    echo "== reusing the rocket-cli built from $short ($bin)"
    return 0
  fi
  if [[ ! -e "$dir/.git" ]]; then
    git worktree prune
    echo "== checking out $short in $dir"
    git worktree add --detach "$dir" "$sha"
  fi
  if [[ "$(git -C "$dir" rev-parse HEAD)" != "$sha" ]]; then
    echo "$dir is not a checkout of $sha; remove it (git worktree remove --force $dir)" >&2
    exit 1
  fi
  echo "== building rocket-cli at $short"
  (cd "$dir" && CARGO_TARGET_DIR="$WORK/cargo-target" cargo build --release -p rocket-cli)
  mkdir -p "$bin"
  if [[ -f "$dir/scripts/bench.json" ]]; then
    cp "$dir/scripts/bench.json" "$bin/bench.json"
  else
    cp "$ROOT/scripts/bench.json" "$bin/bench.json"
  fi
  cp "$WORK/cargo-target/release/rocket-cli" "$bin/rocket-cli.tmp"
  mv "$bin/rocket-cli.tmp" "$bin/rocket-cli"
}

# The working tree's binaries are copied too, so that a build started meanwhile (by
# someone else, in the normal target dir) cannot swap them in the middle of the runs.
echo "== building the working tree's release binaries"
if [[ -n "$NEW_SHA" ]]; then
  cargo build --release -p rocket-bench
else
  cargo build --release -p rocket-cli -p rocket-bench
  mkdir -p "$WORK/bin/worktree"
  cp "$ROOT/target/release/rocket-cli" "$WORK/bin/worktree/rocket-cli"
  cp "$ROOT/scripts/bench.json" "$WORK/bin/worktree/bench.json"
fi
cp "$ROOT/target/release/rocket-bench" "$WORK/bin/rocket-bench"
BENCH=$WORK/bin/rocket-bench

build_rev "$BASE_SHA"
BASE_BIN=$WORK/bin/$BASE_SHA
if [[ -n "$NEW_SHA" ]]; then
  build_rev "$NEW_SHA"
  NEW_BIN=$WORK/bin/$NEW_SHA
else
  NEW_BIN=$WORK/bin/worktree
fi
if ! cmp -s "$BASE_BIN/bench.json" "$NEW_BIN/bench.json"; then
  echo "!! the two versions' scripts/bench.json differ: each server reads its own" >&2
fi

rm -rf "$RESULTS"
mkdir -p "$RESULTS"

# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
record_machine_busy

trap stop_server EXIT
trap 'exit 130' INT TERM

wait_port() {
  for _ in $(seq 1 100); do
    if port_open "$1"; then
      return 0
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "the server exited before it listened on port $1 (see $RESULTS/*.log)" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "server on port $1 did not start" >&2
  exit 1
}

# start VERSION: starts base's or new's rocket-cli; sets SERVER_PID.
start() {
  local bin
  if [[ $1 == base ]]; then bin=$BASE_BIN; else bin=$NEW_BIN; fi
  # Something else on the port (another benchmark?) would be measured instead of ours.
  if port_open $PORT; then
    echo "port $PORT is already in use: is another benchmark running?" >&2
    exit 1
  fi
  "$bin/rocket-cli" --port $PORT --log-level warn "$bin/bench.json" 2>>"$RESULTS/rocket-$1.log" &
  SERVER_PID=$!
  wait_port $PORT
  sleep 0.5 # let the server settle before its RSS baseline is read
}

# bench VERSION LABEL ARGS...: one run against a fresh server, saved as LABEL.json.
bench() {
  local version=$1 label=$2
  shift 2
  start "$version"
  echo "== $label"
  "$BENCH" run --url "ws://127.0.0.1:$PORT/bench" "${USERS[@]}" --server-pid "$SERVER_PID" \
    --server-name "rocket-$version" --label "$label" --json "$RESULTS/$label.json" --sources 8 "$@" ||
    echo "!! $label failed" | tee -a "$RESULTS/failures.txt"
  stop_server
  sleep 1
}

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "base: $BASE_DESC ($BASE_SHA), server $BASE_BIN/rocket-cli"
  echo "new: $NEW_DESC${NEW_SHA:+ ($NEW_SHA)}, server $NEW_BIN/rocket-cli"
  echo "load generator: the working tree's rocket-bench ($(git rev-parse --short HEAD)$(git diff --quiet HEAD -- rocket-bench || echo ' + uncommitted changes'))"
  echo "rustc: $(rustc --version)"
  echo "server command: rocket-cli --port $PORT --log-level warn scripts/bench.json"
  echo "rounds: $REPEAT; fan-out, latency and many channels: $DURATION s measured per run, after 1 s of warm-up"
  echo "machine busy before the runs: $BACKGROUND% of all cores (other jobs)"
} >"$RESULTS/meta.txt"

START=$SECONDS
for i in $(seq 1 "$REPEAT"); do
  echo "== round $i of $REPEAT"
  # 1. Fan-out, flat out: 1 publisher, 1 channel, 1,000 subscribers, 100-byte data.
  for v in base new; do
    bench "$v" "$v-fanout.$i" --subscribers 1000 --duration "$DURATION"
  done
  # 2. Latency: the same at 100 publishes/s.
  for v in base new; do
    bench "$v" "$v-latency.$i" --subscribers 1000 --rate 100 --duration "$DURATION"
  done
  # 3. Many channels: 1,000 channels x 10 subscribers, 10 publishers, flat out.
  for v in base new; do
    bench "$v" "$v-channels.$i" --subscribers 10000 --channels 1000 --publishers 10 \
      --duration "$DURATION"
  done
  # 4. Idle capacity: 10,000 authenticated, subscribed, idle connections.
  for v in base new; do
    bench "$v" "$v-idle-10000.$i" --mode idle --subscribers 10000 --settle 3
  done
done
echo "== runs took $((SECONDS - START)) s"

RESULTS=$RESULTS REPEAT=$REPEAT BACKGROUND=$BACKGROUND BASE_DESC=$BASE_DESC NEW_DESC=$NEW_DESC \
  python3 - <<'EOF' | tee "$RESULTS/summary.md"
import glob
import json
import os
import statistics

results = os.environ["RESULTS"]
repeat = int(os.environ["REPEAT"])


def runs(version, scenario):
    out = []
    for path in sorted(glob.glob(f"{results}/{version}-{scenario}.*.json")):
        with open(path) as f:
            out.append(json.load(f))
    return out


def server(r, field):
    s = r.get("server") or {}
    return s.get(field)


# (column, scenario, how to read the figure, format)
METRICS = [
    ("deliveries/s", "fanout", lambda r: r["load"]["deliveries_per_second"], lambda v: f"{v / 1000:.0f}k"),
    ("deliveries per server CPU-s", "fanout", lambda r: server(r, "deliveries_per_cpu_second"), lambda v: f"{v / 1000:.0f}k"),
    ("p99 ms at 100 publishes/s", "latency", lambda r: r["latency"]["p99_ms"], lambda v: f"{v:.1f}"),
    ("server µs per delivery at 100 publishes/s", "latency",
     lambda r: 1e6 / server(r, "deliveries_per_cpu_second") if server(r, "deliveries_per_cpu_second") else None,
     lambda v: f"{v:.2f}"),
    ("many channels: deliveries/s", "channels", lambda r: r["load"]["deliveries_per_second"], lambda v: f"{v / 1000:.0f}k"),
    ("many channels: p99 ms", "channels", lambda r: r["latency"]["p99_ms"], lambda v: f"{v:.0f}"),
    ("idle KiB per connection", "idle-10000", lambda r: server(r, "rss_per_connection_kib"), lambda v: f"{v:.2f}"),
]

versions = {"base": os.environ["BASE_DESC"], "new": os.environ["NEW_DESC"]}
medians = {}
warnings = []
rows = []
for v, desc in versions.items():
    cells = []
    counts = []
    for name, scenario, get, fmt in METRICS:
        values = [x for x in (get(r) for r in runs(v, scenario)) if x is not None]
        if not values:
            cells.append("–")
            medians[(v, name)] = None
            continue
        m = statistics.median(values)
        medians[(v, name)] = m
        cells.append(f"**{fmt(m)}** ({fmt(min(values))}–{fmt(max(values))})")
    n_fan = len(runs(v, "fanout"))
    n_lat = len(runs(v, "latency"))
    n_chan = len(runs(v, "channels"))
    n_idle = len(runs(v, "idle-10000"))
    rows.append(f"| {v}: {desc} | {n_fan} + {n_lat} + {n_chan} + {n_idle} | " + " | ".join(cells) + " |")

    for r in runs(v, "fanout") + runs(v, "latency") + runs(v, "channels") + runs(v, "idle-10000"):
        load, setup = r["load"], r["setup"]
        problems = []
        if setup["ready"] < r["subscribers"] or setup["failed"]:
            problems.append(f"{setup['ready']} of {r['subscribers']} subscribers ready, {setup['failed']} failed")
        if load["lost"] or load["duplicated"] or load["reordered"]:
            problems.append(f"lost / dup / reordered {load['lost']} / {load['duplicated']} / {load['reordered']}")
        if load["subscribers_closed"]:
            problems.append(f"{load['subscribers_closed']} subscribers closed")
        if load["deliveries"] < load["deliveries_expected"]:
            problems.append(f"{load['deliveries']} of {load['deliveries_expected']} deliveries received")
        if r.get("errors"):
            problems.append("errors: " + "; ".join(r["errors"][:3]))
        if problems:
            warnings.append(f"- {r['label']}: " + ", ".join(problems))

ratios = []
for name, _, _, _ in METRICS:
    b, n = medians[("base", name)], medians[("new", name)]
    if b and n is not None:
        ratios.append(f"{n / b:.3f}× ({(n / b - 1) * 100:+.1f}%)")
    else:
        ratios.append("–")


def busy(v):
    values = [r["client"].get("machine_busy_percent", 0) for r in runs(v, "fanout")]
    return f"{statistics.median(values):.0f}%" if values else "–"


print()
print(f"## Rocket A/B: {repeat} round(s), base then new in each round, a fresh server per run")
print()
print("| version | runs (fan-out + latency + channels + idle) | deliveries/s "
      "| deliveries per server CPU-s | p99 ms at 100 publishes/s "
      "| server µs per delivery at 100/s | many channels: deliveries/s | many channels: p99 ms "
      "| idle KiB per connection |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for row in rows:
    print(row)
print("| **new / base** (medians) | | " + " | ".join(ratios) + " |")
print()
print("Median of the runs in bold, min–max in brackets. Fan-out: 1 publisher, 1 channel, "
      "1,000 subscribers, 100-byte data, flat out; latency: the same at 100 publishes/s "
      "(lower is better for both of its columns); many channels: 1,000 channels x 10 "
      "subscribers, 10 publishers, flat out; idle: 10,000 authenticated, subscribed idle "
      "connections, server RSS growth per connection. Deliveries per server CPU-second is the "
      "figure that carries over to a machine where the server has the cores to itself.")
print()
print(f"Machine busy before the runs: {os.environ['BACKGROUND']}% of all cores; "
      f"during the fan-out runs (median, load generator and server included): "
      f"base {busy('base')}, new {busy('new')}.")
if warnings:
    print()
    print("**Runs with problems:**")
    print()
    print("\n".join(warnings))
    with open(f"{results}/problems.txt", "w") as f:
        f.write("\n".join(warnings) + "\n")
EOF

status=0
if [[ -f "$RESULTS/failures.txt" ]]; then
  echo "some runs failed:" >&2
  cat "$RESULTS/failures.txt" >&2
  status=1
fi
if [[ -f "$RESULTS/problems.txt" ]]; then
  echo "some runs lost messages or connections (see above): their figures are not comparable" >&2
  status=1
fi
exit $status
