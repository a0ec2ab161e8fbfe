#!/bin/sh
# Size benchmark: a server with N records (default 10,000,000 of 200 bytes, about 3 GB)
# starts, attaches, full-replaces to two empty servers and backs up; prints each time and
# the server's RSS.  Needs about 4x the database size free in /tmp.
#   ./scripts/bench-size.sh [N] [VALUE_BYTES]
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
./scripts/install-deps.sh >/dev/null
./scripts/build.sh
KUMO_BUILD_DIR="$top/build" exec /usr/bin/python3 test/e2e/bench_size.py "${1:-10000000}" "${2:-200}"
