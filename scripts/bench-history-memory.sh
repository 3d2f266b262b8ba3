#!/usr/bin/env bash
# Memory of a whole server with 10,000 channels of full history (History Size 100): starts
# target/release/rocket-cli on scripts/bench-history.json (with MaxSubscriptionsPerClient 0),
# fills every channel's history over WebSocket with the history_memory example, and prints
# the server's resident set before and after. With CLUSTER=1 the server is a cluster node
# on its own redis-server, which keeps the histories: Redis's used memory is printed too.
#
#   scripts/bench-history-memory.sh            # 10,000 channels, 100 bytes of data
#   scripts/bench-history-memory.sh 10000 1000 # 1,000 bytes of data
#   CLUSTER=1 scripts/bench-history-memory.sh  # in a cluster's Redis (needs redis-server)
set -euo pipefail
cd "$(dirname "$0")/.."
CHANNELS=${1:-10000}
DATA=${2:-100}
PORT=${PORT:-9781}
# Two builds: with --example, cargo would build only the example of each package named.
cargo build --release -p rocket-cli
cargo build --release -p rocket-tokio --example history_memory
config=$(mktemp --suffix=.json)
# The bench's History hub, without a subscription limit: one client holds every channel.
sed 's/"MaxConnectionsPerIp": 0,/"MaxConnectionsPerIp": 0,\n\t\t"MaxSubscriptionsPerClient": 0,/' \
  scripts/bench-history.json >"$config"
redis=()
redis_pid=""
if [[ -n "${CLUSTER:-}" ]]; then
  REDIS_PORT=${REDIS_PORT:-6391}
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
  redis_pid=$!
  for _ in $(seq 1 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis=(--redis "redis://127.0.0.1:$REDIS_PORT/0")
fi
used_memory() { redis-cli -p "$REDIS_PORT" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p'; }
target/release/rocket-cli "${redis[@]}" --port "$PORT" --log-level warn "$config" &
server=$!
trap 'kill $server $redis_pid 2>/dev/null; rm -f "$config"' EXIT
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
if [[ -n "$redis_pid" ]]; then
  sleep 1
  before=$(used_memory)
fi
target/release/examples/history_memory "ws://127.0.0.1:$PORT/bench" "$server" "$CHANNELS" "$DATA"
if [[ -n "$redis_pid" ]]; then
  after=$(used_memory)
  echo "redis used_memory: $((before / 1024)) KiB before, $((after / 1024)) KiB after:" \
    "$(((after - before) / 1048576)) MiB for the histories," \
    "$(((after - before) / (CHANNELS * 100))) bytes per kept broadcast"
fi
