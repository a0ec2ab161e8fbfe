"""Size benchmark (issue 9): one server with N records (default 10M, a multi-GB
database made by kumo-mkdb) joins two empty servers; prints how long it takes to start,
attach, full-replace and back up, and the server's RSS at each step (it should stay
bounded by what Tokyo Cabinet maps, not grow with the key count).  A benchmark: it
prints figures and checks answers, it does not judge times.

  KUMO_BUILD_DIR=build /usr/bin/python3 test/e2e/bench_size.py [N] [VALUE_BYTES]
"""
import glob
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kumo  # noqa: E402
import replcheck as rc  # noqa: E402

MKDB = os.path.join(kumo.BUILD, "test", "tools", "kumo-mkdb")


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0]) / 1024.0, int(fields["VmHWM"].split()[0]) / 1024.0


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    vsize = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    c = kumo.Cluster()
    rows = []

    def report(step, dt, extra=""):
        pid = c.servers[0]["daemon"].proc.pid if 0 in c.servers else None
        mem = "rss %.0f MiB (peak %.0f)" % rss_mib(pid) if pid else ""
        line = "%-22s %9.2f s  %s %s" % (step, dt, mem, extra)
        rows.append(line)
        print(line, flush=True)

    try:
        db0 = os.path.join(c.dir, "server0.tch")
        t0 = time.time()
        subprocess.run([MKDB, db0, str(n), str(vsize)], check=True)
        size = os.path.getsize(db0)
        print("%-22s %9.2f s  %d records, %.2f GB" % ("make database", time.time() - t0, n,
                                                     size / 1e9), flush=True)
        c.start_manager()
        t0 = time.time()
        c.start_server(db=db0)
        report("start (port open)", time.time() - t0)
        c.start_server()
        c.start_server()
        t0 = time.time()
        done = rc.finished_count(c)
        c.attach_all(timeout=600)
        rc.wait_replace_done(c, done, timeout=3600)
        report("attach", time.time() - t0)
        c.start_gateway()
        c.wait_gateway_ready()
        keys = ["k-%d" % random.randrange(n) for _ in range(2000)]

        def check():
            got = rc.read_all(c.gateways[0].port, keys)
            bad = [k for k in keys if not got.get(k, b"").startswith(("%s=" % k).encode())]
            assert not bad, bad[:5]
        t0 = time.time()
        done = rc.finished_count(c)
        assert c.kumoctl("full-replace").strip() == "nil"
        rc.wait_replace_done(c, done, timeout=3600)
        report("full-replace", time.time() - t0,
               "items %s" % [rc.items(c, i) for i in range(3)])
        check()
        t0 = time.time()
        out = c.kumoctl("backup", "size")
        assert "nil" in out, out
        kumo.wait_for(lambda: "backup created" in c.servers[0]["daemon"].log(), timeout=3600,
                      interval=0.5, what="backup of server0")
        report("backup", time.time() - t0,
               "%.2f GB" % (os.path.getsize(db0 + "-size") / 1e9))
        check()
        print("size: all steps passed")
    except BaseException:
        print(c.logs()[-5000:])
        raise
    finally:
        for f in glob.glob(os.path.join(c.dir, "*.tch*")):
            os.unlink(f)
        c.close()


if __name__ == "__main__":
    main()
