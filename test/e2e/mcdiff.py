"""Differential testing helpers: the same bytes go to a real memcached 1.6 and to a
kumo-gateway, and the replies are compared exactly after one normalisation -- CAS
uniques, which no two servers share, are renamed C1, C2, ... in order of first
appearance on each side, so "the same CAS twice" and "a new CAS" still compare."""
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time

import kumo

SENTINEL = b"mn\r\n"          # meta no-op: its "MN\r\n" ends every exchange
SENTINEL_REPLY = b"MN\r\n"


class Memcached:
    """Debian's memcached on a free loopback port (never 11211), killed on close."""

    def __init__(self, extra=()):
        exe = shutil.which("memcached")
        if not exe:
            raise RuntimeError("memcached is not installed (scripts/install-deps.sh)")
        self.port = kumo.free_port()
        argv = [exe, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0"] + list(extra)
        if os.getuid() == 0:
            argv += ["-u", "nobody"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kumo.wait_for(lambda: kumo.port_open(self.port), what="memcached port")

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def read_until(sock, done, limit=64 << 20):
    """Read until done(buf) or EOF (then b"<EOF>" is appended); bounded by the socket
    timeout and by limit bytes."""
    buf = b""
    while not done(buf) and len(buf) < limit:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return buf + b"<EOF>"
        buf += chunk
    return buf


_VALUE_CAS = re.compile(rb"^(VALUE \S+ \d+ \d+ )(\d+)$")
_META_LINE = re.compile(rb"^(HD|VA|EN|NS|EX|NF)( |$)")
_META_CAS = re.compile(rb"(?<= )c(\d+)")


class CasNames:
    """Map one server's CAS uniques to C1, C2, ... in order of first appearance; the raw
    value of the latest one is kept for requests that send it back ({cas})."""

    def __init__(self):
        self.names = {}
        self.last = None

    def name(self, raw, key=None):
        """Two keys may share a version (each server stamps its own), so the name is per
        key where the reply says which key it is about."""
        self.last = raw
        if (key, raw) not in self.names:
            self.names[(key, raw)] = b"C%d" % (len(self.names) + 1)
        return self.names[(key, raw)]

    def text(self, data):
        lines = data.split(b"\r\n")
        for i, line in enumerate(lines):
            m = _VALUE_CAS.match(line)
            if m:
                lines[i] = m.group(1) + self.name(m.group(2), m.group(1).split(b" ")[1])
            elif _META_LINE.match(line):
                lines[i] = _META_CAS.sub(lambda m: b"c" + self.name(m.group(1)), line)
        return b"\r\n".join(lines)


class Side:
    def __init__(self, name, port):
        self.name = name
        self.port = port
        self.cas = CasNames()

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)


def _fill(data, side):
    if b"{cas}" in data:
        data = data.replace(b"{cas}", side.cas.last or b"0")
    return data


def text_exchange(side, data, close=False):
    """Send data (then the sentinel, unless the connection is expected to close) and
    return the normalised reply without the sentinel's."""
    with side.connect() as s:
        s.sendall(_fill(data, side) + (b"" if close else SENTINEL))
        if close:
            raw = read_until(s, lambda b: False)
        else:
            raw = read_until(s, lambda b: b.endswith(SENTINEL_REPLY))
            raw = raw[:-len(SENTINEL_REPLY)]
    return side.cas.text(raw)


_META_TTL = re.compile(rb"(?<= )t(\d+)(?=[ \r])")


def _ttl_tolerant(a, b):
    """Remaining TTLs (meta t flag, positive) may differ by a second boundary crossed
    between the two exchanges: equal within 2 s, they are shown as t~."""
    ta, tb = _META_TTL.findall(a), _META_TTL.findall(b)
    if len(ta) == len(tb) and all(abs(int(x) - int(y)) <= 2 for x, y in zip(ta, tb)):
        a, b = _META_TTL.sub(b"t~", a), _META_TTL.sub(b"t~", b)
    return a, b


class Pair:
    """memcached and the gateway side by side."""

    def __init__(self, mc_port, gw_port, gw_binport=None):
        self.mc = Side("memcached", mc_port)
        self.gw = Side("gateway", gw_port)
        self.gwbin = Side("gateway binary", gw_binport or gw_port)
        self.gwbin.cas = self.gw.cas

    def _fresh(self):
        # CAS names are per exchange; the raw last CAS survives for {cas}
        for side in (self.mc, self.gw):
            side.cas.names = {}

    def text(self, data, close=False, expect=None):
        self._fresh()
        a = text_exchange(self.mc, data, close)
        b = text_exchange(self.gw, data, close)
        a, b = _ttl_tolerant(a, b)
        assert b == a, "request %r\nmemcached: %r\ngateway:   %r" % (data[:300], a[:2000], b[:2000])
        if expect is not None:
            assert a == expect, "memcached itself answered %r" % a
        return a

    def both(self, data, close=False):
        """The two normalised replies, for tests of documented differences."""
        self._fresh()
        return text_exchange(self.mc, data, close), text_exchange(self.gw, data, close)

    def binary(self, packets):
        """Send binary requests (then a NOOP) to both, compare the decoded replies."""
        self._fresh()
        a = bin_exchange(self.mc, list(packets))
        b = bin_exchange(self.gwbin, list(packets))
        assert b == a, "binary request\nmemcached: %r\ngateway:   %r" % (a, b)
        return a


# ---- binary protocol

def bin_req(op, key=b"", extras=b"", value=b"", opaque=0, cas=0):
    body = extras + key + value
    return struct.pack(">BBHBBHIIQ", 0x80, op, len(key), len(extras), 0, 0, len(body),
                       opaque, cas) + body


NOOP = 0x0a


def bin_exchange(side, packets):
    """Decoded replies [(opcode, status, key, extras, value, cas name)] up to the NOOP's."""
    # each request gets its index as opaque, so a reply names its request's key
    reqs = []
    for i, p in enumerate(packets):
        p = bytearray(p(side) if callable(p) else p)
        kl = struct.unpack(">H", p[2:4])[0]
        el = p[4]
        reqs.append((bytes(p[24 + el:24 + el + kl]), struct.unpack(">I", p[12:16])[0]))
        p[12:16] = struct.pack(">I", i)
        packets[i] = bytes(p)
    data = b"".join(packets) + bin_req(NOOP, opaque=0xfeed)
    out = []
    with side.connect() as s:
        s.sendall(data)
        buf = b""
        while True:
            while len(buf) < 24:
                chunk = s.recv(1 << 20)
                if not chunk:
                    out.append("EOF")
                    return out
                buf += chunk
            magic, op, kl, el, _, st, bl, opaque, cas = struct.unpack(">BBHBBHIIQ", buf[:24])
            while len(buf) < 24 + bl:
                chunk = s.recv(1 << 20)
                if not chunk:
                    out.append("EOF")
                    return out
                buf += chunk
            body, buf = buf[24:24 + bl], buf[24 + bl:]
            if op == NOOP and opaque == 0xfeed:
                return out
            ext, key, val = body[:el], body[el:el + kl], body[el + kl:]
            rkey, opaque = reqs[opaque] if opaque < len(reqs) else (None, opaque)
            casname = side.cas.name(str(cas).encode(), rkey) if cas else b"0"
            out.append((op, st, key, ext, val, opaque, casname))
