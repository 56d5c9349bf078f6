#!/usr/bin/env bash
# Two Lacquer builds side by side (interleaved rounds, same nginx origin, same machine): the
# change a commit makes to hit-1k, hit-100k and pass, as ratios NEW/OLD of the median req/s.
#
#   Benchmarks/scripts/ab.sh OLD_LACQUER_BINARY NEW_LACQUER_BINARY [ROUNDS] [DURATION]   (defaults 5 5s)
#
# OLD_ARGS and NEW_ARGS add flags to each side, e.g. the same binary with the access log on and off:
#   OLD_ARGS="--access-log off" NEW_ARGS="--access-log /tmp/access.log" ab.sh BIN BIN
# (builds from before the access log existed take neither flag; their stdout goes to a file.)
#
# Loopback only; everything it starts it stops. A benchmark: it fails only when it cannot run.
set -euo pipefail
OLD=$1; NEW=$2; ROUNDS=${3:-5}; DURATION=${4:-5s}
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "needs wrk and nginx" >&2; exit 1; }
PATH=$PATH:/usr/sbin
W=$(mktemp -d /tmp/lacquer-ab.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

chmod 755 "$W"  # nginx workers (not root) read the files
mkdir -p "$W/www/pass" "$W/logs"
head -c 1024 /dev/urandom >"$W/www/1k"
head -c 102400 /dev/urandom >"$W/www/100k"
cp "$W/www/1k" "$W/www/pass/1k"
ORIGIN_PORT=$(free_port)
cat >"$W/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $W/nginx.pid; error_log $W/logs/error.log;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 100000; client_body_temp_path $W/tmp; proxy_temp_path $W/tmp;
  fastcgi_temp_path $W/tmp; uwsgi_temp_path $W/tmp; scgi_temp_path $W/tmp;
  server {
    listen 127.0.0.1:$ORIGIN_PORT backlog=4096; root $W/www;
    location = /1k   { add_header Cache-Control "max-age=86400"; }
    location = /100k { add_header Cache-Control "max-age=86400"; }
    location /pass/  { add_header Cache-Control "no-store"; }
  }
}
CONF
mkdir -p "$W/tmp"
nginx -c "$W/nginx.conf" -p "$W" &
PIDS+=($!)
for _ in $(seq 1 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ORIGIN_PORT/1k")" = 200 ] && break; sleep 0.1; done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ORIGIN_PORT/1k")" = 200 ] || { echo "the origin does not answer 200" >&2; exit 1; }

PORT=0
start() { # BINARY NAME [EXTRA FLAGS] -> sets PORT (no subshell: the PID must reach PIDS for the cleanup)
  PORT=$(free_port)
  # shellcheck disable=SC2086  # EXTRA FLAGS split on purpose
  "$1" --listen "127.0.0.1:$PORT" --admin off --backend "http://127.0.0.1:$ORIGIN_PORT" --threads 2 \
    --storage-dir "$W/$2-cache" --log-level error ${3:-} >"$W/logs/$2.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/1k" && break; sleep 0.1; done
  curl -s -o /dev/null "http://127.0.0.1:$PORT/100k"
  echo "$2 on $PORT: /1k $(curl -s -D - -o /dev/null "http://127.0.0.1:$PORT/1k" | tr -d '\r' | grep -i '^x-cache-status')" >&2
}
start "$OLD" old "${OLD_ARGS:-}"; OLD_PORT=$PORT
start "$NEW" new "${NEW_ARGS:-}"; NEW_PORT=$PORT
rps() { wrk -t2 -c64 -d"$DURATION" "$1" 2>/dev/null | awk '/Requests\/sec/ {print $2}'; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo "scenario  old_req/s  new_req/s  new/old"
for scenario in 1k 100k pass/1k; do
  : >"$W/old.txt"; : >"$W/new.txt"
  for _ in $(seq 1 "$ROUNDS"); do
    rps "http://127.0.0.1:$OLD_PORT/$scenario" >>"$W/old.txt"
    rps "http://127.0.0.1:$NEW_PORT/$scenario" >>"$W/new.txt"
  done
  old=$(median <"$W/old.txt"); new=$(median <"$W/new.txt")
  printf '%-9s %10s %10s %8.3f\n' "$scenario" "$old" "$new" "$(echo "$new / $old" | bc -l)"
done
