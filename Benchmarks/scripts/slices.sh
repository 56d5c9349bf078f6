#!/usr/bin/env bash
# Large objects (issue #18 item 2): Lacquer (slices on their defaults: 8 MiB threshold, 1 MiB
# slices), nginx with its slice module (slice 1m, proxy_cache) and Varnish (file storage) in front
# of the same origin, an nginx serving one large file at a limited rate (a slow origin), over
# loopback.
#
#   Benchmarks/scripts/slices.sh [--quick] [--no-build] [--size MiB] [--rate 100m] [--out FILE]
#
# For each cache, started empty:
#   seek        a cold `Range: bytes=<90% of the file>+100`: seconds to the answer, and the bytes
#               the origin sent for it (its access log)
#   cold-full   the whole file, cold, right after the seek: seconds, origin bytes, peak resident
#               memory of the cache (sampled every 100 ms), and whether the body is the file
#   warm-full   the whole file again: seconds and origin bytes
#   warm-seeks  32 random 1 MiB ranges: seconds for all, and origin bytes
# Every body is compared with the file. A benchmark, not a test: it fails only when it cannot run.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
source Benchmarks/scripts/common.sh

QUICK=0; BUILD=1; SIZE_MIB=""; RATE=0; OUT=$ROOT/Benchmarks/results/slices-latest.md
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --size) SIZE_MIB=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ $QUICK = 1 ]; then SIZE_MIB=${SIZE_MIB:-256}; else SIZE_MIB=${SIZE_MIB:-1024}; fi
SIZE=$((SIZE_MIB << 20))
T_START=$(date +%s)
log() { printf '[%3ds] %s\n' $(( $(date +%s) - T_START )) "$*" >&2; }
PATH=$PATH:/usr/sbin
for tool in nginx:nginx curl:curl python3:python3; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || { echo "${tool%%:*} is required (apt-get install -y ${tool#*:})" >&2; exit 1; }
done
HAVE_VARNISH=1; command -v varnishd >/dev/null 2>&1 || HAVE_VARNISH=0

SCRATCH=${SCRATCH:-$ROOT/.build-bench}
[ $BUILD = 1 ] && log "building lacquer (release) into $SCRATCH"
BIN=$(bench_bin "$SCRATCH" $BUILD slices)

bench_workdir slices
O=$W/origin; mkdir -p "$O/www"
log "writing a $SIZE_MIB MiB file"
head -c "$SIZE" /dev/urandom >"$O/www/big"
ORIGIN_PORT=$(free_port)
# The origin logs the bytes it sent per request, to count what each cache asked for.
bench_nginx_conf "$O" 1 1024 "  log_format sent '\$request_uri \$body_bytes_sent';
  server { listen 127.0.0.1:$ORIGIN_PORT; root $O/www; access_log $O/sent.log sent; limit_rate $RATE;
    location / { add_header Cache-Control \"max-age=86400\"; } }" >"$O/nginx.conf"
bench_start_nginx "$O" "$ORIGIN_PORT"

# origin_bytes TAG -> bytes the origin sent for requests whose URI contains TAG
origin_bytes() { awk -v t="$1" 'index($1, t) { s += $2 } END { print s + 0 }' "$O/sent.log"; }

# peak_rss_start PIDS... / peak_rss_stop -> the highest summed RSS (KiB) seen in between
peak_rss_start() {
  ( peak=0; while :; do s=0; for p in "$@"; do v=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0); s=$((s + ${v:-0})); done
      [ $s -gt $peak ] && peak=$s && echo $peak >"$W/peak"; sleep 0.1; done ) &
  SAMPLER=$!
}
peak_rss_stop() { kill $SAMPLER 2>/dev/null; wait $SAMPLER 2>/dev/null || true; cat "$W/peak" 2>/dev/null || echo 0; rm -f "$W/peak"; }

# fetch PORT URI [RANGE] -> "seconds ok|bad" (the body compared with the file)
fetch() {
  local range=() expect
  [ -n "${3:-}" ] && range=(-r "$3")
  local t
  t=$(curl -s --max-time 600 "${range[@]}" -o "$W/body" -w '%{time_total}' "http://127.0.0.1:$1$2")
  if [ -n "${3:-}" ]; then
    local first=${3%-*} last=${3#*-}
    expect=$(tail -c +$((first + 1)) "$O/www/big" | head -c $((last - first + 1)) | sha256sum)
  else
    expect=$(sha256sum <"$O/www/big")
  fi
  if [ "$(sha256sum <"$W/body")" = "$expect" ]; then echo "$t ok"; else echo "$t bad"; fi
}

RESULTS=$W/results.tsv; : >"$RESULTS"
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; }

run_cache() { # NAME PORT PIDS...
  local name=$1 port=$2; shift 2
  local seek=$(( SIZE / 10 * 9 )) out
  out=$(fetch "$port" "/big?$name-seek" "$seek-$((seek + 99))")
  record "$name" seek "$out $(origin_bytes "$name-seek")"
  log "$name seek: $out, origin sent $(origin_bytes "$name-seek") bytes"
  peak_rss_start "$@"
  out=$(fetch "$port" "/big?$name-seek")
  record "$name" cold-full "$out $(origin_bytes "$name-seek") $(peak_rss_stop)"
  log "$name cold-full: $out"
  local before; before=$(origin_bytes "$name-seek")
  out=$(fetch "$port" "/big?$name-seek")
  record "$name" warm-full "$out $(( $(origin_bytes "$name-seek") - before ))"
  log "$name warm-full: $out"
  before=$(origin_bytes "$name-seek")
  local t0 t1 bad=0 first
  t0=$(date +%s.%N)
  for i in $(seq 1 32); do
    first=$(( (RANDOM * 32768 + RANDOM) % (SIZE - (1 << 20)) ))
    out=$(fetch "$port" "/big?$name-seek" "$first-$((first + (1 << 20) - 1))")
    [ "${out#* }" = ok ] || bad=$((bad + 1))
  done
  t1=$(date +%s.%N)
  record "$name" warm-seeks "$(python3 -c "print(f'{$t1 - $t0:.3f}')") $([ $bad = 0 ] && echo ok || echo "bad:$bad") $(( $(origin_bytes "$name-seek") - before ))"
  log "$name warm-seeks: $bad bad"
}

# Lacquer on its defaults (memory tier 256 MiB, disk tier 2 GiB).
LQ_PORT=$(free_port)
"$BIN/lacquer" --listen 127.0.0.1:$LQ_PORT --admin off --access-log off --log-level warning --backend "http://127.0.0.1:$ORIGIN_PORT" \
  --storage-dir "$W/lacquer" --disk-size 2GiB >"$W/lacquer.log" 2>&1 &
STARTED+=($!); LQ_PID=$!
wait_port $LQ_PORT
run_cache lacquer $LQ_PORT $LQ_PID
kill $LQ_PID

# nginx with the slice module, as its documentation sets it up.
N=$W/nginx; mkdir -p "$N/cache"; NG_PORT=$(free_port)
bench_nginx_conf "$N" 2 1024 "  proxy_cache_path $N/cache levels=1:2 keys_zone=c:10m max_size=2g inactive=1d use_temp_path=off;
  server { listen 127.0.0.1:$NG_PORT;
    location / { slice 1m; proxy_cache c; proxy_cache_key \$uri\$is_args\$args\$slice_range;
      proxy_set_header Range \$slice_range; proxy_cache_valid 200 206 1h; proxy_http_version 1.1;
      proxy_set_header Connection \"\"; proxy_pass http://127.0.0.1:$ORIGIN_PORT; } }" >"$N/nginx.conf"
bench_start_nginx "$N" "$NG_PORT"
NG_PIDS=$(pgrep -f "nginx: worker process" -P "$(cat "$N/nginx.pid")" | tr '\n' ' ')
run_cache nginx $NG_PORT $(cat "$N/nginx.pid") $NG_PIDS

if [ $HAVE_VARNISH = 1 ]; then
  VA_PORT=$(free_port)
  printf 'vcl 4.1;\nbackend origin { .host = "127.0.0.1"; .port = "%s"; }\n' "$ORIGIN_PORT" >"$W/varnish.vcl"
  jail=(); [ "$(id -u)" = 0 ] || jail=(-j none)
  varnishd -F "${jail[@]}" -a "127.0.0.1:$VA_PORT" -T none -f "$W/varnish.vcl" -s "file,$W/varnish.bin,2G" -n "$W/varnish" \
    >"$W/varnish.log" 2>&1 &
  STARTED+=($!); VA_PID=$!
  wait_port $VA_PORT
  run_cache varnish $VA_PORT $(pgrep -P $VA_PID | tr '\n' ' ') $VA_PID
fi

get() { awk -F'\t' -v c="$1" -v s="$2" '$1 == c && $2 == s { print $3 }' "$RESULTS"; }
field() { echo "$1" | awk -v n="$2" '{ print $n }'; }
ratio() { python3 -c "import sys; a, b = float(sys.argv[1] or 0), float(sys.argv[2] or 0); print(f'{a / b:.2f}' if b else '-')" "$1" "$2"; }
mib() { python3 -c "import sys; print(f'{int(sys.argv[1] or 0) / 1048576:.1f}')" "$1"; }
{
  echo "# Large objects: Lacquer's slices, nginx's slice module, Varnish"
  echo
  echo "One run, $(date -u '+%Y-%m-%d %H:%M UTC'); lacquer $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); $(nginx -v 2>&1); $( [ $HAVE_VARNISH = 1 ] && varnishd -V 2>&1 | head -1 || echo 'no Varnish')."
  echo "A $SIZE_MIB MiB file from an nginx origin limited to $RATE bytes/s per connection, loopback, curl. Lacquer on its defaults (slices over 8 MiB, 1 MiB each; memory 256 MiB, disk 2 GiB); nginx \`slice 1m\` + \`proxy_cache\`; Varnish \`-s file,2G\`. Times in seconds (lower is better); origin MiB is what the origin sent for that step."
  echo
  echo "| step | Lacquer s | nginx s | Varnish s | L/nginx time | Lacquer origin MiB | nginx origin MiB | Varnish origin MiB | bodies right |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
  for step in seek cold-full warm-full warm-seeks; do
    l=$(get lacquer $step); n=$(get nginx $step); v=$(get varnish $step)
    ok="$(field "$l" 2)/$(field "$n" 2)/$(field "$v" 2)"
    echo "| $step | $(field "$l" 1) | $(field "$n" 1) | $(field "$v" 1) | $(ratio "$(field "$l" 1)" "$(field "$n" 1)") | $(mib "$(field "$l" 3)") | $(mib "$(field "$n" 3)") | $(mib "$(field "$v" 3)") | $ok |"
  done
  echo
  l=$(get lacquer cold-full); n=$(get nginx cold-full); v=$(get varnish cold-full)
  lp=$(field "$l" 4); np=$(field "$n" 4); vp=$(field "$v" 4)
  echo "Peak resident memory during the cold full download: Lacquer $(( ${lp:-0} / 1024 )) MiB, nginx $(( ${np:-0} / 1024 )) MiB (master and workers), Varnish $(( ${vp:-0} / 1024 )) MiB (manager and child, with the mapped storage file's pages)."
} >"$OUT"
cat "$OUT"
