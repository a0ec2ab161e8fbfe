"""Soak: hours of mixed load on a real cluster with servers killed and replaced.

A 4-server cluster (1 manager, 2 gateways) on loopback carries the consistency checker's
load (checker.py: sets, deletes, gets, multi-gets, and gets + cas read-modify-writes,
every read checked) for the whole run.  Every `kill_every` seconds one of servers 1..3
(in turn; server 0 and the other daemons live through the whole run, so their memory
can be compared from start to end) is killed with SIGKILL, detached (a replace onto the
other three), restarted on its old database and attached again (a second replace).
Once a minute the RSS and the open descriptors of every daemon and the throughput of
the last minute are sampled and printed.

    /usr/bin/python3 test/e2e/soak.py [minutes] [kill_every_seconds] [op_interval]
(op_interval: seconds each of the 4 checker threads sleeps between operations, to run
the soak beside other work; 0 = as fast as the checker goes)
(scripts/soak.sh runs it; test_soak.py runs a 3-minute version under HEAVY=1.)
"""
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kumo                      # noqa: E402
from checker import Checker      # noqa: E402


def proc_sample(pid):
    """(RSS in KiB, open descriptors) of a live process, or (None, None)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return rss, len(os.listdir("/proc/%d/fd" % pid))
    except (OSError, StopIteration):
        return None, None


def _cycle(c, i, out):
    """Kill server i, detach it, restart it on its old database, attach it."""
    t0 = time.time()
    c.kill_server(i)
    c.wait_server_state(i, ("fault",), timeout=60)
    before = c.replaces_finished()
    c.kumoctl("detach")
    c.wait_replace_ready(before, timeout=300)
    t_detach = time.time() - t0
    c.restart_server(i, fresh=False)
    addr = c.server_addr(i)
    kumo.wait_for(lambda: addr in c.status()[1], timeout=60,
                  what="server %d registered" % i)
    before = c.replaces_finished()
    c.kumoctl("attach")
    c.wait_replace_ready(before, timeout=300)
    out("  cycle server%d: killed, detached+replaced in %.1f s, attached+replaced, "
        "%.1f s in all" % (i, t_detach, time.time() - t0))


def run(minutes=60.0, kill_every=240.0, out=print, threads=4, keys=200, op_interval=0.0):
    """Run the soak; returns a dict of results (see the keys at the end)."""
    c = kumo.Cluster()
    chk = None
    try:
        c.start_manager()
        for _ in range(4):
            c.start_server()
        c.attach_all()
        c.wait_replace_done()
        for _ in range(2):
            c.start_gateway()
        for g in c.gateways:
            c.wait_gateway_ready(g)
        long_lived = [("manager", c.managers[0]), ("server0", c.servers[0]["daemon"])] + \
            [("gateway%d" % k, g) for k, g in enumerate(c.gateways)]
        chk = Checker([g.port for g in c.gateways], threads=threads, keys=keys,
                      delete_ratio=0.05, rmw_ratio=0.05, max_time=minutes * 60 + 600,
                      timeout=30.0, op_interval=op_interval).start()
        samples = []
        start = time.time()
        end = start + minutes * 60
        next_sample = start
        next_kill = start + kill_every
        victims = [1, 2, 3]
        cycles = 0
        last_ops, last_t = 0, start
        while True:
            now = time.time()
            if now >= next_sample or now >= end:
                ops = chk.ops
                row = {"t": now - start, "ops_s": (ops - last_ops) / max(now - last_t, 1e-3),
                       "violations": len(chk.violations), "failures": chk.failures}
                for name, d in long_lived:
                    row[name] = proc_sample(d.proc.pid)
                samples.append(row)
                out("t=%5.0fs %7.0f ops/s violations=%d failures=%d  %s" % (
                    row["t"], row["ops_s"], row["violations"], row["failures"],
                    "  ".join("%s rss=%sK fds=%s" % (name, *row[name])
                              for name, _ in long_lived)))
                last_ops, last_t = ops, now
                next_sample += 60
            if now >= end:
                break
            if now >= next_kill:
                victim = victims[cycles % len(victims)]
                _cycle(c, victim, out)
                cycles += 1
                next_kill = time.time() + kill_every
            time.sleep(max(0.0, min(next_sample, next_kill, end) - time.time()))
        chk.stop()
        out(chk.report())
        first, last = samples[0], samples[-1]
        out("%-10s %12s %12s %8s %8s" % ("daemon", "RSS start", "RSS end", "fds start",
                                          "fds end"))
        for name, _ in long_lived:
            out("%-10s %11sK %11sK %8s %8s" % (name, first[name][0], last[name][0],
                                               first[name][1], last[name][1]))
        return {"samples": samples, "cycles": cycles, "ops": chk.ops,
                "violations": list(chk.violations), "failures": chk.failure_kinds,
                "long_lived": [name for name, _ in long_lived],
                "elapsed": time.time() - start}
    except BaseException:
        if chk is not None:
            chk.stop(verify=False)
        print(c.logs()[-20000:])
        raise
    finally:
        c.close()


if __name__ == "__main__":
    minutes = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    kill_every = float(sys.argv[2]) if len(sys.argv) > 2 else 240.0
    op_interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    res = run(minutes, kill_every, out=lambda s: print(s, flush=True), op_interval=op_interval)
    sys.exit(1 if res["violations"] else 0)
