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


# Malformed requests and the exact reply.  Checked against memcached 1.6.18: identical
# except where noted (we drop the data block of a rejected storage command instead of
# running it as a command, refuse flags above 32 bits, and refuse control bytes in keys).
BAD_LINES = [
    (b"bogus command\r\n", b"ERROR\r\n"),
    (b"\r\n", b"ERROR\r\n"),
    (b"GET foo\r\n", b"ERROR\r\n"),
    (b"set k 0 0 notanumber\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"set k 0 0 3\r\nabcdef\r\n", b"CLIENT_ERROR bad data chunk\r\nERROR\r\n"),
    (b"get " + b"x" * 251 + b"\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"set " + b"x" * 300 + b" 0 0 1\r\nx\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"set k abc 0 1\r\nx\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"delete\r\n", b"ERROR\r\n"),
    (b"set k 0 0\r\n", b"ERROR\r\n"),
    (b"set k 0 0 -1\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"set k 4294967296 0 1\r\nx\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"set k 0 abc 1\r\nx\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"cas k 0 0 1\r\nx\r\n", b"ERROR\r\nERROR\r\n"),
    (b"cas k 0 0 1 abc\r\nx\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"incr k\r\n", b"ERROR\r\n"),
    (b"incr k abc\r\n", b"CLIENT_ERROR invalid numeric delta argument\r\n"),
    (b"incr k -1\r\n", b"CLIENT_ERROR invalid numeric delta argument\r\n"),
    (b"decr k 18446744073709551616\r\n", b"CLIENT_ERROR invalid numeric delta argument\r\n"),
    (b"touch k\r\n", b"ERROR\r\n"),
    (b"touch k abc\r\n", b"CLIENT_ERROR invalid exptime argument\r\n"),
    (b"delete k 5\r\n",
     b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"),
    (b"delete k noreply extra\r\n",
     b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"),
    (b"get\r\n", b"ERROR\r\n"),
    (b"gets\r\n", b"ERROR\r\n"),
    (b"gat abc k\r\n", b"CLIENT_ERROR invalid exptime argument\r\n"),
    (b"verbosity\r\n", b"ERROR\r\n"),
    (b"verbosity abc\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"flush_all abc\r\n", b"CLIENT_ERROR invalid exptime argument\r\n"),
    (b"append k 0 0 2\r\nabc\r\n", b"CLIENT_ERROR bad data chunk\r\nERROR\r\n"),
    (b"prepend k 0 0 x\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"add k 0 0 1 2 3 4\r\nx\r\n", b"ERROR\r\nERROR\r\n"),
    (b"get a\x01b\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (b"set k 0 0 1 noreply\r\nxyz\r\n", b"ERROR\r\n"),
    (b"stats nonsense\r\n", b"ERROR\r\n"),
    (b"incr\r\n", b"ERROR\r\n"),
    (b"replace k\r\n", b"ERROR\r\n"),
    (b"set k 0 0 2000000\r\n" + b"v" * 2000000 + b"\r\n",
     b"SERVER_ERROR object too large for cache\r\n"),
    (b"x" * 20000 + b"\r\n", b"CLIENT_ERROR line too long\r\n"),
]


def _reply_before_version(s, payload):
    """Send payload + 'version', return everything before the VERSION reply."""
    s.sendall(payload + b"version\r\n")
    buf = b""
    while b"VERSION " not in buf:
        chunk = s.recv(65536)
        assert chunk, "connection closed after %r" % payload[:40]
        buf += chunk
    return buf.split(b"VERSION ")[0]


def test_malformed_lines_get_errors_and_connection_survives(cluster3):
    port = cluster3.gateways[0].port
    assert len(BAD_LINES) >= 30
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    for bad, expect in BAD_LINES:
        # one long-lived connection: every error leaves it usable for the next request
        assert _reply_before_version(s, bad) == expect, bad[:40]
    s.sendall(b"set ok 0 0 2\r\nhi\r\nget ok\r\n")
    buf = b""
    while not buf.endswith(b"END\r\n"):
        chunk = s.recv(4096)
        assert chunk
        buf += chunk
    assert buf.endswith(b"STORED\r\nVALUE ok 0 2\r\nhi\r\nEND\r\n"), buf
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
