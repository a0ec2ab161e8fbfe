"""Helpers for the end-to-end tests: start real kumofs daemons on free loopback
ports, talk to them with the real tools, and clean up only what we started."""
import os
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


def free_port():
    """A port that is free on 127.0.0.1 now (kernel-chosen), never reused by us."""
    for _ in range(100):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _used_ports and port not in (11211, 19700, 19800, 19900):
            _used_ports.add(port)
            return port
    raise RuntimeError("no free port")


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
    def start_manager(self, extra=()):
        port = free_port()
        d = Daemon("manager%d" % len(self.managers),
                   [BIN["manager"], "-v", "-l", "127.0.0.1:%d" % port] + self.common + list(extra),
                   os.path.join(self.dir, "manager%d.log" % len(self.managers))).start()
        d.port = port
        self.daemons.append(d)
        self.managers.append(d)
        wait_for(lambda: port_open(port), what="manager port %d" % port)
        return d

    @property
    def mgr(self):
        return "127.0.0.1:%d" % self.managers[0].port

    def start_server(self, i=None, extra=(), port=None, stream=None, db=None):
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
                   [BIN["server"], "-v", "-l", "127.0.0.1:%d" % port, "-L", str(stream),
                    "-s", db, "-f", self.dir] + mgrs + self.common + list(extra),
                   os.path.join(self.dir, "server%d.log" % i)).start()
        d.port = port
        self.daemons.append(d)
        self.servers[i] = {"port": port, "stream": stream, "db": db, "daemon": d}
        wait_for(lambda: port_open(port), what="server port %d" % port)
        return d

    def server_addr(self, i):
        return "127.0.0.1:%d" % self.servers[i]["port"]

    def start_gateway(self, extra=()):
        port = free_port()
        mgrs = ["-m", self.mgr]
        if len(self.managers) > 1:
            mgrs += ["-p", "127.0.0.1:%d" % self.managers[1].port]
        d = Daemon("gateway%d" % len(self.gateways),
                   [BIN["gateway"], "-v", "-t", "127.0.0.1:%d" % port] + mgrs + self.common
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
        out = self.kumoctl("status")
        attached, newcomers, section = {}, [], None
        for line in out.splitlines():
            if line.startswith("attached node"):
                section = "a"
            elif line.startswith("not attached node"):
                section = "n"
            elif line.startswith("  ") and section == "a":
                addr, state = line.split()
                attached[addr] = state.strip("()")
            elif line.startswith("  ") and section == "n":
                newcomers.append(line.strip())
        return attached, newcomers

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


def standard_cluster(nservers=3, gateway=True):
    c = Cluster()
    c.start_manager()
    for _ in range(nservers):
        c.start_server()
    c.attach_all()
    if gateway:
        c.start_gateway()
        c.wait_gateway_ready()
    return c


def random_key(n=12):
    return "".join(random.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n))
