# Shell helpers shared by scripts/bench.sh and scripts/bench-compare.sh (sourced, not run).

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

# The server started last (set by the caller); stop_server ends it: SIGTERM, up to 10 s,
# then SIGKILL.
SERVER_PID=""
stop_server() {
  if [[ -n "$SERVER_PID" ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
