#!/bin/sh
# Replace benchmark (a benchmark, not a test: it prints figures and never judges them).
#
#   scripts/bench-replace.sh K [VALUE_BYTES]
#
# Variant 1: 3 servers, K keys of VALUE_BYTES (default 100) preloaded through the gateway,
# attach a 4th server; prints the time from `kumoctl attach` to "replace finished" in the
# manager log.  Variant 2: the same on a fresh cluster while kvload runs a 90% get load
# (-c 16 -t 5) through the gateway; prints the replace time, kvload's ops/s during it, and
# a baseline ops/s of the same load without a replace.
#
# Binaries come from $KUMO_BUILD_DIR (default ./build); kvload from $KVLOAD (default
# /work/shared/tools/kvload/kvload).  Daemons listen on free loopback ports and keep their
# files in a temporary directory that is removed at the end (KEEP=1 keeps it).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${KUMO_BUILD_DIR:-$top/build}
kvload=${KVLOAD:-/work/shared/tools/kvload/kvload}
K=${1:?usage: bench-replace.sh K [VALUE_BYTES]}
V=${2:-100}

for f in src/manager/kumo-manager src/server/kumo-server src/gateway/kumo-gateway \
         tools/kumoctl/kumoctl tools/kumostat/kumostat; do
    [ -x "$bin/$f" ] || { echo "missing $bin/$f (build first or set KUMO_BUILD_DIR)" >&2; exit 2; }
done
[ -x "$kvload" ] || { echo "missing kvload: $kvload (set KVLOAD)" >&2; exit 2; }

dir=$(mktemp -d /tmp/kumo-bench-XXXXXX)
pids=""
# SIGTERM every daemon this script started (by pid) and wait for it.
stop_daemons() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for p in $pids; do wait "$p" 2>/dev/null || true; done
    pids=""
}
cleanup() {
    stop_daemons
    [ "${KEEP:-0}" = 1 ] && echo "kept $dir" || rm -rf "$dir"
}
trap cleanup EXIT INT TERM

# A port nobody listens on now (kernel-chosen).
free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

wait_port() {
    n=0
    until /usr/bin/python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.5)" 2>/dev/null; do
        n=$((n + 1)); [ $n -lt 100 ] || { echo "port $1 did not open" >&2; exit 1; }
        sleep 0.1
    done
}

# Wait until `kumoctl status` lists $1 (an address) as a newcomer.
wait_newcomer() {
    n=0
    until "$bin/tools/kumoctl/kumoctl" "$mgr" status | sed -n '/^not attached/,$p' | grep -q "  $1\$"; do
        n=$((n + 1)); [ $n -lt 200 ] || { echo "$1 never registered" >&2; exit 1; }
        sleep 0.1
    done
}

# Start a cluster in $dir/$1: manager, 3 servers attached, a gateway; sets $mgr and $gw.
start_cluster() {
    d="$dir/$1"; mkdir -p "$d"
    mport=$(free_port); mgr=127.0.0.1:$mport
    "$bin/src/manager/kumo-manager" -v -l "$mgr" -o "$d/manager.log" >>"$d/manager.out" 2>&1 </dev/null &
    pids="$pids $!"
    wait_port "$mport"
    for i in 1 2 3; do start_server "$i"; done
    for i in 1 2 3; do wait_newcomer "127.0.0.1:$(cat "$d/server$i.port")"; done
    "$bin/tools/kumoctl/kumoctl" "$mgr" attach >/dev/null
    gport=$(free_port); gw=127.0.0.1:$gport
    "$bin/src/gateway/kumo-gateway" -v -m "$mgr" -t "$gw" -o "$d/gateway.log" >>"$d/gateway.out" 2>&1 </dev/null &
    pids="$pids $!"
    wait_port "$gport"
    # until the gateway has a hash space and the servers answer (a set round trip)
    n=0
    until printf 'set __bench__ 0 0 1\r\n1\r\nquit\r\n' | /usr/bin/python3 -c "
import socket,sys
s=socket.create_connection(('127.0.0.1',$gport),2); s.sendall(sys.stdin.buffer.read())
sys.exit(0 if s.recv(100).startswith(b'STORED') else 1)" 2>/dev/null; do
        n=$((n + 1)); [ $n -lt 100 ] || { echo "gateway not ready" >&2; exit 1; }
        sleep 0.2
    done
}

start_server() {
    port=$(free_port); sport=$(free_port)
    echo "$port" > "$d/server$1.port"
    "$bin/src/server/kumo-server" -v -l "127.0.0.1:$port" -L "$sport" -m "$mgr" \
        -s "$d/server$1.tch" -f "$d" -o "$d/server$1.log" >>"$d/server$1.out" 2>&1 </dev/null &
    pids="$pids $!"
    wait_port "$port"
}

preload() {
    t0=$(now)
    "$kvload" -s "$gw" --preload -t 0 -n "$K" -v "$V" -k 16 -c 16 -q >"$d/preload.out" 2>&1 \
        || { echo "preload failed:"; cat "$d/preload.out"; exit 1; }
    echo "  preload of $K keys x $V bytes: $(elapsed "$t0" "$(now)") s"
}

# Attach a 4th server (started by the caller); sets $t to the seconds from
# `kumoctl attach` to "replace finished" in the manager log.
attach_and_time() {
    wait_newcomer "127.0.0.1:$(cat "$d/server4.port")"
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

ops_of() { sed -n 's/.*"ops_per_s": *\([0-9.]*\).*/\1/p' "$1" | tail -1; }

echo "replace benchmark: K=$K keys, $V-byte values, binaries in $bin"

echo "variant 1: idle cluster"
start_cluster v1
preload
start_server 4
attach_and_time
echo "  attach -> replace finished: $t s"
echo "  items per server after the replace:$(items)"
stop_daemons

echo "variant 2: under kvload -c 16 -r 0.9 -v $V -n $K"
start_cluster v2
preload
"$kvload" -s "$gw" -c 16 -t 5 -r 0.9 -v "$V" -n "$K" -q --json >"$d/base.out" 2>&1 || true
echo "  baseline ops/s without a replace: $(ops_of "$d/base.out")"
"$kvload" -s "$gw" -c 16 -t 5 -w 0 -r 0.9 -v "$V" -n "$K" -q --json >"$d/load.out" 2>&1 &
lp=$!
start_server 4
attach_and_time
wait "$lp" || true
echo "  attach -> replace finished: $t s"
echo "  kvload ops/s over its 5 s window (replace running in it): $(ops_of "$d/load.out")"
grep '^RESULT' "$d/load.out" | sed 's/^/  /' || true
echo "  items per server after the replace:$(items)"
