#!/bin/sh
# Replace benchmark (a benchmark, not a test: it prints figures and never judges them).
#
#   scripts/bench-replace.sh K [VALUE_BYTES]
#
# Variant 1: 3 servers, K keys of VALUE_BYTES (default 100) preloaded through the gateway,
# attach a 4th server; prints the time from `kumoctl attach` to "replace finished" in the
# manager log.  Variant 2: the same on a fresh cluster while kumo-bench runs a 90% get load
# (-c 16 -t 5) through the gateway; prints the replace time, kumo-bench's ops/s during it, and
# a baseline ops/s of the same load without a replace.
#
# Binaries, and the load generator kumo-bench (test/tools), come from $KUMO_BUILD_DIR
# (default ./build).  Daemons listen on free loopback ports and keep their
# files in a temporary directory that is removed at the end (KEEP=1 keeps it).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${KUMO_BUILD_DIR:-$top/build}
gen=$bin/test/tools/kumo-bench
K=${1:?usage: bench-replace.sh K [VALUE_BYTES]}
V=${2:-100}

for f in src/manager/kumo-manager src/server/kumo-server src/gateway/kumo-gateway \
         tools/kumoctl/kumoctl tools/kumostat/kumostat test/tools/kumo-bench; do
    [ -x "$bin/$f" ] || { echo "missing $bin/$f (build first or set KUMO_BUILD_DIR)" >&2; exit 2; }
done

dir=$(mktemp -d /tmp/kumo-bench-XXXXXX)
. "$top/scripts/bench-lib.sh"
cleanup() {
    bench_stop_all
    [ "${KEEP:-0}" = 1 ] && echo "kept $dir" || rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

preload() {
    t0=$(now)
    "$gen" -s "$gw" --preload -t 0 -n "$K" -v "$V" -c 16 -q >"$d/preload.out" 2>&1 \
        || { echo "preload failed:"; cat "$d/preload.out"; exit 1; }
    echo "  preload of $K keys x $V bytes: $(elapsed "$t0" "$(now)") s"
}

# Attach a 4th server (started by the caller); sets $t to the seconds from
# `kumoctl attach` to "replace finished" in the manager log.
attach_and_time() {
    bench_wait_newcomer "127.0.0.1:$(cat "$d/server4.port")"
    before=$(grep -c "replace finished" "$d/manager.log" || true)
    t0=$(now)
    "$bin/tools/kumoctl/kumoctl" "$mgr" attach >/dev/null
    until [ "$(grep -c "replace finished" "$d/manager.log")" -gt "$before" ]; do
        sleep 0.02
    done
    t=$(elapsed "$t0" "$(now)")
}

items() {
    for i in 1 2 3 4; do
        printf ' %s' "$("$bin/tools/kumostat/kumostat" "127.0.0.1:$(cat "$d/server$i.port")" items)"
    done
}

ops_of() { sed -n 's/^RESULT ops_per_s=\([0-9]*\).*/\1/p' "$1" | tail -1; }

echo "replace benchmark: K=$K keys, $V-byte values, binaries in $bin"

echo "variant 1: idle cluster"
bench_start_cluster v1
preload
bench_start_server 4
attach_and_time
echo "  attach -> replace finished: $t s"
echo "  items per server after the replace:$(items)"
bench_stop_all

echo "variant 2: under kumo-bench -c 16 -r 0.9 -v $V -n $K"
bench_start_cluster v2
preload
"$gen" -s "$gw" -c 16 -t 5 -r 0.9 -v "$V" -n "$K" -q >"$d/base.out" 2>&1 || true
echo "  baseline ops/s without a replace: $(ops_of "$d/base.out")"
"$gen" -s "$gw" -c 16 -t 5 -w 0 -r 0.9 -v "$V" -n "$K" -q >"$d/load.out" 2>&1 &
lp=$!
bench_start_server 4
attach_and_time
wait "$lp" || true
echo "  attach -> replace finished: $t s"
echo "  kumo-bench ops/s over its 5 s window (replace running in it): $(ops_of "$d/load.out")"
grep '^RESULT' "$d/load.out" | sed 's/^/  /' || true
echo "  items per server after the replace:$(items)"
