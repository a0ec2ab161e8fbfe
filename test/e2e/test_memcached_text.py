"""The complete memcached text command set of kumo-gateway (DECISIONS.md §3): every
command with its noreply form and error replies, read-modify-write atomicity under
concurrent clients, flush_all, stats, and libmemcached's tools (memccapable & co)."""
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

import kumo


@pytest.fixture(scope="module")
def c3():
    """One 1-manager, 3-server, 1-gateway cluster shared by this module's tests (each
    test uses its own keys; the flush tests come last in the file)."""
    for n in ("manager", "server", "gateway", "kumoctl"):
        if not os.path.exists(kumo.BIN[n]):
            pytest.fail("binaries not built: %s (build dir %s)" % (n, kumo.BUILD))
    c = kumo.standard_cluster(3)
    yield c
    c.close()


class Raw:
    """A raw text-protocol connection with line-oriented reads."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("connection closed; have %r" % self.buf)
            self.buf += chunk
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln + b"\r\n"

    def cmd(self, data, nlines=1):
        self.send(data)
        return b"".join(self.line() for _ in range(nlines))

    def until_end(self, data):
        self.send(data)
        out = b""
        while True:
            ln = self.line()
            out += ln
            if ln in (b"END\r\n", b"ERROR\r\n") or ln.startswith(b"SERVER_ERROR") or \
                    ln.startswith(b"CLIENT_ERROR"):
                return out

    def close(self):
        self.s.close()


@pytest.fixture
def raw(c3):
    r = Raw(c3.gateways[0].port)
    yield r
    r.close()


def _sync(raw):
    """Every reply comes in request order: a version round-trip proves nothing (noreply
    or otherwise) is pending before it."""
    assert raw.cmd(b"version\r\n").startswith(b"VERSION ")


def test_add(raw):
    assert raw.cmd(b"add t_add 7 0 3\r\nabc\r\n") == b"STORED\r\n"
    assert raw.cmd(b"add t_add 0 0 3\r\nxyz\r\n") == b"NOT_STORED\r\n"
    assert raw.until_end(b"get t_add\r\n") == b"VALUE t_add 7 3\r\nabc\r\nEND\r\n"
    raw.send(b"add t_add2 1 0 1 noreply\r\nq\r\n")
    raw.send(b"add t_add2 2 0 1 noreply\r\nr\r\n")
    _sync(raw)
    assert raw.until_end(b"get t_add2\r\n") == b"VALUE t_add2 1 1\r\nq\r\nEND\r\n"
    # add over a deleted key stores again
    assert raw.cmd(b"delete t_add\r\n") == b"DELETED\r\n"
    assert raw.cmd(b"add t_add 0 0 2\r\nhi\r\n") == b"STORED\r\n"


def test_replace(raw):
    assert raw.cmd(b"replace t_rep 0 0 1\r\nx\r\n") == b"NOT_STORED\r\n"
    assert raw.cmd(b"set t_rep 1 0 1\r\nx\r\n") == b"STORED\r\n"
    assert raw.cmd(b"replace t_rep 9 0 2\r\nyy\r\n") == b"STORED\r\n"
    assert raw.until_end(b"get t_rep\r\n") == b"VALUE t_rep 9 2\r\nyy\r\nEND\r\n"
    raw.send(b"replace t_rep 3 0 1 noreply\r\nz\r\n")
    raw.send(b"replace t_rep_none 3 0 1 noreply\r\nz\r\n")
    _sync(raw)
    assert raw.until_end(b"get t_rep t_rep_none\r\n") == b"VALUE t_rep 3 1\r\nz\r\nEND\r\n"


def test_append_prepend(raw):
    assert raw.cmd(b"append t_ap 0 0 1\r\nx\r\n") == b"NOT_STORED\r\n"
    assert raw.cmd(b"prepend t_ap 0 0 1\r\nx\r\n") == b"NOT_STORED\r\n"
    assert raw.cmd(b"set t_ap 42 0 3\r\nmid\r\n") == b"STORED\r\n"
    # flags/exptime of append/prepend are ignored (memcached)
    assert raw.cmd(b"append t_ap 5 1 4\r\n-end\r\n") == b"STORED\r\n"
    assert raw.cmd(b"prepend t_ap 6 1 6\r\nstart-\r\n") == b"STORED\r\n"
    raw.send(b"append t_ap 0 0 1 noreply\r\n!\r\n")
    raw.send(b"prepend t_ap 0 0 1 noreply\r\n>\r\n")
    _sync(raw)
    time.sleep(1.2)   # exptime 1 of the appends must not have been applied
    assert raw.until_end(b"get t_ap\r\n") == b"VALUE t_ap 42 15\r\n>start-mid-end!\r\nEND\r\n"


def test_cas(raw):
    # DECISIONS.md §3: cas on a missing key is NOT_FOUND (the original stored it)
    assert raw.cmd(b"cas t_cas 0 0 1 12345\r\nx\r\n") == b"NOT_FOUND\r\n"
    assert raw.cmd(b"set t_cas 3 0 2\r\nv1\r\n") == b"STORED\r\n"
    ln = raw.until_end(b"gets t_cas\r\n").split(b"\r\n")[0].split()
    assert ln[:4] == [b"VALUE", b"t_cas", b"3", b"2"]
    unique = int(ln[4])
    assert raw.cmd(b"cas t_cas 4 0 2 %d\r\nv2\r\n" % (unique + 1)) == b"EXISTS\r\n"
    assert raw.cmd(b"cas t_cas 4 0 2 %d\r\nv2\r\n" % unique) == b"STORED\r\n"
    assert raw.cmd(b"cas t_cas 4 0 2 %d\r\nv3\r\n" % unique) == b"EXISTS\r\n"
    out = raw.until_end(b"gets t_cas\r\n")
    assert out.startswith(b"VALUE t_cas 4 2 ") and b"\r\nv2\r\n" in out
    unique2 = int(out.split(b"\r\n")[0].split()[4])
    assert unique2 != unique
    raw.send(b"cas t_cas 5 0 2 %d noreply\r\nv4\r\n" % unique2)
    raw.send(b"cas t_cas_none 5 0 2 1 noreply\r\nv4\r\n")
    _sync(raw)
    assert raw.until_end(b"get t_cas t_cas_none\r\n") == b"VALUE t_cas 5 2\r\nv4\r\nEND\r\n"
    # a deleted key has no item: NOT_FOUND as well
    assert raw.cmd(b"delete t_cas\r\n") == b"DELETED\r\n"
    assert raw.cmd(b"cas t_cas 0 0 1 %d\r\nx\r\n" % unique2) == b"NOT_FOUND\r\n"


def test_cas_missing_pymemcache(c3):
    cl = c3.client()
    assert cl.cas("t_cas_pm", b"x", b"1") is None       # None = NOT_FOUND
    cl.set("t_cas_pm", b"a")
    val, tok = cl.gets("t_cas_pm")
    assert cl.cas("t_cas_pm", b"b", tok) is True
    assert cl.cas("t_cas_pm", b"c", tok) is False       # EXISTS
    assert cl.get("t_cas_pm") == b"b"


def test_incr_decr(raw):
    assert raw.cmd(b"incr t_num 1\r\n") == b"NOT_FOUND\r\n"
    assert raw.cmd(b"decr t_num 1\r\n") == b"NOT_FOUND\r\n"
    assert raw.cmd(b"set t_num 5 0 2\r\n10\r\n") == b"STORED\r\n"
    assert raw.cmd(b"incr t_num 5\r\n") == b"15\r\n"
    assert raw.cmd(b"decr t_num 3\r\n") == b"12\r\n"
    assert raw.cmd(b"decr t_num 100\r\n") == b"0\r\n"                 # floors at 0
    assert raw.cmd(b"incr t_num 18446744073709551615\r\n") == b"18446744073709551615\r\n"
    assert raw.cmd(b"incr t_num 2\r\n") == b"1\r\n"                   # wraps at 2^64
    raw.send(b"incr t_num 10 noreply\r\n")
    raw.send(b"decr t_num 1 noreply\r\n")
    raw.send(b"incr t_num_none 1 noreply\r\n")
    _sync(raw)
    assert raw.until_end(b"get t_num\r\n") == b"VALUE t_num 5 2\r\n10\r\nEND\r\n"
    assert raw.cmd(b"set t_str 0 0 3\r\nabc\r\n") == b"STORED\r\n"
    assert raw.cmd(b"incr t_str 1\r\n") == \
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
    assert raw.cmd(b"decr t_str 1\r\n") == \
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
    assert raw.cmd(b"incr t_num abc\r\n") == b"CLIENT_ERROR invalid numeric delta argument\r\n"
    assert raw.cmd(b"incr t_num\r\n") == b"ERROR\r\n"


def test_touch_and_gat(raw):
    assert raw.cmd(b"touch t_touch 10\r\n") == b"NOT_FOUND\r\n"
    assert raw.cmd(b"set t_touch 8 2 2\r\nok\r\n") == b"STORED\r\n"
    assert raw.cmd(b"touch t_touch 100\r\n") == b"TOUCHED\r\n"
    time.sleep(3.1)
    assert raw.until_end(b"get t_touch\r\n") == b"VALUE t_touch 8 2\r\nok\r\nEND\r\n"
    raw.send(b"touch t_touch 2 noreply\r\n")
    _sync(raw)
    assert raw.until_end(b"get t_touch\r\n") == b"VALUE t_touch 8 2\r\nok\r\nEND\r\n"
    time.sleep(3.1)
    assert raw.until_end(b"get t_touch\r\n") == b"END\r\n"
    assert raw.cmd(b"touch t_touch abc\r\n") == b"CLIENT_ERROR invalid exptime argument\r\n"

    # gat/gats: return like get/gets and set the new exptime
    assert raw.cmd(b"set t_gat1 3 2 1\r\na\r\n") == b"STORED\r\n"
    assert raw.cmd(b"set t_gat2 4 0 1\r\nb\r\n") == b"STORED\r\n"
    out = raw.until_end(b"gat 0 t_gat1 t_gat_none t_gat2\r\n")
    assert out == b"VALUE t_gat1 3 1\r\na\r\nVALUE t_gat2 4 1\r\nb\r\nEND\r\n"
    time.sleep(3.1)   # exptime 0 = never: t_gat1 survives its original 2 s
    out = raw.until_end(b"gats 2 t_gat1\r\n")
    assert out.startswith(b"VALUE t_gat1 3 1 ") and out.endswith(b"\r\na\r\nEND\r\n")
    assert raw.until_end(b"gat 10 t_gat_none\r\n") == b"END\r\n"
    time.sleep(3.1)
    assert raw.until_end(b"gat 10 t_gat1\r\n") == b"END\r\n"


def test_verbosity_version_and_errors(raw):
    assert raw.cmd(b"verbosity 1\r\n") == b"OK\r\n"
    raw.send(b"verbosity 0 noreply\r\n")
    _sync(raw)
    assert raw.cmd(b"verbosity\r\n") == b"ERROR\r\n"
    assert raw.cmd(b"bogus\r\n") == b"ERROR\r\n"
    # a storage error on a noreply line is silent, as memcached's out_string; the
    # stray "\r\n" after the 3-byte block is an empty line (ERROR), as in memcached 1.6
    assert raw.cmd(b"add t_err 0 0 1 noreply\r\nxyz\r\n") == b"ERROR\r\n"
    assert raw.cmd(b"add t_err 0 0 1\r\nxyz\r\n", 2) == \
        b"CLIENT_ERROR bad data chunk\r\nERROR\r\n"
    assert raw.until_end(b"get t_err\r\n") == b"END\r\n"


def _stats(raw, arg=b""):
    raw.send(b"stats" + (b" " + arg if arg else b"") + b"\r\n")
    d = {}
    while True:
        ln = raw.line()
        if ln == b"END\r\n":
            return d
        assert ln.startswith(b"STAT "), ln
        _, k, v = ln.rstrip(b"\r\n").split(b" ", 2)
        d[k.decode()] = v.decode()


def test_stats(raw, c3):
    before = _stats(raw)
    for f in ("pid", "uptime", "time", "version", "pointer_size", "curr_connections",
              "total_connections", "cmd_get", "cmd_set", "cmd_flush", "cmd_touch",
              "get_hits", "get_misses", "get_expired", "delete_misses", "delete_hits",
              "incr_misses", "incr_hits", "decr_misses", "decr_hits", "cas_misses",
              "cas_hits", "cas_badval", "touch_hits", "touch_misses", "curr_items",
              "total_items", "threads"):
        assert f in before, f
    assert int(before["pid"]) == c3.gateways[0].proc.pid
    assert int(before["curr_connections"]) >= 1
    raw.cmd(b"set t_st 0 0 1\r\n1\r\n")
    raw.until_end(b"get t_st t_st_none\r\n")
    raw.cmd(b"incr t_st 1\r\n")
    raw.cmd(b"incr t_st_none 1\r\n")
    raw.cmd(b"touch t_st 0\r\n")
    after = _stats(raw)
    delta = {k: int(after[k]) - int(before[k]) for k in
             ("cmd_get", "cmd_set", "get_hits", "get_misses", "incr_hits", "incr_misses",
              "touch_hits", "cmd_touch")}
    assert delta == {"cmd_get": 2, "cmd_set": 1, "get_hits": 1, "get_misses": 1,
                     "incr_hits": 1, "incr_misses": 1, "touch_hits": 1, "cmd_touch": 1}
    assert raw.cmd(b"stats reset\r\n") == b"RESET\r\n"
    assert int(_stats(raw)["cmd_get"]) == 0
    assert _stats(raw, b"settings") == {}
    assert raw.cmd(b"stats nosuchthing\r\n") == b"ERROR\r\n"


def test_concurrent_incr(c3):
    """20 clients x 50 incr on one key: the coordinator serialises them, none is lost."""
    # noreply=False: a noreply set may reach the gateway after the first incr (another
    # connection), which would then answer NOT_FOUND and lose that increment
    assert c3.client().set("t_conc", b"0", noreply=False) is True
    errors = []

    def worker():
        try:
            cl = c3.client()
            for _ in range(50):
                assert cl.incr("t_conc", 1) is not None   # not NOT_FOUND
            cl.close()
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker) for _ in range(20)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors
    assert c3.client().get("t_conc") == b"1000"


def test_pymemcache_commands(c3):
    cl = c3.client()
    assert cl.add("t_pm", b"1", noreply=False) is True
    assert cl.add("t_pm", b"1", noreply=False) is False
    assert cl.replace("t_pm", b"5", noreply=False) is True
    assert cl.append("t_pm", b"0", noreply=False) is True
    assert cl.prepend("t_pm", b"1", noreply=False) is True
    assert cl.incr("t_pm", 7) == 157
    assert cl.decr("t_pm", 200) == 0
    assert cl.touch("t_pm", 100, noreply=False) is True
    assert cl.touch("t_pm_none", 100, noreply=False) is False
    assert cl.incr("t_pm_none", 1) is None
    assert cl.stats()[b"threads"] == 1
    assert cl.version().startswith(b"1.6")


@pytest.mark.skipif(not shutil.which("memccp"), reason="libmemcached-tools not installed")
def test_libmemcached_tools(c3, tmp_path):
    srv = "--servers=127.0.0.1:%d" % c3.gateways[0].port
    f = tmp_path / "t_memccp_file"
    f.write_bytes(b"hello from memccp\n")
    subprocess.run(["memccp", srv, str(f)], check=True, timeout=30, cwd=str(tmp_path))
    out = subprocess.run(["memccat", srv, "t_memccp_file"], check=True, timeout=30,
                         capture_output=True)
    assert out.stdout == b"hello from memccp\n\n"   # memccat adds a newline (as with memcached)
    out = subprocess.run(["memcstat", srv], check=True, timeout=30, capture_output=True,
                         text=True)
    assert "threads: 1" in out.stdout and "cmd_get:" in out.stdout
    subprocess.run(["memcping", srv], check=True, timeout=30)


# ---- the flush tests last: they empty the cluster

def test_flush_all(raw, c3):
    assert raw.cmd(b"set t_fl1 0 0 1\r\na\r\n") == b"STORED\r\n"
    assert raw.cmd(b"set t_fl2 0 0 1\r\nb\r\n") == b"STORED\r\n"
    assert raw.cmd(b"flush_all\r\n") == b"OK\r\n"
    assert raw.until_end(b"get t_fl1 t_fl2\r\n") == b"END\r\n"
    assert raw.cmd(b"add t_fl1 0 0 1\r\nc\r\n") == b"STORED\r\n"   # gone means addable
    assert raw.cmd(b"set t_fl2 0 0 1\r\nd\r\n") == b"STORED\r\n"
    time.sleep(1.0)
    assert raw.until_end(b"get t_fl1 t_fl2\r\n") == \
        b"VALUE t_fl1 0 1\r\nc\r\nVALUE t_fl2 0 1\r\nd\r\nEND\r\n"
    # delayed flush: items stay until the delay passes
    assert raw.cmd(b"flush_all 2\r\n") == b"OK\r\n"
    assert raw.until_end(b"get t_fl1\r\n") == b"VALUE t_fl1 0 1\r\nc\r\nEND\r\n"
    time.sleep(3.0)
    assert raw.until_end(b"get t_fl1 t_fl2\r\n") == b"END\r\n"
    # noreply and an explicit 0
    assert raw.cmd(b"set t_fl3 0 0 1\r\ne\r\n") == b"STORED\r\n"
    raw.send(b"flush_all 0 noreply\r\n")
    _sync(raw)
    assert raw.until_end(b"get t_fl3\r\n") == b"END\r\n"
    raw.send(b"flush_all noreply\r\n")
    _sync(raw)
    assert raw.cmd(b"set t_fl4 0 0 1\r\nf\r\n") == b"STORED\r\n"
    time.sleep(0.5)
    assert raw.until_end(b"get t_fl4\r\n") == b"VALUE t_fl4 0 1\r\nf\r\nEND\r\n"
    assert raw.cmd(b"flush_all abc\r\n") == b"CLIENT_ERROR invalid exptime argument\r\n"


@pytest.mark.skipif(not shutil.which("memccapable"), reason="libmemcached-tools not installed")
def test_memccapable_text(c3):
    """memccapable's text-protocol suite (-a); the binary ones need the -b front end."""
    r = subprocess.run(["memccapable", "-h", "127.0.0.1", "-p", str(c3.gateways[0].port),
                        "-t", "10", "-a"], capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    print(out)
    passed = out.count("[pass]")
    assert passed >= 27, out
    assert "All tests passed" in out and r.returncode == 0, out


def test_meta_set_data_block_is_never_run_as_a_command(c3):
    """The data block of an `ms` is its value, never a command: `ms x 9\\r\\nflush_all\\r\\n`
    used to flush the whole cluster when ms was not served."""
    import socket as _socket
    gw = c3.gateways[0].port
    s = _socket.create_connection(("127.0.0.1", gw), timeout=10)
    try:
        s.sendall(b"set keepme 0 0 3\r\nabc\r\n")
        assert s.recv(100) == b"STORED\r\n"
        s.sendall(b"ms x 9\r\nflush_all\r\nget keepme\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            data = s.recv(4096)
            assert data, buf
            buf += data
        assert buf == b"HD\r\nVALUE keepme 0 3\r\nabc\r\nEND\r\n", buf
        # a length that cannot be read: the line is refused, and what follows never
        # runs as a flush
        s.sendall(b"ms x notanumber\r\nflush_all\r\nmn\r\n")
        buf = b""
        s.settimeout(3)
        try:
            while not buf.endswith(b"MN\r\n"):
                data = s.recv(4096)
                if not data:
                    break
                buf += data
        except _socket.timeout:
            pass
        assert buf == b"CLIENT_ERROR bad command line format\r\n", buf   # and closed
    finally:
        s.close()
    c = c3.client()
    assert c.get("keepme") == b"abc"
    assert c.get("x") == b"flush_all"
