"""Delete's answer when the coordinator lacks the key but its replicas hold it (the state a
just-attached coordinator is in before the replace copy reaches it): DELETED, because a
live value existed on a replica (ReplicateDelete's reply, doc/protocol-additions.md)."""
import os
import struct
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kumo  # noqa: E402
from mpack import Rpc, dbkey  # noqa: E402

SRV_GET, SRV_REPLICATE_SET = 34, 32


@pytest.fixture(scope="module")
def c():
    for n in ("manager", "server", "gateway", "kumoctl", "kumohash"):
        if not os.path.exists(kumo.BIN[n]):
            pytest.fail("binary not built: %s" % kumo.BIN[n])
    cl = kumo.standard_cluster(3)
    try:
        cl.ports = {cl.server_addr(i): s["port"] for i, s in cl.servers.items()}
        yield cl
    finally:
        cl.close()


def assign(c, key):
    """The key's servers, coordinator (slot 0) first, as RPC ports."""
    out = c.tool("kumohash", "-m", c.mgr, "assign", key).stdout
    addrs = [line.split(":", 1)[1].strip() for line in out.splitlines()
             if line.startswith("  ") and ":" in line]
    assert len(addrs) == 3, out
    return [c.ports[a] for a in addrs]


def test_delete_answers_deleted_when_only_replicas_hold_the_key(c):
    key = "only-on-replicas-%d" % os.getpid()
    ports = assign(c, key)
    dk = dbkey(key)
    # an old version (10 s ago), meta 0, so the coordinator's delete is newer
    ct = (int(time.time()) - 10) << 32
    value = struct.pack(">QH", ct, 0) + b"value"
    fake_self = kumo.free_port()
    for p in ports[1:]:
        rc = Rpc(p, cluster_port=fake_self)
        try:
            assert rc.call(SRV_REPLICATE_SET, [ct & 0xffffffff, 0, dk, value]) is True
        finally:
            rc.close()
    # the coordinator has nothing, the replicas have the value
    assert Rpc(ports[1]).call(SRV_GET, [dk]) == value
    m = c.client()
    try:
        assert m.delete(key, noreply=False) is True          # DELETED
        assert m.delete(key, noreply=False) is False         # NOT_FOUND
        assert m.get(key) is None
    finally:
        m.close()
    for p in ports:
        assert Rpc(p).call(SRV_GET, [dk]) is None


def test_delete_of_absent_key_is_not_found(c):
    m = c.client()
    try:
        assert m.delete("never-stored-%d" % os.getpid(), noreply=False) is False
    finally:
        m.close()
