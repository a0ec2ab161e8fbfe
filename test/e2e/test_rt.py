"""Fault scenarios equivalent to the original's rt/01..09 suite (spec/tests.md §4): servers
and managers are killed with SIGKILL and restarted in loops while a data-integrity checker
(checker.py) writes, deletes and reads through two gateways; no acknowledged write may be
lost or followed by a stale read (DECISIONS.md §2, user guide §6.1).

Rounds: a few per scenario by default; HEAVY=1 runs 20 (30 for the two "while replacing"
scenarios, as the original does) and prints a summary table at the end. RT_LOOPS=N forces
N rounds. Restarted servers always start on an empty database (the old file is renamed
to .bak, as rt/common.rb does), so every round also proves re-replication by replace.

When a scenario finds a violation, the daemons' logs are copied to a directory named in
the failure message (RT_SAVE_DIR, default /tmp) for the investigation.
"""
import os
import random
import shutil
import subprocess
import time

import pytest

import kumo
import mpack
from checker import Checker

HEAVY = bool(os.environ.get("HEAVY"))
RESULTS = []     # one row per scenario, for the HEAVY summary table


def rounds(default=3, heavy=20):
    if os.environ.get("RT_LOOPS"):
        return int(os.environ["RT_LOOPS"])
    return heavy if HEAVY else default


# ---------------------------------------------------------------- cluster building

def make_cluster(nmanagers, nservers, ngateways=2):
    """rt/common.rb init_cluster: managers (paired when two), servers attached, gateways."""
    c = kumo.Cluster()
    try:
        if nmanagers == 2:
            c.start_manager_pair()
            for m in c.managers:
                kumo.wait_for(lambda: "partner connected" in m.log(), timeout=15,
                              what="partner connected on %s" % m.name)
        else:
            c.start_manager()
        for _ in range(nservers):
            c.start_server()
        c.attach_all()
        c.wait_replace_done()
        for _ in range(ngateways):
            c.start_gateway()
        for g in c.gateways:
            c.wait_gateway_ready(g)
    except BaseException:
        print(c.logs())
        c.close()
        raise
    return c


@pytest.fixture
def rt(request):
    """Factory for scenario clusters; closes them, prints logs when the test failed."""
    made = []

    def factory(nmanagers, nservers):
        c = make_cluster(nmanagers, nservers)
        made.append(c)
        return c
    yield factory
    failed = getattr(request.node, "rep_call", None) and request.node.rep_call.failed
    for c in made:
        if failed:
            print(c.logs())
            print("logs saved in %s" % save_logs(c, request.node.name))
        c.close()


def save_logs(c, name):
    """Copy the cluster's logs (not the databases) somewhere that outlives the test."""
    save = os.path.join(os.environ.get("RT_SAVE_DIR", "/tmp"),
                        "kumo-rt-%s-%d" % (name, os.getpid()))
    shutil.copytree(c.dir, save, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.tch", "*.bak"))
    return save


@pytest.fixture(scope="module", autouse=True)
def summary_table():
    yield
    if HEAVY and RESULTS:
        print("\n%-34s %6s %9s %9s %8s %8s %7s" % ("scenario", "loops", "ops", "reads",
                                                  "errors", "viol.", "secs"))
        for r in RESULTS:
            print("%-34s %6d %9d %9d %8d %8d %7.1f" % (r["name"], r["loops"], r["ops"],
                                                       r["reads"], r["failures"],
                                                       r["violations"], r["secs"]))


# ---------------------------------------------------------------- rt/common.rb helpers

def srv_kill(c, *idx):
    """SIGKILL servers, then wait until every live manager marks them fault."""
    for i in idx:
        c.kill_server(i)
    for i in idx:
        c.wait_server_state(i, {"fault"})


def srv_start(c, i, via=0, managers=None):
    """start_srv: restart server i on an empty database, wait until manager `via` sees
    it, attach there, and wait until the replace finished everywhere."""
    c.restart_server(i, fresh=True, managers=managers)
    c.wait_server_state(i, {"newcomer", "active"}, managers=[via])
    c.kumoctl_at(via, "attach")
    c.wait_server_state(i, {"active"})
    c.wait_replace_done()


def wait_manager_synced(c, m, partner):
    """Manager m (re)started: partner connection up on both sides, and m's hash space
    equals its partner's (HashSpaceSync, algorithms.md §9.4)."""
    def synced():
        ts_m, att_m, _ = c.status_at(m)
        ts_p, att_p, _ = c.status_at(partner)
        return ts_m is not None and ts_m == ts_p and att_m == att_p
    kumo.wait_for(synced, timeout=20, interval=0.1, what="manager %d synced" % m)


def mgr_restart(c, m, kill=True):
    """restart_mgr: SIGKILL manager m, start it again against its partner, wait for the
    partner connection on both sides and for the hash space to be re-synchronised."""
    partner = 1 - m
    offset = len(c.managers[m].log())
    c.restart_manager(m, kill=kill)
    # The partner logs `partner connected` only if it had noticed the loss: a manager
    # restarted within the partner's connect retries is reconnected silently, so only
    # the restarted side is waited for, then the synchronised hash space.
    kumo.wait_for(lambda: "partner connected" in c.managers[m].log()[offset:],
                  timeout=20, what="partner connected after restart")
    wait_manager_synced(c, m, partner)
    # Every server reconnects to it (within a keepalive interval); until then this manager
    # would not notice such a server's death (it only watches its own connections).
    kumo.wait_for(lambda: all("server connected %s" % c.server_addr(i)
                              in c.managers[m].log()[offset:] for i in c.live_servers()),
                  timeout=20, what="servers connected to restarted manager %d" % m)


# ---------------------------------------------------------------- the scenario driver

SRV_GET, SRV_GET_VERSION = 34, 50      # wire.md §8.2; GetVersion is a kumofs-c addition


def replica_probe(c):
    """probe(key) for the checker: what every live server holds for the key right now
    (Get as a read replica answers it; GetVersion shows the stored version, tombstones
    included), e.g. `40239:get=224@7710..,ver=7710..`."""
    def probe(key):
        out = []
        for i in c.live_servers():
            port = c.servers[i]["port"]
            parts = []
            try:
                rpc = mpack.Rpc(port)
            except OSError as e:
                out.append("%d:<%s>" % (port, e))
                continue
            try:
                for name, method in (("get", SRV_GET), ("ver", SRV_GET_VERSION)):
                    try:
                        r = rpc.call(method, [mpack.dbkey(key)])
                    except mpack.RpcError as e:
                        parts.append("%s=err%s" % (name, e.code))
                        continue
                    if isinstance(r, (bytes, bytearray)) and len(r) >= 8:
                        ct = int.from_bytes(r[:8], "big")
                        seq = r.split(b"|")[1].decode() if r.count(b"|") >= 3 else "?"
                        parts.append("%s=%s@%d" % (name, seq, ct))
                    else:
                        parts.append("%s=%r" % (name, r))
            finally:
                rpc.close()
            out.append("%d:%s" % (port, ",".join(parts)))
        return " ".join(out)
    return probe


def run_scenario(c, name, nloops, one_round, pause=1.0, threads=2, keys=40):
    """Start the checker, run nloops fault rounds (each followed by `pause` seconds of
    checked traffic on the healed cluster), stop the checker, assert zero violations."""
    t0 = time.time()
    chk = Checker([g.port for g in c.gateways], threads=threads, keys=keys,
                  max_time=3600, probe=replica_probe(c)).start()
    try:
        time.sleep(pause)
        for n in range(nloops):
            one_round(n)
            time.sleep(pause)
    finally:
        chk.stop()
    secs = time.time() - t0
    RESULTS.append(dict(name=name, loops=nloops, ops=chk.ops, reads=chk.reads_checked,
                        failures=chk.failures, violations=len(chk.violations), secs=secs))
    print("\n%s: loops=%d ops=%d violations=%d (reads=%d errors=%d retired=%d, %.1fs)"
          % (name, nloops, chk.ops, len(chk.violations), chk.reads_checked, chk.failures,
             chk.retired, secs))
    if chk.failure_kinds:
        print("  errors: %s" % chk.failure_kinds)
    if chk.violations:
        save = save_logs(c, name)
        with open(os.path.join(save, "violations.txt"), "w") as f:
            f.write(chk.report(limit=100000) + "\n")
        print(chk.report())
        pytest.fail("%d violations in %s (logs saved in %s)\n%s"
                    % (len(chk.violations), name, save, chk.report(limit=5)))
    assert chk.reads_checked > 0 and chk.ops > 0
    return chk


# ---------------------------------------------------------------- rt/01 .. rt/06

def test_rt01_mgr1_kill_1_srv(rt):
    c = rt(1, 3)

    def one(n):
        k = random.choice(c.live_servers())
        srv_kill(c, k)
        srv_start(c, k)
    run_scenario(c, "01_mgr1_kill_1_srv", rounds(), one)


def test_rt02_mgr2_kill_1_mgr(rt):
    c = rt(2, 3)

    def one(n):
        mgr_restart(c, random.randrange(2))
    run_scenario(c, "02_mgr2_kill_1_mgr", rounds(), one)


def _kill_2_srvs(c):
    k1, k2 = random.sample(c.live_servers(), 2)
    srv_kill(c, k1, k2)
    srv_start(c, k1)
    srv_start(c, k2)


def test_rt03_mgr1_kill_2_srvs(rt):
    c = rt(1, 3)
    run_scenario(c, "03_mgr1_kill_2_srvs", rounds(), lambda n: _kill_2_srvs(c))


def test_rt04_mgr2_kill_2_srvs(rt):
    c = rt(2, 3)
    run_scenario(c, "04_mgr2_kill_2_srvs", rounds(), lambda n: _kill_2_srvs(c))


def test_rt05_mgr2_kill_1_srv_1_mgr(rt):
    """Kill a manager and a server; restart the manager first, then the server, which
    names the surviving manager first (-m) and attaches through it."""
    c = rt(2, 3)

    def one(n):
        m, partner = random.sample([0, 1], 2)
        k = random.choice(c.live_servers())
        c.managers[m].kill()
        c.kill_server(k)
        c.wait_server_state(k, {"fault"}, managers=[partner])
        mgr_restart(c, m, kill=False)
        srv_start(c, k, via=partner, managers=[partner, m])
    run_scenario(c, "05_mgr2_kill_1_srv_1_mgr", rounds(), one)


def test_rt06_mgr2_kill_1_mgr_1_srv(rt):
    """Kill a server and a manager; the server comes back (and is attached through the
    surviving manager) while its first manager is still down."""
    c = rt(2, 3)

    def one(n):
        m, partner = random.sample([0, 1], 2)
        k = random.choice(c.live_servers())
        c.kill_server(k)
        c.managers[m].kill()
        c.wait_server_state(k, {"fault"}, managers=[partner])
        srv_start(c, k, via=partner, managers=[partner, m])
        mgr_restart(c, m, kill=False)
    run_scenario(c, "06_mgr2_kill_1_mgr_1_srv", rounds(), one)


# ---------------------------------------------------------------- rt/07, rt/08

def preload(c, n=8000, size=1500):
    """Bulk data so that a replace lasts long enough to be interrupted."""
    mc = c.client()
    try:
        batch = {}
        for i in range(n):
            batch["bulk-%d" % i] = (b"%d-" % i) * (size // 6)
            if len(batch) == 500:
                assert not mc.set_many(batch, noreply=False)
                batch = {}
        if batch:
            assert not mc.set_many(batch, noreply=False)
    finally:
        mc.close()


def _kill_while_replacing(c, stats, trigger):
    """rt/07: kill k1 and bring it back; start a replace through `trigger` (kumoctl
    attach, not waited for); as soon as manager M logs `start replace copy`, kill k2 and
    bring it back; then attach again and wait for the replace to finish."""
    k1, k2 = random.sample(c.live_servers(), 2)
    M = random.randrange(len(c.managers))
    mlog = c.managers[M]
    srv_kill(c, k1)
    c.restart_server(k1, fresh=True)
    c.wait_server_state(k1, {"newcomer"}, managers=[M])
    started = c.log_count(mlog, "start replace copy")
    finished = c.log_count(mlog, "replace finished")
    ctl = subprocess.Popen([kumo.BIN["kumoctl"], c.manager_addr(M)] + trigger,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kumo.wait_for(lambda: c.log_count(mlog, "start replace copy") > started, timeout=20,
                  interval=0.005, what="start replace copy")
    c.kill_server(k2)
    if c.log_count(mlog, "replace finished") == finished:
        stats["hit"] += 1           # the kill landed while the replace was running
    c.wait_server_state(k2, {"fault"})
    c.restart_server(k2, fresh=True)
    c.wait_server_state(k2, {"newcomer"}, managers=[M])
    assert ctl.wait(timeout=30) == 0
    c.kumoctl_at(M, "attach")
    c.wait_server_state(k1, {"active"})
    c.wait_server_state(k2, {"active"})
    c.wait_replace_done()


def test_rt07_mgr2_kill_2_srvs_while_replacing(rt):
    c = rt(2, 3)
    preload(c)
    stats = {"hit": 0}
    run_scenario(c, "07_kill_2_srvs_while_replacing", rounds(3, 30),
                 lambda n: _kill_while_replacing(c, stats, ["attach"]))
    print("  kills during a running replace: %d" % stats["hit"])


def test_rt08_mgr2_kill_2_srvs_while_replacing2(rt):
    c = rt(2, 6)
    preload(c)
    stats = {"hit": 0}
    run_scenario(c, "08_kill_2_srvs_while_replacing2", rounds(2, 30),
                 lambda n: _kill_while_replacing(c, stats, ["attach"]))
    print("  kills during a running replace: %d" % stats["hit"])


def test_rt10_mgr1_detach_kill_while_replacing(rt):
    """Beyond rt/: a detach starts the replace that a second server kill interrupts; both
    servers come back empty and are attached again."""
    c = rt(1, 3)
    preload(c)
    stats = {"hit": 0}

    def one(n):
        k1, k2 = random.sample(c.live_servers(), 2)
        mlog = c.managers[0]
        srv_kill(c, k1)
        started = c.log_count(mlog, "start replace copy")
        finished = c.log_count(mlog, "replace finished")
        c.kumoctl_at(0, "detach")
        kumo.wait_for(lambda: c.log_count(mlog, "start replace copy") > started,
                      timeout=20, interval=0.005, what="start replace copy")
        c.kill_server(k2)
        if c.log_count(mlog, "replace finished") == finished:
            stats["hit"] += 1
        c.wait_server_state(k1, {"absent"})
        c.wait_server_state(k2, {"fault"})
        srv_start(c, k1)
        srv_start(c, k2)
    run_scenario(c, "10_detach_kill_while_replacing", rounds(), one)
    print("  kills during a running replace: %d" % stats["hit"])


def test_rt11_mgr1_kill_1_srv_keep_db(rt):
    """Beyond rt/: as rt/01, but the server restarts on its old database, which missed
    the sets and deletes made while it was down (DECISIONS.md §2: no stale value and no
    deleted key may come back)."""
    c = rt(1, 3)

    def one(n):
        k = random.choice(c.live_servers())
        srv_kill(c, k)
        time.sleep(0.5)             # let the survivors take writes and deletes it misses
        c.restart_server(k, fresh=False)
        c.wait_server_state(k, {"newcomer", "active"}, managers=[0])
        c.kumoctl_at(0, "attach")
        c.wait_server_state(k, {"active"})
        c.wait_replace_done()
    run_scenario(c, "11_mgr1_kill_1_srv_keep_db", rounds(), one)


# ---------------------------------------------------------------- rt/09

def test_rt09_cas(rt):
    """Every successful store changes the CAS unique, a stale CAS is refused, also right
    after a server was restarted empty and its replicas rebuilt."""
    c = rt(1, 3)
    nkeys = 500 if HEAVY else 150
    nloops = rounds()
    t0 = time.time()
    mc = c.client(timeout=30)
    pid = "%d-%d" % (os.getpid(), int(t0))
    keys = ["%s-key%d" % (pid, i) for i in range(nkeys)]
    for i, k in enumerate(keys):
        assert mc.set(k, b"val%d" % i, noreply=False) is True
    ops = nested_fail = 0
    for n in range(nloops):
        for i, k in enumerate(keys):
            v, unique = mc.gets(k)
            assert v == b"val%d" % i, (k, v)
            v2, unique2 = mc.gets(k)
            nested = mc.cas(k, b"val%d" % i, unique2, noreply=False)
            if nested is not True:
                nested_fail += 1
            outer = mc.cas(k, b"val%d" % i, unique, noreply=False)
            assert outer is False, "cas unexpectedly succeeded %s (%r)" % (k, outer)
            ops += 4
        victim = random.choice(c.live_servers())
        srv_kill(c, victim)
        srv_start(c, victim)
    for i, k in enumerate(keys):
        assert mc.get(k) == b"val%d" % i
    mc.close()
    secs = time.time() - t0
    RESULTS.append(dict(name="09_cas", loops=nloops, ops=ops, reads=ops // 2,
                        failures=nested_fail, violations=0, secs=secs))
    print("\n09_cas: loops=%d ops=%d violations=0 (nested cas not stored: %d, %.1fs)"
          % (nloops, ops, nested_fail, secs))
    assert nested_fail == 0


# ---------------------------------------------------------------- the checker itself

class _FakeStore:
    """In-memory memcached stand-in for the checker's self-test. mode: 'good' (failed
    sets may or may not apply, as a real cluster), 'stale' (a read sometimes returns the
    value before the last acknowledged set), 'foreign' (sometimes another key's value),
    'lost' (an acknowledged set is sometimes dropped)."""

    def __init__(self, mode):
        from pymemcache.exceptions import MemcacheServerError
        self.err = MemcacheServerError
        self.mode = mode
        self.data, self.prev = {}, {}
        self.rnd = random.Random(7)

    def client(self):
        store = self

        class C:
            def set(self, k, v, noreply=False):
                if store.rnd.random() < 0.02:          # failed set, applied or not
                    if store.rnd.random() < 0.5:
                        store.prev[k], store.data[k] = store.data.get(k), v
                    raise store.err("replication failed")
                if store.mode == "lost" and store.rnd.random() < 0.05:
                    return True
                store.prev[k], store.data[k] = store.data.get(k), v
                return True

            def delete(self, k, noreply=False):
                store.prev[k] = store.data.pop(k, None)
                return True

            def get(self, k):
                if store.mode == "stale" and store.rnd.random() < 0.05:
                    return store.prev.get(k)
                if store.mode == "foreign" and store.rnd.random() < 0.05 and store.data:
                    return store.rnd.choice(list(store.data.values()))
                return store.data.get(k)

            def get_many(self, ks):
                return {k: v for k in ks for v in [self.get(k)] if v is not None}

            def close(self):
                pass
        return C()


@pytest.mark.parametrize("mode", ["good", "stale", "foreign", "lost"])
def test_checker_selftest(mode):
    """The checker accepts every legal history and reports each kind of violation."""
    store = _FakeStore(mode)

    class FakeChecker(Checker):
        def _client(self, port):
            return store.client()
    chk = FakeChecker([1], threads=1, keys=10, max_ops=3000).start()
    chk._threads[0].join(timeout=30)
    chk.stop()
    print("\nchecker self-test %s: %s" % (mode, chk.summary()))
    if mode == "good":
        assert chk.violations == [] and chk.failures > 0
    else:
        assert chk.violations, mode
