#!/usr/bin/env bash
# Large hits from memory by size (issue #19 item 3): Lacquer and nginx proxy_cache (sendfile on)
# serve the same cached objects of 16 KiB to 1 MiB over loopback; with OLD_BIN, a second Lacquer
# build runs beside them (e.g. one from before FileBody), so a change shows as a ratio.
#
#   Benchmarks/scripts/filebody.sh [--no-build] [--rounds N] [--duration 5s] [--sizes "16 64 100 1024"]
#   OLD_BIN=/path/to/old/lacquer Benchmarks/scripts/filebody.sh ...
#   OLD_BIN=.build-bench/release/lacquer OLD_ARGS=--no-sendfile Benchmarks/scripts/filebody.sh --no-build
#     (the same build with sendfile off: what sending from the file buys)
#   Benchmarks/scripts/filebody.sh --disk-only --sizes "100 1024 4096"
#     (Lacquer keeps nothing over 16 KiB in memory: every larger hit is a disk hit, as objects
#     over --max-object-size are; nginx is unchanged)
#
# Per size (KiB), medians of interleaved rounds of wrk -t2 -c64: req/s of each server, Lacquer's
# and nginx's CPU per request (µs, from /proc), and the ratios Lacquer/nginx (and new/old). Lacquer runs with
# its defaults (memory tier, disk tier in the work folder), so after the disk writes every hit is
# a memory hit whose body file is also on disk.
# A benchmark, not a test: it fails only when it cannot run.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
source Benchmarks/scripts/common.sh

BUILD=1; ROUNDS=3; DURATION=5s; SIZES="16 32 64 100 256 1024"; LARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD=0 ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --sizes) SIZES=$2; shift ;;
    --disk-only) LARGS=(--max-object-size 16KiB) ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
PATH=$PATH:/usr/sbin
for tool in wrk nginx curl; do command -v $tool >/dev/null || { echo "$tool is required" >&2; exit 1; }; done
SCRATCH=${SCRATCH:-$ROOT/.build-bench}
BIN=$(bench_bin "$SCRATCH" $BUILD filebody)

bench_workdir filebody
O=$W/origin; mkdir -p "$O/www"
for kib in $SIZES; do head -c $((kib * 1024)) /dev/urandom >"$O/www/$kib"; done
ORIGIN_PORT=$(free_port)
bench_nginx_conf "$O" 1 4096 "  server { listen 127.0.0.1:$ORIGIN_PORT; root $O/www; location / { add_header Cache-Control \"max-age=86400\"; } }" >"$O/nginx.conf"
bench_start_nginx "$O" "$ORIGIN_PORT"
bench_nginx_edge 4096
declare -A PORT=([lacquer]=0 [nginx]=$NX_PORT) PID=()
bench_lacquer_edge --memory 512MiB "${LARGS[@]}"
NX_WORKERS=$(pgrep -f "nginx: worker process" -P "$(cat "$N/nginx.pid")" | tr '\n' ' ')
PORT[lacquer]=$LQ_PORT; PID[lacquer]=$LQ_PID
SERVERS="lacquer nginx"
if [ -n "${OLD_BIN:-}" ]; then
  OLD_PORT=$(free_port)
  "$OLD_BIN" --listen 127.0.0.1:$OLD_PORT --admin off --backend "http://127.0.0.1:$ORIGIN_PORT" --threads 2 \
    --log-level warning --access-log off --storage-dir "$W/old-store" --memory 512MiB "${LARGS[@]}" ${OLD_ARGS:-} >"$W/old.log" 2>&1 &
  PID[old]=$!; STARTED+=($!)
  wait_port "$OLD_PORT"
  PORT[old]=$OLD_PORT; SERVERS="old lacquer nginx"
fi
for kib in $SIZES; do
  for s in $SERVERS; do curl -s -o /dev/null "http://127.0.0.1:${PORT[$s]}/$kib"; done
done
sleep 2  # the disk writes
cpu_ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
PID[nginx]=$NX_WORKERS
printf '%-6s' size; for s in $SERVERS; do printf ' %12s' "$s"; done
printf ' %9s %9s %9s' "L us/req" "N us/req" "L/N"; [ -n "${OLD_BIN:-}" ] && printf ' %9s %9s' "old us" "new/old"; echo
HZ=$(getconf CLK_TCK)
for kib in $SIZES; do
  declare -A R=() U=()
  for s in $SERVERS; do : >"$W/$s.rps"; : >"$W/$s.us"; done
  for _ in $(seq 1 "$ROUNDS"); do
    for s in $SERVERS; do
      before=0; [ -n "${PID[$s]:-}" ] && before=$(cpu_ticks ${PID[$s]})
      out=$(wrk -t2 -c64 -d"$DURATION" "http://127.0.0.1:${PORT[$s]}/$kib" 2>/dev/null)
      rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out"); echo "$rps" >>"$W/$s.rps"
      reqs=$(awk '/requests in/ {print $1}' <<<"$out")
      if [ -n "${PID[$s]:-}" ] && [ "${reqs:-0}" -gt 0 ]; then
        after=$(cpu_ticks ${PID[$s]})
        echo "($after - $before) * 1000000 / $HZ / $reqs" | bc -l >>"$W/$s.us"
      fi
    done
  done
  printf '%-6s' "$kib"
  for s in $SERVERS; do R[$s]=$(median $(cat "$W/$s.rps")); printf ' %12.0f' "${R[$s]}"; done
  U[lacquer]=$(median $(cat "$W/lacquer.us")); U[nginx]=$(median $(cat "$W/nginx.us"))
  printf ' %9.1f %9.1f %9.2f' "${U[lacquer]}" "${U[nginx]}" "$(echo "${R[lacquer]} / ${R[nginx]}" | bc -l)"
  if [ -n "${OLD_BIN:-}" ]; then
    U[old]=$(median $(cat "$W/old.us"))
    printf ' %9.1f %9.2f' "${U[old]}" "$(echo "${R[lacquer]} / ${R[old]}" | bc -l)"
  fi
  echo
done
