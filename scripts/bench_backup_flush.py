"""Get latency while `kumoctl backup` and `flush_all` run under load (issue 9).

A benchmark, not a test: it prints figures and never judges them.  See
scripts/bench-backup-flush.sh for the knobs.

Steps, on 1 manager + SERVERS servers + 1 gateway on loopback:
  1. fill: SIZE_MB per server of VALUE-byte values (kumo-bench --preload; with 3 servers
     every server holds every key);
  2. baseline: 5 s of the probe under the background load, no operation;
  3. backup: `kumoctl backup`, until every server's backup file exists;
  4. flush: FLUSH_KEYS more keys of 100 B, then `flush_all` through the gateway, until
     every server has logged the end of its flush.
During 2-4 kumo-bench keeps a 90 % get load on a small key set (LOAD_CONNS connections),
and the probe (one connection, one get at a time, in this process) times every get.
The figures of each step are the probe's gets that started inside the step's window.
The background load's own RESULT line counts the misses after flush_all as "lost"
(acknowledged sets that vanished): expected here, since flush_all removes them.
"""
import os
import socket
import subprocess
import sys
import threading
import time

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(TOP, "test", "e2e"))
import kumo  # noqa: E402

SERVERS = int(os.environ.get("SERVERS", "3"))
SIZE_MB = int(os.environ.get("SIZE_MB", "1024"))
VALUE = int(os.environ.get("VALUE", "4000"))
FLUSH_KEYS = int(os.environ.get("FLUSH_KEYS", "1000000"))
LOAD_CONNS = int(os.environ.get("LOAD_CONNS", "8"))
STEPS = os.environ.get("STEPS", "backup,flush").split(",")
BENCH = os.path.join(os.environ["KUMO_BUILD_DIR"], "test", "tools", "kumo-bench")


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def bench(gw, *args, timeout=3600):
    r = subprocess.run([BENCH, "-s", "127.0.0.1:%d" % gw, "-q"] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout)
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT")]
    return line[-1] if line else (r.stdout + r.stderr)[-400:]


class Probe:
    """One memcached connection; one get at a time; every latency with its start time."""

    def __init__(self, port, key):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.key = key.encode()
        self.samples = []        # (start monotonic, seconds, hit)
        self.stop = threading.Event()
        self.th = threading.Thread(target=self.run, daemon=True)

    def get(self):
        self.sock.sendall(b"get " + self.key + b"\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError("gateway closed the probe connection")
            buf += data
        return buf.startswith(b"VALUE")

    def run(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                hit = self.get()
            except OSError:
                return                      # the cluster is closing
            except RuntimeError:
                return
            self.samples.append((t0, time.monotonic() - t0, hit))
            time.sleep(0.0005)

    def window(self, t0, t1):
        return [s for s in self.samples if t0 <= s[0] <= t1]


def figures(samples):
    if not samples:
        return "no samples"
    lat = sorted(s[1] for s in samples)
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    return "gets=%d p50=%.2f p99=%.2f p99.9=%.2f max=%.2f ms" % (
        len(lat), pick(0.5), pick(0.99), pick(0.999), lat[-1] * 1000)


def main():
    kumo.require_built(BENCH)
    log("binaries from %s; %d servers, %d MB per server of %d-byte values, flush of %d keys"
        % (kumo.BUILD, SERVERS, SIZE_MB, VALUE, FLUSH_KEYS))
    c = kumo.standard_cluster(SERVERS)
    load = None
    try:
        gw = c.gateways[0].port
        per_key = VALUE + 60                       # key, header and TC record overhead
        n = SIZE_MB * (1 << 20) // per_key
        n = n * SERVERS // min(3, SERVERS)         # each key is on 3 servers
        t = time.time()
        log("fill: %d keys ... %s" % (n, bench(gw, "--preload", "-t", 0, "-n", n, "-v", VALUE,
                                                  "-c", 16)))
        log("fill took %.1f s; db sizes %s MB" % (time.time() - t, [
            os.path.getsize(s["db"]) >> 20 for s in c.servers.values()]))
        bench(gw, "--preload", "-t", 0, "-n", 10000, "-v", 100, "--prefix", "ld:", "-c", 8)
        mc = c.client()
        mc.set("probe", b"p" * 100)

        load = subprocess.Popen([str(a) for a in (
                                    BENCH, "-s", "127.0.0.1:%d" % gw, "-q", "-c", LOAD_CONNS,
                                    "-r", "0.9", "-n", 10000, "-v", 100, "--prefix", "ld:",
                                    "-t", 86400, "-w", 0, "--timeout", 30000)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        probe = Probe(gw, "probe")
        probe.th.start()
        time.sleep(1)

        t0 = time.monotonic()
        time.sleep(5)
        log("baseline (5 s under load):   %s" % figures(probe.window(t0, time.monotonic())))

        t0 = time.monotonic()
        if "backup" not in STEPS:
            t0 = None
        if t0 is not None:
            c.kumoctl("backup", "bench")
            files = [s["db"] + "-bench" for s in c.servers.values()]
            kumo.wait_for(lambda: all(os.path.exists(f) for f in files), timeout=3600,
                          interval=0.05, what="backup files")
            t1 = time.monotonic()
            log("backup took %.2f s:          %s" % (t1 - t0, figures(probe.window(t0, t1))))
            for f in files:
                os.unlink(f)
        if "flush" not in STEPS:
            return

        t = time.time()
        log("flush fill: %d keys ... %s" % (FLUSH_KEYS, bench(
            gw, "--preload", "-t", 0, "-n", FLUSH_KEYS, "-v", 100, "--prefix", "fl:", "-c", 16)))
        log("flush fill took %.1f s" % (time.time() - t))
        mc.set("probe", b"p" * 100)
        before = sum(s["daemon"].log().count("flush_all:") for s in c.servers.values())
        time.sleep(2)
        t0 = time.monotonic()
        ok = mc.flush_all(noreply=False)
        t_ok = time.monotonic()
        kumo.wait_for(lambda: sum(s["daemon"].log().count("flush_all:")
                                  for s in c.servers.values()) >= before + SERVERS,
                      timeout=3600, interval=0.05, what="flush walks")
        t1 = time.monotonic()
        stale = sum(1 for s in probe.window(t_ok, t1) if s[2])
        log("flush_all answered %s in %.1f ms; walks done after %.2f s" % (
            ok, (t_ok - t0) * 1000, t1 - t0))
        log("flush:                       %s; hits after OK: %d" % (
            figures(probe.window(t0, t1)), stale))
        for s in c.servers.values():
            line = [x for x in s["daemon"].log().splitlines() if "flush_all:" in x]
            log("  %s" % line[-1].strip())
        probe.stop.set()
        probe.th.join()
    finally:
        if load is not None:
            load.terminate()
            out = load.communicate(timeout=60)[0]
            line = [x for x in out.splitlines() if x.startswith("RESULT")]
            log("background load (whole run): %s" % (line[-1] if line else out[-300:]))
        c.close()


if __name__ == "__main__":
    main()
