#!/bin/sh
# The soak: mixed load on a 4-server cluster for MINUTES (default 60), a server killed,
# detached, restarted and attached every KILL_EVERY seconds (default 240); RSS and
# descriptors of every daemon and the throughput printed each minute.  Exit 1 on any
# consistency violation.
# Usage: scripts/soak.sh [minutes] [kill_every_seconds] [op_interval_seconds]
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$top/build/src/server/kumo-server" ] || "$top/scripts/build.sh"
KUMO_BUILD_DIR=${KUMO_BUILD_DIR:-$top/build} exec /usr/bin/python3 "$top/test/e2e/soak.py" "$@"
