#!/bin/sh
# The seven network-fault scenarios (issue 14) in a namespace test bed, in loops, with
# the consistency checker running; prints scenario x loops x operations x violations x
# time to settle.  Needs root (ip netns, nftables).  Usage: scripts/netfaults.sh [loops] [seconds]
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$top/build/src/server/kumo-server" ] || "$top/scripts/build.sh"
KUMO_BUILD_DIR=${KUMO_BUILD_DIR:-$top/build} exec /usr/bin/python3 "$top/test/e2e/netfaults_table.py" "$@"
