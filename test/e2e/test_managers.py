"""Two-manager redundancy (algorithms.md §9): both managers agree on the hash space, either
one runs the cluster while the other is down, a restarted one takes the hash space from its
partner, and with both down the servers and gateways keep serving on the last hash space
until a restarted manager rebuilds it with `kumoctl attach` (§9.5)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kumo  # noqa: E402
import replcheck as rc  # noqa: E402


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


def ctl(c, mgr, *args):
    """kumoctl against manager index mgr; returns stdout."""
    return c.tool("kumoctl", "127.0.0.1:%d" % c.managers[mgr].port, *args).stdout


def same_status(c):
    a, b = rc.status_text(c, 0), rc.status_text(c, 1)
    return a == b and a


def test_two_managers(cl):
    c = cl
    rc.start_manager_pair(c)
    for _ in range(3):
        c.start_server()                 # -m manager0 -p manager1
    c.attach_all()
    c.start_gateway()                    # -m manager0 -p manager1
    c.wait_gateway_ready()
    gw = c.gateways[0].port
    data = rc.make_data("m", 2000)
    rc.load(gw, data.items())
    data["__ready__"] = b"1"

    # both managers show the same hash space (HashSpaceSync after attach, §9.2)
    text = kumo.wait_for(lambda: same_status(c), timeout=15, what="same status on both")
    assert text.count("(active)") == 3

    # manager0 dies: the cluster keeps serving, manager1 attaches and detaches
    c.managers[0].kill()
    more = rc.make_data("m1", 500)
    rc.load(gw, more.items())
    data.update(more)
    assert rc.missing_or_wrong(gw, data) == []

    c.start_server()
    rc.wait_registered(c, 3, mgr=1)
    done = rc.finished_count(c, mgr=1)
    assert ctl(c, 1, "attach").strip() == "nil"
    rc.wait_replace_done(c, done, mgr=1)
    assert sorted(rc.status_of(c, 1)[0].values()) == ["active"] * 4
    rc.assert_copies(c, data)

    c.servers[1]["daemon"].kill()
    kumo.wait_for(lambda: rc.status_of(c, 1)[0].get(c.server_addr(1)) == "fault",
                  timeout=15, what="server1 fault on manager1")
    done = rc.finished_count(c, mgr=1)
    assert ctl(c, 1, "detach").strip() == "nil"
    rc.wait_replace_done(c, done, mgr=1)
    assert c.server_addr(1) not in rc.status_of(c, 1)[0]
    rc.assert_copies(c, data)

    # manager0 comes back empty and takes the hash space from its partner (§9.4)
    rc.restart_manager(c, 0)
    text = kumo.wait_for(lambda: same_status(c), timeout=15, what="same status after restart")
    assert c.server_addr(1) not in text and text.count("(active)") == 3
    assert rc.status_of(c, 0)[1] == []

    # both die: gateways and servers keep working on the last hash space (§9.5)
    c.managers[0].kill()
    c.managers[1].kill()
    late = rc.make_data("m2", 500)
    rc.load(gw, late.items())
    data.update(late)
    assert rc.missing_or_wrong(gw, data) == []

    # one comes back: every server is a newcomer, `attach` rebuilds the hash space
    rc.restart_manager(c, 0)
    live = {c.server_addr(i) for i in (0, 2, 3)}
    kumo.wait_for(lambda: set(c.status()[1]) == live, timeout=20,
                  what="servers reconnected as newcomers")
    assert c.status()[0] == {}
    done = rc.finished_count(c)
    assert c.kumoctl("attach").strip() == "nil"
    rc.wait_replace_done(c, done)
    attached, newcomers = c.status()
    assert attached == dict.fromkeys(live, "active") and newcomers == []
    rc.assert_copies(c, data)
    assert rc.missing_or_wrong(gw, data) == []
    more = rc.make_data("m3", 300)
    rc.load(gw, more.items())
    assert rc.missing_or_wrong(gw, more) == []
