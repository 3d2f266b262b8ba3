#!/usr/bin/env bash
# WebSocket conformance check: runs the Autobahn|Testsuite fuzzingclient against the echo
# example (rocket-tokio/examples/echo.rs), which serves `/echo-raw` through the real server
# stack — rocket-server's connection driver and `Service::websocket_config()` — with
# MaxMessageBytes raised to 16 MiB. Cases 1-7, 9 and 10 (framing, pings, reserved bits,
# opcodes, fragmentation, UTF-8, closing, limits/performance, auto-fragmentation); the
# compression cases 12/13 are out of scope (no permessage-deflate).
#
#   scripts/autobahn.sh                        # the whole run
#   AUTOBAHN_CASES='1.*,5.*' scripts/autobahn.sh   # a subset
#
# How long: wstest takes about 25 s on an idle 2-core machine (case 9 is most of it); the
# first run also builds the release echo example (a few minutes) and may install Python 2
# and the suite (a few minutes more). docs/CONFORMANCE.md has the measured times.
#
# NOT part of .ci/run: it installs Python 2 and the suite and takes minutes. Run it by
# hand after changing rocket-server's driver or the tungstenite settings; results and the
# last run's numbers are in docs/CONFORMANCE.md.
#
# What it needs, installed when missing: CPython 2.7.18 (the suite is Python 2 only; taken
# from pyenv, `pyenv install 2.7.18` if pyenv lacks it) and a virtualenv with
# `autobahntestsuite` and its dependencies at the versions pinned in
# scripts/autobahn/requirements.txt.
#
# Environment:
#   AUTOBAHN_ADDR    where the echo server listens, loopback only (127.0.0.1:9001)
#   AUTOBAHN_CASES   comma-separated case patterns (those of scripts/autobahn/fuzzingclient.json)
#   AUTOBAHN_OUT     output directory (target/autobahn): spec, server log, reports/
#   AUTOBAHN_VENV    the Python 2 virtualenv (~/.cache/rocket-autobahn/venv)
#   AUTOBAHN_PYTHON2 a CPython 2.7 interpreter to build the virtualenv with
#
# Exit status: 0 when every case of the selected groups is OK, NON-STRICT or INFORMATIONAL;
# 1 when one is FAILED or UNIMPLEMENTED (or a group has no result); 2 on a setup error.
# The HTML report is $AUTOBAHN_OUT/reports/index.html.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/scripts/autobahn"
ADDR="${AUTOBAHN_ADDR:-127.0.0.1:9001}"
OUT="${AUTOBAHN_OUT:-$ROOT/target/autobahn}"
VENV="${AUTOBAHN_VENV:-$HOME/.cache/rocket-autobahn/venv}"
AGENT=rocket-echo
PY_VERSION=2.7.18

die() {
    echo "autobahn.sh: $*" >&2
    exit 2
}

case "$ADDR" in
127.* | localhost:*) ;;
*) die "AUTOBAHN_ADDR must be a loopback address (127.x.x.x:port), not $ADDR" ;;
esac

# --- Python 2 and the suite -------------------------------------------------------------
find_python2() {
    if [[ -n "${AUTOBAHN_PYTHON2:-}" ]]; then
        echo "$AUTOBAHN_PYTHON2"
        return
    fi
    local root
    root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
    if [[ -x "$root/versions/$PY_VERSION/bin/python" ]]; then
        echo "$root/versions/$PY_VERSION/bin/python"
        return
    fi
    if command -v pyenv >/dev/null; then
        echo "== pyenv install $PY_VERSION (builds CPython from source, a few minutes)" >&2
        if ! pyenv install -s "$PY_VERSION" >&2; then
            echo "pyenv could not build $PY_VERSION; on Debian its build dependencies are:" >&2
            echo "  apt-get update && apt-get install -y build-essential libssl-dev zlib1g-dev \\" >&2
            echo "    libbz2-dev libreadline-dev libsqlite3-dev libffi-dev libncurses-dev" >&2
            return 1
        fi
        echo "$root/versions/$PY_VERSION/bin/python"
        return
    fi
    if command -v python2.7 >/dev/null; then
        command -v python2.7
        return
    fi
    return 1
}

if [[ ! -x "$VENV/bin/wstest" ]]; then
    PY2="$(find_python2)" || die "no CPython 2.7: install pyenv, or set AUTOBAHN_PYTHON2"
    echo "== creating $VENV with $PY2"
    "$PY2" -m virtualenv --version >/dev/null 2>&1 ||
        "$PY2" -m pip install --disable-pip-version-check -q 'virtualenv<20'
    "$PY2" -m virtualenv -q "$VENV"
    "$VENV/bin/pip" install --disable-pip-version-check -q -r "$HERE/requirements.txt"
fi
echo "== $("$VENV/bin/wstest" -a 2>/dev/null | tr "\n" " ")"

# --- The echo server --------------------------------------------------------------------
echo "== cargo build --release -p rocket-tokio --example echo"
(cd "$ROOT" && cargo build --release -p rocket-tokio --example echo)
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SERVER_BIN="$TARGET_DIR/release/examples/echo"
[[ -x "$SERVER_BIN" ]] || die "built example not found at $SERVER_BIN"

mkdir -p "$OUT"
rm -rf "$OUT/reports"
SERVER_LOG="$OUT/server.log"
HOST="${ADDR%:*}"
PORT="${ADDR##*:}"
if (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; then
    die "something already listens on $ADDR (set AUTOBAHN_ADDR)"
fi

SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -INT "$SERVER_PID" 2>/dev/null || true # graceful: the example waits for Ctrl-C
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap stop_server EXIT
trap 'exit 130' INT TERM

echo "== starting $SERVER_BIN $ADDR (log: $SERVER_LOG)"
RUST_LOG="${RUST_LOG:-warn}" "$SERVER_BIN" "$ADDR" >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "the echo server exited: $(cat "$SERVER_LOG")"
    sleep 0.1
done
(exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null || die "the echo server does not listen on $ADDR"

# --- The fuzzingclient ------------------------------------------------------------------
SPEC="$OUT/fuzzingclient.json"
GROUPS_FILE="$OUT/groups"
"$VENV/bin/python" - "$HERE/fuzzingclient.json" "$SPEC" "$OUT/reports" "ws://$ADDR/echo-raw" \
    "$AGENT" "${AUTOBAHN_CASES:-}" >"$GROUPS_FILE" <<'EOF'
import json, sys
template, spec, outdir, url, agent, cases = sys.argv[1:7]
with open(template) as f:
    s = json.load(f)
s["outdir"] = outdir
s["servers"] = [{"agent": agent, "url": url}]
if cases:
    s["cases"] = [c.strip() for c in cases.split(",") if c.strip()]
with open(spec, "w") as f:
    json.dump(s, f, indent=4)
groups = []
for c in s["cases"]:
    g = c.split(".")[0]
    if g not in groups:
        groups.append(g)
print(" ".join(groups))
EOF
read -r -a CASE_GROUPS <"$GROUPS_FILE"

echo "== wstest -m fuzzingclient -s $SPEC (cases: ${CASE_GROUPS[*]})"
started=$SECONDS
(cd "$OUT" && "$VENV/bin/wstest" -m fuzzingclient -s "$SPEC") >"$OUT/wstest.log" 2>&1 ||
    die "wstest failed; see $OUT/wstest.log"
echo "   done in $((SECONDS - started)) s"
stop_server

echo
echo "== results (report: $OUT/reports/index.html)"
status=0
"$VENV/bin/python" "$HERE/summary.py" "$OUT/reports" "$AGENT" "${CASE_GROUPS[@]}" || status=$?
echo
if [[ $status -eq 0 ]]; then
    echo "PASS: every case is OK, NON-STRICT or INFORMATIONAL"
else
    echo "FAIL: some cases are FAILED or UNIMPLEMENTED"
fi
exit "$status"
