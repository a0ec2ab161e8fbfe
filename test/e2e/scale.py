"""The scale test bed (issue 9): one or two managers, N servers and a gateway on loopback,
driven through the life of a cluster with every key checked at every step:

  register -> attach -> load K keys -> copies per server against 3K/N -> attach one
  more server (its share against 1/(N+1)) -> kill -9 two servers (every key still
  readable) -> detach (three copies again) -> full-replace.

Each step is timed and printed.  Used by test_scale.py (12 servers in the default
suite, 100 with SCALE=1) and by scripts/scale.sh.  Run directly:

  KUMO_BUILD_DIR=build /usr/bin/python3 test/e2e/scale.py --servers 100 --keys 100000
"""
import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kumo  # noqa: E402
import replcheck as rc  # noqa: E402


class LowPorts:
    """Ports below the ephemeral range (32768-60999), so that the many outgoing
    connections of a big cluster cannot take a listening port before its daemon binds
    it.  Each is checked free on 127.0.0.1 and handed out once."""

    def __init__(self):
        self.next = random.randrange(20000, 30000)

    def __call__(self):
        for _ in range(2000):
            port = self.next
            self.next = 20000 + (self.next - 20000 + 1) % 12000
            if kumo.claim_port(port):
                return port
        raise RuntimeError("no free low port")


class Step:
    """Times one step and prints it as `step  seconds  detail`."""

    def __init__(self, report):
        self.report = report
        self.rows = []

    def __call__(self, name, fn, detail=None):
        t0 = time.time()
        out = fn()
        dt = time.time() - t0
        text = detail(out, dt) if detail else ""
        self.rows.append((name, dt, text))
        self.report("%-28s %8.2f s  %s" % (name, dt, text))
        return out


def items_per_server(c, servers):
    return {i: rc.items(c, i) for i in servers}


def share_text(counts, total_copies, ideal_share):
    vals = list(counts.values())
    mean = sum(vals) / len(vals)
    return "per server min %d max %d mean %.0f (ideal %.0f, %.1f%% .. %.1f%% of ideal)" % (
        min(vals), max(vals), mean, total_copies * ideal_share,
        100.0 * min(vals) / (total_copies * ideal_share),
        100.0 * max(vals) / (total_copies * ideal_share))


def check_all(port, data):
    bad = rc.missing_or_wrong(port, data)
    assert not bad, "%d of %d keys missing or wrong, e.g. %r" % (len(bad), len(data), bad[:5])
    return len(data)


def run(nservers=12, nkeys=3000, managers=1, report=print, timeout=None, value_size=100):
    """Run every step on a fresh cluster; raises AssertionError on the first failure.
    Returns the list of (step, seconds, detail)."""
    timeout = timeout or max(60, nservers * 2 + nkeys / 2000)
    c = kumo.Cluster()
    old_free_port = kumo.free_port
    kumo.free_port = LowPorts()
    step = Step(report)
    try:
        report("scale: %d servers, %d keys of %d bytes, %d manager(s)"
               % (nservers, nkeys, value_size, managers))
        if managers == 2:
            rc.start_manager_pair(c)
        else:
            c.start_manager()

        def register():
            for _ in range(nservers):
                c.start_server()
            want = {c.server_addr(i) for i in c.servers}
            kumo.wait_for(lambda: want <= set(c.status()[1]), timeout=timeout,
                          interval=0.3, what="servers registered")
        step("register", register, lambda _, dt: "%d servers" % nservers)

        def attach():
            done = rc.finished_count(c)
            assert c.kumoctl("attach").strip() == "nil"
            kumo.wait_for(lambda: sorted(c.status()[0].values()) == ["active"] * nservers,
                          timeout=timeout, interval=0.3, what="servers active")
            rc.wait_replace_done(c, done, timeout=timeout)
        step("attach", attach)

        c.start_gateway()
        c.wait_gateway_ready()
        port = c.gateways[0].port
        data = rc.make_data("s", nkeys, value_size)
        step("load", lambda: rc.load(port, data.items()),
             lambda _, dt: "%.0f sets/s" % (nkeys / max(dt, 1e-9)))
        data["__ready__"] = b"1"

        def total(nlive=None):
            """Copies the cluster holds when every key has min(3, servers) of them."""
            return min(3, nlive or len(rc.live_servers(c))) * len(data)

        live = rc.live_servers(c)
        counts = step("copies", lambda: items_per_server(c, live),
                      lambda cnt, dt: share_text(cnt, total(), 1.0 / nservers))
        assert sum(counts.values()) == total(), (sum(counts.values()), total())
        step("read all", lambda: check_all(port, data), lambda n, dt: "%d keys ok" % n)

        def attach_one():
            done = rc.finished_count(c)
            c.start_server()
            rc.wait_registered(c, nservers)
            assert c.kumoctl("attach").strip() == "nil"
            rc.wait_replace_done(c, done, timeout=timeout)
            return rc.items(c, nservers)
        newcount = step("attach one more", attach_one,
                        lambda n, dt: "new server holds %d copies = %.2f%% (ideal %.2f%%)"
                        % (n, 100.0 * n / total(), 100.0 / (nservers + 1)))
        assert newcount > 0
        live = rc.live_servers(c)
        counts = items_per_server(c, live)
        assert sum(counts.values()) == total(), (sum(counts.values()), total())
        step("read all", lambda: check_all(port, data), lambda n, dt: "%d keys ok" % n)

        victims = random.sample(live, 2)

        def kill_two():
            for i in victims:
                c.kill_server(i)
            addrs = [c.server_addr(i) for i in victims]
            kumo.wait_for(lambda: all(c.status()[0].get(a) == "fault" for a in addrs),
                          timeout=timeout, interval=0.3, what="victims marked fault")
            return check_all(port, data)
        step("kill -9 two servers", kill_two,
             lambda n, dt: "servers %s; %d keys readable" % (victims, n))

        def replace_by(command):
            """Run a kumoctl command that starts a replace; wait for it; copies per server."""
            done = rc.finished_count(c)
            assert c.kumoctl(command).strip() == "nil"
            rc.wait_replace_done(c, done, timeout=timeout)
            return items_per_server(c, rc.live_servers(c))
        for command in ("detach", "full-replace"):
            counts = step(command, lambda: replace_by(command),
                          lambda cnt, dt: "%d copies on %d servers" % (sum(cnt.values()), len(cnt)))
            assert sum(counts.values()) == total(), (sum(counts.values()), total())
            step("read all", lambda: check_all(port, data), lambda n, dt: "%d keys ok" % n)
        for d in c.daemons:
            if d.alive():
                continue
            if d.name in {"server%d" % i for i in victims}:
                continue
            raise AssertionError("%s died:\n%s" % (d.name, d.log()[-3000:]))
        return step.rows
    except BaseException:
        report(c.logs()[-20000:])
        raise
    finally:
        kumo.free_port = old_free_port
        c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=12)
    ap.add_argument("--keys", type=int, default=10000)
    ap.add_argument("--managers", type=int, default=1, choices=(1, 2))
    ap.add_argument("--value-size", type=int, default=100)
    a = ap.parse_args()
    t0 = time.time()
    run(a.servers, a.keys, a.managers, value_size=a.value_size)
    print("scale: all steps passed in %.1f s" % (time.time() - t0))


if __name__ == "__main__":
    main()
