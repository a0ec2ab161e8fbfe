#!/usr/bin/python3
"""Write the seed corpora of the daemon harnesses (fuzz_rpc_server, fuzz_rpc_manager,
fuzz_stream) into test/fuzz/corpus/<name>: every message of the original's golden vectors
(spec/vectors.jsonl) addressed to that daemon, alone and behind each cluster handshake,
plus hand-built messages for the kumofs-c methods the vectors lack (Update, Flush,
GetVersion, ReplaceElection) and whole valid replace streams.  The committed corpora are
these seeds grown by long libFuzzer runs and minimized (-merge=1, -set_cover_merge=1 for
rpc_server) to a few hundred files.  Run by hand:
  /usr/bin/python3 test/fuzz/mkcorpus.py [path/to/vectors.jsonl]"""
import hashlib
import json
import os
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from mpack import pack  # noqa: E402  (msgpack in the old raw dialect kumofs speaks)
VECTORS = (sys.argv[1] if len(sys.argv) > 1 else
           os.path.join(HERE, "..", "..", "..", "shared", "spec", "vectors.jsonl"))


def req(msgid, method, params):
    return pack([0, msgid, method, params])


def addr(port):
    return struct.pack(">H", port) + bytes([127, 0, 0, 1])


def hs(port, role):
    return pack([2, addr(port), role])


DBKEY = bytes.fromhex("db0f3feab5c7ee0b666f6f")        # "foo" (hashing.md §1)
CLOCK = 0x6b024a220000000a


def dbval(data, clock=CLOCK, meta=b"\x00\x00"):
    return struct.pack(">Q", clock) + meta + data


def write(name, files):
    d = os.path.join(HERE, "corpus", name)
    os.makedirs(d, exist_ok=True)
    for data in files:
        with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
            f.write(data)
    print(name, len(set(files)), "files")


def main():
    vec = [json.loads(line) for line in open(VECTORS)]
    mgr_hs = hs(47700, 0)           # the server's manager (fuzz_server.h)
    peer_hs = hs(47802, 1)          # server2, a peer in the vectors' hash spaces
    srv_msgs = [bytes.fromhex(v["hex"]) for v in vec
                if v["to"] in ("server",) and v["kind"] != "Init.handshake"]
    extra = [
        req(1, 48, [op, flags, DBKEY, dbval(b"5"), 3])
        for op in range(1, 9) for flags in (0, 0x01, 0x0c, 0x12)] + [
        req(2, 49, [0]), req(3, 49, [1]), req(4, 50, [DBKEY]),
        req(5, 36, [0, DBKEY]), req(6, 33, [10, 0, CLOCK + 5, DBKEY]),
        req(7, 32, [10, 0x04, DBKEY, dbval(b"bar")]),
        req(8, 98, [0, True]), req(9, 97, [48]), req(10, 97, [11]),
        req(11, 96, [b"fz"]), req(12, 0, [0]),
    ]
    sessions = [req(1, 35, [0, DBKEY, dbval(b"bar", 0)]) + req(2, 34, [DBKEY]) +
                req(3, 48, [6, 0, DBKEY, dbval(b"1"), 7]) + req(4, 37, [DBKEY, 0]) +
                req(5, 50, [DBKEY]) + req(6, 36, [0, DBKEY])]
    server = []
    for m in srv_msgs + extra + sessions:
        server += [m, mgr_hs + m, peer_hs + m]
    write("rpc_server", server)

    srv_hs = hs(47802, 1)          # a server (newcomer) as in the vectors
    partner_hs = hs(47701, 0)      # the partner manager (fuzz_rpc_manager.c)
    mgr_msgs = [bytes.fromhex(v["hex"]) for v in vec
                if v["to"] == "manager" and v["kind"] != "Init.handshake"]
    mgr_extra = [req(1, 12, [CLOCK]), req(2, 0, [0]), req(3, 1, []),
                 req(4, 2, [[[], CLOCK], [[], CLOCK], 12]),
                 req(5, 100, [True]), req(6, 101, [True]), req(7, 103, [True]),
                 req(8, 104, [True]), req(9, 99, [])]
    manager = []
    for m in mgr_msgs + mgr_extra:
        manager += [m, srv_hs + m, partner_hs + m]
    manager.append(srv_hs + req(1, 0, [5]) + req(2, 100, [True]) + req(3, 99, []))
    write("rpc_manager", manager)

    stream = []
    for v in vec:
        if v["kind"] == "ReplaceStream.body":
            stream.append(b"\x01" + bytes.fromhex(v["hex"]))
            stream.append(b"\x00" + bytes.fromhex(v["decoded"]["inflated_hex"]))
        if v["kind"] == "ReplaceStream.header":
            stream.append(b"\x02" + bytes.fromhex(v["hex"]) + b"\x90\xc0")
    pairs = b"".join(pack([struct.pack(">Q", i * 7919) + b"k%d" % i,
                           dbval(b"v%d" % i, CLOCK + i, b"\x00\x01" if i % 5 == 0 else b"\x00\x00")])
                     for i in range(150))
    stream += [b"\x00" + pairs + b"\xc0", b"\x00" + pairs[:300], b"\x01" + zlib.compress(pairs + b"\xc0"),
               b"\x00" + pack([DBKEY, b""]) + pack([DBKEY, dbval(b"")]) + b"\xc0"]
    write("stream", stream)


main()
