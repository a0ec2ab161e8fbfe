"""kumolog (tools.md §6) and kumomergedb (tools.md §7, storage.md §7) on files we write
ourselves: binary logs packed here, Tokyo Cabinet files built with tchmgr -sx."""
import calendar
import os
import shutil
import struct
import subprocess
import time

import pytest

BUILD = os.environ.get(
    "KUMO_BUILD_DIR",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build"))
KUMOLOG = os.path.join(BUILD, "tools", "kumolog", "kumolog")
MERGEDB = os.path.join(BUILD, "tools", "kumomergedb", "kumomergedb")


# ------------------------------------------------------------ a tiny msgpack packer
def pack(o):
    """The old msgpack forms the daemons write: shortest uints, raw strings."""
    if isinstance(o, bool):
        return b"\xc3" if o else b"\xc2"
    if isinstance(o, int):
        if 0 <= o < 0x80:
            return bytes([o])
        if 0 <= o < 0x100:
            return b"\xcc" + struct.pack(">B", o)
        if 0 <= o < 0x10000:
            return b"\xcd" + struct.pack(">H", o)
        if 0 <= o < 0x100000000:
            return b"\xce" + struct.pack(">I", o)
        if o >= 0:
            return b"\xcf" + struct.pack(">Q", o)
        if o >= -32:
            return struct.pack(">b", o)
        return b"\xd3" + struct.pack(">q", o)
    if isinstance(o, str):
        o = o.encode()
    if isinstance(o, bytes):
        if len(o) < 32:
            return bytes([0xa0 | len(o)]) + o
        if len(o) < 0x10000:
            return b"\xda" + struct.pack(">H", len(o)) + o
        return b"\xdb" + struct.pack(">I", len(o)) + o
    if isinstance(o, list):
        assert len(o) < 16
        return bytes([0x90 | len(o)]) + b"".join(pack(x) for x in o)
    if isinstance(o, tuple):   # a map given as ordered (key, value) pairs
        assert len(o) < 16
        return bytes([0x80 | len(o)]) + b"".join(pack(k) + pack(v) for k, v in o)
    raise TypeError(o)


def code(name):
    return int.from_bytes(name.encode(), "big")


def addr(ip, port):
    return struct.pack(">H", port) + bytes(int(x) for x in ip.split("."))


def record(name, version, *fields):
    body = pack([code(name), version, tuple((code(k), v) for k, v in fields)])
    return struct.pack(">I", len(body)) + body


T1 = calendar.timegm((2026, 11, 22, 0, 24, 55))
T2 = calendar.timegm((2010, 5, 14, 1, 20, 0))

SM_REF = bytes.fromhex(
    "00000028 93cd534d 0283ce74 696d65ce 6b0238b5 ce616464 72a64d26 7f000001"
    "ce506164 64a60000 00000000".replace(" ", ""))
SM_REF_LINE = ("SM.2  Manager start    address=[127.0.0.1:19750]  partner=[0.0.0.0:0]  "
               "time=[2026-11-22 00:35:01]")


def need(path):
    if not os.path.exists(path):
        pytest.fail("not built: %s (set KUMO_BUILD_DIR)" % path)


def kumolog(*args, data=None, tmp_path=None):
    need(KUMOLOG)
    env = dict(os.environ, TZ="UTC")
    return subprocess.run([KUMOLOG] + list(args), input=data, capture_output=True,
                          env=env, timeout=20)


def write(tmp_path, data, name="log.mpac"):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def numbered(n):
    """n distinct nS.3 records; record i shows address port 19800+i."""
    return b"".join(record("nS", 3, ("time", T2), ("addr", addr("127.0.0.1", 19800 + i)))
                    for i in range(n))


def line_of(i):
    return "nS.3  new server       address=[127.0.0.1:%d]  time=[2010-05-14 01:20:00]" % (19800 + i)


def out_lines(r):
    return r.stdout.decode().splitlines()


# ------------------------------------------------------------ kumolog
def test_kumolog_reference_record(tmp_path):
    assert len(SM_REF) == 44
    r = kumolog(write(tmp_path, SM_REF))
    assert r.returncode == 0, r.stderr
    assert out_lines(r) == [SM_REF_LINE]


def test_kumolog_every_record_type(tmp_path):
    data = b"".join([
        record("SM", 2, ("time", T1), ("addr", addr("127.0.0.1", 39779)), ("Padd", b"\0" * 6)),
        record("SS", 2, ("time", T1), ("addr", addr("127.0.0.1", 39801)), ("db", "/var/kumo/db1.tch"),
               ("mgr1", addr("127.0.0.1", 39700)), ("mgr2", b"\0" * 6),
               ("sadd", addr("127.0.0.1", 39901)), ("tmpd", "/tmp"), ("bkup", "/var/kumo/db1.tch-")),
        record("SW", 2, ("time", T1), ("mgr1", addr("127.0.0.1", 39700)), ("mgr2", b"\0" * 6)),
        record("lS", 3, ("time", T1), ("addr", addr("127.0.0.1", 39803))),
        record("eP", 3, ("time", T1), ("addr", addr("127.0.0.1", 39704))),
        record("es", 3, ("time", T2), ("key", "key1"), ("val", "val1"), ("err", 1)),
        record("ers", 4, ("time", T2), ("key", "k"), ("val", "v"), ("hash", 12345),
               ("cktm", (T2 << 32) | 7), ("to", addr("127.0.0.1", 19700))),
        record("erd", 4, ("time", T2), ("key", "k"), ("hash", 1), ("to", addr("127.0.0.1", 19700))),
        record("eg", 3, ("time", T2), ("key", b"ab\x01c"), ("err", 3)),
        record("ed", 3, ("time", T2), ("key", b'q"\n\xff#{'), ("err", 2)),
        record("zz", 1, ("abc", 1)),
        record("nS", 2, ("addr", addr("10.0.0.1", 1))),
        record("xy", 7),
    ])
    r = kumolog(write(tmp_path, data))
    assert r.returncode == 0, r.stderr
    assert out_lines(r) == [
        "SM.2  Manager start    address=[127.0.0.1:39779]  partner=[0.0.0.0:0]  time=[2026-11-22 00:24:55]",
        "SS.2  Server start     address=[127.0.0.1:39801]  backup_prefix=[/var/kumo/db1.tch-]  "
        "database=[/var/kumo/db1.tch]  manager1=[127.0.0.1:39700]  manager2=[0.0.0.0:0]  "
        "stream_listen=[127.0.0.1:39901]  time=[2026-11-22 00:24:55]  tmp_dir=[/tmp]",
        "SW.2  Gateway start    manager1=[127.0.0.1:39700]  manager2=[0.0.0.0:0]  time=[2026-11-22 00:24:55]",
        "lS.3  lost server      address=[127.0.0.1:39803]  time=[2026-11-22 00:24:55]",
        "eP.3  unknown partner  address=[127.0.0.1:39704]  time=[2026-11-22 00:24:55]",
        "es.3  Set failed       err=[1]  key=[key1]  time=[2010-05-14 01:20:00]  val=[val1]",
        "ers.4  replicate-set failed  clocktime=[2010-05-14 01:20:00 clock 7]  hash=[12345]  key=[k]  "
        "to=[127.0.0.1:19700]  time=[2010-05-14 01:20:00]  val=[v]",
        "erd.4  replicate-delete failed  hash=[1]  key=[k]  to=[127.0.0.1:19700]  time=[2010-05-14 01:20:00]",
        'eg.3  Get failed       err=[3]  key=["ab\\001c"]  time=[2010-05-14 01:20:00]',
        'ed.3  Delete failed    err=[2]  key=["q\\"\\n\\377\\#{"]  time=[2010-05-14 01:20:00]',
        "zz.1  zz.1             abc=[1]",
        "nS.2  new server       address=[10.0.0.1:1]",
        "xy.7  %-15s  " % "xy.7",
    ]


def test_kumolog_failed_conversion_drops_field(tmp_path):
    data = record("nS", 3, ("time", "not-a-time"), ("addr", b"short"))
    r = kumolog(write(tmp_path, data))
    assert out_lines(r) == ["nS.3  %-15s  " % "new server"]


def test_kumolog_usage_and_options(tmp_path):
    usage = ("Usage: kumolog [options] <logfile.mpac>\n    -t, --tail\n    -h, --head\n"
             "    -f, --follow\n    -n, --lines [-]N\n")
    r = kumolog()
    assert (r.returncode, r.stdout.decode()) == (1, usage)
    r = kumolog("a", "b")
    assert (r.returncode, r.stdout.decode()) == (1, usage)
    r = kumolog("--help")
    assert (r.returncode, r.stdout.decode()) == (0, usage)
    r = kumolog("-x", "file")
    assert r.returncode == 1 and b"invalid option: -x" in r.stderr
    r = kumolog(str(tmp_path / "missing.mpac"))
    assert r.returncode == 1 and b"missing.mpac" in r.stderr


@pytest.mark.parametrize("args,want", [
    ([], list(range(12))),
    (["-t"], list(range(2, 12))),
    (["-t", "-n3"], [9, 10, 11]),
    (["-t", "-n", "3"], [9, 10, 11]),
    (["--tail", "--lines=3"], [9, 10, 11]),
    (["--ta", "--li=3"], [9, 10, 11]),
    (["-tn3"], [9, 10, 11]),
    (["-t", "-n50"], list(range(12))),          # fewer records than N: the original crashed
    (["-t", "-n-9"], [9, 10, 11]),               # skip the first 9
    (["-t", "--lines=0"], list(range(12))),
    (["-h"], list(range(10))),
    (["-h", "-n2"], [0, 1]),
    (["--head", "--lines", "2"], [0, 1]),
    (["-h", "-n-10"], [0, 1]),                   # all but the last 10: the original crashed
    (["-h", "-n-50"], []),
    (["-t", "-h", "-n2"], [10, 11]),             # -t wins over -h
])
def test_kumolog_modes(tmp_path, args, want):
    path = write(tmp_path, numbered(12))
    r = kumolog(*(args + [path]))
    assert r.returncode == 0, r.stderr
    assert out_lines(r) == [line_of(i) for i in want]


def test_kumolog_negative_lines_needs_attached_form(tmp_path):
    path = write(tmp_path, numbered(3))
    r = kumolog("-t", "-n", "-1", path)
    assert r.returncode == 1 and b"invalid option: -1" in r.stderr


def test_kumolog_stdin(tmp_path):
    r = kumolog("-t", "-n1", "-", data=numbered(4))
    assert r.returncode == 0
    assert out_lines(r) == [line_of(3)]


def test_kumolog_recovers_after_corrupt_record(tmp_path):
    good = numbered(3)
    recs = [record("nS", 3, ("time", T2), ("addr", addr("127.0.0.1", 19800 + i))) for i in range(3)]
    bad = struct.pack(">I", 5) + b"\xc1garbage"          # length ok, body not msgpack
    data = recs[0] + bad + recs[1] + recs[2]
    r = kumolog(write(tmp_path, data))
    assert r.returncode == 0
    assert out_lines(r) == [line_of(0), "recover at %d" % (len(recs[0]) + 1), line_of(1), line_of(2)]
    # a corrupt length field in the middle (claims more than the rest of the file)
    data = recs[0] + b"\x7f\xff\xff\xff" + recs[1]
    r = kumolog(write(tmp_path, data, "b.mpac"))
    assert out_lines(r) == [line_of(0), "recover at %d" % (len(recs[0]) + 1), line_of(1)]
    # a record that decodes but is not [int, int, map]
    body = pack(["x", 1, ()])
    data = recs[0] + struct.pack(">I", len(body)) + body + recs[2]
    r = kumolog(write(tmp_path, data, "c.mpac"))
    assert out_lines(r) == [line_of(0), "recover at %d" % (len(recs[0]) + 1), line_of(2)]
    assert good == b"".join(recs)


def test_kumolog_truncated_file_stops_cleanly(tmp_path):
    data = numbered(3)
    one = len(data) // 3
    for cut in (one * 2 + 2, one * 2 + 9, len(data) - 1):
        r = kumolog(write(tmp_path, data[:cut], "t%d.mpac" % cut))
        assert r.returncode == 0
        assert out_lines(r) == [line_of(0), line_of(1)]
        assert r.stderr == b""
    r = kumolog(write(tmp_path, b"", "empty.mpac"))
    assert (r.returncode, r.stdout) == (0, b"")


def test_kumolog_garbage_never_crashes(tmp_path):
    import random
    rnd = random.Random(7)
    base = numbered(20)
    for i in range(30):
        data = bytearray(base)
        for _ in range(rnd.randint(1, 20)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        r = kumolog(write(tmp_path, bytes(data), "g%d.mpac" % i))
        assert r.returncode == 0, (i, r.stderr)


def test_kumolog_follow(tmp_path):
    need(KUMOLOG)
    path = write(tmp_path, numbered(3))
    p = subprocess.Popen([KUMOLOG, "-f", "-t", "-n2", path], stdout=subprocess.PIPE,
                         env=dict(os.environ, TZ="UTC"))
    try:
        assert p.stdout.readline().decode().rstrip("\n") == line_of(1)
        assert p.stdout.readline().decode().rstrip("\n") == line_of(2)
        rec = record("nS", 3, ("time", T2), ("addr", addr("127.0.0.1", 19805)))
        with open(path, "ab") as f:          # a record written in two pieces
            f.write(rec[:7])
            f.flush()
            time.sleep(0.5)
            f.write(rec[7:])
        assert p.stdout.readline().decode().rstrip("\n") == line_of(5)
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()


# ------------------------------------------------------------ kumomergedb
def tch_put(path, key, ct, payload=None):
    """One record in the storage.md §2 layout: key = 8-byte hash + key; value = BE64
    clocktime + meta 00 00 + payload, or the 8-byte tombstone when payload is None."""
    k = struct.pack(">Q", hash(key) & 0xffffffffffffffff) + key
    v = struct.pack(">Q", ct) + (b"" if payload is None else b"\0\0" + payload)
    if not os.path.exists(path):
        subprocess.run(["tchmgr", "create", path], check=True)
    subprocess.run(["tchmgr", "put", "-sx", path, k.hex(), v.hex()], check=True)
    return k


def tch_get(path, k):
    r = subprocess.run(["tchmgr", "get", "-sx", "-px", path, k.hex()], capture_output=True)
    if r.returncode != 0:
        return None
    return bytes.fromhex(r.stdout.decode().replace(" ", "").strip())


def ct(sec, clock):
    return (sec << 32) | clock


@pytest.fixture
def tch():
    if shutil.which("tchmgr") is None:
        pytest.skip("tchmgr not installed")
    need(MERGEDB)


def test_kumomergedb_usage():
    need(MERGEDB)
    for args in ([], ["dst"], ["dst", "src1"]):
        r = subprocess.run([MERGEDB] + args, capture_output=True)
        assert r.returncode == 1
        assert r.stderr.decode() == "usage: %s <dst.tch> <src.tch>...\n" % MERGEDB
        assert r.stdout == b""


def test_kumomergedb_newest_wins_and_skips_tombstones(tmp_path, tch):
    d = str(tmp_path)
    s1, s2, s3, dst = (os.path.join(d, n) for n in ("s1.tch", "s2.tch", "s3.tch", "m.tch"))
    T = 1700000000
    keys = {}
    # s1: a@1 b@5 c(tombstone) d@3
    keys["a"] = tch_put(s1, b"key-a", ct(T, 1), b"a1")
    keys["b"] = tch_put(s1, b"key-b", ct(T, 5), b"b1")
    keys["c"] = tch_put(s1, b"key-c", ct(T, 9))
    keys["d"] = tch_put(s1, b"key-d", ct(T, 3), b"d1")
    # s2: a@2 (newer) b@4 (older) c@1 live d(tombstone newer: not merged)
    tch_put(s2, b"key-a", ct(T, 2), b"a2")
    tch_put(s2, b"key-b", ct(T, 4), b"b2")
    tch_put(s2, b"key-c", ct(T, 1), b"c2")
    tch_put(s2, b"key-d", ct(T, 8))
    # s3: a@2 (equal: first kept) e@100 (new key, much later second)
    tch_put(s3, b"key-a", ct(T, 2), b"a3")
    keys["e"] = tch_put(s3, b"key-e", ct(T + 100, 0), b"e3")
    subprocess.run(["tchmgr", "put", "-sx", s3, "6b", "0000000100000000000078"], check=True)  # short key

    r = subprocess.run([MERGEDB, dst, s1, s2, s3], capture_output=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == (
        "merging %s...  merged 3 records of 3 records\n"
        "merging %s...  merged 5 records of 6 records\n"
        "merging %s...  merged 6 records of 9 records\n"
        "closing %s...\n"
        "done.\n" % (s1, s2, s3, dst))
    assert tch_get(dst, keys["a"])[10:] == b"a2"
    assert tch_get(dst, keys["b"])[10:] == b"b1"
    assert tch_get(dst, keys["c"])[10:] == b"c2"
    assert tch_get(dst, keys["d"])[10:] == b"d1"
    assert tch_get(dst, keys["e"])[10:] == b"e3"
    assert tch_get(dst, b"k") is None
    # sources still hold their tombstones (not purged by the merge)
    assert tch_get(s1, keys["c"]) == struct.pack(">Q", ct(T, 9))


def test_kumomergedb_unopenable_destination(tmp_path, tch):
    s1, s2 = str(tmp_path / "s1.tch"), str(tmp_path / "s2.tch")
    tch_put(s1, b"x", ct(1700000000, 1), b"v")
    tch_put(s2, b"y", ct(1700000000, 1), b"v")
    r = subprocess.run([MERGEDB, str(tmp_path / "no" / "dir" / "m.tch"), s1, s2],
                       capture_output=True)
    assert r.returncode != 0
    assert b"m.tch" in r.stderr
