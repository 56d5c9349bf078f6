#!/usr/bin/env bash
# Long chaos runs: the chaos test of Tests/LacquerServerTests/ChaosTests.swift with more operations
# and many seeds, one after another, stopping at the first failure (its seed is printed, and
# `LACQUER_SEED=N swift test --filter ChaosTests` replays it).
#
#   Tests/chaos.sh [SEEDS] [OPERATIONS_PER_WORKER] [FIRST_SEED]     defaults: 20 200 1000
#
# Bounded: SEEDS runs, each under the test's own time limit; everything runs on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-20}
operations=${2:-200}
first=${3:-1000}
swift build --build-tests
for ((i = 0; i < seeds; i++)); do
  seed=$((first + i))
  echo "== seed $seed ($operations operations per worker)"
  if ! LACQUER_SEED=$seed LACQUER_CHAOS_OPERATIONS=$operations \
    swift test --skip-build --filter 'ChaosTests' 2>&1 | tee /tmp/lacquer-chaos.log | grep -E 'chaos seed|✘|passed after|Fatal'; then
    echo "chaos: seed $seed: no result (see /tmp/lacquer-chaos.log)"; exit 1
  fi
  if grep -qE '✘|Fatal' /tmp/lacquer-chaos.log; then
    echo "chaos: seed $seed failed (see /tmp/lacquer-chaos.log)"; exit 1
  fi
done
echo "chaos: $seeds seeds passed"
