#!/usr/bin/env bash
# A miss storm (issue #19 item 5): distinct 1 KiB objects as fast as wrk (32 connections) can ask
# for them, through Lacquer (memory + disk tier, defaults) and through nginx (proxy_cache), in
# front of the same nginx origin, over loopback.
#
#   Benchmarks/scripts/miss-storm.sh [--no-build] [--duration 60s] [--out FILE]
#
# Reports for each: misses/s; for Lacquer the objects stored, written to disk and dropped from
# the disk queue (`objects_stored`, `disk_stored` a few seconds after the load, `disk_write_dropped`),
# the disk space per object (du of the storage folder / objects), and a restart on that folder:
# milliseconds until it listens and until its first disk hit. nginx writes every response to a
# file of its own (its cache folder's du / files). A benchmark, not a test.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
source Benchmarks/scripts/common.sh

BUILD=1; DURATION=60s; OUT=$ROOT/Benchmarks/results/miss-storm-latest.md
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD=0 ;;
    --duration) DURATION=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
PATH=$PATH:/usr/sbin
for tool in wrk:wrk nginx:nginx python3:python3; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || { echo "${tool%%:*} is required (apt-get install -y ${tool#*:})" >&2; exit 1; }
done
T_START=$(date +%s)
log() { printf '[%3ds] %s\n' $(( $(date +%s) - T_START )) "$*" >&2; }
SCRATCH=${SCRATCH:-$ROOT/.build-bench}
[ $BUILD = 1 ] && log "building lacquer (release) into $SCRATCH"
BIN=$(bench_bin "$SCRATCH" $BUILD miss-storm)

bench_workdir miss-storm
O=$W/origin; mkdir -p "$O/www"; head -c 1024 /dev/urandom >"$O/www/1k"
ORIGIN_PORT=$(free_port)
bench_nginx_conf "$O" 1 4096 "  server { listen 127.0.0.1:$ORIGIN_PORT; root $O/www;
    location / { add_header Cache-Control \"max-age=86400\"; try_files /1k =404; } }" >"$O/nginx.conf"
bench_start_nginx "$O" "$ORIGIN_PORT"

# Every request a new object: both wrk threads draw from their own sequence.
cat >"$W/miss.lua" <<'EOF'
local counter = 0
local thread_id = 0
setup = function(thread) thread:set("id", thread_id); thread_id = thread_id + 1 end
request = function()
  counter = counter + 1
  return wrk.format("GET", "/o" .. id .. "-" .. counter)
end
EOF

rps() { awk '/Requests\/sec/ { print $2 }' "$1"; }
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="lacquer_$2" '$1 == m { print $2 }'; }

# Lacquer on its defaults (memory 256 MiB, disk 1 GiB).
LQ_PORT=$(free_port); ADMIN_PORT=$(free_port)
"$BIN/lacquer" --listen 127.0.0.1:$LQ_PORT --admin 127.0.0.1:$ADMIN_PORT --access-log off --log-level warning \
  --backend "http://127.0.0.1:$ORIGIN_PORT" --storage-dir "$W/lacquer" >"$W/lacquer.log" 2>&1 &
LQ_PID=$!; STARTED+=($LQ_PID)
wait_port $LQ_PORT
log "lacquer: $DURATION of distinct misses"
wrk -t2 -c32 -d"$DURATION" -s "$W/miss.lua" "http://127.0.0.1:$LQ_PORT" >"$W/wrk-lacquer.txt"
sleep 3
L_RPS=$(rps "$W/wrk-lacquer.txt"); L_STORED=$(metric $ADMIN_PORT objects_stored_total)
L_DISK=$(metric $ADMIN_PORT disk_stored_total); L_DROPPED=$(metric $ADMIN_PORT disk_write_dropped_total)
kill -TERM $LQ_PID; wait $LQ_PID 2>/dev/null || true
L_DU=$(du -s --block-size=1 "$W/lacquer" | cut -f1)
read -r L_OBJECTS L_LISTEN L_FIRST L_STATUS < <(python3 - "$BIN/lacquer" "$LQ_PORT" "$ORIGIN_PORT" "$W/lacquer" <<'EOF'
import socket, sqlite3, subprocess, sys, time, urllib.request
binary, port, origin, folder = sys.argv[1:5]
db = sqlite3.connect("file:" + folder + "/index.sqlite?mode=ro", uri=True)
count = db.execute("SELECT COUNT(*) FROM objects").fetchone()[0]
target = db.execute("SELECT key FROM objects LIMIT 1").fetchone()[0].split(b"\0")[0].decode()
db.close()
t0 = time.time()
p = subprocess.Popen([binary, "--listen", "127.0.0.1:" + port, "--admin", "off", "--access-log", "off", "--log-level", "warning",
                      "--backend", "http://127.0.0.1:" + origin, "--storage-dir", folder])
listen = None
while time.time() - t0 < 20:
    try:
        socket.create_connection(("127.0.0.1", int(port)), timeout=0.05).close(); listen = time.time() - t0; break
    except OSError:
        time.sleep(0.002)
status = urllib.request.urlopen("http://127.0.0.1:" + port + target).headers.get("X-Cache-Status")
print("%d %.0f %.0f %s" % (count, listen * 1000, (time.time() - t0) * 1000, status))
p.terminate(); p.wait()
EOF
)

# nginx with proxy_cache (1 GiB, like Lacquer's disk tier), the same load.
N=$W/nginx; mkdir -p "$N/cache"; NG_PORT=$(free_port)
bench_nginx_conf "$N" 2 4096 "  proxy_cache_path $N/cache levels=1:2 keys_zone=c:64m max_size=1g inactive=1d use_temp_path=off;
  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
  server { listen 127.0.0.1:$NG_PORT;
    location / { proxy_cache c; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://origin; } }" >"$N/nginx.conf"
bench_start_nginx "$N" "$NG_PORT"
log "nginx: $DURATION of distinct misses"
wrk -t2 -c32 -d"$DURATION" -s "$W/miss.lua" "http://127.0.0.1:$NG_PORT" >"$W/wrk-nginx.txt"
sleep 3
N_RPS=$(rps "$W/wrk-nginx.txt"); N_FILES=$(find "$N/cache" -type f | wc -l); N_DU=$( (du -s --block-size=1 "$N/cache" 2>/dev/null || true) | cut -f1)  # nginx's cache manager may remove a file mid-walk

per() { python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f'{a / b:,.0f}' if b else '-')" "$1" "$2"; }
ratio() { python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f'{a / b:.2f}' if b else '-')" "$1" "$2"; }
{
  echo "# Miss storm: distinct 1 KiB objects, Lacquer's disk tier and nginx's proxy_cache"
  echo
  echo "One run, $(date -u '+%Y-%m-%d %H:%M UTC'); lacquer $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); $(nginx -v 2>&1). wrk -t2 -c32 -d$DURATION, every request a new URL, nginx origin, loopback, 2 cores shared by everything."
  echo
  echo "| measure | Lacquer | nginx | L/nginx |"
  echo "|---|---:|---:|---:|"
  echo "| misses/s | $L_RPS | $N_RPS | $(ratio "$L_RPS" "$N_RPS") |"
  echo "| objects stored (Lacquer: memory tier) | $L_STORED | $N_FILES files | |"
  echo "| written to disk 3 s after the load | $L_DISK | $N_FILES | |"
  echo "| dropped from the disk queue | $L_DROPPED | 0 | |"
  echo "| disk space per object (du, blocks) | $(per "$L_DU" "$L_OBJECTS") | $(per "$N_DU" "$N_FILES") | $(ratio "$(per "$L_DU" "$L_OBJECTS" | tr -d ,)" "$(per "$N_DU" "$N_FILES" | tr -d ,)") |"
  echo "| restart with $L_OBJECTS objects: listening after | $L_LISTEN ms | | |"
  echo "| restart: first disk hit ($L_STATUS) at | $L_FIRST ms | | |"
} >"$OUT"
cat "$OUT"
