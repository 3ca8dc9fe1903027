#!/usr/bin/env bash
# `make bench`: every benchmark, each against its baseline in the same run. Results go to bench/results/.
# Python appears here only to race the Python baselines (and to time commands); the pipeline never calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/results
BIN="${CARGO_TARGET_DIR:-$HOME/.cache/coltrast/target}/release/coltrast"
export BIN
python3 bench/noop.py "${BENCH_REPEATS:-15}" | tee bench/results/noop.md
