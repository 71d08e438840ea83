#!/usr/bin/env bash
# Browser tests of the shopper page and the admin dashboard (tests/browser, Debian's Chromium driven by
# playwright-core under `node --test`). Indexes the demo catalog into a temporary data dir, starts
# `vitrine serve` on a free port, runs the tests against it and stops the server on exit.
#   VITRINE_BIN        the binary to test (default target/debug/vitrine; build it first)
#   VITRINE_MODEL      model dir (default models/tiny-clip)
#   VITRINE_PORT       port to serve on (default: a free one)
#   VITRINE_ADMIN_KEY  admin key (default: a random one)
#   CHROMIUM_PATH      browser (default /usr/bin/chromium; installed with apt-get when missing)
#   Extra arguments go to `node --test` (e.g. --test-name-pattern=photo).
# Screenshots land in artifacts/screenshots/, server logs in artifacts/browser-tests/ when a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

export CHROMIUM_PATH=${CHROMIUM_PATH:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM_PATH" ]; then
  if [ "$CHROMIUM_PATH" = /usr/bin/chromium ] && command -v apt-get >/dev/null; then
    echo "browser-tests: installing chromium with apt-get"
    sudo_cmd=""
    [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
  else
    echo "browser-tests: no browser at $CHROMIUM_PATH (set CHROMIUM_PATH or install chromium)" >&2
    exit 1
  fi
fi
command -v node >/dev/null || { echo "browser-tests: node (>= 18) is needed" >&2; exit 1; }

echo "browser-tests: npm ci in tests/browser"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

bin=${VITRINE_BIN:-target/debug/vitrine}
if [ ! -x "$bin" ]; then
  echo "browser-tests: $bin not found; build it first (cargo build --bin vitrine) or set VITRINE_BIN" >&2
  exit 1
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
model=${VITRINE_MODEL:-models/tiny-clip}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vitrine-browser.XXXXXX")
server_pid=""
cleanup() {
  local rc=$?
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ "$rc" != 0 ] && [ -d "$tmp" ]; then
    mkdir -p artifacts/browser-tests
    cp "$tmp"/*.log artifacts/browser-tests/ 2>/dev/null || true
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=${VITRINE_PORT:-$(node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")}
export VITRINE_ADMIN_KEY=${VITRINE_ADMIN_KEY:-$(node -e "console.log(require('crypto').randomBytes(16).toString('hex'))")}
export VITRINE_URL="http://127.0.0.1:$port"

echo "browser-tests: indexing demo/catalog.jsonl"
if ! "$bin" index demo/catalog.jsonl --data "$tmp/data" --model "$model" --device cpu >"$tmp/index.log" 2>&1; then
  echo "browser-tests: indexing failed:" >&2
  tail -n 40 "$tmp/index.log" >&2
  exit 1
fi

echo "browser-tests: starting vitrine serve on $VITRINE_URL"
"$bin" serve --data "$tmp/data" --model "$model" --device cpu --bind "127.0.0.1:$port" \
  --admin-key "$VITRINE_ADMIN_KEY" --media-root "$root/demo" >"$tmp/server.log" 2>&1 &
server_pid=$!

ready=0
for _ in $(seq 1 120); do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "browser-tests: the server exited early:" >&2
    tail -n 40 "$tmp/server.log" >&2
    exit 1
  fi
  if node -e "fetch(process.argv[1]).then(r=>process.exit(r.status===200?0:1),()=>process.exit(1))" "$VITRINE_URL/readyz" 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.5
done
if [ "$ready" != 1 ]; then
  echo "browser-tests: $VITRINE_URL/readyz not ready after 60 s:" >&2
  tail -n 40 "$tmp/server.log" >&2
  exit 1
fi

export SCREENSHOT_DIR="$root/artifacts/screenshots"
mkdir -p "$SCREENSHOT_DIR"
rm -f "$SCREENSHOT_DIR"/*.png

echo "browser-tests: running node --test"
status=0
(cd tests/browser && node --test --test-concurrency=1 "$@" ./*.test.mjs) || status=$?
if [ "$status" != 0 ]; then
  echo "browser-tests: FAILED (screenshots in artifacts/screenshots/, server log tail below)" >&2
  tail -n 40 "$tmp/server.log" >&2
  exit "$status"
fi
echo "browser-tests: all passed; screenshots in artifacts/screenshots/"
