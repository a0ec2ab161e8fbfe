"""kumo-server's read-modify-write (Update, method 48) and Flush (method 49), spoken over
raw msgpack-RPC against a real 1-manager 3-server cluster (doc/protocol-additions.md)."""
import os
import struct
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kumo  # noqa: E402
from mpack import Rpc, RpcError, dbkey  # noqa: E402

SRV_GET, SRV_SET, SRV_UPDATE, SRV_FLUSH = 34, 35, 48, 49
ADD, REPLACE, APPEND, PREPEND, CAS, INCR, DECR, TOUCH = range(1, 9)
STORED, NOT_STORED, EXISTS, NOT_FOUND, NON_NUMERIC = range(5)


# ---- record helpers ----

def item(data=b"", flags=0, exptime=0, meta=1):
    """A DBValue: clocktime 0 (the server stamps it), meta, then the meta-1 item."""
    body = struct.pack(">II", flags, exptime) + data if meta == 1 else data
    return struct.pack(">QH", 0, meta) + body


MAGIC = b"\xc1kcI"        # doc/storage-format.md: the tagged form (meta 2)
MAGIC_TOUCHED = b"\xc1kcT"  # the touched form (meta 3), which keeps the CAS
RAW_OK = 0x02             # Update.flags: the result may be stored in the raw form


def parse_item(v):
    """(clocktime, meta, flags, exptime, data) of a stored value: the tagged form
    (magic ‖ flags ‖ exptime ‖ data), the touched form (magic ‖ flags ‖ exptime ‖ cas ‖
    data) or the raw form (flags 0, no expiry)."""
    ct, meta = struct.unpack(">QH", v[:10])
    if v[10:14] == MAGIC:
        flags, exptime = struct.unpack(">II", v[14:22])
        return ct, meta, flags, exptime, v[22:]
    if v[10:14] == MAGIC_TOUCHED:
        flags, exptime = struct.unpack(">II", v[14:22])
        return ct, meta, flags, exptime, v[30:]
    if meta == 1:             # the first form, as item() writes it
        flags, exptime = struct.unpack(">II", v[10:18])
        return ct, meta, flags, exptime, v[18:]
    return ct, meta, 0, 0, v[10:]


def item_cas(v):
    """The CAS unique of a stored item: what a touch kept (touched form), else the
    version."""
    ct, meta = struct.unpack(">QH", v[:10])
    return struct.unpack(">Q", v[22:30])[0] if v[10:14] == MAGIC_TOUCHED else ct


# ---- fixture ----

@pytest.fixture(scope="module")
def c():
    yield from kumo.rpc_servers(("manager", "server", "kumoctl", "kumohash"))


assign = kumo.key_ports


class Key:
    """One key with an RPC client to its coordinator and to each replica."""

    def __init__(self, c, name):
        self.name = name
        self.dbkey = dbkey(name)
        ports = assign(c, name)
        self.coord = Rpc(ports[0])
        self.all = [self.coord] + [Rpc(p) for p in ports[1:]]

    def update(self, op, value=None, arg=0, flags=0):
        return self.coord.call(SRV_UPDATE, [op, flags, self.dbkey,
                                            value if value is not None else item(), arg])

    def set(self, value):
        return self.coord.call(SRV_SET, [0, self.dbkey, value])

    def gets(self):
        """The stored value on each of the three servers."""
        return [r.call(SRV_GET, [self.dbkey]) for r in self.all]

    def get(self):
        vals = self.gets()
        assert all(v == vals[0] for v in vals), vals   # replicated everywhere
        return vals[0]

    def close(self):
        for r in self.all:
            r.close()


_n = [0]


@pytest.fixture
def key(c):
    _n[0] += 1
    k = Key(c, "rmw-%d-%s" % (_n[0], kumo.random_key()))
    yield k
    k.close()


def wait_replicated(k, pred, timeout=5):
    return kumo.wait_for(lambda: pred(k.gets()), timeout=timeout, what="replicas")


# ---- tests ----

def test_not_coordinator_answers_error6(c, key):
    other = key.all[1]
    with pytest.raises(RpcError) as e:
        other.call(SRV_UPDATE, [ADD, 0, key.dbkey, item(b"x"), 0])
    assert e.value.code == 6


def test_bad_params_answer_error5(c, key):
    for params in ([ADD, 0, key.dbkey, item(b"x")],            # arg missing
                   [99, 0, key.dbkey, item(b"x"), 0],          # unknown op
                   [ADD, 0, b"short", item(b"x"), 0],          # DBKey < 8 bytes
                   [ADD, 0, key.dbkey, b"123", 0],             # DBValue < 10 bytes
                   [TOUCH, 0, key.dbkey, struct.pack(">QH", 0, 1), 0]):   # no exptime
        with pytest.raises(RpcError) as e:
            key.coord.call(SRV_UPDATE, params)
        assert e.value.code == 5, params
    with pytest.raises(RpcError) as e:
        key.coord.call(SRV_FLUSH, [])
    assert e.value.code == 5


def test_add_replace(c, key):
    assert key.update(REPLACE, item(b"r")) == [NOT_STORED, 0, None]
    st, ct, val = key.update(ADD, item(b"hello", flags=0xdeadbeef))
    assert (st, val) == (STORED, None) and ct > 0
    v = key.get()
    assert parse_item(v) == (ct, 2, 0xdeadbeef, 0, b"hello")
    assert key.update(ADD, item(b"again")) == [NOT_STORED, 0, None]
    st, ct2, _ = key.update(REPLACE, item(b"world", flags=7))
    assert st == STORED and ct2 > ct
    assert parse_item(key.get()) == (ct2, 2, 7, 0, b"world")


def test_append_prepend_keep_flags_and_exptime(c, key):
    assert key.update(APPEND, item(b"x"))[0] == NOT_STORED
    assert key.update(PREPEND, item(b"x"))[0] == NOT_STORED
    exp = int(time.time()) + 3600
    key.update(ADD, item(b"mid", flags=5, exptime=exp))
    st, ct, _ = key.update(APPEND, item(b">>", flags=9, exptime=1))
    assert st == STORED
    st, ct2, _ = key.update(PREPEND, item(b"<<", flags=9, exptime=1))
    assert st == STORED and ct2 > ct
    assert parse_item(key.get()) == (ct2, 2, 5, exp, b"<<mid>>")


def test_cas(c, key):
    assert key.update(CAS, item(b"v"), arg=1) == [NOT_FOUND, 0, None]
    _, ct, _ = key.update(ADD, item(b"v1"))
    assert key.update(CAS, item(b"v2"), arg=ct + 1) == [EXISTS, 0, None]
    st, ct2, _ = key.update(CAS, item(b"v2", flags=3), arg=ct)
    assert st == STORED and ct2 > ct
    assert parse_item(key.get()) == (ct2, 2, 3, 0, b"v2")
    assert key.update(CAS, item(b"v3"), arg=ct) == [EXISTS, 0, None]


def test_incr_decr(c, key):
    assert key.update(INCR, arg=1) == [NOT_FOUND, 0, None]
    assert key.update(DECR, arg=1) == [NOT_FOUND, 0, None]
    key.update(ADD, item(b"10", flags=4))
    st, ct, val = key.update(INCR, arg=5)
    assert (st, val) == (STORED, b"15")
    assert parse_item(key.get()) == (ct, 2, 4, 0, b"15")
    assert key.update(DECR, arg=6)[2] == b"9"
    assert key.update(DECR, arg=100)[2] == b"0"          # floors at 0
    key.update(REPLACE, item(b"18446744073709551615"))
    assert key.update(INCR, arg=2)[2] == b"1"            # wraps at 2^64
    key.update(REPLACE, item(b"100"))
    assert key.update(DECR, arg=1)[2] == b"99"           # digits, no padding
    for bad in (b"abc", b"", b"12a", b" 1", b"18446744073709551616", b"1" * 21):
        key.update(REPLACE, item(bad))
        assert key.update(INCR, arg=1) == [NON_NUMERIC, 0, None], bad
    assert parse_item(key.get())[4] == b"1" * 21          # unchanged


def test_incr_on_original_meta0_record(c, key):
    key.set(item(b"41", meta=0))
    st, ct, val = key.update(INCR, arg=1)
    assert (st, val) == (STORED, b"42")
    assert parse_item(key.get()) == (ct, 2, 0, 0, b"42")


def test_raw_ok_results_stay_readable_by_original_gateways(c, key):
    """With RAW_OK (a gateway without -E/-F) a flags-0, no-expiry result is stored in the
    original's raw form, so an original gateway reads it as is (issue 10, case 4)."""
    key.set(item(b"41", meta=0))
    st, ct, val = key.update(INCR, arg=1, flags=RAW_OK)
    assert (st, val) == (STORED, b"42")
    assert key.get() == struct.pack(">QH", ct, 0) + b"42"
    st, ct, _ = key.update(APPEND, item(b"x", flags=9), flags=RAW_OK)   # keeps flags 0
    assert key.get() == struct.pack(">QH", ct, 0) + b"42x"
    st, ct, _ = key.update(REPLACE, item(b"y", flags=9), flags=RAW_OK)  # flags: tagged
    assert parse_item(key.get()) == (ct, 2, 9, 0, b"y")


def test_touch_and_expiry(c, key):
    assert key.update(TOUCH, item(exptime=1)) == [NOT_FOUND, 0, None]
    _, ct0, _ = key.update(ADD, item(b"t", flags=2))
    exp = int(time.time()) + 1000
    st, ct, _ = key.update(TOUCH, item(b"ignored", exptime=exp))
    assert st == STORED
    # a new version (to replicate), the CAS of the add kept (memcached keeps it)
    assert parse_item(key.get()) == (ct, 3, 2, exp, b"t") and ct > ct0
    assert item_cas(key.get()) == ct0
    st, ct2, _ = key.update(TOUCH, item(exptime=exp + 1))
    assert item_cas(key.get()) == ct0 and ct2 > ct
    assert key.update(CAS, item(b"u"), arg=ct)[0] == EXISTS    # the version is not the CAS
    st, ct3, _ = key.update(CAS, item(b"u", exptime=exp), arg=ct0)
    assert st == STORED and parse_item(key.get()) == (ct3, 2, 0, exp, b"u")
    assert item_cas(key.get()) == ct3
    key.update(TOUCH, item(exptime=exp))
    # expired (exptime in the past) = absent for every op
    assert key.update(TOUCH, item(exptime=1))[0] == STORED
    for op in (TOUCH, INCR, CAS):
        assert key.update(op, item(exptime=1), arg=ct3)[0] == NOT_FOUND
    for op in (REPLACE, APPEND, PREPEND):
        assert key.update(op, item(b"z"))[0] == NOT_STORED
    assert key.update(ADD, item(b"new"))[0] == STORED
    assert parse_item(key.get())[4] == b"new"


def test_async_flag(c, key):
    st, ct, _ = key.update(ADD, item(b"a"), flags=1)
    assert st == STORED
    wait_replicated(key, lambda vals: all(x is not None and parse_item(x)[0] == ct
                                          for x in vals))
    assert parse_item(key.get())[4] == b"a"


def test_concurrent_incr_is_exact(c, key):
    key.update(ADD, item(b"0"))
    errors = []

    def worker():
        try:
            r = Rpc(key.coord.sock.getpeername()[1])
            for _ in range(50):
                st, _, _ = r.call(SRV_UPDATE, [INCR, 0, key.dbkey, item(), 1])
                assert st == STORED
            r.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert parse_item(key.get())[4] == b"1000"


def flush_all(c, delay):
    for i, s in c.servers.items():
        r = Rpc(s["port"])
        assert r.call(SRV_FLUSH, [delay]) is True
        r.close()


def test_flush_now_and_set_after(c):
    keys = [Key(c, "flush0-%d-%s" % (i, kumo.random_key())) for i in range(10)]
    try:
        for k in keys:
            k.update(ADD, item(b"old"))
            assert k.get() is not None
        flush_all(c, 0)
        for k in keys:
            assert k.gets() == [None, None, None]
            assert k.update(REPLACE, item(b"x"))[0] == NOT_STORED
        # a set after the flush survives, on every replica
        for k in keys[:5]:
            k.set(item(b"after"))
            assert parse_item(k.get())[4] == b"after"
        for k in keys[5:]:
            assert k.update(ADD, item(b"added"))[0] == STORED
            assert parse_item(k.get())[4] == b"added"
    finally:
        for k in keys:
            k.close()


def test_flush_delayed(c):
    keys = [Key(c, "flush2-%d-%s" % (i, kumo.random_key())) for i in range(5)]
    try:
        for k in keys:
            k.update(ADD, item(b"old"))
        t0 = time.time()
        flush_all(c, 2)
        for k in keys:                       # still there before the delay
            assert k.get() is not None
        assert time.time() - t0 < 1.5
        time.sleep(2.6)
        for k in keys:
            assert k.gets() == [None, None, None]
            k.set(item(b"later"))
            assert parse_item(k.get())[4] == b"later"
        time.sleep(0.3)
        assert parse_item(keys[0].get())[4] == b"later"
    finally:
        for k in keys:
            k.close()
