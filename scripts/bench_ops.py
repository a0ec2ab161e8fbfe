"""Client throughput while replace, backup and flush_all run (issue 12: none of them may
cost clients more than 2x throughput while it runs).

A benchmark, not a test: it prints figures and never judges them.  See
scripts/bench-ops.sh for the knobs.

Steps, on 1 manager + 3 servers + 1 gateway on loopback (free ports, a temporary
directory removed at the end):
  1. fill: KEYS keys of VALUE bytes (kumo-bench --preload);
  2. from here to the end, kumo-bench keeps a verifying load through the gateway
     (CONNS connections, GET_RATIO gets over the same keys) and prints its throughput
     every WINDOW_MS (--progress);
  3. baseline: 5 s without any operation;
  4. replace: a 4th server is started and attached, until the manager logs that the
     replace finished;
  5. backup: `kumoctl backup`, until every server's backup file exists;
  6. flush: `flush_all` through the gateway, until every server has logged the end of
     its flush walk.
Between steps the load runs 3 s on its own.  The daemons are looked at every 0.25 s, and
only the new lines of their logs are read: polling must not take the CPU it measures.  For each step the windows that lie wholly
inside it are summarised: their median and their worst throughput, and both as a ratio
of the baseline's median.  After flush_all the load's gets miss and it counts the values
it had written as "lost": expected there, since flush_all removes them.
"""
import os
import statistics
import subprocess
import sys
import threading
import time

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(TOP, "test", "e2e"))
import kumo  # noqa: E402

KEYS = int(os.environ.get("KEYS", "200000"))
VALUE = int(os.environ.get("VALUE", "1024"))
CONNS = int(os.environ.get("CONNS", "16"))
GET_RATIO = os.environ.get("GET_RATIO", "0.9")
WINDOW_MS = int(os.environ.get("WINDOW_MS", "250"))
STEPS = os.environ.get("STEPS", "replace,backup,flush").split(",")
BENCH = os.path.join(os.environ["KUMO_BUILD_DIR"], "test", "tools", "kumo-bench")


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


POLL = 0.25   # seconds between looks at the daemons: polling must not load the host


def log_count(daemon, text, pos):
    """Occurrences of text in the daemon's log after byte pos[0] (advanced): the log is
    read from where the last look ended, not whole, each time."""
    with open(daemon.logpath, "rb") as f:
        f.seek(pos[0])
        data = f.read()
    cut = data.rfind(b"\n") + 1
    pos[0] += cut
    return data[:cut].count(text.encode())


class Load:
    """The background kumo-bench, and its throughput windows as (end monotonic, ops/s)."""

    def __init__(self, port):
        self.proc = subprocess.Popen(
            [str(a) for a in (BENCH, "-s", "127.0.0.1:%d" % port, "-q", "-c", CONNS,
                              "-r", GET_RATIO, "-n", KEYS, "-v", VALUE, "-t", 86400, "-w", 0,
                              "--timeout", 30000, "--progress", WINDOW_MS)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.windows = []
        self.other = []
        self.th = threading.Thread(target=self.read, daemon=True)
        self.th.start()

    def read(self):
        for line in self.proc.stdout:
            now = time.monotonic()
            if line.startswith("PROGRESS"):
                fields = dict(f.split("=") for f in line.split()[1:])
                self.windows.append((now, float(fields["ops_per_s"])))
            else:
                self.other.append(line.rstrip())

    def between(self, t0, t1):
        """ops/s of the windows that began at or after t0 and ended by t1."""
        w = WINDOW_MS / 1000.0
        return [r for end, r in self.windows if end - w >= t0 and end <= t1]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.th.join(timeout=10)
        return [x for x in self.other if x.startswith("RESULT")]


def main():
    kumo.require_built(BENCH)
    log("binaries from %s; %d keys of %d bytes; load: %d connections, %s gets, windows of "
        "%d ms" % (kumo.BUILD, KEYS, VALUE, CONNS, GET_RATIO, WINDOW_MS))
    c = kumo.standard_cluster(3)
    load = None
    rows = []
    try:
        gw = c.gateways[0].port
        t = time.time()
        r = subprocess.run([BENCH, "-s", "127.0.0.1:%d" % gw, "-q", "--preload", "-t", "0",
                            "-n", str(KEYS), "-v", str(VALUE), "-c", "16"],
                           capture_output=True, text=True, timeout=3600)
        log("fill took %.1f s: %s" % (time.time() - t, r.stdout.strip()[-200:]))

        load = Load(gw)
        time.sleep(2)
        t0 = time.monotonic()
        time.sleep(5)
        rows.append(("baseline", t0, time.monotonic()))

        if "replace" in STEPS:
            r0 = time.monotonic()
            time.sleep(3)
            rows.append(("(quiet)", r0, time.monotonic()))
            mgr, pos, seen = c.managers[0], [os.path.getsize(c.managers[0].logpath)], 0
            t0 = time.monotonic()
            c.start_server()
            c.attach_all(timeout=600)
            while seen == 0:               # the manager logs the end of the replace
                time.sleep(POLL)
                seen += log_count(mgr, "replace finished", pos)
            rows.append(("replace", t0, time.monotonic()))
            c.wait_replace_done(timeout=3600)   # and every server agrees (not timed)

        if "backup" in STEPS:
            r0 = time.monotonic()
            time.sleep(3)
            rows.append(("(quiet)", r0, time.monotonic()))
            t0 = time.monotonic()
            c.kumoctl("backup", "ops")
            files = [s["db"] + "-ops" for s in c.servers.values()]
            kumo.wait_for(lambda: all(os.path.exists(f) for f in files), timeout=3600,
                          interval=POLL, what="backup files")
            rows.append(("backup", t0, time.monotonic()))
            for f in files:
                os.unlink(f)

        if "flush" in STEPS:
            r0 = time.monotonic()
            time.sleep(3)
            rows.append(("(quiet)", r0, time.monotonic()))
            pos = {i: [os.path.getsize(s["daemon"].logpath)] for i, s in c.servers.items()}
            ended = 0
            t0 = time.monotonic()
            c.client().flush_all(noreply=False)
            while ended < len(c.servers):  # every server logs the end of its walk
                time.sleep(POLL)
                ended += sum(log_count(s["daemon"], "flush_all:", pos[i])
                             for i, s in c.servers.items())
            rows.append(("flush_all", t0, time.monotonic()))
        time.sleep(1)
    finally:
        result = load.stop() if load is not None else []
        c.close()

    base = statistics.median(load.between(rows[0][1], rows[0][2]) or [0])
    print("%-10s %9s %8s %22s %22s" % ("step", "seconds", "windows", "median ops/s (ratio)",
                                        "worst window (ratio)"))
    for name, t0, t1 in rows:
        w = load.between(t0, t1)
        if not w:
            print("%-10s %9.2f %8d %22s %22s" % (name, t1 - t0, 0, "-", "-"))
            continue
        med, worst = statistics.median(w), min(w)
        print("%-10s %9.2f %8d %22s %22s" % (
            name, t1 - t0, len(w), "%.0f (%.2f)" % (med, med / base if base else 0),
            "%.0f (%.2f)" % (worst, worst / base if base else 0)))
    log("load (whole run): %s" % (result[-1] if result else "no RESULT line"))


if __name__ == "__main__":
    main()
