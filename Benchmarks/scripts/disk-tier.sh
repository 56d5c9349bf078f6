#!/usr/bin/env bash
# Disk tier measurements:
#  1. start-up with 1,000,000 indexed objects: time from exec to the first HIT, against the same
#     start-up with a 1-object index (the baseline), in the same run;
#  2. disk-hit throughput (objects forced out of memory) against memory hits on the same objects.
# Usage: Benchmarks/scripts/disk-tier.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/../.."
source Benchmarks/scripts/common.sh
QUICK=0; [ "${1:-}" = "--quick" ] && QUICK=1
ROWS=$([ $QUICK = 1 ] && echo 100000 || echo 1000000)
DURATION=$([ $QUICK = 1 ] && echo 5s || echo 10s)
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
command -v sqlite3 >/dev/null || apt-get install -y -qq sqlite3 >/dev/null
build_release
work=$(mktemp -d /tmp/lacquer-bench-XXXX)
trap 'cleanup; rm -rf "$work"' EXIT
start_origin "$work/origin.log"
ORIGIN="http://127.0.0.1:$ORIGIN_PORT"
URL_PATH="/bench-object?cc=max-age%3D86400&size=1024"

# --- 1. start-up ------------------------------------------------------------------------------
"$BIN/lacquer" --listen 127.0.0.1:0 --admin 127.0.0.1:0 --access-log off --backend "$ORIGIN" --storage-dir "$work/idx" \
  --disk-size 1000GiB >"$work/seed.log" 2>&1 &
seed=$!
port=$(wait_log "$work/seed.log" "] listening on\|: listening on\|listening on 127" | grep -v admin | sed -E 's/.*:([0-9]+)$/\1/' | head -1)
port=$(grep "listening on" "$work/seed.log" | grep -v admin | sed -E 's/.*:([0-9]+)$/\1/' | head -1)
curl -s -o /dev/null "http://127.0.0.1:$port$URL_PATH"
kill -TERM $seed; wait $seed || true
cp -r "$work/idx" "$work/idx-small"
rm -f "$work/idx-small/lacquer.lock"
seed_index "$work/idx/index.sqlite" $((ROWS - 1))
rows=$(sqlite3 "$work/idx/index.sqlite" "SELECT objects FROM totals")

time_to_first_hit() { # DIR -> milliseconds from exec to the first HIT
  local dir=$1 log=$work/start-$RANDOM.log
  local t0=$(date +%s%N)
  "$BIN/lacquer" --listen 127.0.0.1:0 --admin off --backend "$ORIGIN" --storage-dir "$dir" \
    --disk-size 1000GiB >"$log" 2>&1 &
  local pid=$!
  local p=""
  for _ in $(seq 1 2000); do
    p=$(grep "listening on" "$log" 2>/dev/null | sed -E 's/.*:([0-9]+)$/\1/' | head -1)
    [ -n "$p" ] && curl -s -D - -o /dev/null "http://127.0.0.1:$p$URL_PATH" 2>/dev/null | grep -q "X-Cache-Status: HIT" && break
    sleep 0.005
  done
  local t1=$(date +%s%N)
  echo "rss_kib=$(rss_kib $pid)" >>"$work/rss.txt"
  kill -TERM $pid; wait $pid || true
  echo $(( (t1 - t0) / 1000000 ))
}
small=(); big=()
for round in 1 2 3; do
  small+=($(time_to_first_hit "$work/idx-small"))
  big+=($(time_to_first_hit "$work/idx"))
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
ms_small=$(median "${small[@]}"); ms_big=$(median "${big[@]}")
echo "start-up to first HIT: 1-object index ${ms_small} ms (runs: ${small[*]}); ${rows}-object index ${ms_big} ms (runs: ${big[*]}); ratio $(awk "BEGIN{printf \"%.2f\", $ms_big/$ms_small}")"

# --- 2. disk-hit throughput ---------------------------------------------------------------------
cat >"$work/objects.lua" <<'LUA'
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/tp?cc=max-age%3D86400&size=16384&k=" .. (counter % 200))
end
LUA
throughput() { # LABEL ARGS... -> requests/s of wrk against warmed objects
  local label=$1; shift
  local log=$work/tp-$label.log
  "$BIN/lacquer" --listen 127.0.0.1:0 --admin 127.0.0.1:0 --backend "$ORIGIN" --storage-dir "$work/tp-$label" "$@" >"$log" 2>&1 &
  local pid=$!
  wait_log "$log" "admin listening on" >/dev/null
  local p=$(grep "listening on" "$log" | grep -v admin | sed -E 's/.*:([0-9]+)$/\1/' | head -1)
  local a=$(grep "admin listening on" "$log" | sed -E 's/.*:([0-9]+)$/\1/' | head -1)
  for k in $(seq 0 199); do curl -s -o /dev/null "http://127.0.0.1:$p/tp?cc=max-age%3D86400&size=16384&k=$k"; done
  for _ in $(seq 1 200); do [ "$(stat_value $a disk_stored)" -ge 200 ] && break; sleep 0.05; done
  local rps=$(wrk -t2 -c32 -d"$DURATION" -s "$work/objects.lua" "http://127.0.0.1:$p" | awk '/Requests\/sec/ {print $2}')
  echo "$label disk_hit=$(stat_value $a disk_hit) cache_hit=$(stat_value $a cache_hit) rps=$rps" >&2
  kill -TERM $pid; wait $pid || true
  echo "$rps"
}
mem=$(throughput memory --memory 256MiB)
disk=$(throughput disk --memory 64KiB)
echo "16 KiB hits over 200 objects (wrk -t2 -c32 -d$DURATION): memory ${mem} req/s, disk ${disk} req/s, disk/memory $(awk "BEGIN{printf \"%.2f\", $disk/$mem}")"
