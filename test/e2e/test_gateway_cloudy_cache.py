"""kumofs 0.4.13's gateway extras (issue 11 point 8): the "cloudy" port (-c, memcached.md
§4) and the local read cache (-lc, memcached.md §5)."""
import os
import socket
import struct
import subprocess

import pytest

import kumo


def req(op, key=b"", extras=b"", value=b"", opaque=0, cas=0):
    body = extras + key + value
    return struct.pack(">BBHBBHIIQ", 0x80, op, len(key), len(extras), 0, 0, len(body),
                       opaque, cas) + body


def read_replies(s, n):
    """n replies as (op, status, key, extras, value, opaque, cas); fewer if closed."""
    out, buf = [], b""
    while len(out) < n:
        while len(buf) < 24 or len(buf) < 24 + struct.unpack(">I", buf[8:12])[0]:
            chunk = s.recv(1 << 20)
            if not chunk:
                return out
            buf += chunk
        _, op, kl, el, _, st, bl, opaque, cas = struct.unpack(">BBHBBHIIQ", buf[:24])
        body, buf = buf[24:24 + bl], buf[24 + bl:]
        out.append((op, st, body[el:el + kl], body[:el], body[el + kl:], opaque, cas))
    return out


def closed_without_reply(s):
    s.settimeout(20)
    try:
        return s.recv(100) == b""
    except ConnectionResetError:
        return True


GET, SET, DELETE, GETQ, NOOP, GETK, GETKQ, INCR = 0x00, 0x01, 0x04, 0x09, 0x0a, 0x0c, 0x0d, 0x05
ZERO8 = struct.pack(">II", 0, 0)


@pytest.fixture(scope="module")
def cl():
    cport = kumo.free_port()
    c = kumo.standard_cluster(3, gateway_extra=["-c", "127.0.0.1:%d" % cport, "-lc", "*"])
    c.cport = cport
    yield c
    c.close()


def conn(port):
    return socket.create_connection(("127.0.0.1", port), timeout=20)


def test_cloudy_get_set_delete(cl):
    with conn(cl.cport) as s:
        s.sendall(req(SET, b"cl1", ZERO8, b"raw\r\nbytes", opaque=1) +
                  req(GET, b"cl1", opaque=2) + req(GETK, b"cl1", opaque=3) +
                  req(GETQ, b"cl_missing", opaque=4) + req(GET, b"cl_missing", opaque=5) +
                  req(DELETE, b"cl1", opaque=6) + req(DELETE, b"cl_missing", opaque=7))
        r = {x[5]: x for x in read_replies(s, 6)}      # replies in completion order
    assert r[1][:2] == (SET, 0) and r[1][6] == 0
    assert r[2] == (GET, 0, b"", b"\0\0\0\0", b"raw\r\nbytes", 2, 0)   # CAS 0
    assert r[3] == (GETK, 0, b"cl1", b"\0\0\0\0", b"raw\r\nbytes", 3, 0)
    assert 4 not in r                                  # quiet miss: nothing
    assert r[5][:2] == (GET, 1)
    assert r[6][:2] == (DELETE, 0) and r[7][:2] == (DELETE, 0)   # missing: deleted (0.4.13)


def test_cloudy_values_are_raw_and_shared_with_text(cl):
    import pymemcache.client.base as mc
    t = mc.Client(("127.0.0.1", cl.gateways[0].port), timeout=20)
    with conn(cl.cport) as s:
        s.sendall(req(SET, b"cl2", ZERO8, b"from-cloudy"))
        assert read_replies(s, 1)[0][1] == 0
    assert t.get("cl2") == b"from-cloudy"              # meta 0, no -F/-E: plain data
    t.close()


def test_cloudy_pipeline_many(cl):
    n = 500
    with conn(cl.cport) as s:
        s.sendall(b"".join(req(SET, b"clp%d" % i, ZERO8, b"v%d" % i, opaque=i) for i in range(n)))
        assert sorted(x[5] for x in read_replies(s, n) if x[1] == 0) == list(range(n))
        s.sendall(b"".join(req(GETK, b"clp%d" % i, opaque=i) for i in range(n)))
        got = read_replies(s, n)
    assert {x[2]: x[4] for x in got} == {b"clp%d" % i: b"v%d" % i for i in range(n)}


@pytest.mark.parametrize("bad", [
    req(NOOP), req(INCR, b"k", struct.pack(">QQI", 1, 0, 0)),
    req(SET, b"k", struct.pack(">II", 1, 0), b"v"),       # flags
    req(SET, b"k", struct.pack(">II", 0, 5), b"v"),       # expiration
    req(SET, b"k", ZERO8, b"v", cas=7),                   # CAS
    req(DELETE, b"k", struct.pack(">I", 3)),              # delete expiration
    b"\x81" + b"\0" * 23,                                 # bad magic
], ids=["noop", "incr", "flags", "exptime", "cas", "delete-exptime", "magic"])
def test_cloudy_closes_on_anything_else(cl, bad):
    with conn(cl.cport) as s:
        s.sendall(bad + req(GET, b"cl1"))
        assert closed_without_reply(s)


def _cmd_get_total(c):
    return sum(int(c.kumostat(i, "cmd_get")) for i in c.servers)


def test_local_cache_saves_transfers(cl):
    import pymemcache.client.base as mc
    t = mc.Client(("127.0.0.1", cl.gateways[0].port), timeout=20)
    big = os.urandom(200000)
    assert t.set("lc1", big, noreply=False)
    assert t.get("lc1") == big                 # a Get: the value enters the cache
    before = _cmd_get_total(cl)
    for _ in range(5):
        assert t.get("lc1") == big             # GetIfModified: "not modified"
    # cmd_get counts Gets and GetIfModified answered with a value, not "not modified"
    assert _cmd_get_total(cl) == before
    assert t.set("lc1", b"new", noreply=False)
    assert t.get("lc1") == b"new"              # modified: the newer value comes back
    assert _cmd_get_total(cl) == before + 1
    assert t.delete("lc1", noreply=False)
    assert t.get("lc1") is None                # deleted: the stale cached copy is not used
    t.close()


def test_local_cache_file_and_bad_name(cluster, tmp_path):
    cluster.start_manager()
    cluster.start_server()
    cluster.attach_all()
    cache = str(tmp_path / "cache.tch")
    cluster.start_gateway(extra=["-lc", cache + "#bnum=1000"])
    cluster.wait_gateway_ready()
    import pymemcache.client.base as mc
    t = mc.Client(("127.0.0.1", cluster.gateways[0].port), timeout=20)
    t.set("lcf", b"x" * 1000, noreply=False)
    assert t.get("lcf") == b"x" * 1000 and t.get("lcf") == b"x" * 1000
    t.close()
    assert os.path.getsize(cache) > 0
    r = subprocess.run([kumo.BIN["gateway"], "-m", cluster.mgr, "-t", "127.0.0.1:%d" % kumo.free_port(),
                        "-lc", str(tmp_path / "no" / "such" / "dir.tch")],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "-lc" in r.stderr
