"""Rules for mixed clusters that need no original daemon (doc/protocol-additions.md §4):
a kumofs-c replica refuses a strictly older write of an original coordinator with an
error, so the original cannot acknowledge a write its replicas dropped."""
import os
import struct
import time

import pytest

import kumo
from mpack import Rpc, dbkey

SRV_REPLICATE_SET, SRV_REPLICATE_DELETE = 32, 33
RESTAMP, LIVE_REPLY = 0x04, 0x02


@pytest.fixture(scope="module")
def c():
    cl = kumo.standard_cluster(3, gateway=False)
    try:
        yield cl
    finally:
        cl.close()


def test_replica_refuses_older_write_of_an_original_coordinator(c):
    key = "refuse-%d" % os.getpid()
    dk = dbkey(key)
    now = int(time.time()) << 32
    # 3 servers: every one is a replica
    peer = Rpc(c.servers[1]["port"], cluster_port=kumo.free_port())
    try:
        new = struct.pack(">QH", now + 5, 0) + b"new"
        old = struct.pack(">QH", now + 2, 0) + b"old"
        assert peer.call_raw(SRV_REPLICATE_SET, [5, RESTAMP, dk, new]) == (None, True)
        # kumofs-c coordinator (re-stamp bit): the plain refusal
        assert peer.call_raw(SRV_REPLICATE_SET, [2, RESTAMP, dk, old]) == (None, False)
        # original coordinator: an error, so it does not count the write as stored
        assert peer.call_raw(SRV_REPLICATE_SET, [2, 0, dk, old]) == (4, None)
        # the same write sent again is not an error
        assert peer.call_raw(SRV_REPLICATE_SET, [5, 0, dk, new]) == (None, False)
        # deletes: an original coordinator sends no live-reply bit
        assert peer.call_raw(SRV_REPLICATE_DELETE, [3, 0, now + 3, dk]) == (4, None)
        assert peer.call_raw(SRV_REPLICATE_DELETE, [3, LIVE_REPLY, now + 3, dk]) == (None, False)
        assert peer.call_raw(SRV_REPLICATE_DELETE, [9, 0, now + 9, dk]) == (None, True)
    finally:
        peer.close()


def test_getstatus_48_names_the_extensions(c):
    """Servers and gateways tell kumofs-c from original servers with GetStatus [48]
    (an unknown method would make an original drop the connection)."""
    r = Rpc(c.servers[0]["port"])
    try:
        assert r.call(97, [48]) == 3                 # 0x01 extensions, 0x02 Forward
        assert r.call(97, [3]) is not None          # the connection is still usable
    finally:
        r.close()
