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
  "$BIN/lacquer" --listen 127.0.0.1:0 --admin 127.0.0.1:0 --log-level notice --access-log off "$@" >"$log" 2>&1 &
  LACQUER_PID=$!
  PIDS+=($LACQUER_PID)
  "$BIN/lacquer" --help >/dev/null  # (keeps the page cache warm; no effect on results)
}

stat_value() { # stat_value ADMIN_PORT NAME
  curl -s "http://127.0.0.1:$1/stats" | grep -o "\"$2\":[0-9]*" | head -1 | cut -d: -f2
}

rss_kib() { grep VmRSS "/proc/$1/status" | awk '{print $2}'; }

# --- Helpers added for Benchmarks/run.sh (nothing above changed) ------------------------------

# build_release_scratch SCRATCH_DIR -> builds lacquer and fixture-origin (release) into
# SCRATCH_DIR instead of .build, so a benchmark never races an engineer's build; prints the bin path.
build_release_scratch() {
  swift build -c release --scratch-path "$1" --product lacquer >&2
  swift build -c release --scratch-path "$1" --product fixture-origin >&2
  swift build -c release --scratch-path "$1" --show-bin-path
}

# median VALUES... -> the median (mean of the two middle values for an even count); "" if none.
median() {
  { printf '%s\n' "$@" | grep -E '^-?[0-9.]+$' || true; } | sort -g | awk '{v[NR]=$1} END {
    if (NR == 0) { print ""; exit }
    if (NR % 2) printf "%g\n", v[(NR + 1) / 2]; else printf "%g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# free_port -> a TCP port on 127.0.0.1 that no socket uses right now, below the ephemeral range
# (so that the many outgoing connections of a benchmark cannot take it before it is bound).
free_port() {
  local p low
  low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$low" -gt 11000 ] || low=32768
  for _ in $(seq 1 200); do
    p=$((10000 + RANDOM % (low - 10000)))
    if ! ss -Hatn "( sport = :$p )" 2>/dev/null | grep -q .; then echo "$p"; return 0; fi
  done
  echo "no free port found" >&2; return 1
}

# pss_kib PIDS... -> summed proportional set size (shared pages counted once across the PIDs).
pss_kib() {
  local total=0 v
  for pid in "$@"; do
    v=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

# seed_index INDEX_SQLITE COPIES -> adds COPIES rows to a disk index, each a copy of its first
# object under another key (no body files: they are never read). For start-up and purge scale.
seed_index() {
  sqlite3 "$1" <<SQL
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $2)
INSERT INTO objects(key, digest, variant, vary_names, status, reason, headers, body_length, checksums,
  request_time, response_time, origin, ttl, grace, keep, must_revalidate, expires, last_access, size)
SELECT CAST(key AS BLOB) || CAST(i AS BLOB), CASE WHEN digest > 0 THEN digest - i ELSE digest + i END,
  variant, vary_names, status, reason, headers, body_length, checksums, request_time, response_time,
  origin, ttl, grace, keep, must_revalidate, expires, last_access, size
FROM objects, n WHERE objects.id = (SELECT MIN(id) FROM objects);
SQL
}

# --- Helpers shared by edge.sh, connections.sh and tail.sh -------------------------------------

# wait_port PORT [SCHEME]: until anything answers on 127.0.0.1:PORT (10 s at most).
wait_port() {
  for _ in $(seq 1 200); do
    curl -sk -o /dev/null --max-time 1 "${2:-http}://127.0.0.1:$1/" && return 0
    sleep 0.05
  done
  echo "nothing answers on port $1" >&2; return 1
}

# bench_bin SCRATCH BUILD NAME -> the release bin path; with BUILD=1 lacquer and fixture-origin
# are built into SCRATCH first (output in SCRATCH-NAME-build.log, its tail shown on failure).
bench_bin() {
  if [ "$2" = 1 ]; then
    build_release_scratch "$1" 2>"$1-$3-build.log" | tail -1 || { tail -30 "$1-$3-build.log" >&2; return 1; }
  else
    swift build -c release --scratch-path "$1" --show-bin-path
  fi
}

# bench_workdir NAME: sets W (a fresh work folder) and STARTED (pids); on exit every pid in
# STARTED gets TERM, then KILL, and W is removed.
bench_workdir() {
  W=$(mktemp -d "/tmp/lacquer-$1-XXXXXX")
  chmod 755 "$W"
  STARTED=()
  trap bench_finish EXIT
  trap 'exit 130' INT TERM
}
bench_finish() {
  for pid in "${STARTED[@]:-}"; do [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${STARTED[@]:-}"; do [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$W"
}

# bench_nginx_conf DIR WORKERS CONNECTIONS SERVER_BLOCK -> an nginx.conf: WORKERS workers of
# CONNECTIONS connections each, keep-alive without limits, no logs, its files under DIR.
bench_nginx_conf() {
  local user=""; [ "$(id -u)" = 0 ] && user="user $(id -un) $(id -gn);"
  cat <<EOF
$user
worker_processes $2;
worker_rlimit_nofile $(( $3 + 1000 ));
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections $3; multi_accept on; }
http {
  access_log off; sendfile on; tcp_nodelay on;
  keepalive_requests 1000000; keepalive_timeout 300s; http2_max_requests 1000000;
  default_type application/octet-stream;
  client_body_temp_path $1/ct; proxy_temp_path $1/pt; fastcgi_temp_path $1/ft; uwsgi_temp_path $1/ut; scgi_temp_path $1/st;
$4
}
EOF
}

# bench_start_nginx DIR PORT [SCHEME]: nginx with DIR/nginx.conf, its pid added to STARTED.
bench_start_nginx() {
  nginx -p "$1" -c "$1/nginx.conf" -g 'daemon off;' >"$1/stderr.log" 2>&1 &
  STARTED+=($!)
  wait_port "$2" "${3:-http}" || { cat "$1/stderr.log" "$1/error.log" >&2; return 1; }
}

# bench_origin_1k CONNECTIONS: an nginx origin (1 worker) serving a random 1 KiB /1k with a long
# max-age, under $W/origin; sets O and ORIGIN_PORT. (connections.sh, tail.sh)
bench_origin_1k() {
  O=$W/origin; mkdir -p "$O/www"; head -c 1024 /dev/urandom >"$O/www/1k"
  ORIGIN_PORT=$(free_port)
  bench_nginx_conf "$O" 1 "$1" "  server { listen 127.0.0.1:$ORIGIN_PORT; root $O/www; location = /1k { add_header Cache-Control \"max-age=86400\"; } }" >"$O/nginx.conf"
  bench_start_nginx "$O" "$ORIGIN_PORT"
}

# bench_lacquer_edge [ARGS...]: Lacquer (2 loops, no admin, defaults otherwise plus ARGS) in front
# of ORIGIN_PORT; sets LQ_PORT and LQ_PID. (connections.sh, tail.sh)
bench_lacquer_edge() {
  LQ_PORT=$(free_port)
  "$BIN/lacquer" --listen 127.0.0.1:$LQ_PORT --admin off --backend "http://127.0.0.1:$ORIGIN_PORT" --threads 2 \
    --log-level warning --access-log off --storage-dir "$W/lacquer-store" "$@" >"$W/lacquer.log" 2>&1 &
  LQ_PID=$!
  STARTED+=($LQ_PID)
  wait_port "$LQ_PORT" || { cat "$W/lacquer.log" >&2; exit 1; }
}

# bench_nginx_edge CONNECTIONS: nginx proxy_cache (2 workers, cache lock, keep-alive upstream) in
# front of ORIGIN_PORT, under $W/nginx; sets N and NX_PORT. (connections.sh, tail.sh)
bench_nginx_edge() {
  N=$W/nginx; mkdir -p "$N/cache"
  NX_PORT=$(free_port)
  bench_nginx_conf "$N" 2 "$1" "  proxy_cache_path $N/cache levels=1:2 keys_zone=edge:64m max_size=1g inactive=1d use_temp_path=off;
  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NX_PORT reuseport backlog=4096;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_cache edge; proxy_cache_lock on; }
  }" >"$N/nginx.conf"
  bench_start_nginx "$N" "$NX_PORT"
}
