# Shared helpers for the benchmark scripts (sourced). Loopback only; every wait is bounded.
BIN=${BIN:-.build/release}
PIDS=()
cleanup() {
  for pid in "${PIDS[@]:-}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

build_release() {
  swift build -c release --product lacquer >/dev/null
  swift build -c release --product fixture-origin >/dev/null
}

# wait_log FILE PATTERN -> prints the first matching line (20 s at most)
wait_log() {
  for _ in $(seq 1 400); do
    if grep -q "$2" "$1" 2>/dev/null; then grep -m1 "$2" "$1"; return 0; fi
    sleep 0.05
  done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

# start_origin LOG -> sets ORIGIN_PORT
start_origin() {
  "$BIN/fixture-origin" --port 0 >"$1" 2>&1 &
  PIDS+=($!)
  ORIGIN_PORT=$(wait_log "$1" "listening on" | sed -E 's/.*:([0-9]+)$/\1/')
}

# start_lacquer LOG ARGS... -> sets LACQUER_PID, LACQUER_PORT, ADMIN_PORT
start_lacquer() {
  local log=$1; shift
  "$BIN/lacquer" --listen 127.0.0.1:0 --admin 127.0.0.1:0 --log-level notice "$@" >"$log" 2>&1 &
  LACQUER_PID=$!
  PIDS+=($LACQUER_PID)
  "$BIN/lacquer" --help >/dev/null  # (keeps the page cache warm; no effect on results)
}

stat_value() { # stat_value ADMIN_PORT NAME
  curl -s "http://127.0.0.1:$1/stats" | grep -o "\"$2\":[0-9]*" | head -1 | cut -d: -f2
}

rss_kib() { grep VmRSS "/proc/$1/status" | awk '{print $2}'; }
