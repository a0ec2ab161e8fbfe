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


assign = kumo.key_ports


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


SRV_REPLICATE_DELETE = 33
FLAG_LIVE_REPLY, FLAG_RESTAMP = 0x02, 0x04


def test_replica_tells_a_kumofs_c_coordinator_when_another_write_holds_the_same_version(c):
    """Two coordinators can stamp the same clocktime for different writes of a key (a
    replace or a failure moved the key between them).  The replica keeps the first; it
    must not let the second coordinator take its `false` for "your retried send is here"
    (a stale read in rt07): to a kumofs-c coordinator it answers 2, "collided"."""
    key = "collided-%d" % os.getpid()
    ports = assign(c, key)
    dk = dbkey(key)
    ct = (int(time.time()) + 5) << 32 | 77
    first = struct.pack(">QH", ct, 0) + b"first write"
    other = struct.pack(">QH", ct, 0) + b"another write"
    rc = Rpc(ports[1], cluster_port=kumo.free_port())
    try:
        assert rc.call(SRV_REPLICATE_SET, [77, FLAG_RESTAMP, dk, first]) is True
        # the same write sent again: refused, plain false (the coordinator counts it)
        assert rc.call(SRV_REPLICATE_SET, [77, FLAG_RESTAMP, dk, first]) is False
        # another write with the same version: "collided"
        assert rc.call(SRV_REPLICATE_SET, [77, FLAG_RESTAMP, dk, other]) == 2
        # an original coordinator (no flag) keeps the original's boolean
        assert rc.call(SRV_REPLICATE_SET, [77, 0, dk, other]) is False
        # a delete stamped with the live value's very version is another write too
        assert rc.call(SRV_REPLICATE_DELETE, [77, FLAG_LIVE_REPLY, ct, dk]) == 2
        assert Rpc(ports[1]).call(SRV_GET, [dk]) == first
        # a tombstone of that version, then the same delete again: plain false
        ct2 = ct + 1            # the logical clock decides within seconds of each other
        assert rc.call(SRV_REPLICATE_DELETE, [77, FLAG_LIVE_REPLY, ct2, dk]) is True
        assert rc.call(SRV_REPLICATE_DELETE, [77, FLAG_LIVE_REPLY, ct2, dk]) is False
        # and a set of the tombstone's version: collided
        again = struct.pack(">QH", ct2, 0) + b"late"
        assert rc.call(SRV_REPLICATE_SET, [77, FLAG_RESTAMP, dk, again]) == 2
    finally:
        rc.close()
