#!/usr/bin/env bash
# Lacquer at the edge against nginx (TLS + http2 + proxy_cache) and Varnish behind hitch, over
# loopback, with the same origin, certificate (ECDSA P-256) and cores (issue #17).
#
#   Benchmarks/scripts/edge.sh [--quick] [--no-build] [--rounds N] [--duration 10s] [--out FILE]
#                              [--only "tls-hit-1k h2-hit-1k handshake resumed"]
#
# Scenarios, rounds interleaved (Lacquer, nginx, hitch+Varnish, Lacquer, ...), medians reported
# with the ratios Lacquer/nginx and Lacquer/(hitch+Varnish):
#   tls-hit-1k   wrk over HTTPS with keep-alive (HTTP/1.1), a cached 1 KiB object
#   h2-hit-1k    h2load, HTTP/2 over TLS (ALPN h2), 10 streams per connection, the same object
#   handshake    full TLS handshakes per second: wrk with "Connection: close" (one handshake a request)
#   resumed      resumed handshakes per second: two `openssl s_time -reuse` clients
# Writes a markdown table to --out (default Benchmarks/results/edge-latest.md). A benchmark, not a
# test: it fails only when it cannot run.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
source Benchmarks/scripts/common.sh

QUICK=0; BUILD=1; ROUNDS=""; DURATION=""; OUT=$ROOT/Benchmarks/results/edge-latest.md
SCENARIOS="tls-hit-1k h2-hit-1k handshake resumed"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --out) OUT=$2; shift ;;
    --only) SCENARIOS=$2; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ $QUICK = 1 ]; then ROUNDS=${ROUNDS:-1}; DURATION=${DURATION:-3s}; else ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-10s}; fi
DURATION_S=${DURATION%s}
THREADS=2; CONNECTIONS=64; H2_STREAMS=10
T_START=$(date +%s)
log() { printf '[%3ds] %s\n' $(( $(date +%s) - T_START )) "$*" >&2; }
PATH=$PATH:/usr/sbin
for tool in wrk:wrk nginx:nginx h2load:nghttp2-client openssl:openssl; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || { echo "${tool%%:*} is required (apt-get install -y ${tool#*:})" >&2; exit 1; }
done
HAVE_VARNISH=1
command -v varnishd >/dev/null 2>&1 && command -v hitch >/dev/null 2>&1 || HAVE_VARNISH=0

SCRATCH=${SCRATCH:-$ROOT/.build-bench}
[ $BUILD = 1 ] && log "building lacquer (release) into $SCRATCH"
BIN=$(bench_bin "$SCRATCH" $BUILD edge)

bench_workdir edge

# One certificate for everyone: ECDSA P-256 (what most sites serve now).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/key.pem" -out "$W/cert.pem" \
  -days 2 -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost" 2>/dev/null
cat "$W/cert.pem" "$W/key.pem" >"$W/hitch.pem"

# The origin: nginx, 1 worker, a 1 KiB file with a long max-age.
O=$W/origin; mkdir -p "$O/www"; head -c 1024 /dev/urandom >"$O/www/1k"
ORIGIN_PORT=$(free_port)
bench_nginx_conf "$O" 1 4096 "  server { listen 127.0.0.1:$ORIGIN_PORT; root $O/www; location = /1k { add_header Cache-Control \"max-age=86400\"; } }" >"$O/nginx.conf"
bench_start_nginx "$O" "$ORIGIN_PORT" http

# Lacquer: TLS listener, same certificate, 2 event loops.
LQ_PORT=$(free_port)
"$BIN/lacquer" --listen-tls 127.0.0.1:$LQ_PORT --tls-cert "$W/cert.pem" --tls-key "$W/key.pem" --admin off \
  --backend "http://127.0.0.1:$ORIGIN_PORT" --threads $THREADS --log-level warning --access-log off \
  --storage-dir "$W/lacquer-store" >"$W/lacquer.log" 2>&1 &
STARTED+=($!)
wait_port "$LQ_PORT" https || { cat "$W/lacquer.log" >&2; exit 1; }

# nginx: TLS + http2 + proxy_cache, 2 workers, session cache and tickets on (nginx's defaults
# are tickets on, no shared cache; a shared cache is what a tuned site runs).
N=$W/nginx; mkdir -p "$N/cache"
NX_PORT=$(free_port)
bench_nginx_conf "$N" $THREADS 4096 "  proxy_cache_path $N/cache levels=1:2 keys_zone=edge:64m max_size=1g inactive=1d use_temp_path=off;
  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NX_PORT ssl http2 reuseport backlog=4096;
    ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m; ssl_session_tickets on;
    location / {
      proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\";
      proxy_cache edge; proxy_cache_lock on;
      add_header X-Cache-Status \$upstream_cache_status always;
    }
  }" >"$N/nginx.conf"
bench_start_nginx "$N" "$NX_PORT" https

# Varnish behind hitch (PROXY v2 between them, ALPN h2 and http/1.1, HTTP/2 on in Varnish).
if [ $HAVE_VARNISH = 1 ]; then
  VA_PORT=$(free_port); HI_PORT=$(free_port)
  cat >"$W/varnish.vcl" <<EOF
vcl 4.1;
backend origin { .host = "127.0.0.1"; .port = "$ORIGIN_PORT"; }
EOF
  jail=(); [ "$(id -u)" = 0 ] || jail=(-j none)
  varnishd -F "${jail[@]}" -a "127.0.0.1:$VA_PORT,PROXY" -T none -f "$W/varnish.vcl" -s malloc,256m -n "$W/varnish" \
    -p feature=+http2 >"$W/varnish.log" 2>&1 &
  STARTED+=($!)
  hitch_user=(); [ "$(id -u)" = 0 ] && hitch_user=(--user nobody)
  hitch --frontend="[127.0.0.1]:$HI_PORT" --backend="[127.0.0.1]:$VA_PORT" --write-proxy-v2=on --workers=$THREADS \
    --alpn-protos="h2,http/1.1" --tls-protos="TLSv1.2 TLSv1.3" "${hitch_user[@]}" "$W/hitch.pem" >"$W/hitch.log" 2>&1 &
  STARTED+=($!)
  wait_port "$HI_PORT" https || { log "hitch+Varnish did not start; their columns stay empty"; cat "$W/hitch.log" "$W/varnish.log" >&2; HAVE_VARNISH=0; }
fi

declare -A URL=([lacquer]="https://127.0.0.1:$LQ_PORT" [nginx]="https://127.0.0.1:$NX_PORT")
CACHES=(lacquer nginx)
if [ $HAVE_VARNISH = 1 ]; then URL[varnish]="https://127.0.0.1:$HI_PORT"; CACHES+=(varnish); fi
for c in "${CACHES[@]}"; do
  for _ in 1 2 3; do curl -sk -o /dev/null --max-time 10 "${URL[$c]}/1k"; done
  for _ in 1 2 3; do curl -sk -o /dev/null --max-time 10 --http2 "${URL[$c]}/1k"; done
done
log "lacquer ${URL[lacquer]}, nginx ${URL[nginx]}, ${URL[varnish]:-no hitch+varnish}"

RAW=$W/raw.tsv; : >"$RAW"
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW"; log "$1 $2 round $3: $4"; }
cat >"$W/close.lua" <<'EOF'
wrk.headers["Connection"] = "close"
EOF
runs() { [[ " $SCENARIOS " == *" $1 "* ]]; }
for round in $(seq 1 "$ROUNDS"); do
  runs tls-hit-1k && for c in "${CACHES[@]}"; do
    out=$(timeout $((DURATION_S + 30)) wrk -t$THREADS -c$CONNECTIONS -d"$DURATION" "${URL[$c]}/1k" 2>&1 || true)
    record tls-hit-1k "$c" "$round" "$(awk '/^Requests\/sec/ {print $2}' <<<"$out")"
  done
  runs h2-hit-1k && for c in "${CACHES[@]}"; do
    out=$(timeout $((DURATION_S + 30)) h2load -c $CONNECTIONS -m $H2_STREAMS -t $THREADS -D "$DURATION_S" --warm-up-time=1 "${URL[$c]}/1k" 2>&1 || true)
    ok=$(awk '/^requests:/ {for (i = 1; i <= NF; i++) if ($i == "succeeded,") print $(i-1)}' <<<"$out")
    proto=$(awk '/Application protocol:/ {print $3}' <<<"$out")
    rps=$(awk -v ok="${ok:-0}" -v d="$DURATION_S" 'BEGIN { printf "%.0f\n", ok / d }')
    [ "$proto" = "h2" ] || rps=""
    record h2-hit-1k "$c" "$round" "$rps"
  done
  runs handshake && for c in "${CACHES[@]}"; do
    out=$(timeout $((DURATION_S + 30)) wrk -t$THREADS -c16 -d"$DURATION" -s "$W/close.lua" "${URL[$c]}/1k" 2>&1 || true)
    record handshake "$c" "$round" "$(awk '/^Requests\/sec/ {print $2}' <<<"$out")"
  done
  runs resumed && for c in "${CACHES[@]}"; do
    hostport=${URL[$c]#https://}
    clients=()
    for k in 1 2; do
      timeout $((DURATION_S + 20)) openssl s_time -connect "$hostport" -reuse -time "$DURATION_S" >"$W/stime-$k.txt" 2>&1 &
      clients+=($!)
    done
    wait "${clients[@]}" || true
    # Each s_time prints "N connections in T real seconds" for its resumed connections (after
    # one full handshake): the rate is the sum of N / T.
    rps=$(cat "$W"/stime-*.txt | awk '/connections in [0-9]+ real seconds/ { if ($4 > 0) s += $1 / $4 } END { printf "%.0f\n", s }')
    record resumed "$c" "$round" "$rps"
  done
done

col() { awk -F'\t' -v s="$1" -v c="$2" '$1 == s && $2 == c {print $4}' "$RAW"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'; }
mkdir -p "$(dirname "$OUT")"
{
  echo "## At the edge: TLS, HTTP/2 and handshakes (Benchmarks/scripts/edge.sh)"
  echo
  echo "$ROUNDS interleaved round(s) of $DURATION per scenario and server; medians. $(date -u '+%Y-%m-%d %H:%M UTC'); lacquer $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); $(nginx -v 2>&1); $( [ $HAVE_VARNISH = 1 ] && { varnishd -V 2>&1 | head -1; echo '  behind '; hitch --version 2>&1 | head -1; } | tr -d '\n' || echo 'no hitch+Varnish')."
  echo "Same ECDSA P-256 certificate, 2 event loops / workers each, origin nginx (1 worker) on the same 2 cores; load generators: wrk -t$THREADS -c$CONNECTIONS (keep-alive), h2load -c$CONNECTIONS -m$H2_STREAMS -t$THREADS, wrk -c16 with Connection: close (one full handshake per request), 2 x openssl s_time -reuse."
  echo
  echo "| scenario | Lacquer | nginx | hitch+Varnish | L/nginx | L/(hitch+Varnish) | goal |"
  echo "|---|---:|---:|---:|---:|---:|---|"
  for s in $SCENARIOS; do
    l=$(median $(col $s lacquer)); n=$(median $(col $s nginx)); v=$(median $(col $s varnish))
    case $s in tls-hit-1k|h2-hit-1k) goal="L/nginx >= 1.0" ;; *) goal="L/nginx >= 0.8" ;; esac
    echo "| $s (per s) | ${l:-n/a} | ${n:-n/a} | ${v:-n/a} | $(ratio "$l" "$n") | $(ratio "$l" "$v") | $goal |"
  done
} >"$OUT"
cat "$OUT"
log "done; written to $OUT"
