#!/usr/bin/env bash
# Tail latency at equal offered load (issue #19 item 2): Lacquer, nginx (proxy_cache) and Varnish
# (when installed) serve the same cached 1 KiB object over loopback, each at the same constant
# request rate, so the latency distribution shows the tail without the throughput difference.
#
#   Benchmarks/scripts/tail.sh [--quick] [--no-build] [--rounds N] [--duration 10] [--rates "10000 30000"] [--out FILE]
#
# Load: h2load --h1, 50 connections on 2 threads, each connection sending at rate/50 requests
# per second (--rps; a connection waits for its answer before its next request, as HTTP/1.1
# without pipelining does, so a slow answer delays the next one), --log-file per request.
# h2load does not reconnect when a server closes a keep-alive connection, so Lacquer runs with
# --keepalive-requests 1000000, as the nginx here has keepalive_requests 1000000 (Varnish has
# no such limit).
# Reported per cache and rate, from every request of the interleaved rounds put together:
# p50, p99, p99.9 and max latency in ms, the rate achieved and the non-2xx count; then the
# closed-loop p99 of wrk -t2 -c50 (what Benchmarks/run.sh reports) in the same run.
# A benchmark, not a test: it fails only when it cannot run.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
source Benchmarks/scripts/common.sh

QUICK=0; BUILD=1; ROUNDS=""; DURATION=""; RATES=""; OUT=$ROOT/Benchmarks/results/tail-latest.md
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --rates) RATES=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ $QUICK = 1 ]; then ROUNDS=${ROUNDS:-1}; DURATION=${DURATION:-5}; else ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-10}; fi
RATES=${RATES:-"10000 30000"}
CONNECTIONS=50
T_START=$(date +%s)
log() { printf '[%3ds] %s\n' $(( $(date +%s) - T_START )) "$*" >&2; }
PATH=$PATH:/usr/sbin
for tool in h2load:nghttp2-client wrk:wrk nginx:nginx; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || { echo "${tool%%:*} is required (apt-get install -y ${tool#*:})" >&2; exit 1; }
done
HAVE_VARNISH=0; command -v varnishd >/dev/null 2>&1 && HAVE_VARNISH=1

SCRATCH=${SCRATCH:-$ROOT/.build-bench}
[ $BUILD = 1 ] && log "building lacquer (release) into $SCRATCH"
BIN=$(bench_bin "$SCRATCH" $BUILD tail)

bench_workdir tail

declare -A PORT
bench_origin_1k 4096
bench_lacquer_edge --keepalive-requests 1000000
PORT[lacquer]=$LQ_PORT
bench_nginx_edge 4096
PORT[nginx]=$NX_PORT
CACHES=(lacquer nginx)

if [ $HAVE_VARNISH = 1 ]; then
  VA_PORT=$(free_port)
  cat >"$W/varnish.vcl" <<EOF
vcl 4.1;
backend origin { .host = "127.0.0.1"; .port = "$ORIGIN_PORT"; }
EOF
  jail=(); [ "$(id -u)" = 0 ] || jail=(-j none)
  varnishd -F "${jail[@]}" -a "127.0.0.1:$VA_PORT" -T none -f "$W/varnish.vcl" -s malloc,256m -n "$W/varnish" \
    >"$W/varnish.log" 2>&1 &
  STARTED+=($!)
  if wait_port "$VA_PORT"; then PORT[varnish]=$VA_PORT; CACHES+=(varnish); else log "varnishd did not start; no Varnish column"; fi
fi

for c in "${CACHES[@]}"; do for _ in 1 2 3; do curl -s -o /dev/null --max-time 10 "http://127.0.0.1:${PORT[$c]}/1k"; done; done
log "origin :$ORIGIN_PORT; $(for c in "${CACHES[@]}"; do printf '%s :%s ' "$c" "${PORT[$c]}"; done)"

RAW=$W/raw.tsv; : >"$RAW"
for round in $(seq 1 "$ROUNDS"); do
  for rate in $RATES; do
    for c in "${CACHES[@]}"; do
      logfile=$W/h2load-$c-$rate-$round.log
      out=$(timeout $((DURATION + 30)) h2load --h1 -c $CONNECTIONS -t 2 --rps=$((rate / CONNECTIONS)) -D "$DURATION" \
        --log-file="$logfile" "http://127.0.0.1:${PORT[$c]}/1k" 2>&1 || true)
      achieved=$(awk '/^finished in/ {gsub(/,/, "", $4); print $4}' <<<"$out")
      log "rate $rate $c round $round: ${achieved:-?} req/s achieved, $(wc -l <"$logfile" 2>/dev/null || echo 0) requests logged"
      printf '%s\t%s\t%s\t%s\n' "$c" "$rate" "$round" "${achieved:-0}" >>"$RAW"
      sleep 1
    done
  done
  for c in "${CACHES[@]}"; do
    out=$(timeout $((DURATION + 30)) wrk -t2 -c$CONNECTIONS -d"${DURATION}s" --latency "http://127.0.0.1:${PORT[$c]}/1k" 2>&1 || true)
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out"); rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    printf '%s\tclosed\t%s\t%s\t%s\n' "$c" "$round" "${rps:-0}" "${p99:-}" >>"$RAW"
    log "closed loop $c round $round: ${rps:-?} req/s, p99 ${p99:-?}"
  done
done

# Percentiles (nearest rank) over every logged request of a cache at a rate; the log's third
# column is the latency in microseconds, its second the status.
percentiles() { # CACHE RATE -> "p50 p99 p99.9 max non2xx count" (latencies in ms)
  local files=("$W"/h2load-"$1"-"$2"-*.log) bad
  bad=$(cat "${files[@]}" 2>/dev/null | awk -F'\t' '$2 < 200 || $2 > 299 {n++} END {print n + 0}')
  cat "${files[@]}" 2>/dev/null | cut -f3 | sort -n | awk -v bad="$bad" '
    function rank(p,   i) { i = int(p * NR); if (i < p * NR) i++; return i < 1 ? 1 : i }
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "n/a n/a n/a n/a " bad " 0"; exit }
      printf "%.2f %.2f %.2f %.2f %d %d\n", v[rank(0.5)] / 1000, v[rank(0.99)] / 1000, v[rank(0.999)] / 1000, v[NR] / 1000, bad, NR }'
}
mkdir -p "$(dirname "$OUT")"
{
  echo "## Tail latency at equal offered load (Benchmarks/scripts/tail.sh)"
  echo
  echo "$ROUNDS interleaved round(s) of ${DURATION} s per cache and rate. $(date -u '+%Y-%m-%d %H:%M UTC'); lacquer $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); $(nginx -v 2>&1)$( [ $HAVE_VARNISH = 1 ] && printf '; %s' "$(varnishd -V 2>&1 | head -1)")."
  echo "A cached 1 KiB object; 2 event loops / workers / thread pools; h2load --h1 -c $CONNECTIONS -t 2 --rps (per connection: rate / $CONNECTIONS), on the same 2 cores."
  echo "Latencies in ms over every request of the rounds; p99 ratio is Lacquer / the other (below 1: Lacquer's tail is shorter)."
  echo
  echo "| rate (req/s) | cache | achieved req/s | p50 | p99 | p99.9 | max | non-2xx | requests |"
  echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
  for rate in $RATES; do
    for c in "${CACHES[@]}"; do
      read -r p50 p99 p999 max bad count <<<"$(percentiles "$c" "$rate")"
      achieved=$(median $(awk -F'\t' -v c="$c" -v r="$rate" '$1 == c && $2 == r {print $4}' "$RAW"))
      echo "| $rate | $c | ${achieved:-n/a} | $p50 | $p99 | $p999 | $max | $bad | $count |"
      eval "P99_${c}_${rate}=$p99"
    done
  done
  echo
  for rate in $RATES; do
    l=$(eval echo "\${P99_lacquer_${rate}:-}")
    for c in "${CACHES[@]}"; do
      [ "$c" = lacquer ] && continue
      o=$(eval echo "\${P99_${c}_${rate}:-}")
      echo "- p99 at $rate req/s, Lacquer / $c: $(awk -v a="$l" -v b="$o" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2f", a / b }')"
    done
  done
  echo
  echo "Closed loop, wrk -t2 -c$CONNECTIONS (medians of the rounds): $(for c in "${CACHES[@]}"; do
    rps=$(median $(awk -F'\t' -v c="$c" '$1 == c && $2 == "closed" {print $4}' "$RAW"))
    p99=$(awk -F'\t' -v c="$c" '$1 == c && $2 == "closed" {print $5}' "$RAW" | tr '\n' ' ')
    printf '%s %s req/s, p99 %s; ' "$c" "${rps:-n/a}" "${p99:-n/a}"; done)"
} >"$OUT"
cat "$OUT"
log "done; written to $OUT"
