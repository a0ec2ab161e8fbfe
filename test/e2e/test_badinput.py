"""Bad input never crashes a daemon and never wedges a memcached connection."""
import os
import random
import socket

import kumo


def _conv(port, payload, until=b"\r\n", timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(payload)
    buf = b""
    while not buf.endswith(until):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return s, buf


BAD_LINES = [
    (b"bogus command\r\n", b"ERROR\r\n"),
    (b"\r\n", b"ERROR\r\n"),
    (b"set k 0 0 notanumber\r\n", b"CLIENT_ERROR"),
    (b"set k 0 0 3\r\nabcdef\r\n", b"CLIENT_ERROR bad data chunk"),
    (b"get " + b"x" * 251 + b"\r\n", b"CLIENT_ERROR"),
    (b"set " + b"x" * 300 + b" 0 0 1\r\nx\r\n", b"CLIENT_ERROR"),
    (b"set k abc 0 1\r\nx\r\n", b"CLIENT_ERROR"),
    (b"delete\r\n", b"ERROR"),
]


def test_malformed_lines_get_errors_and_connection_survives(cluster3):
    port = cluster3.gateways[0].port
    for bad, expect in BAD_LINES:
        s, buf = _conv(port, bad)
        assert buf.startswith(expect), (bad[:40], buf[:80])
        # the same connection still works
        s.sendall(b"set ok 0 0 2\r\nhi\r\nget ok\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            chunk = s.recv(4096)
            assert chunk, bad[:40]
            buf += chunk
        assert buf.endswith(b"STORED\r\nVALUE ok 0 2\r\nhi\r\nEND\r\n"), (bad[:40], buf)
        s.close()


def test_pipelined_replies_in_order(cluster3):
    port = cluster3.gateways[0].port
    req = b"".join(b"set p%d 0 0 %d\r\n%s\r\n" % (i, len(str(i)), str(i).encode())
                   for i in range(100))
    req += b"".join(b"get p%d\r\n" % i for i in range(100))
    s, buf = _conv(port, req, until=b"VALUE p99 0 2\r\n99\r\nEND\r\n", timeout=30)
    expect = b"STORED\r\n" * 100 + b"".join(
        b"VALUE p%d 0 %d\r\n%d\r\nEND\r\n" % (i, len(str(i)), i) for i in range(100))
    assert buf == expect
    s.close()


def test_random_bytes_on_rpc_ports_do_not_crash(cluster3):
    c = cluster3
    rnd = random.Random(1234)
    ports = [c.managers[0].port] + [c.servers[i]["port"] for i in range(3)] \
        + [c.servers[i]["stream"] for i in range(3)] + [c.gateways[0].port]
    for port in ports:
        for n in (1, 7, 100, 5000):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.sendall(bytes(rnd.randrange(256) for _ in range(n)))
                s.settimeout(0.5)
                try:
                    s.recv(4096)
                except OSError:
                    pass
                s.close()
            except OSError:
                pass
        # a valid msgpack envelope with absurd contents
    for port in [c.managers[0].port, c.servers[0]["port"]]:
        for payload in (b"\x94\x00\x01\xce\xff\xff\xff\xff\x90",      # unknown method
                        b"\x94\x00\x01\x23\x93\x00\xa1x\xa1y",          # Set with short key/value
                        b"\x94\x00\x01\x22\xc0",                        # params not an array
                        b"\x93\x02\xa6\x00\x00\x7f\x00\x00\x01\x01",    # handshake with port 0
                        b"\xdb\xff\xff\xff\xff",                        # raw of 4 GiB announced
                        b"\x94\x00\x01\x22\xdd\xff\xff\xff\xff",        # array of 2^32 params
                        b"\x94\x00\x01\x22\xdf\xff\xff\xff\xff",        # map of 2^32 pairs
                        b"\x94\x00\x01\x22" + b"\x91" * 40 + b"\x01"):  # 40 nested arrays
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.sendall(payload)
                s.settimeout(0.5)
                try:
                    s.recv(4096)
                except OSError:
                    pass
                s.close()
            except OSError:
                pass
    for d in c.daemons:
        assert d.alive(), d.name + " died:\n" + d.log()[-3000:]
    # and the cluster still serves
    mc = c.client()
    assert mc.set("after-garbage", b"v", noreply=False) is True
    assert mc.get("after-garbage") == b"v"
