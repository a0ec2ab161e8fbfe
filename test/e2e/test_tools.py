"""Admin tools without a cluster (tools.md §1-§3, §5): usage texts, exit codes, unknown
commands, connection failures, and the exact output and request bytes against a canned
fake peer that answers like the original daemons (vectors.md)."""
import os
import socket
import subprocess
import threading
import time

import pytest

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("KUMO_BUILD_DIR", os.path.join(TOP, "build"))


def tool(name):
    """Path of a built tool; skips the test when it was not built."""
    path = os.path.join(BUILD, "tools", name, name)
    if not os.path.exists(path):
        pytest.skip("%s not built in %s (set KUMO_BUILD_DIR)" % (name, BUILD))
    return path


def run(name, *args, tz="UTC"):
    env = dict(os.environ, TZ=tz)
    return subprocess.run([tool(name)] + list(args), capture_output=True, text=True,
                          timeout=30, env=env)


def refused_port():
    """A loopback port nobody listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


KUMOCTL_USAGE = """Usage: kumoctl address[:port=19700] command [options]
command:
   status                     get status
   attach                     attach all new servers and start replace
   attach-noreplace           attach all new servers
   detach                     detach all fault servers and start replace
   detach-noreplace           detach all fault servers
   replace                    start replace without attach/detach
   full-replace               start full-replace (repair consistency)
   backup  [suffix=%s]  create backup with specified suffix
   enable-auto-replace        enable auto replace
   disable-auto-replace       disable auto replace
"""

KUMOSTAT_USAGE = """Usage: kumostat server-address[:port=19800] command
       kumostat -m manager-address[:port=19700] command
command:
   pid                        get pid of server process
   uptime                     get uptime
   time                       get UNIX time
   version                    get version
   cmd_get                    get number of get requests
   cmd_set                    get number of set requests
   cmd_delete                 get number of delete requests
   items                      get number of stored items
   stats                      get statistics like memcached's 'stats' command
   rhs                        get rhs (routing table for Get)
   whs                        get whs (routing table for Set/Delete)
   hscheck                    check if rhs == whs
   replstat                   get replace status
   set_delay                  maximize throughput at the expense of latency
   unset_delay                minimize latency at the expense of throughput
"""

KUMOHASH_USAGE = """Usage: kumohash server-address[:port=19800] ... -- command [options]
       kumohash -m manager-address[:port=19700] command [options]
command:
   hash  keys...              calculate hash of keys
   assign  keys...            calculate assign node
   dump                       dump hash space
"""


def kumoctl_usage():
    # the backup default is today's local date (TZ=UTC in run())
    return KUMOCTL_USAGE % time.strftime("%Y%m%d", time.gmtime())


# ------------------------------------------------------------------ usage and exit codes

@pytest.mark.parametrize("args", [[], ["localhost"], ["localhost", "status", "x"],
                                  ["localhost", "attach", "x"], ["localhost", "backup", "a", "b"]])
def test_kumoctl_usage_on_stdout_exit_1(args):
    r = run("kumoctl", *args)
    assert r.returncode == 1
    assert r.stdout == kumoctl_usage()
    assert r.stderr == ""


def test_kumoctl_unknown_command_needs_no_connection():
    r = run("kumoctl", "127.0.0.1:%d" % refused_port(), "frobnicate")
    assert r.returncode == 1
    assert r.stdout == "unknown command frobnicate\n\n" + kumoctl_usage()
    assert r.stderr == ""


def test_kumoctl_help_exits_0():
    r = run("kumoctl", "--help")
    assert r.returncode == 0
    assert r.stdout == kumoctl_usage()


@pytest.mark.parametrize("args", [[], ["-m"], ["-m", "localhost"], ["localhost"],
                                  ["localhost", "frobnicate"], ["-m", "localhost", "frobnicate"],
                                  ["localhost", "pid", "x"], ["-m", "localhost", "pid", "x"]])
def test_kumostat_usage_on_stdout_exit_1(args):
    r = run("kumostat", *args)
    assert r.returncode == 1
    assert r.stdout == KUMOSTAT_USAGE      # no "unknown command" line in kumostat
    assert r.stderr == ""


@pytest.mark.parametrize("args", [[], ["-m"], ["-m", "localhost"], ["x"], ["x", "--"],
                                  ["x", "--", "hash"], ["x", "--", "assign"],
                                  ["x", "--", "dump", "y"], ["-m", "localhost", "assign"]])
def test_kumohash_usage_on_stdout_exit_1(args):
    r = run("kumohash", *args)
    assert r.returncode == 1
    assert r.stdout == KUMOHASH_USAGE
    assert r.stderr == ""


def test_kumohash_unknown_command():
    r = run("kumohash", "-m", "127.0.0.1:%d" % refused_port(), "frobnicate")
    assert r.returncode == 1
    assert r.stdout == "unknown command frobnicate\n\n" + KUMOHASH_USAGE


def test_kumohash_hash_ignores_manager():
    r = run("kumohash", "-m", "127.0.0.1:%d" % refused_port(), "hash", "somekey", "foo")
    assert r.returncode == 0
    assert r.stdout == "468c4356e1096bf1  somekey\ndb0f3feab5c7ee0b  foo\n"


# ------------------------------------------------------------------ connection failures

@pytest.mark.parametrize("name,args", [
    ("kumoctl", ["status"]),
    ("kumoctl", ["attach"]),
    ("kumostat", ["pid"]),
    ("kumostat", ["stats"]),
    ("kumostat-m", ["items"]),
    ("kumohash-m", ["assign", "k"]),
    ("kumohash-m", ["dump"]),
])
def test_connection_refused_is_one_line_exit_1(name, args):
    port = refused_port()
    if name.endswith("-m"):
        r = run(name[:-2], "-m", "127.0.0.1:%d" % port, *args)
    else:
        r = run(name, "127.0.0.1:%d" % port, *args)
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1
    assert "Connection refused" in lines[0] and str(port) in lines[0]


def test_unresolvable_host_is_one_line_exit_1():
    r = run("kumoctl", "no-such-host.invalid", "status")
    assert r.returncode == 1
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1


# ------------------------------------------------------------------ canned fake peer

SEED = ("9293a701baba7f000001a700babb7f000001a701bab97f000001"
        "cf6b024a1700000002")    # [[47802 active, 47803 fault, 47801 active], time 0x6b024a17 clock 2]
PUSH = ("94000103929293a701baba7f000001a701babb7f000001a701bab97f000001"
        "cf6b024a1700000002929000")    # HashSpacePush, vectors.md #17


def _uint(v):
    if v < 0x80:
        return bytes([v])
    if v < 0x100:
        return b"\xcc" + bytes([v])
    return b"\xcd" + v.to_bytes(2, "big")


def _read_uint(b, i):
    c = b[i]
    if c < 0x80:
        return c, i + 1
    if c == 0xcc:
        return b[i + 1], i + 2
    assert c == 0xcd, b.hex()
    return int.from_bytes(b[i + 1:i + 3], "big"), i + 3


class FakePeer:
    """Accepts plain connections; pushes a HashSpacePush and a stray response first (both
    must be ignored), then answers each request from `answers` {(method, params_hex):
    (error_hex, result_hex)}.  Requests are short, so one recv() is one request.  Records
    each request with its msgid replaced by 'XX'."""

    def __init__(self, answers, double=()):
        self.answers = answers
        self.double = double      # methods answered twice, like SetAutoReplace
        self.requests = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        with c:
            c.sendall(bytes.fromhex(PUSH) + bytes.fromhex("9401cdffffc0c3"))
            while True:
                try:
                    b = c.recv(4096)
                except OSError:
                    return
                if not b:
                    return
                msgid, i = _read_uint(b, 2)
                method, j = _read_uint(b, i)
                params = b[j:].hex()
                self.requests.append(b[:2].hex() + "XX" + b[i:].hex())
                err, res = self.answers.get((method, params), ("05", "c0"))
                resp = b"\x94\x01" + _uint(msgid) + bytes.fromhex(err) + bytes.fromhex(res)
                c.sendall(resp[:3])       # split to exercise partial reads
                time.sleep(0.01)
                c.sendall(resp[3:])
                if method in self.double:
                    c.sendall(b"\x94\x01" + _uint(msgid) + b"\xc0\xc0")

    def close(self):
        self.sock.close()


@pytest.fixture
def fake_manager():
    p = FakePeer({(99, "90"): ("c0", "92" + SEED + "91a6bab97f000001"),
                  (100, "91c3"): ("c0", "c0"), (101, "91c3"): ("c0", "c0"),
                  (104, "90"): ("c0", "c0"), (104, "91c3"): ("c0", "c0"),
                  (102, "91a3766563"): ("c0", "c0"),
                  (102, "91a0"): ("ac656d70747920737566666978", "c0"),
                  (103, "91c3"): ("c0", "c3"), (103, "91c2"): ("c0", "c2")},
                 double=(103,))
    yield p
    p.close()


def test_kumoctl_status_exact(fake_manager):
    r = run("kumoctl", "127.0.0.1:%d" % fake_manager.port, "status")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("hash space timestamp:\n"
                        "  Sun Nov 22 01:49:11 +0000 2026 clock 2\n"
                        "attached node:\n"
                        "  127.0.0.1:47802  (active)\n"
                        "  127.0.0.1:47803  (fault)\n"
                        "  127.0.0.1:47801  (active)\n"
                        "not attached node:\n"
                        "  127.0.0.1:47801\n")
    assert fake_manager.requests == ["9400XX6390"]   # vectors.md #11


def test_kumoctl_status_time_is_local(fake_manager):
    r = run("kumoctl", "127.0.0.1:%d" % fake_manager.port, "stat", tz="Asia/Tokyo")
    assert r.returncode == 0, r.stderr
    assert "  Sun Nov 22 10:49:11 +0900 2026 clock 2\n" in r.stdout


@pytest.mark.parametrize("cmd,req,out", [
    (["attach"], "9400XX6491c3", "nil\n"),                 # vectors.md #13
    (["detach"], "9400XX6591c3", "nil\n"),                 # #114
    (["replace"], "9400XX6890", "nil\n"),                  # #109
    (["full-replace"], "9400XX6891c3", "nil\n"),           # #106
    (["backup", "vec"], "9400XX6691a3766563", "suffix=vec\nnil\n"),   # #96
    (["enable-auto-replace"], "9400XX6791c3", "true\n"),   # #100, first answer only
    (["disable-auto-replace"], "9400XX6791c2", "false\n"), # #103
])
def test_kumoctl_commands_send_original_bytes(fake_manager, cmd, req, out):
    r = run("kumoctl", "127.0.0.1:%d" % fake_manager.port, *cmd)
    assert r.returncode == 0, r.stderr
    assert r.stdout == out
    assert fake_manager.requests == [req]


def test_kumoctl_backup_empty_suffix_fails(fake_manager):
    r = run("kumoctl", "127.0.0.1:%d" % fake_manager.port, "backup", "")
    assert r.returncode == 1
    assert r.stdout == "suffix=\n"
    assert "error empty suffix" in r.stderr


@pytest.fixture
def fake_server():
    st = {0: "cd1764", 1: "10", 2: "ce6b024a23", 3: "b0302e342e3133207265766973696f6e20",
          4: "00", 5: "01", 6: "00", 7: "07", 9: SEED, 10: SEED, 11: "04"}
    answers = {(97, "91" + _uint(k).hex()): ("c0", v) for k, v in st.items()}
    answers[(98, "9200c2")] = ("c0", "07")
    answers[(98, "9200c3")] = ("c0", "09")
    p = FakePeer(answers)
    yield p
    p.close()


@pytest.mark.parametrize("cmd,out", [
    ("pid", "5988\n"), ("uptime", "16\n"), ("time", "1795312163\n"),
    ("version", "0.4.13 revision \n"), ("items", "7\n"), ("replstat", "Copying\n"),
    ("hscheck", "true\n"), ("set_delay", "7\n"), ("unset_delay", "9\n"),
    ("stats", "STAT pid 5988\nSTAT uptime 16\nSTAT time 1795312163\nSTAT cmd_get 0\n"
              "STAT cmd_set 1\nSTAT cmd_delete 0\nSTAT curr_items 7\nEND\n"),
    ("rhs", "hash space timestamp:\n  Sun Nov 22 01:49:11 +0000 2026 clock 2\nnode:\n"
            "  127.0.0.1:47802  (active)\n  127.0.0.1:47803  (fault)\n"
            "  127.0.0.1:47801  (active)\n"),
])
def test_kumostat_server_output(fake_server, cmd, out):
    r = run("kumostat", "127.0.0.1:%d" % fake_server.port, cmd)
    assert r.returncode == 0, r.stderr
    assert r.stdout == out


def test_kumostat_stats_sends_seven_requests(fake_server):
    run("kumostat", "127.0.0.1:%d" % fake_server.port, "stats")
    assert fake_server.requests == ["9400XX6191%02x" % c for c in (0, 1, 2, 4, 5, 6, 7)]


def test_kumostat_rpc_error_is_printed_exit_0(fake_manager):
    # a manager does not know GetStatus: "error 5" and an empty line (tools.md §3)
    r = run("kumostat", "127.0.0.1:%d" % fake_manager.port, "pid")
    assert r.returncode == 0
    assert r.stdout == "error 5\n\n"


def _seed_hex(nodes):
    """HSSeed [[raw(7) flag+port+127.0.0.1 ...], clocktime] for (port, active) pairs."""
    out = bytes([0x92, 0x90 + len(nodes)])
    for port, active in nodes:
        out += b"\xa7" + bytes([1 if active else 0]) + port.to_bytes(2, "big") + b"\x7f\x00\x00\x01"
    return (out + b"\xcf" + bytes.fromhex("6b024a1700000002")).hex()


def test_kumostat_m_queries_active_nodes_in_whs_order(fake_server):
    dead = refused_port()
    seed = _seed_hex([(dead, False), (fake_server.port, True)])
    mgr = FakePeer({(99, "90"): ("c0", "92" + seed + "90")})
    try:
        r = run("kumostat", "-m", "127.0.0.1:%d" % mgr.port, "stats")
        assert r.returncode == 0, r.stderr
        p = fake_server.port
        assert r.stdout == ("127.0.0.1:%d:  STAT pid 5988\nSTAT uptime 16\nSTAT time 1795312163\n"
                            "STAT cmd_get 0\nSTAT cmd_set 1\nSTAT cmd_delete 0\n"
                            "STAT curr_items 7\nEND\n" % p)
        assert mgr.requests == ["9400XX6390"]
    finally:
        mgr.close()


def test_kumostat_m_aborts_on_unreachable_active_node(fake_server):
    dead = refused_port()
    mgr = FakePeer({})
    # the third node (the fake manager itself) must not be queried after the failure
    seed = _seed_hex([(fake_server.port, True), (dead, True), (mgr.port, True)])
    mgr.answers[(99, "90")] = ("c0", "92" + seed + "90")
    try:
        r = run("kumostat", "-m", "127.0.0.1:%d" % mgr.port, "items")
        assert r.returncode == 1
        assert r.stdout == "127.0.0.1:%d:  7\n" % fake_server.port
        assert "Connection refused" in r.stderr
    finally:
        mgr.close()


def test_kumohash_m_uses_active_and_fault_nodes():
    # the manager's whs order and flags do not matter to the ring: same lines as the
    # offline list of the same servers (tools.md §5)
    seed = _seed_hex([(19802, True), (19801, False), (19803, True)])
    mgr = FakePeer({(99, "90"): ("c0", "92" + seed + "90")})
    try:
        r = run("kumohash", "-m", "127.0.0.1:%d" % mgr.port, "assign", "somekey")
        assert r.returncode == 0, r.stderr
        assert r.stdout == ("468c4356e1096bf1  somekey\n  0: 127.0.0.1:19801\n"
                            "  1: 127.0.0.1:19803\n  2: 127.0.0.1:19802\n")
        r = run("kumohash", "-m", "127.0.0.1:%d" % mgr.port, "dump")
        lines = r.stdout.splitlines()
        assert len(lines) == 384
        assert "008942e799e75fc0  127.0.0.1:19801" in lines
    finally:
        mgr.close()
