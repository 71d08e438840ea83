#!/usr/bin/env bash
# Runs seekdb (OceanBase's single-node engine, from PyPI's pylibseekdb) for the engine backend's
# tests and for trying `--backend oceanbase://...` by hand.
#
#   scripts/seekdb.sh start   install (first time) and start it; prints the base URL
#   scripts/seekdb.sh stop    stop it (by pid file) and wait until it is gone
#   scripts/seekdb.sh url     print the base URL if it is running (exit 1 if not)
#
# The base URL is `oceanbase://root@127.0.0.1:PORT/`: tests append a database name of their own
# (`VITRINE_TEST_ENGINE=$(scripts/seekdb.sh start) cargo test -p vitrine-engine`).
#
# Environment: SEEKDB_PORT (default 2881; the next free port is taken when it is busy),
# SEEKDB_DIR (default target/seekdb: data, log, pid file), SEEKDB_WAIT (seconds to wait for SQL,
# default 90).
#
# seekdb listens on every interface whatever it is told; everything here talks to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=1.4.0.post1
# Only for the readiness check (a real login and query).
PYMYSQL=1.2.4
VENV=.venv-seekdb
DIR=${SEEKDB_DIR:-target/seekdb}
PIDFILE=$DIR/seekdb.pid
PORTFILE=$DIR/seekdb.port
LOG=$DIR/seekdb.out
WAIT=${SEEKDB_WAIT:-90}

die() { echo "seekdb.sh: $*" >&2; exit 1; }

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid=$(cat "$PIDFILE")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # A recycled pid is not ours: check that it is still a seekdb.
  grep -q seekdb "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

port_free() {
  # Anything answering on the port, or a listener bound to it on any address, makes it busy.
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null \
    && ! grep -qiE ":$(printf '%04X' "$1") [0-9A-F:]+ 0A" /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# SQL answers: log in as root and run `SELECT 1` (the handshake alone comes before bootstrap ends).
sql_answers() {
  "$VENV/bin/python" - "$1" <<'EOF'
import sys
import pymysql
try:
    c = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root", connect_timeout=2, read_timeout=5)
    with c.cursor() as cur:
        cur.execute("SELECT 1")
        ok = cur.fetchone() == (1,)
    c.close()
    sys.exit(0 if ok else 1)
except Exception:
    sys.exit(1)
EOF
}

url() { echo "oceanbase://root@127.0.0.1:$(cat "$PORTFILE")/"; }

install() {
  if [ ! -x "$VENV/bin/python" ]; then
    if ! python3 -m venv "$VENV" >&2; then
      # Debian's python3 ships venv's pip bootstrap separately.
      rm -rf "$VENV"
      command -v apt-get >/dev/null || die "python3 -m venv failed and there is no apt-get to install python3-venv"
      local sudo_cmd=""
      [ "$(id -u)" = 0 ] || sudo_cmd=sudo
      $sudo_cmd apt-get update -qq >&2 && $sudo_cmd apt-get install -y -qq python3-venv >&2
      python3 -m venv "$VENV" >&2
    fi
  fi
  if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('pylibseekdb') != '$VERSION' or m.version('pymysql') != '$PYMYSQL')" 2>/dev/null; then
    "$VENV/bin/pip" install -q "pylibseekdb==$VERSION" "pymysql==$PYMYSQL" >&2
  fi
}

binary() {
  "$VENV/bin/python" -c "import os, pylibseekdb; print(os.path.join(os.path.dirname(pylibseekdb.__file__), 'seekdb'))"
}

start() {
  if running_pid >/dev/null; then
    url
    return
  fi
  install
  local bin port base
  bin=$(binary)
  [ -x "$bin" ] || die "no seekdb binary at $bin"
  port=${SEEKDB_PORT:-2881}
  [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1024 ] && [ "$port" -le 65000 ] || die "SEEKDB_PORT must be 1024..65000"
  for _ in $(seq 1 50); do
    port_free "$port" && break
    port=$((port + 1))
  done
  port_free "$port" || die "no free port found near ${SEEKDB_PORT:-2881}"
  mkdir -p "$DIR"
  base=$(cd "$DIR" && pwd)/data
  mkdir -p "$base"
  echo "$port" >"$PORTFILE"
  # setsid: its own session, so it outlives this shell and `stop` signals it alone.
  setsid "$bin" --nodaemon --port "$port" --base-dir "$base" \
    --parameter memory_limit=4G --parameter cpu_count=2 \
    --parameter datafile_size=2G --parameter log_disk_size=2G \
    >"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local waited=0
  until sql_answers "$port"; do
    if ! running_pid >/dev/null; then
      tail -n 30 "$LOG" >&2 || true
      die "seekdb exited during startup (log: $LOG)"
    fi
    if [ "$waited" -ge "$WAIT" ]; then
      tail -n 30 "$LOG" >&2 || true
      stop >&2 || true
      die "SQL did not answer on 127.0.0.1:$port within ${WAIT}s (log: $LOG)"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  url
}

stop() {
  local pid
  if ! pid=$(running_pid); then
    rm -f "$PIDFILE"
    return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "seekdb.sh: $pid did not stop within 60s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
    sleep 1
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url)
    running_pid >/dev/null || die "not running"
    url
    ;;
  *) die "usage: $0 start|stop|url" ;;
esac
