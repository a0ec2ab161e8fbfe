# Shell helpers of the benchmark scripts (sourced, not run): a throw-away kumofs cluster
# and the reference servers on free loopback ports, every process remembered by pid.
#
# The caller sets $bin (the build directory) and $dir (a temporary directory) and calls
# bench_stop_all on exit.  Started pids collect in $bench_pids.

bench_pids=""

# A port nobody listens on now (kernel-chosen).
bench_free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Wait until 127.0.0.1:$1 accepts connections (at most 10 s).
bench_wait_port() {
    n=0
    until /usr/bin/python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),0.5)" 2>/dev/null; do
        n=$((n + 1)); [ $n -lt 100 ] || { echo "port $1 did not open" >&2; return 1; }
        sleep 0.1
    done
}

# SIGTERM every process started here (by pid) and wait for it.
bench_stop_all() {
    for p in $bench_pids; do kill "$p" 2>/dev/null || true; done
    for p in $bench_pids; do wait "$p" 2>/dev/null || true; done
    bench_pids=""
}

# Start a kumo-server $1 in $d (manager $mgr); its port goes to $d/server$1.port.
bench_start_server() {
    port=$(bench_free_port); sport=$(bench_free_port)
    echo "$port" > "$d/server$1.port"
    "$bin/src/server/kumo-server" -v -l "127.0.0.1:$port" -L "$sport" -m "$mgr" \
        -s "$d/server$1.tch" -f "$d" -o "$d/server$1.log" ${KUMO_SERVER_OPTS:-} \
        >>"$d/server$1.out" 2>&1 </dev/null &
    bench_pids="$bench_pids $!"
    echo $! > "$d/server$1.pid"
    bench_wait_port "$port"
}

# Wait until `kumoctl status` lists $1 (an address) as a newcomer.
bench_wait_newcomer() {
    n=0
    until "$bin/tools/kumoctl/kumoctl" "$mgr" status | sed -n '/^not attached/,$p' | grep -q "  $1\$"; do
        n=$((n + 1)); [ $n -lt 200 ] || { echo "$1 never registered" >&2; return 1; }
        sleep 0.1
    done
}

# Start a cluster in $dir/$1: a manager, 3 servers attached, a gateway (text protocol);
# sets $d, $mgr and $gw (HOST:PORT of the gateway).
bench_start_cluster() {
    d="$dir/$1"; mkdir -p "$d"
    mport=$(bench_free_port); mgr=127.0.0.1:$mport
    "$bin/src/manager/kumo-manager" -v -l "$mgr" -o "$d/manager.log" >>"$d/manager.out" 2>&1 </dev/null &
    bench_pids="$bench_pids $!"
    bench_wait_port "$mport"
    for i in 1 2 3; do bench_start_server "$i"; done
    for i in 1 2 3; do bench_wait_newcomer "127.0.0.1:$(cat "$d/server$i.port")"; done
    "$bin/tools/kumoctl/kumoctl" "$mgr" attach >/dev/null
    gport=$(bench_free_port); gw=127.0.0.1:$gport
    "$bin/src/gateway/kumo-gateway" -v -m "$mgr" -t "$gw" -o "$d/gateway.log" ${KUMO_GATEWAY_OPTS:-} \
        >>"$d/gateway.out" 2>&1 </dev/null &
    bench_pids="$bench_pids $!"
    echo $! > "$d/gateway.pid"
    bench_wait_port "$gport"
    # until the gateway has a hash space and the servers answer (a set round trip)
    n=0
    until /usr/bin/python3 -c "
import socket,sys
s=socket.create_connection(('127.0.0.1',$gport),2); s.sendall(b'set __bench__ 0 0 1\r\n1\r\n')
sys.exit(0 if s.recv(100).startswith(b'STORED') else 1)" 2>/dev/null; do
        n=$((n + 1)); [ $n -lt 100 ] || { echo "gateway not ready" >&2; return 1; }
        sleep 0.2
    done
}

# Start one memcached (one worker thread, as the reference runs) on a free port; sets $mc.
bench_start_memcached() {
    port=$(bench_free_port)
    memcached -u "$(id -un)" -l 127.0.0.1 -p "$port" -U 0 -t 1 -m 1024 -c 4096 </dev/null >/dev/null 2>&1 &
    bench_pids="$bench_pids $!"
    bench_wait_port "$port"
    mc=127.0.0.1:$port
}

# Start twemproxy (Debian's nutcracker, ketama) in front of 3 new memcached; sets $twem.
bench_start_twemproxy() {
    backends=""
    for i in 1 2 3; do
        bench_start_memcached
        backends="$backends
   - $mc:1"
    done
    port=$(bench_free_port)
    cat >"$dir/nutcracker.yml" <<YML
bench:
  listen: 127.0.0.1:$port
  hash: fnv1a_64
  distribution: ketama
  timeout: 2000
  backlog: 1024
  preconnect: true
  auto_eject_hosts: false
  servers:$backends
YML
    nutcracker -c "$dir/nutcracker.yml" -o "$dir/nutcracker.log" -a 127.0.0.1 -s "$(bench_free_port)" </dev/null >/dev/null 2>&1 &
    bench_pids="$bench_pids $!"
    bench_wait_port "$port"
    twem=127.0.0.1:$port
}
