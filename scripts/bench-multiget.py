#!/usr/bin/python3
"""Throughput of 100-key multi-gets: kumo-gateway (3 servers + 1 gateway on this host)
against memcached 1.6, side by side.  A benchmark, not a test: it prints figures.

memcaslap cannot be used: its keys start with control bytes, which the gateway refuses
(DECISIONS.md 3).  The load here: P client processes, each keeping D requests of
"get k1 ... k100" (16-byte keys, 100-byte values, all present) in flight on one
connection, for S seconds.  Usage: scripts/bench-multiget.py [S] [rounds] [P] [D]"""
import multiprocessing
import os
import socket
import sys
import time

top = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(top, "test", "e2e"))
os.environ.setdefault("KUMO_BUILD_DIR", os.path.join(top, "build"))
import kumo    # noqa: E402
import mcdiff  # noqa: E402

SECS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
PROCS = int(sys.argv[3]) if len(sys.argv) > 3 else 4
DEPTH = int(sys.argv[4]) if len(sys.argv) > 4 else 8
NKEYS = 10000


def key(i):
    return b"bench-key-%06d" % i          # 16 bytes


def preload(port):
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        for i in range(0, NKEYS, 500):
            s.sendall(b"".join(b"set %s 0 0 100\r\n%s\r\n" % (key(j), b"v" * 100)
                               for j in range(i, i + 500)))
            mcdiff.read_until(s, lambda b: b.count(b"STORED\r\n") >= 500)


def client(port, seed, out):
    lines = [b"get " + b" ".join(key((seed * 7919 + n * 100 + j) % NKEYS) for j in range(100))
             + b"\r\n" for n in range(64)]
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    done = sent = 0
    buf = b""
    end = time.time() + SECS
    while sent < DEPTH:
        s.sendall(lines[sent % 64])
        sent += 1
    while time.time() < end:
        chunk = s.recv(1 << 20)
        buf += chunk
        n = buf.count(b"END\r\n")
        if n:
            buf = buf[buf.rfind(b"END\r\n") + 5:]
            done += n
            s.sendall(b"".join(lines[(sent + i) % 64] for i in range(n)))
            sent += n
    s.close()
    out.put(done)


def run(port):
    q = multiprocessing.Queue()
    ps = [multiprocessing.Process(target=client, args=(port, i, q)) for i in range(PROCS)]
    t0 = time.time()
    for p in ps:
        p.start()
    total = sum(q.get() for _ in ps)
    for p in ps:
        p.join()
    return total / max(time.time() - t0, SECS)


mc = mcdiff.Memcached(["-t", "2"])
c = kumo.standard_cluster(3)
try:
    targets = (("memcached", mc.port), ("kumo-gateway", c.gateways[0].port))
    for _, port in targets:
        preload(port)
    res = {name: [] for name, _ in targets}
    for _ in range(ROUNDS):
        for name, port in targets:
            res[name].append(run(port))
    print("100-key multi-gets, %d clients x %d in flight, %d s x %d rounds, median:"
          % (PROCS, DEPTH, SECS, ROUNDS))
    for name, v in res.items():
        m = sorted(v)[len(v) // 2]
        print("  %-13s %7.0f multi-gets/s = %8.0f keys/s" % (name, m, m * 100))
finally:
    mc.close()
    c.close()
