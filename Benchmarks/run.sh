#!/usr/bin/env bash
# Lacquer against Varnish and nginx proxy_cache, over loopback, with the same origin (issue #7).
#
#   Benchmarks/run.sh [--quick] [--no-build] [--rounds N] [--duration 10s] [--keep] [--no-edge]
#
# Scenarios: hit-1k, hit-100k, disk-hit, pass, coalesced miss, resident memory per object; then
# (unless --no-edge) Benchmarks/scripts/edge.sh: TLS and HTTP/2 hits and handshakes per second
# against nginx and hitch+Varnish, whose table is appended to the results.
# Throughput rounds are interleaved (Lacquer, Varnish, nginx, Lacquer, ...) and the median of
# each is reported with the ratios Lacquer/Varnish and Lacquer/nginx. The table is printed and
# written to Benchmarks/results/latest.md (raw rounds in latest-raw.tsv). See Benchmarks/README.md.
# A benchmark, not a test: it fails only when it cannot run, never on a missed target.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source Benchmarks/scripts/common.sh

QUICK=0; BUILD=1; KEEP=0; ROUNDS=""; DURATION=""; EDGE=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --keep) KEEP=1 ;;
    --no-edge) EDGE=0 ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ $QUICK = 1 ]; then
  ROUNDS=${ROUNDS:-2}; DURATION=${DURATION:-3s}; COALESCE_ROUNDS=1
else
  ROUNDS=${ROUNDS:-5}; DURATION=${DURATION:-10s}; COALESCE_ROUNDS=3
fi
DURATION_S=${DURATION%s}
THREADS=2            # wrk threads, Lacquer event loops, nginx workers: the machine's 2 cores
CONNECTIONS=64       # wrk -c
MEMORY_OBJECTS=10000 # resident-memory scenario
DISK_KEYS=200        # disk-hit scenario: 200 distinct 16 KiB objects
COALESCE_CLIENTS=100
COALESCE_DELAY_MS=1000
RESULTS=$ROOT/Benchmarks/results
mkdir -p "$RESULTS"
T_START=$(date +%s)
log() { printf '[%3ds] %s\n' $(( $(date +%s) - T_START )) "$*" >&2; }

# --- tools ------------------------------------------------------------------------------------
APT_UPDATED=0
ensure_tool() { # COMMAND PACKAGE -> installs PACKAGE with apt-get when COMMAND is missing and we can
  command -v "$1" >/dev/null 2>&1 && return 0
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "installing $2"
    if [ $APT_UPDATED = 0 ]; then timeout 300 apt-get update -qq >/dev/null 2>&1 || true; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "$2" >/dev/null 2>&1 || true
  fi
  command -v "$1" >/dev/null 2>&1
}
ensure_tool wrk wrk || { echo "wrk is required (apt-get install -y wrk)" >&2; exit 1; }
ensure_tool nginx nginx || { echo "nginx is required for the origin (apt-get install -y nginx)" >&2; exit 1; }
HAVE_VARNISH=1; ensure_tool varnishd varnish || HAVE_VARNISH=0
PATH=$PATH:/usr/sbin

# --- build ------------------------------------------------------------------------------------
SCRATCH=${SCRATCH:-$ROOT/.build-bench}
if [ $BUILD = 1 ]; then
  log "building lacquer and fixture-origin (release) into $SCRATCH"
  mkdir -p "$SCRATCH"
  BIN=$(build_release_scratch "$SCRATCH" 2>"$SCRATCH/bench-build.log" | tail -1) || {
    tail -30 "$SCRATCH/bench-build.log" >&2; exit 1; }
else
  BIN=$(swift build -c release --scratch-path "$SCRATCH" --show-bin-path)
fi
[ -x "$BIN/lacquer" ] && [ -x "$BIN/fixture-origin" ] || { echo "no binaries in $BIN" >&2; exit 1; }
T_START=$(date +%s) # the < 2 minute budget of --quick excludes installs and the build
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- processes --------------------------------------------------------------------------------
W=$(mktemp -d /tmp/lacquer-bench-XXXXXX)
chmod 755 "$W" # Varnish's manager reads the VCL as its own (jail) user
ALL_PIDS=(); STOPPED=" "; declare -A PNAME
stop_pid() { # PID: TERM, wait at most 5 s, then KILL
  local pid=$1
  STOPPED="$STOPPED$pid "
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
finish() {
  for pid in "${ALL_PIDS[@]:-}"; do [ -n "$pid" ] && stop_pid "$pid"; done
  if [ $KEEP = 1 ]; then echo "work folder kept: $W" >&2; else rm -rf "$W"; fi
}
trap finish EXIT
trap 'exit 130' INT TERM

NGINX_USER=""; [ "$(id -u)" = 0 ] && NGINX_USER="user $(id -un) $(id -gn);"
nginx_common() { # DIR: the lines both nginx instances share
  cat <<EOF
$NGINX_USER
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; multi_accept on; }
EOF
}
nginx_http_common() { # DIR
  cat <<EOF
  access_log off;
  sendfile on; tcp_nopush off; tcp_nodelay on;
  keepalive_requests 1000000; keepalive_timeout 300s;
  default_type application/octet-stream;
  client_body_temp_path $1/client_temp; proxy_temp_path $1/proxy_temp;
  fastcgi_temp_path $1/fastcgi_temp; uwsgi_temp_path $1/uwsgi_temp; scgi_temp_path $1/scgi_temp;
EOF
}
start_nginx() { # DIR PORT -> sets NGINX_PID (the master; config in DIR/nginx.conf)
  nginx -p "$1" -c "$1/nginx.conf" -g 'daemon off;' >"$1/stderr.log" 2>&1 &
  NGINX_PID=$!
  ALL_PIDS+=($NGINX_PID); PNAME[$NGINX_PID]="nginx $(basename "$1")"
  wait_port "$2" || { cat "$1/stderr.log" "$1/error.log" >&2; return 1; }
}

# fixture-origin: the slow location (/delay/MS/...) behind the origin nginx.
"$BIN/fixture-origin" --port 0 >"$W/fixture.log" 2>&1 &
ALL_PIDS+=($!); PNAME[$!]="fixture-origin"
FIXTURE_PORT=$(wait_log "$W/fixture.log" "listening on" | sed -E 's/.*:([0-9]+)$/\1/')

# The origin: nginx, 1 worker, static files with a long max-age, an uncacheable and a slow location.
O=$W/origin; mkdir -p "$O/www/pass"
ORIGIN_PORT=$(free_port)
head -c 1024 /dev/urandom >"$O/www/1k"
head -c 16384 /dev/urandom >"$O/www/16k"
head -c 102400 /dev/urandom >"$O/www/100k"
head -c 1048576 /dev/urandom >"$O/www/1m"
cp "$O/www/1k" "$O/www/pass/1k"
{ nginx_common "$O"; echo "worker_processes 1;"; cat <<EOF
http {
$(nginx_http_common "$O")
  log_format uri '\$request_uri';
  upstream fixture { server 127.0.0.1:$FIXTURE_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$ORIGIN_PORT backlog=4096;
    root $O/www;
    location = /1k   { add_header Cache-Control "max-age=86400"; }
    location = /16k  { add_header Cache-Control "max-age=86400"; }
    location = /100k { add_header Cache-Control "max-age=86400"; }
    location = /1m   { add_header Cache-Control "max-age=86400"; }
    location /pass/  { add_header Cache-Control "no-store"; }
    # /slow/MS/anything?cc=... -> fixture-origin /delay/MS/anything (Cache-Control from cc=).
    location /slow/ {
      access_log $O/slow.log uri;
      proxy_pass http://fixture/delay/;
      proxy_http_version 1.1; proxy_set_header Connection "";
    }
  }
}
EOF
} >"$O/nginx.conf"
start_nginx "$O" "$ORIGIN_PORT"
ORIGIN="http://127.0.0.1:$ORIGIN_PORT"
log "origin nginx on $ORIGIN_PORT (fixture-origin on $FIXTURE_PORT)"

# Lacquer: start_lacq NAME ARGS... -> sets LQ_PID LQ_PORT LQ_ADMIN
start_lacq() {
  # Ports chosen here: at --log-level notice Lacquer does not log its "listening on" lines (info).
  local name=$1; shift
  LQ_PORT=$(free_port); LQ_ADMIN=$(free_port)
  while [ "$LQ_ADMIN" = "$LQ_PORT" ]; do LQ_ADMIN=$(free_port); done
  "$BIN/lacquer" --listen 127.0.0.1:$LQ_PORT --admin 127.0.0.1:$LQ_ADMIN --backend "$ORIGIN" \
    --threads $THREADS --log-level notice --access-log off --storage-dir "$W/$name-store" "$@" >"$W/$name.log" 2>&1 &
  LQ_PID=$!
  ALL_PIDS+=($LQ_PID); PNAME[$LQ_PID]="lacquer $name (log: $name.log)"
  wait_port "$LQ_PORT" || { cat "$W/$name.log" >&2; return 1; }
  wait_port "$LQ_ADMIN"
}

# Varnish: start_varnish NAME STORAGE -> sets VA_PID (manager) VA_CHILD VA_PORT VA_N
# Defaults kept: thread_pools=2 (one per core), thread_pool_min=100, thread_pool_max=5000.
start_varnish() {
  local name=$1 storage=$2
  VA_N=$W/$name; mkdir -p "$VA_N"
  VA_PORT=$(free_port)
  cat >"$W/$name.vcl" <<EOF
vcl 4.1;
backend origin { .host = "127.0.0.1"; .port = "$ORIGIN_PORT"; }
sub vcl_deliver {
  if (obj.hits > 0) { set resp.http.X-Cache-Status = "HIT"; } else { set resp.http.X-Cache-Status = "MISS"; }
}
EOF
  local jail=(); [ "$(id -u)" = 0 ] || jail=(-j none)
  varnishd -F "${jail[@]}" -a "127.0.0.1:$VA_PORT" -T none -f "$W/$name.vcl" -s "$storage" -n "$VA_N" \
    >"$W/$name.log" 2>&1 &
  VA_PID=$!
  ALL_PIDS+=($VA_PID); PNAME[$VA_PID]="varnishd $name"
  wait_port "$VA_PORT" || { cat "$W/$name.log" >&2; return 1; }
  VA_CHILD=$(pgrep -P "$VA_PID" | head -1)
}
varnish_stat() { # VA_N FIELD
  varnishstat -n "$1" -1 -f "$2" 2>/dev/null | awk '{print $2}' | head -1
}

# nginx proxy_cache: 2 workers, cache on disk (always), proxy_cache_lock on, keepalive upstream.
# No proxy_cache_valid: the origin's Cache-Control decides, as for Lacquer and Varnish.
start_nginx_cache() { # NAME -> sets NX_PID NX_PORT NX_DIR
  NX_DIR=$W/$1; mkdir -p "$NX_DIR/cache"
  NX_PORT=$(free_port)
  { nginx_common "$NX_DIR"; echo "worker_processes $THREADS;"; cat <<EOF
http {
$(nginx_http_common "$NX_DIR")
  open_file_cache max=20000 inactive=120s; open_file_cache_valid 120s; open_file_cache_errors on;
  proxy_cache_path $NX_DIR/cache levels=1:2 keys_zone=bench:64m max_size=2g inactive=1d use_temp_path=off;
  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NX_PORT reuseport backlog=4096;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_cache bench;
      proxy_cache_lock on; proxy_cache_lock_timeout 10s;
      proxy_buffers 32 16k;
      add_header X-Cache-Status \$upstream_cache_status always;
    }
  }
}
EOF
  } >"$NX_DIR/nginx.conf"
  start_nginx "$NX_DIR" "$NX_PORT"
  NX_PID=$NGINX_PID
}
nginx_pids() { echo "$1" $(pgrep -P "$1"); }

# --- measurement helpers ----------------------------------------------------------------------
RAW=$W/raw.tsv
printf 'scenario\tcache\tround\trps\tp99_ms\tnon2xx\tsocket_errors\n' >"$RAW"
to_ms() { # wrk latency (850.00us, 1.23ms, 2.01s, 1.00m) -> milliseconds
  awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf "%.3f\n", n }'
}
run_wrk() { # SCENARIO CACHE ROUND URL [LUA]
  local scenario=$1 cache=$2 round=$3 url=$4 lua=${5:-}
  local out=$W/wrk-$scenario-$cache-$round.txt
  local args=(-t$THREADS -c$CONNECTIONS -d"$DURATION" --latency)
  [ -n "$lua" ] && args+=(-s "$lua")
  timeout $((DURATION_S + 30)) wrk "${args[@]}" "$url" >"$out" 2>&1 || true
  local rps p99 non2xx errors
  rps=$(awk '/^Requests\/sec/ {print $2}' "$out")
  p99=$(awk '$1 == "99%" {print $2}' "$out")
  [ -n "$p99" ] && p99=$(to_ms "$p99")
  non2xx=$(awk '/Non-2xx or 3xx/ {print $NF}' "$out"); non2xx=${non2xx:-0}
  errors=$(awk '/Socket errors/ { s = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) s += $i; print s }' "$out")
  errors=${errors:-0}
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$cache" "$round" "${rps:-0}" "${p99:-}" "$non2xx" "$errors" >>"$RAW"
  log "$scenario $cache round $round: ${rps:-?} req/s, p99 ${p99:-?} ms, non-2xx $non2xx, socket errors $errors"
  if [ -z "$rps" ]; then log "wrk output:"; cat "$out" >&2; fi
}
cache_status() { # URL -> the X-Cache-Status of one GET
  curl -s -o /dev/null -D - --max-time 10 "$1" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-cache-status" {print $2}'
}
warm() { # URL: two GETs, then checks that a third one is a HIT (warns otherwise)
  curl -s -o /dev/null --max-time 10 "$1"; curl -s -o /dev/null --max-time 10 "$1"
  local s; s=$(cache_status "$1")
  [ "$s" = "HIT" ] || log "WARNING: $1 is not a HIT after warming (X-Cache-Status: ${s:-none})"
}

# --- instances --------------------------------------------------------------------------------
declare -A URL
CACHES=(lacquer)
start_lacq lacquer --memory 256MiB --disk-size 1GiB
LACQ_PORT=$LQ_PORT; LACQ_ADMIN=$LQ_ADMIN; LACQ_PID=$LQ_PID
URL[lacquer]=http://127.0.0.1:$LACQ_PORT
start_lacq lacquer-disk --memory 64KiB --disk-size 1GiB
LACQD_PORT=$LQ_PORT; LACQD_ADMIN=$LQ_ADMIN
URL[lacquer-disk]=http://127.0.0.1:$LACQD_PORT
if [ $HAVE_VARNISH = 1 ]; then
  if start_varnish varnish malloc,256m; then
    CACHES+=(varnish); VARN_N=$VA_N; URL[varnish]=http://127.0.0.1:$VA_PORT
    start_varnish varnish-disk "file,$W/varnish-disk.bin,256m"
    VARND_N=$VA_N; URL[varnish-disk]=http://127.0.0.1:$VA_PORT
  else
    log "WARNING: varnishd does not start here; Varnish columns will be empty"; HAVE_VARNISH=0
  fi
fi
start_nginx_cache nginx-cache
CACHES+=(nginx); URL[nginx]=http://127.0.0.1:$NX_PORT; URL[nginx-disk]=http://127.0.0.1:$NX_PORT
log "lacquer on $LACQ_PORT (disk-hit instance on $LACQD_PORT), ${URL[varnish]:-no varnish}, nginx on $NX_PORT"

cat >"$W/disk.lua" <<EOF
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/16k?d=" .. (counter % $DISK_KEYS))
end
EOF

# Warm every cache for the hit scenarios.
for c in "${CACHES[@]}"; do
  warm "${URL[$c]}/1k"; warm "${URL[$c]}/100k"
  d=${URL[$c-disk]}
  curl -s -o /dev/null --max-time 60 "$d/16k?d=[0-$((DISK_KEYS - 1))]"
  curl -s -o /dev/null --max-time 60 "$d/16k?d=[0-$((DISK_KEYS - 1))]"
  warm "$d/16k?d=7"
done
for _ in $(seq 1 100); do [ "$(stat_value "$LACQD_ADMIN" disk_stored)" -ge $DISK_KEYS ] && break; sleep 0.05; done
LACQD_DISK_HIT0=$(stat_value "$LACQD_ADMIN" disk_hit); LACQD_CACHE_HIT0=$(stat_value "$LACQD_ADMIN" cache_hit)
log "warmed; lacquer-disk disk_stored=$(stat_value "$LACQD_ADMIN" disk_stored)"

# --- throughput rounds, interleaved -----------------------------------------------------------
for round in $(seq 1 "$ROUNDS"); do
  for c in "${CACHES[@]}"; do run_wrk hit-1k "$c" "$round" "${URL[$c]}/1k"; done
  for c in "${CACHES[@]}"; do run_wrk hit-100k "$c" "$round" "${URL[$c]}/100k"; done
  for c in "${CACHES[@]}"; do run_wrk disk-hit "$c" "$round" "${URL[$c-disk]}" "$W/disk.lua"; done
  for c in "${CACHES[@]}"; do run_wrk pass "$c" "$round" "${URL[$c]}/pass/1k"; done
done
LACQD_DISK_HITS=$(( $(stat_value "$LACQD_ADMIN" disk_hit) - LACQD_DISK_HIT0 ))
LACQD_HITS=$(( $(stat_value "$LACQD_ADMIN" cache_hit) - LACQD_CACHE_HIT0 ))
curl -s "http://127.0.0.1:$LACQ_ADMIN/stats" >"$W/lacquer-stats-after-throughput.json" || true
curl -s "http://127.0.0.1:$LACQD_ADMIN/stats" >"$W/lacquer-disk-stats.json" || true

# --- coalesced miss: 100 concurrent clients on a cold URL whose origin answer takes 1 s ---------
declare -A FETCHES STATUSES
origin_fetches() { grep -c -F "$1" "$O/slow.log" 2>/dev/null || true; }
backend_req() { # CACHE -> the cache's own count of backend requests
  case $1 in
    lacquer) stat_value "$LACQ_ADMIN" backend_req ;;
    varnish) varnish_stat "$VARN_N" MAIN.backend_req ;;
    nginx) echo "-" ;;
  esac
}
for round in $(seq 1 "$COALESCE_ROUNDS"); do
  for c in "${CACHES[@]}"; do
    tag="coal-$c-$round-$RANDOM"
    u="${URL[$c]}/slow/$COALESCE_DELAY_MS/$tag?cc=max-age%3D86400"
    args=(); for _ in $(seq 1 $COALESCE_CLIENTS); do args+=(-o /dev/null "$u"); done
    before=$(backend_req "$c")
    timeout 60 curl -s --no-progress-meter -Z --parallel-immediate --parallel-max $COALESCE_CLIENTS --max-time 30 \
      -w '%{http_code} %header{x-cache-status} %{time_total}\n' "${args[@]}" >"$W/$tag.txt" 2>>"$W/curl.err" || true
    sleep 0.3
    after=$(backend_req "$c")
    n=$(origin_fetches "$tag"); ok=$(grep -c '^200 ' "$W/$tag.txt" || true)
    FETCHES[$c]="${FETCHES[$c]:-} $n"; STATUSES[$c]="${STATUSES[$c]:-} $ok"
    printf 'coalesce\t%s\t%s\t%s\t\t%s\t\n' "$c" "$round" "$n" "$((COALESCE_CLIENTS - ok))" >>"$RAW"
    slowest=$(awk '{print $3}' "$W/$tag.txt" | sort -g | tail -1)
    statuses=$(awk '{print $1 "/" ($2 == "" ? "-" : $2)}' "$W/$tag.txt" | sort | uniq -c | awk '{printf "%s %s, ", $1, $2}')
    bdelta="-"; [ "$before" != "-" ] && [ -n "$before" ] && [ -n "$after" ] && bdelta=$((after - before))
    log "coalesce $c round $round: origin fetches $n (cache's backend_req +$bdelta), 200s $ok/$COALESCE_CLIENTS, slowest ${slowest}s; ${statuses%, }"
  done
done

# --- resident memory after warming 10,000 distinct 1 KiB objects (fresh instances) -------------
declare -A MEM_BYTES MEM_HITS
mem_of() { # CACHE PID -> KiB (Lacquer, Varnish child: VmRSS; nginx: summed Pss of master + workers)
  case $1 in
    nginx) pss_kib $(nginx_pids "$2") ;;
    *) rss_kib "$2" ;;
  esac
}
measure_memory() { # CACHE BASEURL PID
  local c=$1 base=$2 pid=$3
  curl -s -o /dev/null --max-time 60 "$base/pass/1k?w=[1-200]"   # connections, threads, buffers
  curl -s -o /dev/null --max-time 30 "$base/1k"
  sleep 0.5
  local before after
  before=$(mem_of "$c" "$pid")
  timeout 300 curl -s --no-progress-meter -Z --parallel-max 8 --max-time 60 -o /dev/null -w '%{http_code}\n' \
    "$base/1k?i=[1-$MEMORY_OBJECTS]" >"$W/mem-$c.txt" 2>>"$W/curl.err" || true
  sleep 1
  after=$(mem_of "$c" "$pid")
  local ok hits
  ok=$(grep -c '^200$' "$W/mem-$c.txt" || true)
  hits=$(curl -s -o /dev/null -D - --max-time 30 "$base/1k?i=[1-100]" | tr -d '\r' | grep -ci '^x-cache-status: HIT' || true)
  MEM_BYTES[$c]=$(( (after - before) * 1024 / MEMORY_OBJECTS ))
  MEM_HITS[$c]="$hits/100"
  log "memory $c: ${before} KiB -> ${after} KiB, $((MEM_BYTES[$c])) B/object; $ok/$MEMORY_OBJECTS answered 200; re-read sample $hits/100 HIT"
}
start_lacq lacquer-mem --memory 256MiB --disk-size 1GiB
measure_memory lacquer "http://127.0.0.1:$LQ_PORT" "$LQ_PID"
curl -s "http://127.0.0.1:$LQ_ADMIN/stats" >"$W/lacquer-mem-stats.json" || true
stop_pid "$LQ_PID"
start_lacq lacquer-mem0 --memory 256MiB --disk-size 0   # the same without the disk tier (its index)
measure_memory lacquer-memonly "http://127.0.0.1:$LQ_PORT" "$LQ_PID"
stop_pid "$LQ_PID"
if [ $HAVE_VARNISH = 1 ]; then
  start_varnish varnish-mem malloc,256m
  measure_memory varnish "http://127.0.0.1:$VA_PORT" "$VA_CHILD"
fi
start_nginx_cache nginx-mem
measure_memory nginx "http://127.0.0.1:$NX_PORT" "$NX_PID"

# --- did anything crash? ----------------------------------------------------------------------
CRASHES=""
for pid in "${ALL_PIDS[@]}"; do
  case "$STOPPED" in *" $pid "*) continue ;; esac
  kill -0 "$pid" 2>/dev/null || CRASHES="$CRASHES $pid (${PNAME[$pid]:-?})"
done
LACQ_ERRORS=$(grep -iE "error|fatal|crash|panic" "$W"/lacquer*.log | grep -v "listening on" | head -20 || true)

# --- report -----------------------------------------------------------------------------------
T_END=$(date +%s)
col() { # SCENARIO CACHE FIELD(4=rps,5=p99,6=non2xx,7=errors) -> values of every round
  awk -F'\t' -v s="$1" -v c="$2" -v f="$3" '$1 == s && $2 == c {print $f}' "$RAW"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'; }
# Targets are judged on the unrounded ratio: 3.40 ms against 3.39 ms is 1.003, shown as 1.00 but missed.
exact() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.6f\n", a / b }'; }
fmt() { [ -z "$1" ] && echo "n/a" || awk -v v="$1" 'BEGIN { if (v >= 100) printf "%.0f\n", v; else printf "%.2f\n", v }'; }
verdict() { # VALUE OP TARGET
  [ "$1" = "n/a" ] && { echo "n/a"; return; }
  awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN { ok = (op == ">=") ? v >= t : v <= t; print ok ? "met" : "MISSED" }'
}
declare -A MED
for s in hit-1k hit-100k disk-hit pass; do
  for c in lacquer varnish nginx; do
    MED[$s,$c,rps]=$(median $(col $s $c 4)); MED[$s,$c,p99]=$(median $(col $s $c 5))
    MED[$s,$c,bad]=$(col $s $c 6 | awk '{s += $1} END {print s + 0}')
    MED[$s,$c,err]=$(col $s $c 7 | awk '{s += $1} END {print s + 0}')
  done
done
md=$W/latest.md
{
  echo "# Lacquer benchmark results"
  echo
  if [ $QUICK = 1 ]; then
    echo "**Quick run ($ROUNDS rounds of ${DURATION}): indicative only.**"
  else
    echo "Full run: $ROUNDS interleaved rounds of ${DURATION} per scenario and cache."
  fi
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); took $((T_END - T_START)) s (build and installs excluded)"
  echo "- machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
  echo "- load average at start / end: $LOAD_START / $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared: other work competes for the same cores)"
  echo "- lacquer $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' + uncommitted changes'), $(swift --version 2>/dev/null | head -1)"
  echo "- $( [ $HAVE_VARNISH = 1 ] && varnishd -V 2>&1 | head -1 || echo 'varnish: not available'); $(nginx -v 2>&1); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
  echo "- wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency; Lacquer --threads $THREADS; nginx worker_processes $THREADS; Varnish default thread pools (2 pools, 100-5000 threads each); origin nginx 1 worker"
  echo
  echo "Requests per second (median) and p99 latency (median of the rounds' p99, ms). Ratios: Lacquer/Varnish and Lacquer/nginx for req/s (higher is better for Lacquer), and for p99 (lower is better for Lacquer)."
  echo
  echo "| scenario | Lacquer req/s | Varnish req/s | nginx req/s | L/V req/s | L/N req/s | Lacquer p99 | Varnish p99 | nginx p99 | L/V p99 | L/N p99 | target | met? |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
  for s in hit-1k hit-100k disk-hit pass; do
    lr=${MED[$s,lacquer,rps]}; vr=${MED[$s,varnish,rps]}; nr=${MED[$s,nginx,rps]}
    lp=${MED[$s,lacquer,p99]}; vp=${MED[$s,varnish,p99]}; np=${MED[$s,nginx,p99]}
    rv=$(ratio "$lr" "$vr"); rn=$(ratio "$lr" "$nr"); pv=$(ratio "$lp" "$vp"); pn=$(ratio "$lp" "$np")
    xrv=$(exact "$lr" "$vr"); xrn=$(exact "$lr" "$nr"); xpv=$(exact "$lp" "$vp"); xpn=$(exact "$lp" "$np")
    case $s in
      hit-1k) target="L/V >= 1.5, L/N >= 1.0, p99 <= both"
        a=$(verdict "$xrv" ">=" 1.5); b=$(verdict "$xrn" ">=" 1.0); c1=$(verdict "$xpv" "<=" 1.0); c2=$(verdict "$xpn" "<=" 1.0)
        if [ "$a$b$c1$c2" = "metmetmetmet" ]; then met=met; else met="req/s V:$a N:$b; p99 V:$c1 N:$c2"; fi ;;
      hit-100k) target="L/V >= 1.2"; met=$(verdict "$xrv" ">=" 1.2) ;;
      pass) target="L/V >= 1.2 (nginx: see note)"; met=$(verdict "$xrv" ">=" 1.2) ;;
      *) target="-"; met="-" ;;
    esac
    echo "| $s | $(fmt "$lr") | $(fmt "$vr") | $(fmt "$nr") | $rv | $rn | $(fmt "$lp") | $(fmt "$vp") | $(fmt "$np") | $pv | $pn | $target | $met |"
  done
  echo
  echo "Coalesced miss: $COALESCE_CLIENTS concurrent clients on a cold URL whose origin answer takes ${COALESCE_DELAY_MS} ms; origin fetches counted in the origin's access log (ideal: 1)."
  echo
  echo "| cache | origin fetches (median) | per round | 200 responses per round |"
  echo "|---|---:|---|---|"
  for c in lacquer varnish nginx; do
    [ -n "${FETCHES[$c]:-}" ] || { echo "| $c | n/a | | |"; continue; }
    echo "| $c | $(median ${FETCHES[$c]}) | ${FETCHES[$c]# } | ${STATUSES[$c]# } (of $COALESCE_CLIENTS) |"
  done
  echo
  limit=$(awk 'BEGIN { printf "%.0f", 1024 * 1.3 + 300 }')
  echo "Resident memory after warming $MEMORY_OBJECTS distinct 1 KiB objects (fresh instances; (after - before) / $MEMORY_OBJECTS). Target for Lacquer: <= 1024 x 1.3 + 300 = $limit bytes per object."
  echo
  echo "| cache | bytes per object | x payload | re-read sample | what is measured |"
  echo "|---|---:|---:|---|---|"
  for c in lacquer lacquer-memonly varnish nginx; do
    [ -n "${MEM_BYTES[$c]:-}" ] || { echo "| $c | n/a | | | |"; continue; }
    case $c in
      lacquer) what="VmRSS of the process (--memory 256MiB --disk-size 1GiB); target $(verdict "${MEM_BYTES[$c]}" "<=" "$limit")" ;;
      lacquer-memonly) what="the same with --disk-size 0 (no disk tier); target $(verdict "${MEM_BYTES[$c]}" "<=" "$limit")" ;;
      varnish) what="VmRSS of the child (cache) process, -s malloc" ;;
      nginx) what="Pss of master + workers (bodies live in files: page cache, not counted)" ;;
    esac
    echo "| $c | ${MEM_BYTES[$c]} | $(awk -v b="${MEM_BYTES[$c]}" 'BEGIN { printf "%.2f", b / 1024 }') | ${MEM_HITS[$c]} HIT | $what |"
  done
  echo
  echo "Errors under load (sum over rounds): non-2xx responses / socket errors (connect, read, write, timeout)."
  echo
  echo "| scenario | Lacquer | Varnish | nginx |"
  echo "|---|---|---|---|"
  for s in hit-1k hit-100k disk-hit pass; do
    echo "| $s | ${MED[$s,lacquer,bad]} / ${MED[$s,lacquer,err]} | ${MED[$s,varnish,bad]} / ${MED[$s,varnish,err]} | ${MED[$s,nginx,bad]} / ${MED[$s,nginx,err]} |"
  done
  echo
  echo "Notes:"
  echo "- disk-hit: $DISK_KEYS distinct 16 KiB objects; Lacquer runs with --memory 64KiB so they are served by its disk tier ($LACQD_DISK_HITS of $LACQD_HITS Lacquer hits in this scenario were disk hits); Varnish uses -s file (mmap: reads come from the page cache); nginx proxy_cache always serves from files."
  echo "- pass: the origin answers Cache-Control: no-store. nginx with proxy_cache_lock on serialises requests for an uncacheable URL (waiters poll every 500 ms), so its pass number is not a fair comparison; the target is against Varnish."
  echo "- Every cache runs on the same 2 cores as wrk and the origin, so req/s measures the whole loop (client + cache + origin on misses)."
  if [ -n "$CRASHES" ]; then echo "- PROCESSES THAT DIED during the run:$CRASHES"; fi
  if [ -n "$LACQ_ERRORS" ]; then echo "- Lacquer logged errors (first lines):"; echo '```'; echo "$LACQ_ERRORS"; echo '```'; fi
  echo
  echo "Raw rounds: latest-raw.tsv (scenario, cache, round, req/s, p99 ms, non-2xx, socket errors; coalesce rows: origin fetches in the rps column)."
} >"$md"
if [ $EDGE = 1 ]; then
  # The edge scenarios stop the instances above first: they want the cores to themselves.
  for pid in "${ALL_PIDS[@]:-}"; do [ -n "$pid" ] && stop_pid "$pid"; done
  edge_args=(--no-build --rounds "$ROUNDS" --duration "$DURATION" --out "$W-edge.md")
  if SCRATCH=$SCRATCH Benchmarks/scripts/edge.sh "${edge_args[@]}" >"$W-edge.log" 2>&1; then
    { echo; cat "$W-edge.md"; } >>"$md"
  else
    { echo; echo "Edge scenarios (Benchmarks/scripts/edge.sh) did not run:"; echo '```'; tail -5 "$W-edge.log"; echo '```'; } >>"$md"
  fi
  rm -f "$W-edge.md" "$W-edge.log"
fi
cp "$md" "$RESULTS/latest.md"
cp "$RAW" "$RESULTS/latest-raw.tsv"
cat "$md"
log "done in $((T_END - T_START)) s; written to Benchmarks/results/latest.md"
