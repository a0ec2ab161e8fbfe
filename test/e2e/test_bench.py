"""The benchmark's load generator (test/tools/kumo-bench) verifies what it reads: it reports
0 errors against a healthy cluster and DOES report wrong, stale and lost values when a
memcached is changed behind its back, so a benchmark figure never hides wrong answers."""
import os
import shutil
import socket
import subprocess
import time

import pytest

import kumo

BENCH = os.path.join(kumo.BUILD, "test", "tools", "kumo-bench")
MEMCACHED = shutil.which("memcached")


def result(out):
    """The RESULT line of a kumo-bench run as a dict of ints (ops_per_s too)."""
    lines = [x for x in out.splitlines() if x.startswith("RESULT ")]
    assert lines, "no RESULT line in:\n" + out
    return {k: int(v) for k, v in (f.split("=") for f in lines[-1].split()[1:])}


def bench(port, *args, timeout=60):
    r = subprocess.run([BENCH, "-s", "127.0.0.1:%d" % port] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout)
    return r.returncode, result(r.stdout), r.stdout + r.stderr


@pytest.fixture
def memcached():
    """One memcached on a free loopback port, killed afterwards."""
    if not MEMCACHED:
        pytest.skip("memcached not installed (scripts/install-deps.sh installs it)")
    port = kumo.free_port()
    p = subprocess.Popen([MEMCACHED, "-u", os.environ.get("USER") or "root", "-l", "127.0.0.1",
                          "-p", str(port), "-U", "0", "-t", "1", "-m", "64"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        kumo.wait_for(lambda: kumo.port_open(port), what="memcached port")
        yield port
    finally:
        p.kill()
        p.wait()


class Mc:
    """A minimal memcached text client to change values behind kumo-bench's back."""

    def __init__(self, port):
        self.f = socket.create_connection(("127.0.0.1", port), timeout=5).makefile("rwb")

    def get(self, key):
        self.f.write(b"get %s\r\n" % key)
        self.f.flush()
        line = self.f.readline()
        if not line.startswith(b"VALUE"):
            return None
        v = self.f.read(int(line.split()[3]) + 2)[:-2]
        assert self.f.readline() == b"END\r\n"
        return v

    def set(self, key, value):
        self.f.write(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value))
        self.f.flush()
        assert self.f.readline() == b"STORED\r\n"

    def delete(self, key):
        self.f.write(b"delete %s\r\n" % key)
        self.f.flush()
        self.f.readline()


def key(i):
    return b"kb:%012d-" % i


@pytest.mark.parametrize("proto", ["text", "binary"])
def test_bench_reports_no_errors_against_a_healthy_cluster(cluster3, proto):
    port, extra = cluster3.gateways[0].port, []
    if proto == "binary":
        port, extra = kumo.free_port(), ["--binary"]
        cluster3.start_gateway(extra=["-b", "127.0.0.1:%d" % port])
        kumo.wait_for(lambda: kumo.port_open(port), what="binary gateway port")
    rc, r, out = bench(port, "-c", 4, "-d", 2, "-n", 300, "-v", 200,
                       "-r", 0.7, "-t", 2, "-w", 0, "--preload", *extra)
    assert rc == 0, out
    assert r["errors"] == r["mismatches"] == r["stale"] == r["lost"] == r["set_fail"] == 0, out
    assert r["unmeasured_failures"] == 0, out
    assert r["hits"] > 0 and r["sets"] > 0, out
    assert r["misses"] == 0, out  # every key was preloaded


def test_bench_counts_wrong_values_as_mismatches(memcached):
    rc, r, out = bench(memcached, "-n", 20, "-c", 2, "--preload", "-t", 0)
    assert rc == 0, out
    mc = Mc(memcached)
    v5 = mc.get(key(5))
    mc.set(key(3), v5)                                   # another key's value
    v7 = bytearray(mc.get(key(7)))
    v7[-1] = ord("a") if v7[-1] != ord("a") else ord("b")
    mc.set(key(7), bytes(v7))                            # one pattern byte flipped
    mc.set(key(9), b"x" * len(v5))                       # a foreign value
    rc, r, out = bench(memcached, "-n", 20, "-c", 2, "-r", 1, "-t", 1, "-w", 0)
    assert rc == 1, out
    assert r["mismatches"] > 0 and r["hits"] > r["mismatches"], out
    assert "mismatch" in out


def test_bench_counts_stale_and_lost_values(memcached):
    """Old values written back and values deleted behind the generator's back: with one
    connection every set is acknowledged alone, so every later get must see it."""
    p = subprocess.Popen([BENCH, "-s", "127.0.0.1:%d" % memcached, "-n", "10", "-c", "1", "-r", "0.5",
                          "-v", "64", "-t", "3", "-w", "0", "--preload"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        mc = Mc(memcached)
        time.sleep(0.3)
        deadline = time.monotonic() + 2
        rounds = 0
        while time.monotonic() < deadline and rounds < 40:
            old = {i: mc.get(key(i)) for i in range(10)}
            time.sleep(0.03)
            for i, v in old.items():
                if rounds % 2:
                    mc.delete(key(i))
                elif v is not None:
                    mc.set(key(i), v)
            rounds += 1
        out = p.communicate(timeout=30)[0]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    r = result(out)
    assert p.returncode == 1, out
    assert r["stale"] > 0, out
    assert r["lost"] > 0, out
    assert r["mismatches"] == 0, out  # old values of the same key are genuine, just old


def test_bench_rejects_bad_arguments():
    for args in (["-v", "8"], ["-r", "2"], ["--prefix", "toolong"], ["-t", "0"], ["-s", "nohost"]):
        r = subprocess.run([BENCH] + args, capture_output=True, text=True, timeout=10)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "kumo-bench" in r.stderr or "usage" in r.stderr


@pytest.mark.skipif(not (MEMCACHED and (shutil.which("nutcracker") or os.path.exists("/usr/sbin/nutcracker"))),
                    reason="memcached/nutcracker not installed (scripts/install-deps.sh installs them)")
def test_bench_script_prints_the_table():
    """scripts/bench.sh, one short row: starts and stops everything, prints the table."""
    r = subprocess.run([os.path.join(kumo.TOP, "scripts", "bench.sh"), "--rounds", "1", "--time", "1",
                        "--rows", "6", "--keys", "500"],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, KUMO_BUILD_DIR=kumo.BUILD))
    assert r.returncode == 0, r.stdout + r.stderr
    row = [x for x in r.stdout.splitlines() if x.startswith("90/10, 100 B, c=16 depth 8")]
    assert len(row) == 1, r.stdout
    cells = row[0].split("|")
    assert len(cells) == 5, r.stdout
    for cell in cells[1:4]:
        ops, ratio, p99, err = cell.split()
        assert float(ops) > 0 and err == "0", r.stdout
    assert cells[1].split()[1] == "1.000", r.stdout


@pytest.mark.skipif(not (MEMCACHED and (shutil.which("nutcracker") or os.path.exists("/usr/sbin/nutcracker"))),
                    reason="memcached/nutcracker not installed (scripts/install-deps.sh installs them)")
def test_bench_cpu_script_prints_cpu_per_request_of_every_process():
    """scripts/bench-cpu.sh, one short row: a line per setup with the load generator's,
    the proxy's and the three backends' CPU per request, and nothing left running."""
    r = subprocess.run([os.path.join(kumo.TOP, "scripts", "bench-cpu.sh"), "--rows", "2",
                        "--time", "1", "--keys", "500"],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, KUMO_BUILD_DIR=kumo.BUILD))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = {x.split()[0]: x for x in r.stdout.splitlines() if x.startswith("  ")}
    assert set(lines) == {"twemproxy", "kumofs"}, r.stdout
    for name, procs in (("twemproxy", ["nutcracker", "memcached"]), ("kumofs", ["kumo-gateway", "kumo-server"])):
        head, costs = lines[name].split("| loader ")[0], lines[name].split("|")[2].split()
        assert int(head.split()[1]) > 0, r.stdout
        total = lines[name].split("=")[1].split()[0]
        assert float(total) > 0, r.stdout
        assert len(costs) == 4 and costs[0].startswith(procs[0] + ":"), r.stdout
        assert all(c.startswith(procs[1] + ":") for c in costs[1:]), r.stdout
        for c in costs:
            us, csw = c.split(":")[1].rstrip(")").split("(")
            assert float(us) > 0 and float(csw) >= 0, r.stdout


def test_bench_ops_script_prints_throughput_during_replace_backup_and_flush():
    """scripts/bench-ops.sh on a small data set: one row per step with the windows'
    median and worst throughput and their ratios, and a clean load apart from the values
    flush_all removed."""
    r = subprocess.run([os.path.join(kumo.TOP, "scripts", "bench-ops.sh")],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, KUMO_BUILD_DIR=kumo.BUILD, KEYS="20000",
                                VALUE="200", WINDOW_MS="100"))
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {x.split()[0]: x.split() for x in r.stdout.splitlines()
            if x.split() and x.split()[0] in ("baseline", "replace", "backup", "flush_all")}
    assert set(rows) == {"baseline", "replace", "backup", "flush_all"}, r.stdout
    assert rows["baseline"][3:5] != ["-", "-"] and rows["baseline"][4] == "(1.00)", r.stdout
    for name, cells in rows.items():
        assert float(cells[1]) > 0, r.stdout          # seconds the step took
        if cells[3] != "-":
            assert float(cells[3]) > 0 and float(cells[4].strip("()")) > 0, r.stdout
    load = [x for x in r.stdout.splitlines() if "load (whole run): RESULT" in x]
    assert len(load) == 1, r.stdout
    fields = dict(f.split("=") for f in load[0].split("RESULT ")[1].split())
    for k in ("errors", "mismatches", "stale", "set_fail"):
        assert fields[k] == "0", load[0]
