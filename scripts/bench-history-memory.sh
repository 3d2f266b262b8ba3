#!/usr/bin/env bash
# Memory of a whole server with 10,000 channels of full history (History Size 100): starts
# target/release/rocket-cli on scripts/bench-history.json (with MaxSubscriptionsPerClient 0),
# fills every channel's history over WebSocket with the history_memory example, and prints
# the server's resident set before and after.
#
#   scripts/bench-history-memory.sh            # 10,000 channels, 100 bytes of data
#   scripts/bench-history-memory.sh 10000 1000 # 1,000 bytes of data
set -euo pipefail
cd "$(dirname "$0")/.."
CHANNELS=${1:-10000}
DATA=${2:-100}
PORT=${PORT:-9781}
cargo build --release -p rocket-cli -p rocket-tokio --example history_memory
config=$(mktemp --suffix=.json)
# The bench's History hub, without a subscription limit: one client holds every channel.
sed 's/"MaxConnectionsPerIp": 0,/"MaxConnectionsPerIp": 0,\n\t\t"MaxSubscriptionsPerClient": 0,/' \
  scripts/bench-history.json >"$config"
target/release/rocket-cli --port "$PORT" --log-level warn "$config" &
server=$!
trap 'kill $server 2>/dev/null; rm -f "$config"' EXIT
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
target/release/examples/history_memory "ws://127.0.0.1:$PORT/bench" "$server" "$CHANNELS" "$DATA"
