#!/usr/bin/env bash
# Long fuzz runs of the seeded fuzz targets: the VCL compiler, the request head reader against
# NIO's decoder, the chunk-size scanner against NIO's decoder, the field parsers (Cache-Control,
# Accept-Encoding, qvalues, dates, entity tags, Vary, Range) and the disk tier's header records.
# Each seed runs ITERATIONS inputs per target; a failure prints its seed, and
# `LACQUER_SEED=N swift test --filter <suite>` replays it.
#
#   Tests/fuzz.sh [SEEDS] [ITERATIONS] [FIRST_SEED]     defaults: 10 50000 1
#
# Bounded by SEEDS x ITERATIONS; no network.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-10}
iterations=${2:-50000}
first=${3:-1}
targets='FuzzTests|FastRequestHeadDifferentialTests|ChunkedFramingDifferentialTests|FieldFuzzTests|HeaderCodecFuzzTests'
swift build --build-tests
for ((i = 0; i < seeds; i++)); do
  seed=$((first + i))
  echo "== seed $seed ($iterations iterations per target)"
  if ! LACQUER_SEED=$seed LACQUER_FUZZ_ITERATIONS=$iterations \
    swift test --skip-build --filter "$targets" 2>&1 | tee /tmp/lacquer-fuzz.log | grep -E 'seed|✘|Test run'; then
    echo "fuzz: seed $seed: no result (see /tmp/lacquer-fuzz.log)"; exit 1
  fi
  if grep -q '✘' /tmp/lacquer-fuzz.log; then
    echo "fuzz: seed $seed failed (see /tmp/lacquer-fuzz.log)"; exit 1
  fi
done
echo "fuzz: $seeds seeds passed"
