"""Helpers for the rebalancing tests: a fast pipelined memcached loader and reader, a
per-server replica count over raw msgpack-RPC Get, replace-completion waits, and a second
manager / manager restart on top of kumo.Cluster."""
import os
import socket
import threading
import time

import kumo
import mpack


# ------------------------------------------------------------------ memcached text, pipelined

class Text:
    """One memcached text connection with pipelined sets and multi-gets."""

    def __init__(self, port, timeout=60):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = bytearray()

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            data = self.sock.recv(1 << 20)
            assert data, "gateway closed the connection"
            self.buf += data

    def _exact(self, n):
        while len(self.buf) < n:
            data = self.sock.recv(1 << 20)
            assert data, "gateway closed the connection"
            self.buf += data
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def set_many(self, items):
        """Pipelined sets; returns the reply lines (b'STORED' on success)."""
        req = b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k.encode(), len(v), v) for k, v in items)
        self.sock.sendall(req)
        return [self._line() for _ in items]

    def get_many(self, keys):
        """One multi-key get; returns {key: value} for the hits."""
        self.sock.sendall(b"get " + b" ".join(k.encode() for k in keys) + b"\r\n")
        out = {}
        while True:
            line = self._line()
            if line == b"END":
                return out
            parts = line.split()
            assert parts[0] == b"VALUE", line
            data = self._exact(int(parts[3]) + 2)[:-2]
            out[parts[1].decode()] = data

    def close(self):
        self.sock.close()


def load(port, items, threads=4, batch=200, rounds=5):
    """Set every (key, value) through the gateway at port with several pipelined
    connections; asserts each reply is STORED.  A SERVER_ERROR is the gateway's answer
    to a request it could not finish within its -Rt (2 s): on a machine loaded by
    parallel builds a deep pipeline can take that long, so those keys are set again
    (same values; at most `rounds` times, one second apart)."""
    items = list(items)
    errors = []
    for n in range(rounds):
        errors = _load_once(port, items, threads, batch)
        again = {k for k, r in errors if isinstance(r, bytes) and r.startswith(b"SERVER_ERROR")}
        if not errors or len(again) < len(errors) or n == rounds - 1:
            break
        items = [(k, v) for k, v in items if k in again]
        time.sleep(1.0)
    assert not errors, errors[:10]


def _load_once(port, items, threads, batch):
    """One pass of load: [(key, reply)] of the sets not answered STORED."""
    errors = []

    def worker(part):
        try:
            t = Text(port)
            for i in range(0, len(part), batch):
                chunk = part[i:i + batch]
                for (k, _), r in zip(chunk, t.set_many(chunk)):
                    if r != b"STORED":
                        errors.append((k, r))
            t.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(("<thread>", repr(e)))
    ts = [threading.Thread(target=worker, args=(items[j::threads],)) for j in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return errors


def read_all(port, keys, batch=100):
    """{key: value} of every hit, read with multi-key gets through the gateway."""
    t = Text(port)
    out = {}
    keys = list(keys)
    for i in range(0, len(keys), batch):
        out.update(t.get_many(keys[i:i + batch]))
    t.close()
    return out


def missing_or_wrong(port, data):
    """Keys of data that the gateway does not return with the expected value."""
    got = read_all(port, data)
    return [k for k, v in data.items() if got.get(k) != v]


def make_data(prefix, n, size=100):
    """n distinct keys with values of `size` bytes that say which key they belong to."""
    out = {}
    for i in range(n):
        k = "%s-%d" % (prefix, i)
        head = ("%s=" % k).encode()
        out[k] = (head + b"v" * size)[:size] if size > len(head) else head
    return out


# ------------------------------------------------------------------ replicas, straight from the servers

def live_servers(c):
    return [i for i, s in c.servers.items() if s["daemon"].alive()]


SRV_GET = 34       # wire.md §8.2


def rpc_many(port, method, params_list, window=500):
    """Pipelined msgpack-RPC calls on one plain connection; returns [(error, result)] in
    params_list order (at most `window` requests in flight)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    out = [None] * len(params_list)
    buf, pos = bytearray(), 0
    sent = done = 0
    try:
        while done < len(params_list):
            if sent < len(params_list) and sent - done < window // 2:
                end = min(len(params_list), done + window)
                sock.sendall(b"".join(mpack.pack([0, j + 1, method, params_list[j]])
                                      for j in range(sent, end)))
                sent = end
            try:
                msg, n = mpack.unpack(buf, pos)
            except mpack.NeedMore:
                del buf[:pos]
                pos = 0
                data = sock.recv(1 << 20)
                assert data, "server closed the connection"
                buf += data
                continue
            pos = n
            if msg[0] == 1 and 0 < msg[1] <= len(out) and out[msg[1] - 1] is None:
                out[msg[1] - 1] = (msg[2], msg[3])
                done += 1
    finally:
        sock.close()
    return out


def server_values(c, i, keys):
    """{key: value bytes (DBValue)} of the keys server i answers with a value; keys it is
    not responsible for (error 6) or does not hold (nil) are left out."""
    res = rpc_many(c.servers[i]["port"], SRV_GET, [[mpack.dbkey(k)] for k in keys])
    return {k: v for k, (err, v) in zip(keys, res) if err is None and v is not None}


def copies(c, data, servers=None):
    """{key: number of servers that hold its expected value}.  The stored DBValue is
    clocktime(8) + meta(2) + payload; the payload ends with the memcached data."""
    servers = live_servers(c) if servers is None else servers
    keys = list(data)
    count = dict.fromkeys(keys, 0)
    for i in servers:
        for k, v in server_values(c, i, keys).items():
            if v.endswith(data[k]):
                count[k] += 1
    return count


def assert_copies(c, data, want=3, servers=None):
    cnt = copies(c, data, servers)
    short = {k: n for k, n in cnt.items() if n < want}
    assert not short, "%d keys with fewer than %d copies, e.g. %r" % (
        len(short), want, sorted(short.items())[:5])
    return cnt


def items(c, i):
    return int(c.kumostat(i, "items"))


# ------------------------------------------------------------------ replace progress

def finished_count(c, mgr=0):
    """How many replaces manager mgr has logged as finished."""
    return c.managers[mgr].log().count("replace finished")


def wait_replace_done(c, before, mgr=0, timeout=60, servers=None):
    """Until manager mgr logged more than `before` finished replaces and every live
    server (or `servers`) reports replstat ready and hscheck true."""
    servers = live_servers(c) if servers is None else servers
    kumo.wait_for(lambda: finished_count(c, mgr) > before, timeout=timeout, interval=0.2,
                  what="replace finished in manager%d log" % mgr)
    kumo.wait_for(lambda: all(c.kumostat(i, "replstat") == "ready"
                              and c.kumostat(i, "hscheck") == "true" for i in servers),
                  timeout=timeout, interval=0.2, what="servers ready with rhs == whs")


def wait_registered(c, idx, mgr=None):
    """Until server idx is on the newcomer list of the manager (default: the first)."""
    addr = c.server_addr(idx)
    kumo.wait_for(lambda: addr in status_of(c, mgr)[1], timeout=20,
                  what="%s registered" % addr)


def status_of(c, mgr=None):
    """kumoctl status of manager index mgr (None: the first), parsed like
    Cluster.status: ({addr: 'active'|'fault'}, [newcomers])."""
    return kumo.parse_status(status_text(c, mgr or 0))[1:]


def status_text(c, mgr):
    return c.tool("kumoctl", "127.0.0.1:%d" % c.managers[mgr].port, "status").stdout


# ------------------------------------------------------------------ managers

def start_manager_pair(c, extra=()):
    """Two managers that name each other with -p (algorithms.md §9.1)."""
    ports = [kumo.free_port(), kumo.free_port()]
    for j in range(2):
        d = kumo.Daemon("manager%d" % j,
                        [kumo.BIN["manager"], "-v", "-l", "127.0.0.1:%d" % ports[j],
                         "-p", "127.0.0.1:%d" % ports[1 - j]] + c.common + list(extra),
                        os.path.join(c.dir, "manager%d.log" % j)).start()
        d.port = ports[j]
        c.daemons.append(d)
        c.managers.append(d)
    for p in ports:
        kumo.wait_for(lambda p=p: kumo.port_open(p), what="manager port %d" % p)


def restart_manager(c, j):
    """Start manager j again with its old command line, port and log file."""
    old = c.managers[j]
    assert not old.alive()
    d = kumo.Daemon(old.name, old.argv, old.logpath).start()
    d.port = old.port
    c.daemons.append(d)
    c.managers[j] = d
    kumo.wait_for(lambda: kumo.port_open(d.port), what="manager port %d" % d.port)
    return d


def wipe_db(c, i):
    """Remove server i's database file (the server must be down)."""
    assert not c.servers[i]["daemon"].alive()
    os.unlink(c.servers[i]["db"])


MGR_HASH_SPACE_REQUEST = 1     # wire.md §8.1: [] -> [wseed, rseed]


def decode_seed(seed):
    """HSSeed [[node...], clocktime] -> ({'ip:port': active}, clocktime); a node is the
    flag byte then the 6-byte IPv4 address dump (wire.md §7.1-§7.3)."""
    nodes = {}
    for raw in seed[0]:
        port = int.from_bytes(raw[1:3], "big")
        nodes["%d.%d.%d.%d:%d" % (raw[3], raw[4], raw[5], raw[6], port)] = bool(raw[0])
    return nodes, seed[1]


def manager_spaces(c, mgr=0):
    """The manager's (whs, rhs), each as decode_seed gives it."""
    (err, res), = rpc_many(c.managers[mgr].port, MGR_HASH_SPACE_REQUEST, [[]])
    assert err is None, err
    return decode_seed(res[0]), decode_seed(res[1])
