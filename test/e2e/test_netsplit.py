"""Partitions beyond one server (issue 14, scenarios d and g), in the namespace bed of
netbed.py, with the checker writing and reading throughout:

* split brain: the two managers cut from each other, and the servers split between them
  (s0 reaches only the first manager, s2 only the second, s1 both), then healed;
* a partition during a replace: a fourth server is attached over preloaded data and one
  of the old servers is cut off from everything while the copy runs, then healed.

Each prints what a user sees (operations, errors, violations, what each manager shows,
time to settle) and asserts what holds by design: the cluster settles with at most one
operator command (`kumoctl attach`), every key written before the fault reads back, and
the checker's own contract.  For split brain the contract is measured, not asserted,
during the split itself: a burst of stale reads can happen when the gateway moves from
one manager's picture to the other's (the user guide, "Network partitions", has the
figures); after the heal every read must be right again."""
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kumo  # noqa: E402
import netbed  # noqa: E402
import test_netfaults as nf  # noqa: E402
from checker import Checker  # noqa: E402

MGR2_PORT = nf.MGR_PORT + 1


class NetClusterPair(nf.NetCluster):
    """NetCluster with two managers (hosts "mgr" and "mgr2"), each the other's partner;
    servers and the gateway know both (-m first -p second)."""

    def __init__(self, bed):
        super().__init__(bed)
        bed.add_host("mgr2")

    @property
    def mgr2(self):
        return "%s:%d" % (self.bed.addr("mgr2"), MGR2_PORT)

    def manager_addr(self, i):
        return [self.mgr, self.mgr2][i]

    def start_manager_pair(self):
        for i, (host, addr, partner) in enumerate((("mgr", self.mgr, self.mgr2),
                                                   ("mgr2", self.mgr2, self.mgr))):
            d = self._daemon("manager%d" % i, host,
                             [kumo.BIN["manager"], "-v", "-l", addr, "-p", partner]
                             + self.common)
            d.port = int(addr.rsplit(":", 1)[1])
            self.managers.append(d)
        for m in self.managers:
            kumo.wait_for(lambda m=m: "partner connected" in m.log(), timeout=20,
                          what="partner connected on %s" % m.name)

    def start_server(self, i=None, extra=()):
        return super().start_server(i, extra=["-p", self.mgr2] + list(extra))

    def start_gateway(self, extra=()):
        return super().start_gateway(extra=["-p", self.mgr2] + list(extra))


def _bed():
    yield from nf._bed()


@pytest.fixture
def bed():
    yield from _bed()


def _checker(c, keys=40, threads=4):
    return Checker([nf.GW_PORT], host=c.bed.addr("gw"), threads=threads, keys=keys,
                   timeout=nf.CLIENT_TIMEOUT, max_time=900,
                   thread_init=lambda: c.bed.enter("cl")).start()


def _states(c, i):
    try:
        _, attached, newcomers = c.status_at(i)
    except AssertionError as e:     # the manager cannot be reached from the client host
        return "unreachable (%s)" % str(e).splitlines()[0][:60]
    names = {c.server_addr(k): "s%d" % k for k in c.servers}
    parts = ["%s=%s" % (names.get(a, a), st) for a, st in sorted(attached.items())]
    parts += ["%s=newcomer" % names.get(a, a) for a in newcomers]
    return " ".join(parts)


def _settle(c, managers, timeout=180):
    """After a heal: attach the servers that were marked fault once they have reconnected
    (the one operator command), then wait until every manager shows them all active and
    the replace is over.  Returns (seconds it took, whether attach was needed)."""
    t0 = time.time()
    want = {c.server_addr(k) for k in c.servers}

    def not_active(m):
        return [a for a in want if c.status_at(m)[1].get(a) != "active"]
    kumo.wait_for(lambda: all(a in c.status_at(managers[0])[2] for a in not_active(managers[0])),
                  timeout=60, what="fault servers reconnected as newcomers")
    attached = bool(not_active(managers[0]))
    if attached:
        c.kumoctl_at(managers[0], "attach")
    kumo.wait_for(lambda: not any(not_active(m) for m in managers), timeout=timeout,
                  what="every server active on every manager")
    c.wait_replace_done(timeout=timeout)
    return time.time() - t0, attached


def _start_pair_of_managers_and_three_servers(c):
    c.start_manager_pair()
    for _ in range(3):
        c.start_server()
    c.attach_all(timeout=30)
    c.wait_replace_done(timeout=60)


def _split(bed):
    """The split brain: managers apart; s0 with the first only, s2 with the second only."""
    bed.cut("mgr", "mgr2")
    bed.cut("s0", "mgr2")
    bed.cut("s2", "mgr")


def run_split_brain(bed, hold=15.0, out=print):
    """One split-brain round on a fresh cluster; returns a dict of what happened."""
    c = NetClusterPair(bed)
    try:
        _start_pair_of_managers_and_three_servers(c)
        c.start_gateway()
        c.wait_gateway_ready()
        chk = _checker(c)
        time.sleep(3)
        before = chk.ops
        t0 = time.time()
        _split(bed)
        time.sleep(hold)
        seen = {i: _states(c, i) for i in (0, 1)}
        during_ops, during_fail = chk.ops - before, chk.failures
        t1 = time.time()
        bed.heal()
        settle, attached = _settle(c, [0, 1])
        time.sleep(2)
        chk.stop()                       # final pass: every key read once more
        out("\nsplit brain, %.0f s: %d ops during the split (%d failed so far); "
            "manager 1 saw: %s; manager 2 saw: %s; settled %.1f s after the heal%s; %s"
            % (hold, during_ops, during_fail, seen[0], seen[1], settle,
               " with one attach" if attached else " by itself", chk.summary()))
        ats = []
        if chk.violations:
            import re
            ats = sorted(float(m.group(1)) for v in chk.violations
                         for m in [re.search(r" at=([0-9.]+)", v)] if m)
            out("violations: %d stale reads between %.2f s and %.2f s after the split began "
                "(the heal came at %.1f s)" % (len(chk.violations), ats[0] - t0,
                                               ats[-1] - t0, t1 - t0))
            out(chk.report(limit=3))
        after = _checker(c, keys=20, threads=2)
        time.sleep(3)
        after.stop()
        return {"ops": chk.ops, "violations": list(chk.violations), "settle": settle,
                "attached": attached, "held": t1 - t0, "after_violations": after.violations,
                "after_report": after.report(), "report": chk.report(),
                "violation_times": [a - t0 for a in ats], "heal_at": t1 - t0}
    except BaseException:
        print(c.logs()[-30000:])
        raise
    finally:
        c.close()


def test_split_brain_managers_and_servers_split_then_healed(bed):
    r = run_split_brain(bed)
    assert r["held"] >= 15
    # what the design promises here: the cluster settles and converges (every key reads
    # the same through the gateway afterwards, the final pass found nothing that was
    # never written); stale reads during the split itself are measured (user guide 3.3.1)
    assert not [v for v in r["violations"] if "never written" in v or "foreign" in v
                or "garbage" in v], r["report"]
    assert all(t < r["heal_at"] for t in r["violation_times"]), r["report"]
    assert not r["after_violations"], r["after_report"]


def test_split_healed_between_managers_first_lists_the_adopted_fault_server_as_newcomer(bed):
    """The split of the test above, but the managers see each other again while the
    servers are still split.  The newer of the two hash spaces wins on both, and it marks
    fault a server that never lost its connection to the other manager: that manager must
    list it as a newcomer (connected, not active), or no attach there could bring it back
    (the server never connects again).  Found by CI: the heal raced the two syncs and the
    cluster stayed with one server fault for good."""
    c = NetClusterPair(bed)
    try:
        _start_pair_of_managers_and_three_servers(c)
        _split(bed)
        s0, s2 = c.server_addr(0), c.server_addr(2)
        # each manager marks fault the server it lost (2 missed heartbeats of 1 s)
        kumo.wait_for(lambda: c.status_at(0)[1].get(s2) == "fault"
                      and c.status_at(1)[1].get(s0) == "fault", timeout=30,
                      what="each manager marked its lost server fault")
        bed.heal("mgr")                  # the managers' link only; s0 and s2 stay cut
        kumo.wait_for(lambda: c.status_at(0)[:2] == c.status_at(1)[:2], timeout=30,
                      what="the managers agree on one whs")
        _, states, _ = c.status_at(0)
        fault = [a for a, st in states.items() if st == "fault"]
        assert len(fault) == 1 and fault[0] in (s0, s2), states
        # the fault server is connected to exactly one manager: the one that did not mark
        # it, and that one lists it as a newcomer
        m = 0 if fault[0] == s0 else 1
        kumo.wait_for(lambda: fault[0] in c.status_at(m)[2], timeout=10,
                      what="%s listed as a newcomer on manager %d" % (fault[0], m))
        c.kumoctl_at(m, "attach")
        want = {c.server_addr(k) for k in c.servers}
        kumo.wait_for(lambda: all(all(c.status_at(i)[1].get(a) == "active" for a in want)
                                  for i in (0, 1)), timeout=30,
                      what="every server active on both managers after one attach")
        bed.heal()
        c.wait_replace_done(timeout=120)
    except BaseException:
        print(c.logs()[-30000:])
        raise
    finally:
        c.close()


def _preload(c, n):
    """n keys through the gateway from the client host; returns {key: value}."""
    data = {"pre%06d" % i: ("v%06d" % i).encode() * 8 for i in range(n)}

    def load():
        import pymemcache.client.base as mc
        cl = mc.Client((c.bed.addr("gw"), nf.GW_PORT), timeout=30)
        items = list(data.items())
        for k in range(0, n, 500):
            failed = cl.set_many(dict(items[k:k + 500]), noreply=False)
            assert not failed, failed[:5]
        cl.close()
    nf._on_client(c, load, timeout=300)
    return data


def _verify(c, data):
    def check():
        import pymemcache.client.base as mc
        cl = mc.Client((c.bed.addr("gw"), nf.GW_PORT), timeout=30)
        keys = list(data)
        bad = []
        for k in range(0, len(keys), 200):
            got = cl.get_many(keys[k:k + 200])
            bad += [key for key in keys[k:k + 200] if got.get(key) != data[key]]
        cl.close()
        return bad
    return nf._on_client(c, check, timeout=300)


def run_replace_partition(bed, cut_secs=8.0, preload=20000, out=print):
    """A server cut off from just before an attach over preloaded data; returns a dict."""
    c = nf.NetCluster(bed)
    try:
        c.start_manager()
        for _ in range(3):
            c.start_server()
        c.attach_all(timeout=30)
        c.start_gateway()
        c.wait_gateway_ready()
        data = _preload(c, preload)
        chk = _checker(c)
        time.sleep(2)
        c.start_server()                      # s3
        addr3 = c.server_addr(3)
        kumo.wait_for(lambda: addr3 in c.status()[1], timeout=30, what="s3 registered")
        # s1 is cut off from everything just before the attach: the replace starts with
        # one of its sources and destinations unreachable, before the manager notices
        bed.cut("s1")
        c.kumoctl("attach")
        time.sleep(cut_secs)
        bed.heal()
        settle, attached = _settle(c, [0])
        time.sleep(2)
        chk.stop()
        bad = _verify(c, data)
        out("\npartition during replace (s1 cut for %.0f s from just before the attach): "
            "settled %.1f s after the heal%s; %d of %d preloaded keys wrong or missing; %s"
            % (cut_secs, settle, " with one attach" if attached else " by itself", len(bad),
               len(data), chk.summary()))
        return {"ops": chk.ops, "violations": list(chk.violations), "settle": settle,
                "attached": attached, "bad": bad, "report": chk.report()}
    except BaseException:
        print(c.logs()[-30000:])
        raise
    finally:
        c.close()


def test_partition_during_replace_loses_nothing(bed):
    r = run_replace_partition(bed)
    assert not r["violations"], r["report"]
    assert not r["bad"], r["bad"][:10]
