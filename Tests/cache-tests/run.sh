#!/usr/bin/env bash
# Runs the public HTTP cache test suite (https://github.com/http-tests/cache-tests) against
# Lacquer, with its server as the origin, and prints the counts and every test that did not pass.
#
#   Tests/cache-tests/run.sh CACHE_TESTS_CHECKOUT [LACQUER_BINARY]
#
# Needs node (18 or later) and npm. The suite's client imports undici only for the interim
# (1xx) tests; without it (no npm registry) a stand-in is put in place, those four tests show as
# failing, and interim-check.mjs runs them with node:http, which reports 1xx answers.
set -euo pipefail
SUITE=$(cd "${1:?usage: run.sh CACHE_TESTS_CHECKOUT [LACQUER_BINARY]}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
LACQUER=${2:-$HERE/../../.build/debug/lacquer}
W=$(mktemp -d /tmp/lacquer-cache-tests-XXXXXX)
PIDS=()
finish() { for pid in "${PIDS[@]:-}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$W"; }
trap finish EXIT
cd "$SUITE"
if [ ! -d node_modules/undici ]; then
  mkdir -p node_modules/undici
  printf '{"name":"undici","version":"0.0.0","type":"module","main":"index.js"}\n' >node_modules/undici/package.json
  printf '// Stand-in: interim responses are not collected (see interim-check.mjs).\nexport class Agent { compose () { return undefined } }\n' >node_modules/undici/index.js
fi
npm_package_config_protocol=http npm_package_config_port=8000 npm_package_config_pidfile="$W/server.pid" \
  node test-engine/server/server.mjs >"$W/server.log" 2>&1 &
PIDS+=($!)
PORT=$((20000 + RANDOM % 20000))
"$LACQUER" --listen 127.0.0.1:$PORT --admin off --backend http://127.0.0.1:8000 --storage-dir "$W/cache" --access-log off >"$W/lacquer.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && curl -s -o /dev/null http://127.0.0.1:8000/ && break; sleep 0.1; done
timeout 900 npm run --silent cli --base="http://127.0.0.1:$PORT" >"$W/results.json"
cp "$HERE/summarize.mjs" "$HERE/interim-check.mjs" "$SUITE/"
node summarize.mjs "$W/results.json"
echo "== interim tests with node:http"
timeout 120 node interim-check.mjs "http://127.0.0.1:$PORT"
