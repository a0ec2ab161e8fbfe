#!/bin/sh
# Side-by-side throughput: kumofs (local cluster from quickstart.sh, text on :11211 and
# binary on :11212) against memcached and twemproxy+3 memcached (the anchors of
# ../shared/tools/bench/anchors.sh), with compare.sh and kvload.  Prints compare.sh's
# tables; stops what it started.  Usage: scripts/bench.sh [SHARED_DIR]
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
shared=${1:-$top/../shared}
bench="$shared/tools/bench"
[ -x "$bench/compare.sh" ] || { echo "bench.sh: $bench/compare.sh not found" >&2; exit 2; }

"$top/scripts/quickstart.sh" >/dev/null
"$top/build/src/gateway/kumo-gateway" -m 127.0.0.1:19700 -b 127.0.0.1:11212 \
    -d "$top/local-cluster/gateway-b.pid" -o "$top/local-cluster/gateway-b.log"
"$bench/anchors.sh" start
trap '"$bench/anchors.sh" stop >/dev/null; kill "$(cat "$top/local-cluster/gateway-b.pid")" 2>/dev/null; "$top/scripts/quickstart.sh" stop >/dev/null' EXIT
sleep 1

echo "== text protocol, 90% gets"
"$bench/compare.sh" --rounds 3 -- -c 64 -v 1024 -r 0.9 -t 5 -- \
    twemproxy=127.0.0.1:31220 kumofs=127.0.0.1:11211 memcached=127.0.0.1:31211
echo "== text protocol, sets only"
"$bench/compare.sh" --rounds 2 --no-preload -- -c 64 -v 1024 -r 0.0 -t 5 -- \
    twemproxy=127.0.0.1:31220 kumofs=127.0.0.1:11211
echo "== binary protocol, 90% gets (twemproxy has no binary protocol)"
"$bench/compare.sh" --rounds 3 -- -c 64 -v 1024 -r 0.9 -t 5 --binary -- \
    memcached=127.0.0.1:31211 kumofs=127.0.0.1:11212
