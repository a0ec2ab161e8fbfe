"""Servers die and come back: reads and writes keep working (issue: kill -9 tests)."""
import time

import kumo


def _fill(mc, n, prefix):
    data = {}
    for i in range(n):
        k = "%s-%d" % (prefix, i)
        v = ("%s-%d-%s" % (prefix, i, kumo.random_key(20))).encode()
        assert mc.set(k, v, noreply=False) is True
        data[k] = v
    return data


def test_kill_one_server(cluster3):
    c = cluster3
    mc = c.client()
    data = _fill(mc, 200, "k1")

    victim = 1
    t0 = time.time()
    c.servers[victim]["daemon"].kill()
    kumo.wait_for(lambda: c.status()[0].get(c.server_addr(victim)) == "fault",
                  timeout=10, what="victim marked fault")
    assert time.time() - t0 < 10

    # every key written before is still readable
    for k, v in data.items():
        assert mc.get(k) == v, k
    # new sets and deletes succeed
    more = _fill(mc, 50, "k1b")
    for k, v in more.items():
        assert mc.get(k) == v
    for k in list(data)[:20]:
        assert mc.delete(k, noreply=False) is True
        assert mc.get(k) is None


def test_kill_two_servers_then_recover(cluster3):
    c = cluster3
    mc = c.client()
    data = _fill(mc, 200, "k2")
    c.servers[0]["daemon"].kill()
    c.servers[2]["daemon"].kill()
    kumo.wait_for(lambda: c.status()[0].get(c.server_addr(0)) == "fault"
                  and c.status()[0].get(c.server_addr(2)) == "fault",
                  timeout=10, what="two servers fault")
    for k, v in data.items():
        assert mc.get(k) == v, k

    # restart both on their databases and attach: all active again
    c.start_server(0)
    c.start_server(2)
    kumo.wait_for(lambda: {c.server_addr(0), c.server_addr(2)} <= set(c.status()[1]),
                  timeout=20, what="restarted servers registered")
    c.kumoctl("attach")
    kumo.wait_for(lambda: set(c.status()[0].values()) == {"active"} and len(c.status()[0]) == 3,
                  timeout=20, what="all active")
    for k, v in data.items():
        assert mc.get(k) == v, k
    more = _fill(mc, 30, "k2b")
    for k, v in more.items():
        assert mc.get(k) == v
