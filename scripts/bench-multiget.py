#!/usr/bin/python3
"""Throughput of 100-key multi-gets: kumo-gateway (3 kumo-servers + 1 gateway on this
host, text port) against memcached 1.6 (Debian's, -t 2), side by side.  A benchmark, not a
test: it prints figures.

    scripts/bench-multiget.py [seconds] [rounds] [processes] [connections] [depth]

The load is generated here, not with memcaslap: memcaslap's keys start with bytes
0x10-0x1f, which the gateway refuses (doc/protocol-additions.md 7.2), and kvload has no
multi-get.  Each of `processes` client processes keeps `connections` connections busy
with `depth` pipelined `get` lines of 100 keys each, drawn from 10,000 preloaded keys
with 100-byte values.  A reply is checked byte for byte the first time its request line
is used and by its exact length and "END" after that.  Both targets get the same request
lines and run interleaved (memcached, gateway, memcached, ...); the median per target
is printed.  On a shared 2-core host the client, the cluster and memcached compete for
CPU: compare the two lines with each other, not with published figures."""
import multiprocessing
import os
import random
import selectors
import socket
import sys
import time

top = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(top, "test", "e2e"))
os.environ.setdefault("KUMO_BUILD_DIR", os.path.join(top, "build"))
import kumo    # noqa: E402
import mcdiff  # noqa: E402

KEYS = 10000
PER_GET = 100
VALUE = 100
LINES = 256         # distinct request lines, reused round robin


def key(i):
    return b"bm%06d" % i


def value(i):
    return (b"%06d" % i) * (VALUE // 6) + b"v" * (VALUE % 6)


def request_lines():
    rnd = random.Random(1)
    out = []
    for _ in range(LINES):
        ids = rnd.sample(range(KEYS), PER_GET)
        line = b"get " + b" ".join(key(i) for i in ids) + b"\r\n"
        reply = b"".join(b"VALUE %s 0 %d\r\n%s\r\n" % (key(i), VALUE, value(i))
                         for i in ids) + b"END\r\n"
        out.append((line, reply))
    return out


def preload(port):
    """Set every key, pipelined, and wait for all the STOREDs."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        for base in range(0, KEYS, 1000):
            s.sendall(b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (key(i), VALUE, value(i))
                               for i in range(base, base + 1000)))
            want = b"STORED\r\n" * 1000
            got = mcdiff.read_until(s, lambda b: len(b) >= len(want))
            if got != want:
                raise SystemExit("preload of port %d failed: %r" % (port, got[:200]))


def client(port, secs, conns, depth, seed, result):
    """One process: conns connections, depth requests in flight on each, for secs."""
    lines = request_lines()
    checked = [False] * LINES
    sel = selectors.DefaultSelector()
    state = []
    nxt = seed % LINES
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        st = {"sock": s, "buf": bytearray(), "fifo": []}
        for _ in range(depth):
            s.sendall(lines[nxt][0])
            st["fifo"].append(nxt)
            nxt = (nxt + 1) % LINES
        sel.register(s, selectors.EVENT_READ, st)
        state.append(st)
    done = errors = 0
    end = time.monotonic() + secs
    start = time.monotonic()
    while time.monotonic() < end:
        for k, _ in sel.select(timeout=1.0):
            st = k.data
            chunk = st["sock"].recv(1 << 20)
            if not chunk:
                raise SystemExit("port %d closed the connection" % port)
            st["buf"] += chunk
            while st["fifo"]:
                idx = st["fifo"][0]
                want = lines[idx][1]
                if len(st["buf"]) < len(want):
                    break
                got = bytes(st["buf"][:len(want)])
                del st["buf"][:len(want)]
                if not checked[idx]:
                    checked[idx] = got == want
                    errors += got != want
                elif not got.endswith(b"END\r\n"):
                    errors += 1
                st["fifo"].pop(0)
                done += 1
                st["sock"].sendall(lines[nxt][0])
                st["fifo"].append(nxt)
                nxt = (nxt + 1) % LINES
    elapsed = time.monotonic() - start
    for st in state:
        st["sock"].close()
    result.put((done, elapsed, errors))


def run(port, secs, procs, conns, depth):
    q = multiprocessing.Queue()
    ps = [multiprocessing.Process(target=client, args=(port, secs, conns, depth, i * 37, q))
          for i in range(procs)]
    for p in ps:
        p.start()
    res = [q.get(timeout=secs + 120) for _ in ps]
    for p in ps:
        p.join(30)
    rate = sum(d / e for d, e, _ in res)
    return rate, sum(x[2] for x in res)


def main():
    a = [int(x) for x in sys.argv[1:]]
    secs, rounds, procs, conns, depth = (a + [10, 3, 2, 16, 2][len(a):])[:5]
    mc = mcdiff.Memcached(["-t", "2"])
    c = kumo.standard_cluster(3)
    try:
        targets = (("memcached", mc.port), ("kumo-gateway", c.gateways[0].port))
        for _, port in targets:
            preload(port)
        res = {name: [] for name, _ in targets}
        for _ in range(rounds):
            for name, port in targets:
                res[name].append(run(port, secs, procs, conns, depth))
                time.sleep(1)
        print("100-key multi-gets of 100-byte values (get line of 100 keys out of %d), "
              "%d client processes x %d connections x %d in flight, %d s x %d rounds:"
              % (KEYS, procs, conns, depth, secs, rounds))
        med = {}
        for name, v in res.items():
            rates = sorted(x[0] for x in v)
            med[name] = rates[len(rates) // 2]
            print("  %-13s median %8.0f multi-gets/s = %9.0f keys/s   rounds %s   errors %d"
                  % (name, med[name], med[name] * PER_GET,
                     " ".join("%.0f" % r for r in rates), sum(x[1] for x in v)))
        print("  kumo-gateway / memcached: %.2f" % (med["kumo-gateway"] / med["memcached"]))
    finally:
        mc.close()
        c.close()


if __name__ == "__main__":
    main()
