#!/usr/bin/env bash
# Many connections (issue #19 item 6): Lacquer and nginx (proxy_cache) serve the same cached 1 KiB
# object with 50 and with 10,000 keep-alive connections, and hold 10,000 idle ones, over loopback.
#
#   Benchmarks/scripts/connections.sh [--quick] [--no-build] [--rounds N] [--duration 10s] [--out FILE]
#
# Reports, medians of interleaved rounds (Lacquer, nginx, Lacquer, ...):
#   hit-1k-c50     wrk -t2 -c50 requests/s
#   hit-1k-c10k    wrk -t2 -c10000 requests/s (after the 10,000 connections are open: a 3 s run
#                  opens them, the measured run reuses nothing, so wrk's own connect time is
#                  spread the same way for both servers)
#   10k/50         the ratio of the two (goal for Lacquer: >= 0.9)
#   CPU per request  of the server (/proc: Lacquer's process, nginx's workers) and of wrk (bash's
#                  `time`) in both runs, and from them the 10k/50 ratio a server whose CPU per
#                  request did not grow at all would reach on these shared cores: with the
#                  cores saturated, req/s is about cores / (server + wrk CPU per request), so the
#                  ceiling is (server50 + wrk50) / (server50 + wrk10k)
#   idle bytes     resident memory added per idle keep-alive connection: 10,000 connections
#                  that each made one request, held open; (RSS with them - RSS before) / 10,000
#                  (nginx: its workers' RSS summed), measured first, on servers as they started
# A benchmark, not a test: it fails only when it cannot run.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
source Benchmarks/scripts/common.sh

QUICK=0; BUILD=1; ROUNDS=""; DURATION=""; OUT=$ROOT/Benchmarks/results/connections-latest.md
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ $QUICK = 1 ]; then ROUNDS=${ROUNDS:-1}; DURATION=${DURATION:-5s}; else ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-10s}; fi
DURATION_S=${DURATION%s}
MANY=10000
T_START=$(date +%s)
log() { printf '[%3ds] %s\n' $(( $(date +%s) - T_START )) "$*" >&2; }
PATH=$PATH:/usr/sbin
for tool in wrk:wrk nginx:nginx python3:python3; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || { echo "${tool%%:*} is required (apt-get install -y ${tool#*:})" >&2; exit 1; }
done
# 10,000 client sockets and 10,000 server sockets, plus slack.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((MANY + 1000)) ]; then
  echo "open files limit $(ulimit -n) is below $((MANY + 1000)); raise it (ulimit -n)" >&2; exit 1
fi

SCRATCH=${SCRATCH:-$ROOT/.build-bench}
[ $BUILD = 1 ] && log "building lacquer (release) into $SCRATCH"
BIN=$(bench_bin "$SCRATCH" $BUILD connections)

bench_workdir connections

bench_origin_1k 20000
bench_lacquer_edge
bench_nginx_edge 20000

declare -A PORT=([lacquer]=$LQ_PORT [nginx]=$NX_PORT)
CACHES=(lacquer nginx)
for c in "${CACHES[@]}"; do for _ in 1 2 3; do curl -s -o /dev/null --max-time 10 "http://127.0.0.1:${PORT[$c]}/1k"; done; done
log "lacquer :$LQ_PORT, nginx :$NX_PORT"

# Resident memory of a server: Lacquer's process, nginx's workers.
server_rss_kib() {
  case $1 in
    lacquer) rss_kib "$LQ_PID" ;;
    nginx) local total=0; for pid in $(pgrep -P "$(cat "$N/nginx.pid")"); do total=$((total + $(rss_kib "$pid"))); done; echo $total ;;
  esac
}

# Holds COUNT idle keep-alive connections to PORT, each after one complete request; prints
# "ready" once all are open and answered, then waits for stdin to close.
cat >"$W/idle.py" <<'EOF'
import selectors, socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
request = b"GET /1k HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
sockets, pending = [], {}
sel = selectors.DefaultSelector()
for _ in range(count):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    sockets.append(s)
    sel.register(s, selectors.EVENT_WRITE)
answered = 0
import time
deadline = time.time() + 120
while answered < count and time.time() < deadline:
    for key, events in sel.select(timeout=1):
        s = key.fileobj
        if events & selectors.EVENT_WRITE:
            s.send(request)
            sel.modify(s, selectors.EVENT_READ)
            pending[s] = b""
        elif events & selectors.EVENT_READ:
            data = s.recv(65536)
            pending[s] += data
            head, _, body = pending[s].partition(b"\r\n\r\n")
            if b"\r\n\r\n" in pending[s] and len(body) >= 1024:
                sel.unregister(s)
                answered += 1
print("ready" if answered == count else f"only {answered}", flush=True)
sys.stdin.read()
EOF

RAW=$W/raw.tsv; : >"$RAW"
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW"; log "$1 $2 round $3: $4"; }
# Idle connections first, while each server is as it started (a load run leaves memory in its
# allocator that new connections would reuse, hiding their cost).
for c in "${CACHES[@]}"; do
  before=$(server_rss_kib "$c")
  coproc IDLE { python3 "$W/idle.py" "${PORT[$c]}" $MANY; }
  read -r -t 150 status <&"${IDLE[0]}" || status="timeout"
  sleep 1
  after=$(server_rss_kib "$c")
  eval "exec ${IDLE[1]}>&-"
  wait "$IDLE_PID" 2>/dev/null || true
  if [ "$status" = ready ]; then
    record idle-bytes "$c" 1 "$(( (after - before) * 1024 / MANY ))"
  else
    log "idle connections to $c: $status"
  fi
  sleep 2
done
# CPU time (user + system, clock ticks) of a server: Lacquer's process, nginx's workers.
TICK_HZ=$(getconf CLK_TCK)
server_ticks() {
  local pids
  case $1 in
    lacquer) pids=$LQ_PID ;;
    nginx) pids=$(pgrep -P "$(cat "$N/nginx.pid")") ;;
  esac
  local total=0 pid
  for pid in $pids; do total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
  echo $total
}
# wrk_measured NAME CACHE ROUND CONNECTIONS URL [WRK ARGS...]: one measured wrk run; records its
# req/s as NAME, and the CPU microseconds per request of the server and of wrk itself (bash's
# `time`: wrk's user + system) as NAME-cpu-server and NAME-cpu-wrk.
wrk_measured() {
  local name=$1 c=$2 round=$3 conns=$4 url=$5; shift 5
  local t0 t1 out requests TIMEFORMAT='%3U %3S'
  t0=$(server_ticks "$c")
  { time timeout $((DURATION_S + 40)) wrk -t2 -c"$conns" -d"$DURATION" "$@" "$url" >"$W/wrk.out" 2>&1 || true; } 2>"$W/wrk.time"
  t1=$(server_ticks "$c")
  out=$(cat "$W/wrk.out")
  record "$name" "$c" "$round" "$(awk '/^Requests\/sec/ {print $2}' <<<"$out")"
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  [ -n "$requests" ] && [ "$requests" -gt 0 ] || return 0
  record "$name-cpu-server" "$c" "$round" "$(awk -v t=$((t1 - t0)) -v hz="$TICK_HZ" -v q="$requests" 'BEGIN {printf "%.1f", t * 1e6 / hz / q}')"
  record "$name-cpu-wrk" "$c" "$round" "$(awk -v q="$requests" '{printf "%.1f", ($1 + $2) * 1e6 / q}' "$W/wrk.time")"
}
for round in $(seq 1 "$ROUNDS"); do
  for c in "${CACHES[@]}"; do
    url="http://127.0.0.1:${PORT[$c]}/1k"
    wrk_measured c50 "$c" "$round" 50 "$url"
    # The measured 10k run follows a short one that opens the connections (and lets the server
    # grow its buffers); wrk opens its own again, so both servers see the same connect storm.
    timeout 40 wrk -t2 -c$MANY -d3s --timeout 10s "$url" >/dev/null 2>&1 || true
    wrk_measured c10k "$c" "$round" $MANY "$url" --timeout 10s
    sleep 2
  done
done

col() { awk -F'\t' -v s="$1" -v c="$2" '$1 == s && $2 == c {print $4}' "$RAW"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'; }
mkdir -p "$(dirname "$OUT")"
{
  echo "## Many connections (Benchmarks/scripts/connections.sh)"
  echo
  echo "$ROUNDS interleaved round(s) of $DURATION, medians. $(date -u '+%Y-%m-%d %H:%M UTC'); lacquer $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); $(nginx -v 2>&1)."
  echo "A cached 1 KiB object, 2 event loops / workers each, origin nginx (1 worker), wrk -t2 on the same 2 cores; idle: $MANY keep-alive connections that each made one request."
  echo
  echo "| measure | Lacquer | nginx | L/nginx | goal |"
  echo "|---|---:|---:|---:|---|"
  l50=$(median $(col c50 lacquer)); n50=$(median $(col c50 nginx))
  lmany=$(median $(col c10k lacquer)); nmany=$(median $(col c10k nginx))
  echo "| hit-1k, 50 connections (req/s) | ${l50:-n/a} | ${n50:-n/a} | $(ratio "$l50" "$n50") | |"
  echo "| hit-1k, $MANY connections (req/s) | ${lmany:-n/a} | ${nmany:-n/a} | $(ratio "$lmany" "$nmany") | |"
  echo "| $MANY / 50 connections | $(ratio "$lmany" "$l50") | $(ratio "$nmany" "$n50") | | Lacquer >= 0.9 |"
  declare -A cpu
  for c in "${CACHES[@]}"; do for m in c50-cpu-server c50-cpu-wrk c10k-cpu-server c10k-cpu-wrk; do
    cpu[$c-$m]=$(median $(col "$m" "$c")); done; done
  echo "| server CPU µs per request, 50 / $MANY connections | ${cpu[lacquer-c50-cpu-server]:-n/a} / ${cpu[lacquer-c10k-cpu-server]:-n/a} | ${cpu[nginx-c50-cpu-server]:-n/a} / ${cpu[nginx-c10k-cpu-server]:-n/a} | | reported |"
  echo "| wrk CPU µs per request, 50 / $MANY connections | ${cpu[lacquer-c50-cpu-wrk]:-n/a} / ${cpu[lacquer-c10k-cpu-wrk]:-n/a} | ${cpu[nginx-c50-cpu-wrk]:-n/a} / ${cpu[nginx-c10k-cpu-wrk]:-n/a} | | reported |"
  # With the cores saturated, req/s is about cores / (server + wrk CPU per request). Were the
  # server's cost per request the same with $MANY connections as with 50, the ratio would be
  # (server50 + wrk50) / (server50 + wrk10k): what wrk's own growth leaves reachable.
  ceiling() { awk -v s="$1" -v w="$2" -v w2="$3" 'BEGIN { if (s == "" || w == "" || w2 == "") print "n/a"; else printf "%.2f\n", (s + w) / (s + w2) }'; }
  echo "| $MANY / 50 if the server's CPU per request did not grow | $(ceiling "${cpu[lacquer-c50-cpu-server]}" "${cpu[lacquer-c50-cpu-wrk]}" "${cpu[lacquer-c10k-cpu-wrk]}") | $(ceiling "${cpu[nginx-c50-cpu-server]}" "${cpu[nginx-c50-cpu-wrk]}" "${cpu[nginx-c10k-cpu-wrk]}") | | reported |"
  li=$(median $(col idle-bytes lacquer)); ni=$(median $(col idle-bytes nginx))
  echo "| resident bytes per idle connection | ${li:-n/a} | ${ni:-n/a} | $(ratio "$li" "$ni") | reported |"
} >"$OUT"
cat "$OUT"
log "done; written to $OUT"
