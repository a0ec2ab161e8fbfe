"""Helpers for the end-to-end tests: start real kumofs daemons on free loopback
ports, talk to them with the real tools, and clean up only what we started."""
import os
import sys
import random
import signal
import socket
import subprocess
import tempfile
import shutil
import time

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("KUMO_BUILD_DIR", os.path.join(TOP, "build"))

BIN = {
    "manager": os.path.join(BUILD, "src", "manager", "kumo-manager"),
    "server": os.path.join(BUILD, "src", "server", "kumo-server"),
    "gateway": os.path.join(BUILD, "src", "gateway", "kumo-gateway"),
    "kumoctl": os.path.join(BUILD, "tools", "kumoctl", "kumoctl"),
    "kumostat": os.path.join(BUILD, "tools", "kumostat", "kumostat"),
    "kumohash": os.path.join(BUILD, "tools", "kumohash", "kumohash"),
}

_used_ports = set()


_port_rng = random.Random()   # its own: a test's random.seed() must not repeat our ports


def free_port():
    """A port that is free on 127.0.0.1 now, never reused by us.  Chosen below the
    ephemeral range (32768-60999 here), where an outgoing connection of any process can
    take a port between our choice and the daemon's bind -- the original daemons, which
    do not retry a bind, then never listen (a reference gateway refusing every
    connection in a full run)."""
    lo, hi = 20000, 32767
    for _ in range(1000):
        port = _port_rng.randint(lo, hi)
        if claim_port(port):
            return port
    raise RuntimeError("no free port in %d-%d" % (lo, hi))


def claim_port(port):
    """Take port for this run if nobody here has it, it is not a kumofs default port and
    127.0.0.1 can bind it now; True if taken."""
    if port in _used_ports or port in (11211, 19700, 19800, 19900):
        return False
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        return False
    finally:
        s.close()
    _used_ports.add(port)
    return True


def require_built(*extra):
    """Exit with a message unless the daemons, kumoctl and the given files are built (for
    the benchmark scripts that use this module)."""
    for path in [BIN[n] for n in ("manager", "server", "gateway", "kumoctl")] + list(extra):
        if not os.path.exists(path):
            sys.exit("missing %s (run scripts/build.sh, or set KUMO_BUILD_DIR)" % path)


def wait_for(pred, timeout=10.0, interval=0.1, what="condition"):
    """Poll pred() until it returns a true value; bounded in time."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        time.sleep(interval)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Daemon:
    def __init__(self, name, argv, logpath):
        self.name = name
        self.argv = argv
        self.logpath = logpath
        self.proc = None

    def start(self):
        log = open(self.logpath, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def stop(self):
        """SIGTERM, then SIGKILL if it does not exit; returns the exit status."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode if self.proc else None

    def log(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


class Cluster:
    """A kumofs cluster on loopback: managers, servers, gateways, in a temp dir."""

    def __init__(self, fast=True):
        self.dir = tempfile.mkdtemp(prefix="kumo-e2e-")
        self.daemons = []
        self.managers = []
        self.servers = {}    # index -> dict(port, stream, db, daemon)
        self.gateways = []
        # Short connect timeouts so a killed peer is declared lost quickly.
        self.common = ["-Ys", "1", "-Yn", "2"] if fast else []

    # ---- daemons
    def start_manager(self, extra=(), binary=None, port=None):
        """binary: another kumo-manager (the reference original, test_interop.py);
        port: restart on the port of an earlier manager."""
        port = port or free_port()
        d = Daemon("manager%d" % len(self.managers),
                   [binary or BIN["manager"], "-v", "-l", "127.0.0.1:%d" % port] + self.common + list(extra),
                   os.path.join(self.dir, "manager%d.log" % len(self.managers))).start()
        d.port = port
        self.daemons.append(d)
        self.managers.append(d)
        wait_for(lambda: port_open(port), what="manager port %d" % port)
        return d

    @property
    def mgr(self):
        return "127.0.0.1:%d" % self.managers[0].port

    def start_server(self, i=None, extra=(), port=None, stream=None, db=None, binary=None):
        if i is None:
            i = len(self.servers)
        old = self.servers.get(i)
        port = port or (old["port"] if old else free_port())
        stream = stream or (old["stream"] if old else free_port())
        db = db or (old["db"] if old else os.path.join(self.dir, "server%d.tch" % i))
        mgrs = ["-m", self.mgr]
        if len(self.managers) > 1:
            mgrs += ["-p", "127.0.0.1:%d" % self.managers[1].port]
        d = Daemon("server%d" % i,
                   [binary or BIN["server"], "-v", "-l", "127.0.0.1:%d" % port, "-L", str(stream),
                    "-s", db, "-f", self.dir] + mgrs + self.common + list(extra),
                   os.path.join(self.dir, "server%d.log" % i)).start()
        d.port = port
        self.daemons.append(d)
        self.servers[i] = {"port": port, "stream": stream, "db": db, "daemon": d}
        wait_for(lambda: port_open(port), what="server port %d" % port)
        return d

    def server_addr(self, i):
        return "127.0.0.1:%d" % self.servers[i]["port"]

    def start_gateway(self, extra=(), binary=None, port=None):
        port = port or free_port()
        mgrs = ["-m", self.mgr]
        if len(self.managers) > 1:
            mgrs += ["-p", "127.0.0.1:%d" % self.managers[1].port]
        d = Daemon("gateway%d" % len(self.gateways),
                   [binary or BIN["gateway"], "-v", "-t", "127.0.0.1:%d" % port] + mgrs + self.common
                   + list(extra),
                   os.path.join(self.dir, "gateway%d.log" % len(self.gateways))).start()
        d.port = port
        self.daemons.append(d)
        self.gateways.append(d)
        wait_for(lambda: port_open(port), what="gateway port %d" % port)
        return d

    # ---- tools
    def tool(self, name, *args, check=True, timeout=30):
        r = subprocess.run([BIN[name]] + [str(a) for a in args], capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("%s %s failed (%d): %s%s" % (name, args, r.returncode,
                                                              r.stdout, r.stderr))
        return r

    def kumoctl(self, *args, **kw):
        return self.tool("kumoctl", self.mgr, *args, **kw).stdout

    def status(self):
        """Parse `kumoctl status` into ({addr: 'active'|'fault'}, [newcomers])."""
        return parse_status(self.kumoctl("status"))[1:]

    def kumostat(self, i, cmd):
        return self.tool("kumostat", self.server_addr(i), cmd).stdout.strip()

    # ---- whole-cluster helpers
    def attach_all(self, timeout=20):
        """Wait until every running server is a newcomer, attach, wait until active."""
        want = {self.server_addr(i) for i, s in self.servers.items() if s["daemon"].alive()}
        wait_for(lambda: want <= set(self.status()[1]) | {a for a, st in self.status()[0].items()
                                                         if st == "active"},
                 timeout=timeout, what="servers registered")
        self.kumoctl("attach")
        wait_for(lambda: all(self.status()[0].get(a) == "active" for a in want),
                 timeout=timeout, what="servers active")

    def wait_gateway_ready(self, gw=None, timeout=30):
        """Until a set/get round trip through the gateway works."""
        import pymemcache.client.base as mc
        gw = gw or self.gateways[0]

        def ok():
            c = mc.Client(("127.0.0.1", gw.port), connect_timeout=2, timeout=5)
            try:
                return c.set("__ready__", b"1", noreply=False) and c.get("__ready__") == b"1"
            finally:
                c.close()
        wait_for(ok, timeout=timeout, interval=0.3, what="gateway ready")

    def client(self, gw=None, **kw):
        import pymemcache.client.base as mc
        gw = gw or self.gateways[0]
        kw.setdefault("connect_timeout", 5)
        kw.setdefault("timeout", 60)
        return mc.Client(("127.0.0.1", gw.port), **kw)

    def replaces_finished(self):
        """How many replaces the first manager has finished (its log says so)."""
        return self.managers[0].log().count("replace finished")

    def wait_replace_ready(self, finished_before, timeout=30):
        """Until a replace newer than finished_before ended on the manager and every
        running server reports replstat "ready" (no copy or delete phase running)."""
        wait_for(lambda: self.replaces_finished() > finished_before, timeout=timeout,
                 what="replace finished")
        alive = [i for i, s in self.servers.items() if s["daemon"].alive()]
        wait_for(lambda: all(self.kumostat(i, "replstat") == "ready" for i in alive),
                 timeout=timeout, what="servers ready")

    def restart_and_attach(self, i, timeout=30):
        """Start server i again on its old database, attach it and wait until the
        replace that attach starts has finished."""
        before = self.replaces_finished()
        self.start_server(i)
        addr = self.server_addr(i)
        wait_for(lambda: addr in self.status()[1], timeout=timeout,
                 what="server %d registered" % i)
        self.kumoctl("attach")
        wait_for(lambda: self.status()[0].get(addr) == "active", timeout=timeout,
                 what="server %d active" % i)
        self.wait_replace_ready(before, timeout=timeout)

    def close(self):
        for d in reversed(self.daemons):
            try:
                d.kill(signal.SIGKILL) if not d.alive() else d.stop()
            except Exception:  # noqa: BLE001 - best effort cleanup
                pass
        if os.environ.get("KUMO_KEEP_TEST_DIR"):
            print("kept", self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self):
        return "\n".join("==== %s\n%s" % (d.name, d.log()[-4000:]) for d in self.daemons)


    # ---- fault-scenario helpers (test_rt.py): several managers, restarts in place
    def start_manager_pair(self, extra=()):
        """Two managers, each the other's partner (-p), as rt/common.rb builds them."""
        ports = [free_port(), free_port()]
        for i in range(2):
            n = len(self.managers)
            d = Daemon("manager%d" % n,
                       [BIN["manager"], "-v", "-l", "127.0.0.1:%d" % ports[i],
                        "-p", "127.0.0.1:%d" % ports[1 - i]] + self.common + list(extra),
                       os.path.join(self.dir, "manager%d.log" % n)).start()
            d.port = ports[i]
            self.daemons.append(d)
            self.managers.append(d)
        for p in ports:
            wait_for(lambda: port_open(p), what="manager port %d" % p)
        return self.managers[-2:]

    def manager_addr(self, i):
        return "127.0.0.1:%d" % self.managers[i].port

    def restart_manager(self, i, kill=True):
        """SIGKILL manager i (if kill) and start it again with the same command line;
        its log file is appended to."""
        old = self.managers[i]
        if kill:
            old.kill()
        d = Daemon(old.name, old.argv, old.logpath).start()
        d.port = old.port
        self.daemons.append(d)
        self.managers[i] = d
        wait_for(lambda: port_open(d.port), what="manager port %d" % d.port)
        return d

    def kumoctl_at(self, i, *args, **kw):
        """kumoctl against manager i (not necessarily the first)."""
        return self.tool("kumoctl", self.manager_addr(i), *args, **kw).stdout

    def status_at(self, i):
        """`kumoctl status` of manager i as (timestamp line, {addr: state}, [newcomers])."""
        return parse_status(self.kumoctl_at(i, "status"))

    def live_managers(self):
        return [i for i, m in enumerate(self.managers) if m.alive()]

    def live_servers(self):
        return [i for i, s in self.servers.items() if s["daemon"].alive()]

    def kill_server(self, i):
        self.servers[i]["daemon"].kill()

    def restart_server(self, i, fresh=True, managers=None, extra=()):
        """Start server i again on its ports (kill it first if it runs). fresh: the old
        database is renamed to .bak first, as rt/common.rb does. managers: manager
        indexes in -m/-p order (default: all, in order)."""
        s = self.servers[i]
        s["daemon"].kill()
        if fresh and os.path.exists(s["db"]):
            os.replace(s["db"], s["db"] + ".bak")
        order = list(range(len(self.managers))) if managers is None else list(managers)
        mgrs = []
        for flag, m in zip(("-m", "-p"), order):
            mgrs += [flag, self.manager_addr(m)]
        d = Daemon("server%d" % i,
                   [BIN["server"], "-v", "-l", "127.0.0.1:%d" % s["port"],
                    "-L", str(s["stream"]), "-s", s["db"], "-f", self.dir]
                   + mgrs + self.common + list(extra),
                   os.path.join(self.dir, "server%d.log" % i)).start()
        d.port = s["port"]
        self.daemons.append(d)
        s["daemon"] = d
        wait_for(lambda: port_open(d.port), what="server port %d" % d.port)
        return d

    def wait_server_state(self, i, states, managers=None, timeout=20):
        """Until every live manager (or the given ones) reports server i in one of
        states: 'active', 'fault', 'newcomer' or 'absent'."""
        addr = self.server_addr(i)

        def state_at(m):
            _, attached, newcomers = self.status_at(m)
            if addr in newcomers:       # a restarted server is listed here while whs
                return "newcomer"       # still shows it as fault
            return attached.get(addr, "absent")
        mgrs = self.live_managers() if managers is None else managers
        wait_for(lambda: all(state_at(m) in states for m in mgrs), timeout=timeout,
                 interval=0.05, what="server %s in %s" % (addr, states))

    def wait_replace_done(self, timeout=60):
        """Until the cluster is quiet: the live managers agree on the hash-space timestamp,
        and every live server has adopted it in whs, has rhs == whs (`hscheck` true) and
        no replace running (`replstat` ready)."""
        def done():
            stamps = {self.status_at(m)[0] for m in self.live_managers()}
            if len(stamps) != 1:
                return False
            ts = stamps.pop()
            for i in self.live_servers():
                whs = self.kumostat(i, "whs").splitlines()
                if len(whs) < 2 or whs[1].strip() != ts:
                    return False
                if self.kumostat(i, "hscheck") != "true":
                    return False
                if self.kumostat(i, "replstat") != "ready":
                    return False
            return True
        wait_for(done, timeout=timeout, interval=0.1, what="replace finished everywhere")

    def log_count(self, daemon, text):
        """How many times text occurs in the daemon's log file so far."""
        return daemon.log().count(text)


def parse_status(out):
    """Parse `kumoctl status` output into (timestamp line, {addr: 'active'|'fault'},
    [newcomers])."""
    ts, attached, newcomers, section = None, {}, [], None
    for line in out.splitlines():
        if line.startswith("hash space timestamp"):
            section = "t"
        elif line.startswith("attached node"):
            section = "a"
        elif line.startswith("not attached node"):
            section = "n"
        elif line.startswith("  ") and section == "t":
            ts = line.strip()
        elif line.startswith("  ") and section == "a":
            addr, state = line.split()
            attached[addr] = state.strip("()")
        elif line.startswith("  ") and section == "n":
            newcomers.append(line.strip())
    return ts, attached, newcomers


def standard_cluster(nservers=3, gateway=True, gateway_extra=()):
    """1 manager, nservers attached servers and (optionally) a ready gateway.  On a
    start-up failure the daemons' logs are printed and everything is cleaned up."""
    c = Cluster()
    try:
        c.start_manager()
        for _ in range(nservers):
            c.start_server()
        c.attach_all()
        if gateway:
            c.start_gateway(extra=gateway_extra)
            c.wait_gateway_ready()
    except BaseException:
        print(c.logs())
        c.close()
        raise
    return c


def random_key(n=12):
    return "".join(random.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n))


def rpc_servers(need=("manager", "server", "kumohash")):
    """A module fixture's body for raw-RPC tests: a manager and three attached servers,
    with c.ports mapping each server's address to its RPC port; closed afterwards."""
    for n in need:
        if not os.path.exists(BIN[n]):
            import pytest
            pytest.fail("binary not built: %s" % BIN[n])
    cl = Cluster()
    try:
        cl.start_manager()
        for _ in range(3):
            cl.start_server()
        cl.attach_all()
        cl.ports = {cl.server_addr(i): s["port"] for i, s in cl.servers.items()}
        yield cl
    finally:
        cl.close()


def key_ports(c, key):
    """The key's three servers, coordinator (slot 0) first, as RPC ports (needs c.ports)."""
    out = c.tool("kumohash", "-m", c.mgr, "assign", key).stdout
    addrs = [line.split(":", 1)[1].strip() for line in out.splitlines()
             if line.startswith("  ") and ":" in line]
    assert len(addrs) == 3, out
    return [c.ports[a] for a in addrs]
