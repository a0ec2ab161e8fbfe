"""Forward (method 51, doc/protocol-additions.md §1.6): a server relays a gateway's write
to the key's coordinator, spoken over raw msgpack-RPC against a real 1-manager 3-server
cluster on loopback.  The gateway side (a gateway cut from one server writes through
another) needs a cut and lives in test_netfaults.py."""
import os
import socket
import struct
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kumo  # noqa: E402
from mpack import Rpc, dbkey  # noqa: E402
from test_rmw_server import INCR, STORED, assign, item, parse_item  # noqa: E402

SRV_GET, SRV_SET, SRV_DELETE, SRV_UPDATE, SRV_FORWARD, SRV_GET_STATUS = 34, 35, 36, 48, 51, 97
EXT_FORWARD = 0x02                 # GetStatus 48 bit: the server relays (Forward)
PROTOCOL_ERROR, SERVER_ERROR = 5, 6


def addr(port):
    """The 6-byte address dump of 127.0.0.1:port (wire.md §7.1)."""
    return struct.pack(">H", port) + socket.inet_aton("127.0.0.1")


@pytest.fixture(scope="module")
def c():
    yield from kumo.rpc_servers(("manager", "server", "kumohash"))


def forward(relay_port, target_port, method, params, timeout_ms=2000):
    r = Rpc(relay_port)
    try:
        return r.call_raw(SRV_FORWARD, [addr(target_port), method, params, timeout_ms])
    finally:
        r.close()


def stored_everywhere(ports, key):
    vals = []
    for p in ports:
        r = Rpc(p)
        try:
            vals.append(r.call(SRV_GET, [dbkey(key)]))
        finally:
            r.close()
    return vals


def test_servers_announce_that_they_relay(c):
    for p in c.ports.values():
        r = Rpc(p)
        try:
            assert r.call(SRV_GET_STATUS, [48]) & EXT_FORWARD
        finally:
            r.close()


def test_forwarded_writes_run_on_the_coordinator(c):
    """Set, Update (incr) and Delete sent to a replica in a Forward are run by the
    coordinator and replicated: the relay answers exactly what the coordinator does."""
    key = "fwd-basic"
    coord, r1, r2 = assign(c, key)
    err, ct = forward(r1, coord, SRV_SET, [0, dbkey(key), item(b"41")])
    assert err is None and isinstance(ct, int) and ct > 0, (err, ct)
    vals = stored_everywhere([coord, r1, r2], key)
    assert all(v == vals[0] for v in vals) and parse_item(vals[0])[4] == b"41", vals

    err, res = forward(r2, coord, SRV_UPDATE, [INCR, 0, dbkey(key), item(), 1])
    assert err is None and res[0] == STORED and res[2] == b"42", (err, res)
    vals = stored_everywhere([coord, r1, r2], key)
    assert parse_item(vals[0])[4] == b"42" and all(v == vals[0] for v in vals), vals

    err, res = forward(r1, coord, SRV_DELETE, [0, dbkey(key)])
    assert (err, res) == (None, True)
    assert stored_everywhere([coord, r1, r2], key) == [None, None, None]


def test_forward_to_a_server_that_is_not_the_coordinator_answers_its_error(c):
    """The relay never coordinates: a write relayed to a replica gets that replica's
    "not the coordinator" error (6), and nothing is stored."""
    key = "fwd-not-coord"
    coord, r1, r2 = assign(c, key)
    err, res = forward(r1, r2, SRV_SET, [0, dbkey(key), item(b"x")])
    assert err == SERVER_ERROR, (err, res)
    assert stored_everywhere([coord, r1, r2], key) == [None, None, None]


def test_forward_inside_forward_is_refused(c):
    """One hop only: a Forward carrying a Forward is refused (error 5) before anything
    is sent, so a relay can never bounce a write on."""
    key = "fwd-twice"
    coord, r1, r2 = assign(c, key)
    inner = [addr(coord), SRV_SET, [0, dbkey(key), item(b"x")], 1000]
    err, res = forward(r1, r2, SRV_FORWARD, inner)
    assert err == PROTOCOL_ERROR, (err, res)
    assert stored_everywhere([coord, r1, r2], key) == [None, None, None]


@pytest.mark.parametrize("method,params", [
    (SRV_GET, ["__KEY__"]),            # reads are not relayed
    (SRV_GET_STATUS, [0]),
    (SRV_SET, [0, [1, 2], b""]),       # nested params
])
def test_forward_of_anything_but_a_write_is_refused(c, method, params):
    key = "fwd-refused"
    coord, r1, _ = assign(c, key)
    params = [dbkey(key) if p == "__KEY__" else p for p in params]
    err, res = forward(r1, coord, method, params)
    assert err == PROTOCOL_ERROR, (err, res)


def test_forward_to_an_address_outside_the_cluster_is_refused(c):
    """No open proxy: the target must be a node of the relay's hash spaces."""
    key = "fwd-outside"
    coord, r1, _ = assign(c, key)
    stranger = kumo.free_port()
    err, res = forward(r1, stranger, SRV_SET, [0, dbkey(key), item(b"x")])
    assert err == SERVER_ERROR, (err, res)


def test_forward_with_bad_params_is_refused_and_the_relay_keeps_serving(c):
    key = "fwd-bad"
    coord, r1, _ = assign(c, key)
    r = Rpc(r1)
    try:
        for params in ([], [b"short"], [addr(coord)], [addr(coord), SRV_SET],
                       [addr(coord), SRV_SET, b"not an array"],
                       [addr(coord), SRV_SET, [0, dbkey(key), item(b"x")], b"ms"]):
            assert r.call_raw(SRV_FORWARD, params)[0] == PROTOCOL_ERROR, params
        # the same connection still works
        assert r.call(SRV_GET_STATUS, [48]) & EXT_FORWARD
    finally:
        r.close()
