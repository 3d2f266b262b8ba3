# Shell helpers shared by scripts/bench.sh, scripts/bench-cluster.sh and
# scripts/bench-compare.sh (sourced, not run).

# How busy the machine is before we start (other jobs skew every figure): percent of all
# cores over 3 s, from /proc/stat.
machine_busy() {
  local a b
  read -r -a a < <(grep '^cpu ' /proc/stat)
  sleep 3
  read -r -a b < <(grep '^cpu ' /proc/stat)
  local busy=0 total=0 i d
  for i in 1 2 3 4 5 6 7 8; do
    d=$((b[i] - a[i]))
    total=$((total + d))
    if ((i != 4 && i != 5)); then busy=$((busy + d)); fi
  done
  echo $((total > 0 ? busy * 100 / total : 0))
}

# Sets BACKGROUND to machine_busy's reading, prints it, and warns above 15%.
record_machine_busy() {
  BACKGROUND=$(machine_busy)
  echo "== machine busy before the runs: $BACKGROUND% of all cores"
  if ((BACKGROUND > 15)); then
    echo "!! the machine is already $BACKGROUND% busy: the figures will be lower than on a quiet machine" >&2
  fi
}

# stop_pid PID: SIGTERM, up to 10 s, then SIGKILL (a child of this shell).
stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# The server started last (set by the caller); stop_server ends it.
SERVER_PID=""
stop_server() {
  if [[ -n "$SERVER_PID" ]]; then
    stop_pid "$SERVER_PID"
    SERVER_PID=""
  fi
}

# port_open PORT: whether something listens on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port FROM: the first port from FROM up where nothing listens on 127.0.0.1.
free_port() {
  local port=$1
  while port_open "$port"; do
    port=$((port + 1))
  done
  echo "$port"
}

# listening PORT: waits up to 10 s for a listener on 127.0.0.1:PORT.
listening() {
  for _ in $(seq 1 100); do
    if port_open "$1"; then
      return 0
    fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

# Scenario 7, the cluster: Rocket nodes joined through one redis-server, against one node
# with the same parameters. Callers set BENCH, CLI, CONFIG, RESULTS, DURATION and USERS.
#
# start_nodes N [redis]: starts N rocket-cli on free ports from 9781 (and, with `redis`, a
# redis-server on a free port from 6390 first, that they all join, each /ready before the
# run); sets NODE_PIDS, REDIS_PID and TARGETS (the --url/--server-pid/--backplane-pid
# options of rocket-bench run). Returns non-zero when one did not start.
NODE_PIDS=()
REDIS_PID=""
TARGETS=()
start_nodes() {
  local count=$1 with_redis=${2:-} redis=() port n
  TARGETS=()
  if [[ -n "$with_redis" ]]; then
    port=$(free_port 6390)
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      >>"$RESULTS/redis.log" 2>&1 &
    REDIS_PID=$!
    listening "$port" || return 1
    redis=(--redis "redis://127.0.0.1:$port/0")
    TARGETS+=(--backplane-pid "$REDIS_PID")
    echo "   redis-server on port $port (pid $REDIS_PID)"
  fi
  port=9781
  for n in $(seq 1 "$count"); do
    port=$(free_port "$port")
    "$CLI" "${redis[@]}" --port "$port" --log-level warn "$CONFIG" \
      2>>"$RESULTS/node-$n.log" &
    NODE_PIDS+=($!)
    listening "$port" || return 1
    TARGETS+=(--url "ws://127.0.0.1:$port/bench" --server-pid "${NODE_PIDS[-1]}")
    port=$((port + 1))
  done
  if [[ -n "$with_redis" ]]; then
    local url
    for url in "${TARGETS[@]}"; do
      [[ $url == ws://* ]] || continue
      url=${url#ws://}
      url="http://${url%%/*}/ready"
      for _ in $(seq 1 50); do
        curl -sf -o /dev/null "$url" && break
        sleep 0.1
      done
      curl -sf -o /dev/null "$url" || {
        echo "$url: not ready" >&2
        return 1
      }
    done
  fi
  sleep 0.5 # let the servers settle before their RSS baselines are read
}

# stop_nodes: stops what start_nodes started, the nodes first.
stop_nodes() {
  local pid
  for pid in "${NODE_PIDS[@]}"; do
    stop_pid "$pid"
  done
  NODE_PIDS=()
  if [[ -n "$REDIS_PID" ]]; then
    stop_pid "$REDIS_PID"
    REDIS_PID=""
  fi
}

# cluster_bench NODES LABEL ARGS...: one run against fresh nodes (3: a cluster with its
# Redis; 1: one node without), saved as LABEL.json.
cluster_bench() {
  local nodes=$1 label=$2
  shift 2
  local backplane=""
  if ((nodes > 1)); then
    backplane=redis
  fi
  echo "== $label"
  if start_nodes "$nodes" $backplane; then
    "$BENCH" run "${TARGETS[@]}" "${USERS[@]}" --server-name rocket --label "$label" \
      --json "$RESULTS/$label.json" --sources 8 "$@" ||
      echo "!! $label failed" | tee -a "$RESULTS/failures.txt"
  else
    echo "!! $label: the servers did not start" | tee -a "$RESULTS/failures.txt"
  fi
  stop_nodes
  sleep 1
}

# cluster_round SUFFIX: one round of scenario 7, one node and three in turn, flat out and at
# 100 publishes/s, with 1,000 subscribers, and one node with a third of them (a cluster
# node's share); labels end in SUFFIX ("" for the first round, ".2", ".3" after).
cluster_round() {
  local s=$1
  cluster_bench 1 "rocket-cluster-single-fanout$s" --subscribers 1000 --duration "$DURATION"
  cluster_bench 3 "rocket-cluster-fanout$s" --subscribers 1000 --duration "$DURATION"
  cluster_bench 1 "rocket-cluster-single-latency$s" --subscribers 1000 --rate 100 --duration "$DURATION"
  cluster_bench 3 "rocket-cluster-latency$s" --subscribers 1000 --rate 100 --duration "$DURATION"
  cluster_bench 1 "rocket-cluster-single-third$s" --subscribers 333 --duration "$DURATION"
}
