"""A tiny msgpack-RPC client for the end-to-end tests: the msgpack subset kumofs speaks
(ints, old-form raws, arrays, nil, bools), a plain (non-cluster) RPC client of one
daemon, and the DBKey of a user key (storage.md §2.1, hashing.md §1)."""
import hashlib
import socket
import struct


# ---- a tiny msgpack codec: ints, raws, arrays, nil, bools ----

def pack(o):
    if o is None:
        return b"\xc0"
    if o is True:
        return b"\xc3"
    if o is False:
        return b"\xc2"
    if isinstance(o, int):
        assert o >= 0
        if o < 0x80:
            return bytes([o])
        for code, fmt, lim in ((0xcc, ">B", 1 << 8), (0xcd, ">H", 1 << 16),
                               (0xce, ">I", 1 << 32), (0xcf, ">Q", 1 << 64)):
            if o < lim:
                return bytes([code]) + struct.pack(fmt, o)
    if isinstance(o, str):
        o = o.encode()
    if isinstance(o, (bytes, bytearray)):
        n = len(o)   # the old "raw" forms, as kumofs speaks them
        head = bytes([0xa0 | n]) if n < 32 else (b"\xda" + struct.pack(">H", n) if n < 65536
                                                 else b"\xdb" + struct.pack(">I", n))
        return head + bytes(o)
    if isinstance(o, (list, tuple)):
        n = len(o)
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)
        return head + b"".join(pack(x) for x in o)
    raise TypeError(o)


class NeedMore(Exception):
    pass


def unpack(buf, i=0):
    """Decode one object at buf[i:]; returns (obj, next index) or raises NeedMore."""
    def take(n):
        if i + 1 + n > len(buf):
            raise NeedMore()
        return buf[i + 1:i + 1 + n]
    if i >= len(buf):
        raise NeedMore()
    b = buf[i]
    if b < 0x80:
        return b, i + 1
    if b >= 0xe0:
        return b - 256, i + 1
    if 0xa0 <= b <= 0xbf:
        n = b & 0x1f
        return bytes(take(n)), i + 1 + n
    if 0x90 <= b <= 0x9f:
        return _array(buf, i + 1, b & 0x0f)
    simple = {0xc0: None, 0xc2: False, 0xc3: True}
    if b in simple:
        return simple[b], i + 1
    ints = {0xcc: ">B", 0xcd: ">H", 0xce: ">I", 0xcf: ">Q",
            0xd0: ">b", 0xd1: ">h", 0xd2: ">i", 0xd3: ">q"}
    if b in ints:
        n = struct.calcsize(ints[b])
        return struct.unpack(ints[b], take(n))[0], i + 1 + n
    lens = {0xd9: ">B", 0xda: ">H", 0xdb: ">I", 0xc4: ">B", 0xc5: ">H", 0xc6: ">I"}
    if b in lens:
        h = struct.calcsize(lens[b])
        n = struct.unpack(lens[b], take(h))[0]
        if i + 1 + h + n > len(buf):
            raise NeedMore()
        return bytes(buf[i + 1 + h:i + 1 + h + n]), i + 1 + h + n
    if b in (0xdc, 0xdd):
        h = 2 if b == 0xdc else 4
        n = struct.unpack(">H" if h == 2 else ">I", take(h))[0]
        return _array(buf, i + 1 + h, n)
    raise ValueError("unsupported msgpack byte 0x%02x" % b)


def _array(buf, i, n):
    out = []
    for _ in range(n):
        o, i = unpack(buf, i)
        out.append(o)
    return out, i


class RpcError(Exception):
    def __init__(self, code):
        super().__init__("rpc error %r" % (code,))
        self.code = code


class Rpc:
    """A msgpack-RPC client of one server.  Plain by default; with cluster_port it first
    makes the cluster handshake (wire.md §4.3) as a server listening on that port, which
    cluster-only methods (ReplicateSet, ...) need."""

    def __init__(self, port, cluster_port=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf = b""
        self.msgid = 0
        self.cluster = cluster_port is not None
        if self.cluster:
            addr = struct.pack(">H", cluster_port) + socket.inet_aton("127.0.0.1")
            self.sock.sendall(pack([2, addr, 1]))
            msg = self._read()
            assert msg[0] == 2, msg

    def _read(self):
        while True:
            try:
                msg, n = unpack(self.buf)
                self.buf = self.buf[n:]
                return msg
            except NeedMore:
                data = self.sock.recv(65536)
                assert data, "server closed the connection"
                self.buf += data

    def call_raw(self, method, params):
        """(error, result) of one call.  On a cluster connection the server may also send
        its own requests; they are skipped."""
        self.msgid += 1
        self.sock.sendall(pack([0, self.msgid, method, params]))
        while True:
            msg = self._read()
            if self.cluster and not (msg[0] == 1 and msg[1] == self.msgid):
                continue
            assert msg[0] == 1 and msg[1] == self.msgid, msg
            return msg[2], msg[3]

    def call(self, method, params):
        """The result of one call; an error raises RpcError."""
        err, result = self.call_raw(method, params)
        if err is not None:
            raise RpcError(err)
        return result

    def close(self):
        self.sock.close()


# ---- record helpers ----

def dbkey(key):
    d = hashlib.sha1(key.encode()).digest()
    h = struct.unpack("<Q", d[:8])[0]          # hashing.md §1: little-endian digest bytes
    return struct.pack(">Q", h) + key.encode()
