#!/bin/sh
# Install what is missing, build, and start a local kumofs cluster:
# 1 manager (127.0.0.1:19700), 3 servers (127.0.0.1:19801-19803, streams 19901-19903)
# and 1 gateway speaking memcached on 127.0.0.1:11211.  Data and logs go to
# ./local-cluster.  "scripts/quickstart.sh stop" stops it again.
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
dir="$top/local-cluster"
bin="$top/build"

stop_cluster() {
    for f in "$dir"/*.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        kill "$pid" 2>/dev/null || true
        rm -f "$f"
    done
}

if [ "${1:-start}" = stop ]; then
    stop_cluster
    echo "local cluster stopped (data kept in $dir)"
    exit 0
fi

"$top/scripts/install-deps.sh"
"$top/scripts/build.sh"

mkdir -p "$dir"
stop_cluster
sleep 0.5

"$bin/src/manager/kumo-manager" -v -l 127.0.0.1:19700 -d "$dir/manager.pid" -o "$dir/manager.log"
for i in 1 2 3; do
    "$bin/src/server/kumo-server" -v -l 127.0.0.1:1980$i -L 1990$i -m 127.0.0.1:19700 \
        -s "$dir/server$i.tch" -f "$dir" -d "$dir/server$i.pid" -o "$dir/server$i.log"
done

# Wait until the three servers have registered with the manager, then attach them.
kumoctl="$bin/tools/kumoctl/kumoctl"
n=0
while [ $n -lt 100 ]; do
    known=$("$kumoctl" 127.0.0.1:19700 status 2>/dev/null | grep -c '127\.0\.0\.1:1980[123]' || true)
    [ "$known" -ge 3 ] && break
    n=$((n + 1)); sleep 0.2
done
"$kumoctl" 127.0.0.1:19700 attach >/dev/null

"$bin/src/gateway/kumo-gateway" -v -m 127.0.0.1:19700 -t 127.0.0.1:11211 \
    -d "$dir/gateway.pid" -o "$dir/gateway.log"

# Wait until a set through the gateway succeeds.
n=0
while [ $n -lt 100 ]; do
    if /usr/bin/python3 - <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection(("127.0.0.1", 11211), timeout=2)
s.sendall(b"set quickstart 0 0 2\r\nok\r\n")
sys.exit(0 if s.recv(100).startswith(b"STORED") else 1)
PY
    then break; fi
    n=$((n + 1)); sleep 0.2
done

"$kumoctl" 127.0.0.1:19700 status
cat <<MSG

kumofs is running: memcached clients connect to 127.0.0.1:11211
  e.g.  printf 'set foo 0 0 3\r\nbar\r\nget foo\r\n' | nc -q1 127.0.0.1 11211
admin:  $kumoctl 127.0.0.1:19700 status
        $bin/tools/kumostat/kumostat 127.0.0.1:19801 items
logs and data: $dir
stop:   $top/scripts/quickstart.sh stop
MSG
