#!/bin/sh
# Client throughput while replace, backup and flush_all run (a benchmark, not a test: it
# prints figures and never judges them).
#
#   scripts/bench-ops.sh
#
# Environment: KEYS (200000) of VALUE bytes (1024); the background load's CONNS (16),
# GET_RATIO (0.9) and WINDOW_MS (250); STEPS (replace,backup,flush: any of them).
# Binaries and the load generator (test/tools/kumo-bench) from $KUMO_BUILD_DIR (default
# ./build).  Prints, per step, the median and the worst throughput window and their
# ratio to the baseline.  Steps and figures: see scripts/bench_ops.py.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
KUMO_BUILD_DIR=${KUMO_BUILD_DIR:-$top/build}
export KUMO_BUILD_DIR
exec /usr/bin/python3 "$top/scripts/bench_ops.py"
