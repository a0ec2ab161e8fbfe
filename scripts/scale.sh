#!/bin/sh
# The scale test bed: N servers (default 100) and K keys (default 100000) on loopback,
# every step timed and every key checked: register, attach, load, copies per server,
# attach one more, kill -9 two, detach, full-replace.
#   ./scripts/scale.sh [servers] [keys] [managers]
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
./scripts/install-deps.sh >/dev/null
./scripts/build.sh
# each server holds ~30 descriptors; a 100-server bed needs more than the usual 1024
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
KUMO_BUILD_DIR="$top/build" exec /usr/bin/python3 test/e2e/scale.py \
    --servers "${1:-100}" --keys "${2:-100000}" --managers "${3:-1}"
