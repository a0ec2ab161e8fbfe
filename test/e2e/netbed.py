"""A multi-host test bed from network namespaces (issue 14 part 1).

One namespace per "host", each with one veth into a bridge that lives in a namespace of
its own, and one private address from 10.77.0.0/24 -- inside the bed only: nothing is
created in, or changed about, the namespace the tests run in.  Links are cut with
nftables inside the hosts' namespaces (both ways or one way).  Every name starts with
PREFIX and the pid of the test process, so a bed left behind by a killed run is found
and removed by the next one (remove_stale_beds), and two runs never collide.

Needs root, `ip` (iproute2) and `nft` (nftables); available() says whether they work.
"""
import ctypes
import os
import shutil
import signal
import subprocess

PREFIX = "kfb-"
SUBNET = "10.77.0.%d"
CLONE_NEWNET = 0x40000000


def _run(*argv, check=True):
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(argv), r.stderr.strip()))
    return r


def available():
    """(True, "") if namespaces and nftables can be used here, else (False, why)."""
    if os.geteuid() != 0:
        return False, "needs root for ip netns"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return False, "%s not installed (scripts/install-deps.sh)" % tool
    probe = "%sprobe%d" % (PREFIX, os.getpid())
    try:
        _run("ip", "netns", "add", probe)
        try:
            _run("ip", "netns", "exec", probe, "nft", "add", "table", "inet", "kfb")
        finally:
            _run("ip", "netns", "del", probe, check=False)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        return False, "network namespaces or nftables unusable: %s" % e
    return True, ""


def _ns_pids(ns):
    r = _run("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in r.stdout.split() if p.isdigit()]


def _delete_ns(ns):
    """Kill what still runs in ns (it is ours: the prefix says so) and delete it."""
    for pid in _ns_pids(ns):
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _run("ip", "netns", "del", ns, check=False)


def remove_stale_beds():
    """Delete the namespaces of beds whose test process is gone."""
    r = _run("ip", "netns", "list", check=False)
    for line in r.stdout.splitlines():
        ns = line.split()[0] if line.split() else ""
        if not ns.startswith(PREFIX):
            continue
        owner = ns[len(PREFIX):].split("-", 1)[0]
        owner = "".join(ch for ch in owner if ch.isdigit())
        if owner and os.path.exists("/proc/%s" % owner) and int(owner) != os.getpid():
            continue   # a bed of another live run
        if owner and int(owner) == os.getpid():
            continue   # ours: removed by its own close()
        _delete_ns(ns)


_beds = 0


class Bed:
    """Hosts on one bridge.  add_host(name) -> address; exec_argv(name, argv) runs
    inside; cut/heal links with nftables; close() removes everything."""

    def __init__(self):
        global _beds
        remove_stale_beds()
        _beds += 1
        self.tag = "%s%d-%d" % (PREFIX, os.getpid(), _beds)
        self.bridge_ns = "%s-br" % self.tag
        self.hosts = {}          # name -> (namespace, address)
        self.rules = {}          # name -> list of nft rule strings currently applied
        _run("ip", "netns", "add", self.bridge_ns)
        try:
            _run("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
            _run("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")
        except Exception:
            self.close()
            raise

    def ns(self, name):
        return self.hosts[name][0]

    def addr(self, name):
        return self.hosts[name][1]

    def add_host(self, name):
        idx = len(self.hosts) + 10
        ns = "%s-%s" % (self.tag, name)
        addr = SUBNET % idx
        _run("ip", "netns", "add", ns)
        self.hosts[name] = (ns, addr)
        port = "v%d" % idx
        _run("ip", "link", "add", "eth0", "netns", ns, "type", "veth",
             "peer", "name", port, "netns", self.bridge_ns)
        _run("ip", "-n", self.bridge_ns, "link", "set", port, "master", "br0")
        _run("ip", "-n", self.bridge_ns, "link", "set", port, "up")
        _run("ip", "-n", ns, "addr", "add", addr + "/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "netns", "exec", ns, "nft", "add", "table", "inet", "kfb")
        for chain in ("input", "output"):
            _run("ip", "netns", "exec", ns, "nft", "add chain inet kfb %s "
                 "{ type filter hook %s priority 0 ; policy accept ; }" % (chain, chain))
        self.rules[name] = []
        return addr

    def exec_argv(self, name, argv):
        return ["ip", "netns", "exec", self.ns(name)] + list(argv)

    def enter(self, name):
        """Move the calling thread into host name's network namespace (sockets it
        opens afterwards live there).  For checker worker threads."""
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        fd = os.open("/run/netns/%s" % self.ns(name), os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)

    # ---- faults
    def _nft(self, name, rule):
        _run("ip", "netns", "exec", self.ns(name), "nft", "add", "rule", "inet", "kfb", *rule.split())
        self.rules[name].append(rule)

    def cut(self, name, peer=None, inbound=True, outbound=True):
        """Drop packets of host name: from/to peer (a host name), or from/to every other
        host when peer is None; inbound and outbound select the directions as seen
        from name."""
        if peer is None:
            if inbound:
                self._nft(name, 'input iifname "eth0" drop')
            if outbound:
                self._nft(name, 'output oifname "eth0" drop')
            return
        a = self.addr(peer)
        if inbound:
            self._nft(name, "input ip saddr %s drop" % a)
        if outbound:
            self._nft(name, "output ip daddr %s drop" % a)

    def heal(self, name=None):
        """Remove the cuts of host name (or of every host)."""
        for h in ([name] if name else list(self.hosts)):
            if self.rules.get(h):
                for chain in ("input", "output"):
                    _run("ip", "netns", "exec", self.ns(h), "nft", "flush", "chain", "inet",
                         "kfb", chain, check=False)
                self.rules[h] = []

    def close(self):
        for ns, _ in list(self.hosts.values()):
            _delete_ns(ns)
        self.hosts.clear()
        _delete_ns(self.bridge_ns)


def raise_interrupt(signum, frame):
    """A SIGTERM handler: unwind like Ctrl-C, so that fixture finalizers run."""
    raise KeyboardInterrupt("signal %d" % signum)
