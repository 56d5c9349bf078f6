#!/usr/bin/env bash
# Invalidation at scale (issue #16), all on 127.0.0.1:
#  1. hit cost with 1,000 active bans against the same hits with none: two Lacquers, one with
#     1,000 bans on a request header (only a lookup can test those, so the lurker keeps them),
#     measured in interleaved wrk rounds in one run;
#  2. a purge by surrogate key of 10,000 tagged objects among 1,000,000: the disk index is
#     seeded with 1,000,000 - FILL rows (1% tagged), FILL more objects are fetched over HTTP into
#     memory and disk (1% tagged); the admin's POST /purge?key= is timed while wrk measures
#     hit latency, against the same wrk run without a purge.
# Usage: Benchmarks/scripts/invalidation.sh [--quick]   (INVALIDATION_PARTS=1 or 2 runs one part)
set -euo pipefail
cd "$(dirname "$0")/../.."
source Benchmarks/scripts/common.sh
QUICK=0; [ "${1:-}" = "--quick" ] && QUICK=1
ROUNDS=$([ $QUICK = 1 ] && echo 2 || echo 5)
DURATION=$([ $QUICK = 1 ] && echo 3 || echo 10)
TOTAL=$([ $QUICK = 1 ] && echo 100000 || echo 1000000)
FILL=$([ $QUICK = 1 ] && echo 10000 || echo 50000)
BANS=1000
PARTS=${INVALIDATION_PARTS:-12}  # which parts to run: 1, 2 or 12
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
command -v sqlite3 >/dev/null || apt-get install -y -qq sqlite3 >/dev/null
build_release
work=$(mktemp -d /tmp/lacquer-bench-XXXX)
trap 'cleanup; rm -rf "$work"' EXIT
start_origin "$work/origin.log"
ORIGIN="http://127.0.0.1:$ORIGIN_PORT"
HIT="/hit?cc=max-age%3D86400&size=1024"

ports() { # LOG -> "PORT ADMIN"
  wait_log "$1" "admin listening on" >/dev/null
  echo "$(grep "listening on" "$1" | grep -v admin | sed -E 's/.*:([0-9]+)$/\1/' | head -1) $(grep "admin listening on" "$1" | sed -E 's/.*:([0-9]+)$/\1/' | head -1)"
}
wrk_run() { # PORT PATH SECONDS -> "req/s p50_ms p99_ms"
  wrk -t2 -c50 -d"$3"s --latency "http://127.0.0.1:$1$2" | awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ {rps = $2} $1 == "50%" {p50 = ms($2)} $1 == "99%" {p99 = ms($2)}
    END {printf "%s %.3f %.3f\n", rps, p50, p99}'
}

# --- 1. hits with 1,000 active bans -------------------------------------------------------------
if [[ $PARTS == *1* ]]; then
start_lacquer "$work/none.log" --log-level info --backend "$ORIGIN" --threads 2 --storage-dir "$work/none"
read -r p_none a_none < <(ports "$work/none.log")
start_lacquer "$work/bans.log" --log-level info --backend "$ORIGIN" --threads 2 --storage-dir "$work/bans"
read -r p_bans a_bans < <(ports "$work/bans.log")
curl -s -o /dev/null "http://127.0.0.1:$p_none$HIT"
curl -s -o /dev/null "http://127.0.0.1:$p_bans$HIT"
for i in $(seq 1 $BANS); do
  curl -s -o /dev/null -X POST --data "req.http.x-never == $i" "http://127.0.0.1:$a_bans/ban"
done
active=$(curl -s "http://127.0.0.1:$a_bans/bans" | sed -n 1p)
none_rps=(); bans_rps=(); none_p99=(); bans_p99=()
for r in $(seq 1 $ROUNDS); do
  read -r rps p50 p99 < <(wrk_run $p_none "$HIT" $DURATION); none_rps+=($rps); none_p99+=($p99)
  read -r rps p50 p99 < <(wrk_run $p_bans "$HIT" $DURATION); bans_rps+=($rps); bans_p99+=($p99)
done
nr=$(median "${none_rps[@]}"); br=$(median "${bans_rps[@]}")
np=$(median "${none_p99[@]}"); bp=$(median "${bans_p99[@]}")
echo "1 KiB hits, wrk -t2 -c50, $ROUNDS x ${DURATION}s interleaved: no ban ${nr} req/s p99 ${np} ms; $active (${BANS} added): ${br} req/s p99 ${bp} ms"
echo "  ratio with $BANS bans / none: req/s $(awk "BEGIN{printf \"%.3f\", $br/$nr}"), p99 $(awk "BEGIN{printf \"%.3f\", $bp/$np}")"
echo "  fast-lane hits with bans: $(stat_value $a_bans cache_hit_fast) of $(stat_value $a_bans cache_hit)"

fi

# --- 2. purge 10,000 tagged objects among 1,000,000 ---------------------------------------------
[[ $PARTS == *2* ]] || exit 0
# A template row: one tagged object stored by a short run, then copied TOTAL - FILL times.
start_lacquer "$work/seed.log" --log-level info --backend "$ORIGIN" --storage-dir "$work/big" --disk-size 1000GiB
read -r p_seed a_seed < <(ports "$work/seed.log")
curl -s -o /dev/null "http://127.0.0.1:$p_seed/seed?cc=max-age%3D86400&size=100&h=xkey:seed"
for _ in $(seq 1 200); do [ "$(stat_value $a_seed disk_stored)" -ge 1 ] && break; sleep 0.05; done
kill -TERM "$LACQUER_PID"; wait "$LACQUER_PID" || true
seed_index "$work/big/index.sqlite" $((TOTAL - FILL))
sqlite3 "$work/big/index.sqlite" <<SQL
DELETE FROM tags;
INSERT INTO tags(tag, id) SELECT CASE WHEN id % 100 = 0 THEN 'bench-tag' ELSE 'other-' || (id % 997) END, id FROM objects;
SQL
seeded=$(sqlite3 "$work/big/index.sqlite" "SELECT objects FROM totals")
start_lacquer "$work/big.log" --log-level info --backend "$ORIGIN" --threads 2 --memory 1GiB --storage-dir "$work/big" --disk-size 1000GiB
read -r p_big a_big < <(ports "$work/big.log")
cat >"$work/fill.lua" <<LUA
counter = 0
request = function()
  counter = counter + 1
  local k = counter % $FILL
  local tag = (k % 100 == 0) and "bench-tag" or ("fill-" .. (k % 997))
  return wrk.format("GET", "/fill/" .. k .. "?cc=max-age%3D86400&size=100&h=xkey:" .. tag)
end
LUA
wrk -t1 -c16 -d$(( FILL / 2000 + 5 ))s -s "$work/fill.lua" "http://127.0.0.1:$p_big" >/dev/null
for _ in $(seq 1 600); do [ "$(stat_value $a_big disk_stored)" -ge "$FILL" ] && break; sleep 0.1; done
curl -s -o /dev/null "http://127.0.0.1:$p_big$HIT"
tier_objects() { # ADMIN TIER -> objects in that tier
  curl -s "http://127.0.0.1:$1/stats" | python3 -c "import json, sys; print(json.load(sys.stdin)['$2']['objects'])"
}
memory_objects=$(tier_objects $a_big memory)
disk_objects=$(tier_objects $a_big disk)
tagged=$(sqlite3 "$work/big/index.sqlite" "SELECT COUNT(*) FROM tags WHERE tag = 'bench-tag'")

read -r base_rps base_p50 base_p99 < <(wrk_run $p_big "$HIT" 5)
wrk_run $p_big "$HIT" 5 >"$work/during.txt" &
wrk_pid=$!
sleep 1
purge=$(curl -s -w ' time=%{time_total}' -X POST "http://127.0.0.1:$a_big/purge?key=bench-tag")
wait $wrk_pid
read -r dur_rps dur_p50 dur_p99 <"$work/during.txt"
echo "purge by key: ${tagged} tagged rows on disk among ${disk_objects:-?} disk objects (${seeded} seeded), ${memory_objects:-?} in memory"
echo "  POST /purge?key=bench-tag: $purge"
echo "  1 KiB hit latency, wrk -t2 -c50 5 s: without a purge p50 ${base_p50} ms p99 ${base_p99} ms (${base_rps} req/s); with the purge in it p50 ${dur_p50} ms p99 ${dur_p99} ms (${dur_rps} req/s); p99 ratio $(awk "BEGIN{printf \"%.2f\", $dur_p99/$base_p99}")"
