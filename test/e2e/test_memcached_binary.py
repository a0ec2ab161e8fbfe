"""The memcached binary protocol front end (kumo-gateway -b) answers as memcached 1.6
does (DECISIONS.md §3): every opcode, status codes, quiet variants, request order,
large values, and malformed input that never crashes the gateway."""
import os
import shutil
import socket
import struct
import subprocess
import time

import pytest

import kumo

HDR = struct.Struct(">BBHBBHIIQ")   # magic opcode keylen extlen type status bodylen opaque cas

GET, SET, ADD, REPLACE, DELETE, INCR, DECR, QUIT, FLUSH, GETQ, NOOP, VERSION = range(12)
GETK, GETKQ, APPEND, PREPEND, STAT, SETQ, ADDQ, REPLACEQ, DELETEQ = range(0x0C, 0x15)
INCRQ, DECRQ, QUITQ, FLUSHQ, APPENDQ, PREPENDQ, VERBOSITY, TOUCH, GAT, GATQ = range(0x15, 0x1F)
GATK, GATKQ = 0x23, 0x24

OK, NOT_FOUND, EXISTS, TOO_LARGE, EINVAL, NOT_STORED, NON_NUMERIC = range(7)
UNKNOWN = 0x81


class Resp:
    def __init__(self, hdr, body):
        (self.magic, self.opcode, keylen, extlen, _, self.status, bodylen, self.opaque,
         self.cas) = hdr
        self.extras = body[:extlen]
        self.key = body[extlen:extlen + keylen]
        self.value = body[extlen + keylen:]

    def __repr__(self):
        return "Resp(op=%#x st=%#x opaque=%d key=%r value=%r)" % (
            self.opcode, self.status, self.opaque, self.key, self.value[:40])


def packet(opcode, key=b"", extras=b"", value=b"", opaque=0, cas=0, magic=0x80):
    body = extras + key + value
    return HDR.pack(magic, opcode, len(key), len(extras), 0, 0, len(body), opaque, cas) + body


class Bin:
    """A tiny raw binary-protocol client."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)

    def close(self):
        self.s.close()

    def send(self, *packets):
        self.s.sendall(b"".join(packets))

    def _recvn(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise EOFError("closed after %d of %d bytes" % (len(buf), n))
            buf += chunk
        return buf

    def recv(self):
        hdr = HDR.unpack(self._recvn(24))
        assert hdr[0] == 0x81, hdr
        return Resp(hdr, self._recvn(hdr[6]))

    def call(self, *a, **kw):
        self.send(packet(*a, **kw))
        return self.recv()

    def closed(self):
        """True when the server closed the connection (EOF within the timeout)."""
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True

    # conveniences
    def set(self, key, value, flags=0, exptime=0, cas=0, op=SET, opaque=0):
        return self.call(op, key, struct.pack(">II", flags, exptime), value, opaque, cas)

    def get(self, key, op=GET, opaque=0):
        return self.call(op, key, opaque=opaque)

    def incr(self, key, delta, initial=0, exptime=0, op=INCR):
        return self.call(op, key, struct.pack(">QQI", delta, initial, exptime))


@pytest.fixture(scope="module")
def gw():
    port = kumo.free_port()
    c = kumo.standard_cluster(3, gateway_extra=["-b", "127.0.0.1:%d" % port])
    c.binport = port
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def cl(gw):
    b = Bin(gw.binport)
    yield b
    b.close()
    assert gw.gateways[0].alive(), gw.logs()


def k(name):
    return ("bin-%s-%s" % (name, kumo.random_key())).encode()


def test_noop_version_and_opaque_echo(cl):
    r = cl.call(NOOP, opaque=0xcafebabe)
    assert (r.opcode, r.status, r.opaque, r.value) == (NOOP, OK, 0xcafebabe, b"")
    r = cl.call(VERSION, opaque=7)
    assert r.status == OK and r.opaque == 7 and r.value.startswith(b"1.6")


def test_set_get_getk_with_flags_and_cas(cl):
    key = k("set")
    r = cl.set(key, b"hello", flags=0xdeadbeef, opaque=3)
    assert (r.status, r.opaque) == (OK, 3) and r.cas != 0 and r.value == b""
    r = cl.get(key)
    assert r.status == OK and r.value == b"hello" and r.key == b""
    assert struct.unpack(">I", r.extras)[0] == 0xdeadbeef and r.cas != 0
    r = cl.get(key, op=GETK)
    assert r.status == OK and r.key == key and r.value == b"hello"
    assert cl.set(key, b"").status == OK      # empty values are allowed
    assert cl.get(key).value == b""


def test_get_miss_statuses(cl):
    key = k("miss")
    r = cl.get(key)
    assert r.status == NOT_FOUND and r.cas == 0 and r.extras == b""
    r = cl.get(key, op=GETK)
    assert r.status == NOT_FOUND and r.key == key


def test_quiet_variants_are_silent_and_replies_stay_in_order(cl):
    hit, miss = k("qhit"), k("qmiss")
    cl.set(hit, b"v")
    cl.send(packet(GETQ, miss, opaque=1), packet(GETKQ, hit, opaque=2),
            packet(SETQ, k("qset"), struct.pack(">II", 0, 0), b"x", opaque=3),
            packet(GETQ, hit, opaque=4), packet(DELETEQ, hit, opaque=5),
            packet(GETKQ, hit, opaque=6), packet(NOOP, opaque=7))
    r = cl.recv()
    assert (r.opaque, r.opcode, r.key, r.value) == (2, GETKQ, hit, b"v")
    r = cl.recv()
    assert (r.opaque, r.opcode, r.value) == (4, GETQ, b"v")
    r = cl.recv()
    assert (r.opaque, r.opcode) == (7, NOOP)


def test_pipelined_gets_come_back_in_request_order(cl):
    keys = [k("order%d" % i) for i in range(50)]
    cl.send(*[packet(SETQ, key, struct.pack(">II", i, 0), b"%d" % i)
              for i, key in enumerate(keys)])
    cl.send(*[packet(GET, key, opaque=i) for i, key in enumerate(keys)])
    for i in range(50):
        r = cl.recv()
        assert (r.opaque, r.status, r.value) == (i, OK, b"%d" % i)


def test_quiet_errors_are_still_reported(cl):
    key = k("qerr")
    cl.set(key, b"1")
    cl.send(packet(ADDQ, key, struct.pack(">II", 0, 0), b"2", opaque=9), packet(NOOP))
    r = cl.recv()
    assert (r.opcode, r.status, r.opaque) == (ADDQ, EXISTS, 9)
    assert cl.recv().opcode == NOOP


def test_add_replace_cas(cl):
    key = k("arc")
    assert cl.set(key, b"1", op=REPLACE).status == NOT_FOUND
    r = cl.set(key, b"1", op=ADD)
    assert r.status == OK and r.cas != 0
    assert cl.set(key, b"2", op=ADD).status == EXISTS
    assert cl.set(key, b"3", op=REPLACE).status == OK
    cas = cl.get(key).cas
    assert cl.set(key, b"4", cas=cas + 12345).status == EXISTS
    r = cl.set(key, b"5", cas=cas)
    assert r.status == OK and r.cas not in (0, cas)
    assert cl.set(key, b"6", cas=cas).status == EXISTS        # stale now
    assert cl.set(key, b"7", op=REPLACE, cas=r.cas).status == OK
    assert cl.get(key).value == b"7"
    assert cl.set(k("arc-none"), b"x", cas=99).status == NOT_FOUND


def test_delete(cl):
    key = k("del")
    cl.set(key, b"x")
    assert cl.call(DELETE, key).status == OK
    assert cl.get(key).status == NOT_FOUND
    assert cl.call(DELETE, key).status == NOT_FOUND
    cl.set(key, b"x")
    cl.send(packet(DELETEQ, key), packet(NOOP))
    assert cl.recv().opcode == NOOP
    assert cl.get(key).status == NOT_FOUND


def test_incr_decr(cl):
    key = k("incr")
    r = cl.incr(key, 5, initial=10)
    assert r.status == OK and struct.unpack(">Q", r.value)[0] == 10 and r.cas != 0
    assert struct.unpack(">Q", cl.incr(key, 5).value)[0] == 15
    assert struct.unpack(">Q", cl.incr(key, 3, op=DECR).value)[0] == 12
    assert struct.unpack(">Q", cl.incr(key, 100, op=DECR).value)[0] == 0
    assert cl.get(key).value == b"0"
    assert cl.incr(k("incr-none"), 1, exptime=0xffffffff).status == NOT_FOUND
    nn = k("nonnum")
    cl.set(nn, b"abc")
    assert cl.incr(nn, 1).status == NON_NUMERIC
    cl.send(packet(INCRQ, key, struct.pack(">QQI", 1, 0, 0)), packet(NOOP))
    assert cl.recv().opcode == NOOP
    assert cl.get(key).value == b"1"


def test_append_prepend(cl):
    key = k("app")
    assert cl.call(APPEND, key, value=b"x").status == NOT_STORED
    assert cl.call(PREPEND, key, value=b"x").status == NOT_STORED
    cl.set(key, b"mid", flags=5)
    assert cl.call(APPEND, key, value=b"-end").status == OK
    assert cl.call(PREPEND, key, value=b"start-").status == OK
    r = cl.get(key)
    assert r.value == b"start-mid-end" and struct.unpack(">I", r.extras)[0] == 5


def test_touch_and_gat(cl):
    key = k("touch")
    exp = struct.pack(">I", 1000)
    assert cl.call(TOUCH, key, exp).status == NOT_FOUND
    assert cl.call(GAT, key, exp).status == NOT_FOUND
    cl.set(key, b"tv", flags=2)
    assert cl.call(TOUCH, key, exp).status == OK
    r = cl.call(GAT, key, exp)
    assert r.status == OK and r.value == b"tv" and struct.unpack(">I", r.extras)[0] == 2
    r = cl.call(GATK, key, exp)
    assert r.status == OK and r.key == key and r.value == b"tv"
    cl.send(packet(GATQ, k("touch-none"), exp), packet(NOOP))
    assert cl.recv().opcode == NOOP


def test_stat_verbosity_flush(cl):
    cl.send(packet(STAT, opaque=4))
    stats = {}
    while True:
        r = cl.recv()
        assert r.status == OK and r.opaque == 4
        if not r.key:
            break
        stats[r.key] = r.value
    assert b"pid" in stats and b"version" in stats
    assert cl.call(VERBOSITY, extras=struct.pack(">I", 1)).status == OK
    key = k("flush")
    cl.set(key, b"x")
    assert cl.call(FLUSH).status == OK
    assert cl.get(key).status == NOT_FOUND
    cl.send(packet(FLUSHQ), packet(NOOP))
    assert cl.recv().opcode == NOOP


def test_binary_flush_with_an_absolute_time_is_not_scheduled_decades_out(cl):
    """A flush whose expiration is a unix time (over 30 days) runs at that time, as
    memcached's; it was taken as a delay in seconds, about 56 years."""
    key = k("flush-abs")
    cl.set(key, b"x")
    at = int(time.time()) + 2
    assert cl.call(FLUSH, extras=struct.pack(">I", at)).status == OK
    assert cl.get(key).status == OK                  # not yet
    deadline = time.time() + 10
    while cl.get(key).status == OK and time.time() < deadline:
        time.sleep(0.2)
    assert cl.get(key).status == NOT_FOUND
    assert time.time() >= at - 1


def test_large_values_are_not_truncated(cl):
    key = k("big")
    val = os.urandom(1024 * 1024)
    assert cl.set(key, val).status == OK
    r = cl.get(key)
    assert r.status == OK and len(r.value) == len(val) and r.value == val
    mid = os.urandom(70000)          # the original sent len mod 65536
    cl.set(key, mid)
    assert cl.get(key).value == mid


def test_too_large_value_and_connection_survives(cl):
    key = k("huge")
    r = cl.set(key, b"x" * (1024 * 1024 + 1))
    assert r.status == TOO_LARGE
    r = cl.set(key, b"y" * (3 * 1024 * 1024))     # beyond any body we would buffer
    assert r.status == TOO_LARGE
    assert cl.call(NOOP).opcode == NOOP
    assert cl.get(key).status == NOT_FOUND


def test_invalid_requests_get_errors_and_connection_survives(cl):
    assert cl.call(0x40, opaque=11).status == UNKNOWN
    assert cl.call(0xfe).status == UNKNOWN
    assert cl.call(GET, k("x"), extras=b"abcd").status == EINVAL        # extras on get
    assert cl.call(GET).status == EINVAL                                # no key
    assert cl.call(SET, k("x"), value=b"v").status == EINVAL            # no extras
    assert cl.call(INCR, k("x"), extras=b"\0" * 8).status == EINVAL     # short extras
    assert cl.call(NOOP, key=b"k").status == EINVAL
    assert cl.call(GET, b"x" * 251).status == EINVAL
    # key + extras longer than the body
    bad = HDR.pack(0x80, GET, 10, 0, 0, 0, 4, 5, 0) + b"abcd"
    cl.send(bad)
    r = cl.recv()
    assert (r.status, r.opaque) == (EINVAL, 5)
    assert cl.call(NOOP).opcode == NOOP


def test_bad_magic_closes_the_connection(gw, cl):
    cl.send(b"get foo\r\n" + b"\0" * 20)
    assert cl.closed()
    # replies before the garbage still go out first
    b = Bin(gw.binport)
    b.send(packet(NOOP, opaque=1), packet(VERSION, magic=0x81))
    assert b.recv().opaque == 1
    assert b.closed()
    b.close()


def test_garbage_and_short_packets_do_not_crash(gw):
    rnd = os.urandom
    for payload in [b"\x80", b"\x80\x00\x00", packet(GET, b"k")[:30],
                    HDR.pack(0x80, SET, 0xffff, 0xff, 0, 0, 0xffffffff, 0, 0),
                    b"\x80" + rnd(300), packet(SET, b"k", b"\0" * 8, b"v")[:-1]]:
        s = socket.create_connection(("127.0.0.1", gw.binport), timeout=5)
        s.sendall(payload)
        s.close()
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", gw.binport), timeout=5)
        s.settimeout(0.2)
        s.sendall(b"\x80" + rnd(23) + rnd(100))
        try:
            s.recv(65536)
        except socket.timeout:
            pass
        s.close()
    b = Bin(gw.binport)
    assert b.call(NOOP).status == OK
    b.close()
    assert gw.gateways[0].alive(), gw.logs()


def test_quit_and_quitq(gw):
    b = Bin(gw.binport)
    b.send(packet(NOOP, opaque=1), packet(QUIT, opaque=2), packet(NOOP, opaque=3))
    assert b.recv().opaque == 1
    r = b.recv()
    assert (r.opcode, r.opaque, r.status) == (QUIT, 2, OK)
    assert b.closed()
    b.close()
    b = Bin(gw.binport)
    b.send(packet(QUITQ))
    assert b.closed()
    b.close()


@pytest.mark.skipif(shutil.which("memccapable") is None, reason="memccapable not installed")
def test_memccapable_binary(gw):
    r = subprocess.run(["memccapable", "-h", "127.0.0.1", "-p", str(gw.binport), "-b",
                        "-t", "10"], capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert "[FAIL]" not in out, out
    assert "All tests passed" in out, out


def test_text_stats_and_binary_stat_report_the_same_counters(gw):
    """One set of memcached stats for the whole gateway: `stats` on the text port and
    `stat` on the binary port agree on the connections of both listeners, and a command
    on one protocol shows in the other's counters."""
    def bin_stats(b):
        b.send(packet(STAT, opaque=5))
        stats = {}
        while True:
            r = b.recv()
            assert r.status == OK and r.opaque == 5
            if not r.key:
                return stats
            stats[r.key.decode()] = r.value.decode()

    def text_stats(f, s):
        s.sendall(b"stats\r\n")
        stats = {}
        while True:
            line = f.readline()
            assert line, "text connection closed"
            if line == b"END\r\n":
                return stats
            _, name, value = line.decode().split()
            stats[name] = value

    b, b2 = Bin(gw.binport), Bin(gw.binport)
    t = socket.create_connection(("127.0.0.1", gw.gateways[0].port), timeout=30)
    tf = t.makefile("rb")

    def agree():
        # connections of earlier tests may still be closing: read until both match
        bs, ts = bin_stats(b), text_stats(tf, t)
        return all(bs[n] == ts[n] for n in ("curr_connections", "total_connections",
                                            "cmd_get", "get_misses"))
    kumo.wait_for(agree, what="text and binary stats agree")
    ts = text_stats(tf, t)
    assert int(ts["curr_connections"]) >= 3        # b, b2 (binary) and t (text)
    assert set(bin_stats(b)) == set(ts)             # the same fields

    before = text_stats(tf, t)
    assert b.get(k("stats-miss")).status == NOT_FOUND
    after = text_stats(tf, t)
    assert int(after["cmd_get"]) == int(before["cmd_get"]) + 1
    assert int(after["get_misses"]) == int(before["get_misses"]) + 1
    assert bin_stats(b2)["cmd_get"] == after["cmd_get"]
    for x in (b, b2):
        x.close()
    t.close()
