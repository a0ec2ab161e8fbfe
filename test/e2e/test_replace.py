"""Rebalancing (replace, algorithms.md §6-§8): attaching and detaching servers moves the
data so that every key keeps three live copies, counted straight on the servers with raw
msgpack-RPC Get; the manual (-noreplace, replace, full-replace) and automatic variants; a
server killed in the middle of a copy; writes while a replace runs."""
import os
import signal
import socket
import struct
import sys
import threading
import time
import zlib

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kumo  # noqa: E402
import replcheck as rc  # noqa: E402

N = 10000


@pytest.fixture
def cl(request):
    for n in ("manager", "server", "gateway", "kumoctl", "kumostat"):
        if not os.path.exists(kumo.BIN[n]):
            pytest.fail("binary not built: %s" % kumo.BIN[n])
    c = kumo.Cluster()
    yield c
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(c.logs())
    c.close()


def start3(c, manager_extra=()):
    c.start_manager(extra=manager_extra)
    for _ in range(3):
        c.start_server()
    c.attach_all()
    c.start_gateway()
    c.wait_gateway_ready()


def test_attach_fourth_then_detach_dead(cl):
    c = cl
    start3(c)
    data = rc.make_data("a", N)
    rc.load(c.gateways[0].port, data.items())
    data["__ready__"] = b"1"
    assert sum(rc.items(c, i) for i in range(3)) == 3 * len(data)

    # a 4th server joins: a quarter of every old server's keys move to it
    done = rc.finished_count(c)
    c.start_server()
    rc.wait_registered(c, 3)
    assert c.kumoctl("attach").strip() == "nil"
    rc.wait_replace_done(c, done)
    attached, newcomers = c.status()
    assert sorted(attached.values()) == ["active"] * 4 and newcomers == []
    assert rc.missing_or_wrong(c.gateways[0].port, data) == []
    cnt = rc.assert_copies(c, data)
    assert max(cnt.values()) == 3          # a key is on exactly its three slots
    per = [rc.items(c, i) for i in range(4)]
    assert sum(per) == 3 * len(data), per  # the delete phase dropped the moved copies
    for n in per:
        assert 0.6 * len(data) < n < 0.9 * len(data), per

    # one of them dies: detach moves its keys' third copies to the survivors
    c.servers[1]["daemon"].kill()
    kumo.wait_for(lambda: c.status()[0].get(c.server_addr(1)) == "fault", timeout=15,
                  what="server1 fault")
    done = rc.finished_count(c)
    assert c.kumoctl("detach").strip() == "nil"
    rc.wait_replace_done(c, done)
    attached, _ = c.status()
    assert c.server_addr(1) not in attached and len(attached) == 3
    rc.assert_copies(c, data)
    per = [rc.items(c, i) for i in (0, 2, 3)]
    assert per == [len(data)] * 3, per
    assert rc.missing_or_wrong(c.gateways[0].port, data) == []


def hs_nodes(c, i, which):
    """The node lines of kumostat rhs/whs of server i."""
    out = c.kumostat(i, which)
    return [line.strip() for line in out.splitlines()[3:]]


def test_noreplace_changes_whs_only_until_replace(cl):
    c = cl
    start3(c)
    data = rc.make_data("n", 3000)
    rc.load(c.gateways[0].port, data.items())
    data["__ready__"] = b"1"

    # attach-noreplace: the manager's whs gains the 4th server, nothing is copied
    c.start_server()
    rc.wait_registered(c, 3)
    done = rc.finished_count(c)
    assert c.kumoctl("attach-noreplace").strip() == "nil"
    attached, newcomers = c.status()
    assert attached.get(c.server_addr(3)) == "active" and newcomers == []
    (whs, wt), (rhs, rt) = rc.manager_spaces(c)
    assert whs.get(c.server_addr(3)) is True and c.server_addr(3) not in rhs and wt != rt
    assert rc.items(c, 3) == 0
    for i in range(3):
        assert c.kumostat(i, "hscheck") == "true"     # servers not told yet (§6.3)
        assert c.server_addr(3) not in " ".join(hs_nodes(c, i, "whs"))

    # replace: servers take the new whs, copy, then rhs := whs
    assert c.kumoctl("replace").strip() == "nil"
    rc.wait_replace_done(c, done)
    for i in range(4):
        assert "%s  (active)" % c.server_addr(3) in hs_nodes(c, i, "whs")
        assert hs_nodes(c, i, "whs") == hs_nodes(c, i, "rhs")
    assert rc.items(c, 3) > 0.6 * len(data)
    rc.assert_copies(c, data)

    # detach-noreplace: the dead server leaves whs; the servers keep their spaces
    c.servers[2]["daemon"].kill()
    kumo.wait_for(lambda: c.status()[0].get(c.server_addr(2)) == "fault", timeout=15,
                  what="server2 fault")
    done = rc.finished_count(c)
    assert c.kumoctl("detach-noreplace").strip() == "nil"
    assert c.server_addr(2) not in c.status()[0]
    (whs, _), (rhs, _) = rc.manager_spaces(c)
    assert c.server_addr(2) not in whs and rhs[c.server_addr(2)] is False
    for i in (0, 1, 3):
        assert "%s  (fault)" % c.server_addr(2) in hs_nodes(c, i, "whs")
    assert c.kumoctl("replace").strip() == "nil"
    rc.wait_replace_done(c, done)
    for i in (0, 1, 3):
        assert c.server_addr(2) not in " ".join(hs_nodes(c, i, "whs") + hs_nodes(c, i, "rhs"))
    rc.assert_copies(c, data)
    assert rc.missing_or_wrong(c.gateways[0].port, data) == []


def test_full_replace_repairs_server_wiped_while_managers_were_down(cl):
    """With the manager down nobody marks the wiped server fault: after the manager comes
    back and `attach` rebuilds the hash space (algorithms.md §9.5), every server still
    believes the wiped one holds its keys, so the normal replace copies nothing to it.
    full-replace (§8.5) sends every record to every slot and repairs it."""
    c = cl
    start3(c)
    data = rc.make_data("f", 3000)
    rc.load(c.gateways[0].port, data.items())
    data["__ready__"] = b"1"

    c.managers[0].kill()
    c.servers[1]["daemon"].kill()
    rc.wipe_db(c, 1)
    c.start_server(1)
    rc.restart_manager(c, 0)
    kumo.wait_for(lambda: len(c.status()[1]) == 3, timeout=20, what="servers reconnected")
    done = rc.finished_count(c)
    assert c.kumoctl("attach").strip() == "nil"
    rc.wait_replace_done(c, done)
    cnt = rc.copies(c, data)
    assert sum(1 for n in cnt.values() if n < 3) > len(data) // 2   # server1 is empty
    assert rc.items(c, 1) < len(data) // 10

    done = rc.finished_count(c)
    assert c.kumoctl("full-replace").strip() == "nil"
    rc.wait_replace_done(c, done)
    rc.assert_copies(c, data)
    assert [rc.items(c, i) for i in range(3)] == [len(data)] * 3
    assert rc.missing_or_wrong(c.gateways[0].port, data) == []


def random_data(prefix, n, size):
    """Values that do not compress, so that a replace stream takes a while to copy."""
    blob = os.urandom(size * 64).hex().encode()
    return {"%s-%d" % (prefix, i): ("%s-%d=" % (prefix, i)).encode()
            + blob[(i * 97) % (len(blob) - size):][:size] for i in range(n)}


def test_server_killed_during_replace(cl):
    """The new server is stopped (SIGSTOP) while the old ones offer it their streams, so
    the copy phase is certainly running when server0 is killed (algorithms.md §8.7)."""
    c = cl
    start3(c)
    data = random_data("k", 2000, 10000)
    rc.load(c.gateways[0].port, data.items(), batch=50)
    data["__ready__"] = b"1"

    c.start_server()
    rc.wait_registered(c, 3)
    done = rc.finished_count(c)
    new = c.servers[3]["daemon"]
    new.proc.send_signal(signal.SIGSTOP)
    try:
        assert c.kumoctl("attach").strip() == "nil"
        kumo.wait_for(lambda: all(c.kumostat(i, "replstat") == "Copying" for i in (1, 2)),
                      timeout=10, interval=0.05, what="copy running")
        c.servers[0]["daemon"].kill()
        kumo.wait_for(lambda: c.status()[0].get(c.server_addr(0)) == "fault", timeout=15,
                      what="server0 fault")
    finally:
        new.proc.send_signal(signal.SIGCONT)
    # the interrupted replace never enters its delete phase: nothing is lost
    assert rc.finished_count(c) == done
    assert rc.missing_or_wrong(c.gateways[0].port, data) == []
    for i in (1, 2):
        assert c.kumostat(i, "hscheck") == "false"     # rhs was not switched

    assert c.kumoctl("detach").strip() == "nil"
    rc.wait_replace_done(c, done, timeout=90)
    rc.assert_copies(c, data)
    assert [rc.items(c, i) for i in (1, 2, 3)] == [len(data)] * 3
    assert rc.missing_or_wrong(c.gateways[0].port, data) == []


def test_writes_during_replace(cl):
    """Sets and gets through the gateway keep succeeding while a replace copies, and the
    values written meanwhile survive it with three copies (algorithms.md §8.6)."""
    c = cl
    start3(c)
    base = random_data("b", 2000, 10000)
    rc.load(c.gateways[0].port, base.items(), batch=50)
    base["__ready__"] = b"1"
    c.start_server()
    rc.wait_registered(c, 3)

    expect = dict(base)
    lock = threading.Lock()
    stop = threading.Event()
    errors, ops = [], [0, 0]       # ops: total, while the replace was running
    replacing = threading.Event()

    def writer(t):
        mc = c.client()
        j = 0
        try:
            while not stop.is_set():
                j += 1
                k = "w%d-%d" % (t, j) if j % 3 else "b-%d" % ((j * 7 + t) % 2000)
                v = ("%s@%d.%d" % (k, t, j)).encode()
                if mc.set(k, v, noreply=False) is not True:
                    errors.append(("set", k))
                got = mc.get(k)
                if got != v:
                    errors.append(("get", k, got, v))
                with lock:
                    expect[k] = v
                    ops[0] += 1
                    ops[1] += replacing.is_set()
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append(("exception", repr(e)))
        finally:
            mc.close()

    ts = [threading.Thread(target=writer, args=(t,)) for t in range(3)]
    for t in ts:
        t.start()
    try:
        done = rc.finished_count(c)
        replacing.set()
        assert c.kumoctl("attach").strip() == "nil"
        rc.wait_replace_done(c, done)
        replacing.clear()
        kumo.wait_for(lambda: ops[0] > 0, timeout=5)
    finally:
        stop.set()
        for t in ts:
            t.join(30)
    assert not errors, errors[:5]
    assert ops[1] > 20, ops                  # the writers really overlapped the replace
    assert rc.missing_or_wrong(c.gateways[0].port, expect) == []
    rc.assert_copies(c, expect)
    assert sum(rc.items(c, i) for i in range(4)) == 3 * len(expect)


def test_auto_replace_with_manager_a(cl):
    """kumo-manager -a -Rs 1: servers join and leave the hash space by themselves, each
    time followed by a replace (algorithms.md §6.8)."""
    c = cl
    c.start_manager(extra=["-a", "-Rs", "1"])
    for _ in range(3):
        c.start_server()
    kumo.wait_for(lambda: sorted(c.status()[0].values()) == ["active"] * 3, timeout=20,
                  what="servers attached automatically")
    c.start_gateway()
    c.wait_gateway_ready()
    data = rc.make_data("auto", 3000)
    rc.load(c.gateways[0].port, data.items())
    data["__ready__"] = b"1"

    done = rc.finished_count(c)
    c.start_server()
    kumo.wait_for(lambda: c.status()[0].get(c.server_addr(3)) == "active", timeout=20,
                  what="new server attached automatically")
    rc.wait_replace_done(c, done)
    assert rc.items(c, 3) > 0.6 * len(data)
    rc.assert_copies(c, data)

    done = rc.finished_count(c)
    c.servers[2]["daemon"].kill()
    kumo.wait_for(lambda: c.server_addr(2) not in c.status()[0], timeout=20,
                  what="dead server detached automatically")
    rc.wait_replace_done(c, done)
    assert sorted(c.status()[0].values()) == ["active"] * 3
    rc.assert_copies(c, data)
    assert rc.missing_or_wrong(c.gateways[0].port, data) == []


def test_enable_disable_auto_replace(cl):
    c = cl
    c.start_manager(extra=["-Rs", "1"])
    for _ in range(3):
        c.start_server()
    c.attach_all()
    c.start_gateway()
    c.wait_gateway_ready()
    data = rc.make_data("en", 2000)
    rc.load(c.gateways[0].port, data.items())
    data["__ready__"] = b"1"

    assert c.kumoctl("enable-auto-replace").strip() == "true"
    assert c.kumoctl("enable-auto-replace").strip() == "nil"     # no change
    done = rc.finished_count(c)
    c.start_server()
    kumo.wait_for(lambda: c.status()[0].get(c.server_addr(3)) == "active", timeout=20,
                  what="new server attached automatically")
    rc.wait_replace_done(c, done)
    rc.assert_copies(c, data)

    assert c.kumoctl("disable-auto-replace").strip() == "false"
    assert c.kumoctl("disable-auto-replace").strip() == "nil"
    done = rc.finished_count(c)
    c.servers[0]["daemon"].kill()
    kumo.wait_for(lambda: c.status()[0].get(c.server_addr(0)) == "fault", timeout=15,
                  what="server0 fault")
    c.start_server()            # a newcomer is not attached either
    rc.wait_registered(c, 4)
    time.sleep(3)               # well past -Rs 1
    attached, newcomers = c.status()
    assert attached.get(c.server_addr(0)) == "fault" and newcomers == [c.server_addr(4)]
    assert rc.finished_count(c) == done
    # reads keep working from the two live copies
    assert rc.missing_or_wrong(c.gateways[0].port, data) == []


def _dump(port):
    """The 6-byte IPv4 address dump of 127.0.0.1:port (wire.md §7.1)."""
    return port.to_bytes(2, "big") + bytes([127, 0, 0, 1])


def test_stream_receiver_does_not_reset_sender_before_stream_end(cl):
    """Regression: a receiver that decoded the terminating nil closed its socket at once,
    before the zlib trailer that follows the nil had arrived; the sender's last write then
    met a reset and it abandoned an offer that had been applied, so that server never
    reported ReplaceCopyEnd and the replace hung.  The receiver must keep reading until
    the sender closes (wire.md §10 steps 5-6)."""
    c = cl
    c.start_manager()
    c.start_server()
    c.attach_all()

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(10)
    sport = lsock.getsockname()[1]
    # a cluster connection to the server as a fake server peer, then ReplaceOffer
    peer = socket.create_connection(("127.0.0.1", c.servers[0]["port"]), timeout=10)
    peer.sendall(rc.mpack.pack([2, _dump(kumo.free_port()), 1]))
    peer.sendall(rc.mpack.pack([0, 1, 16, [_dump(sport)]]))
    s, _ = lsock.accept()
    s.settimeout(10)
    hdr = b""
    while len(hdr) < 23:
        hdr += s.recv(23 - len(hdr))
    assert hdr[0] == 6 and hdr[1:7] == _dump(c.servers[0]["port"])

    key = rc.mpack.dbkey("streamed")
    val = struct.pack(">QH", (int(time.time()) << 32) | 1, 0) + b"payload"
    body = zlib.compress(rc.mpack.pack([key, val]) + b"\xc0")
    s.sendall(body[:-4])                     # everything but the adler-32 trailer
    got = b""
    while not got.endswith(b"\xc0"):
        chunk = s.recv(100)
        assert chunk, "receiver closed before acknowledging"
        got += chunk
    assert set(got[:-1]) <= {0x90}
    time.sleep(0.3)
    s.sendall(body[-4:])                     # the trailer, after the acknowledgement
    time.sleep(0.3)
    s.sendall(b"\x00")                       # a reset from the receiver fails this send
    s.close()
    peer.close()
    lsock.close()
    (err, v), = rc.rpc_many(c.servers[0]["port"], rc.SRV_GET, [[key]])
    assert err is None and v == val
