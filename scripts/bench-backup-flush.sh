#!/bin/sh
# Get latency during `kumoctl backup` and `flush_all` under load (a benchmark, not a
# test: it prints figures and never judges them).
#
#   scripts/bench-backup-flush.sh
#
# Environment: SERVERS (3), SIZE_MB per server to back up (1024), VALUE bytes (4000),
# FLUSH_KEYS (1000000), LOAD_CONNS for the background kumo-bench load (8), STEPS
# (backup,flush: either or both); binaries and the load generator (test/tools/kumo-bench)
# from $KUMO_BUILD_DIR (default ./build).  Daemons listen on free loopback ports; their files
# live in a temporary directory that is removed at the end.  Steps and figures: see
# scripts/bench_backup_flush.py.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
KUMO_BUILD_DIR=${KUMO_BUILD_DIR:-$top/build}
export KUMO_BUILD_DIR
exec /usr/bin/python3 "$top/scripts/bench_backup_flush.py"
