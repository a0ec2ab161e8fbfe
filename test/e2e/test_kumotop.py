"""kumotop against a real manager and two servers: the full-screen view under a
pseudo-terminal (and, when tmux is installed, the exact screen layouts of tools.md §4),
the plain-text snapshots when stdout is not a terminal, and a server that dies or stops
answering shows as down without taking kumotop with it."""
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import termios
import fcntl
import time

import pytest

import kumo

KUMOTOP = os.path.join(kumo.BUILD, "tools", "kumotop", "kumotop")

HEADER_ONE = ("                address      #Get      #Set      #Del    Get/s    Set/s    Del/s"
              "      QPS      items                 time    clock   status")
HEADER_TWO = ("               address     #Get     #Set     #Del     items                time"
              "   status",
              "                          Get/s    Set/s    Del/s       QPS               clock")
ROW_ONE = re.compile(r"^ *(\S+:\d+) +(\d+) +(\d+) +(\d+) +(-?\d+) +(-?\d+) +(-?\d+) +(-?\d+) +(\d+)"
                     r"  (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) +(\d+) +(\S+)$")


@pytest.fixture(scope="module")
def two_servers():
    for name in ("manager", "server", "kumoctl"):
        if not os.path.exists(kumo.BIN[name]):
            pytest.fail("binary not built: %s" % kumo.BIN[name])
    if not os.path.exists(KUMOTOP):
        pytest.fail("binary not built: %s" % KUMOTOP)
    c = kumo.Cluster()
    try:
        c.start_manager()
        c.start_server()
        c.start_server()
        c.attach_all()
    except BaseException:
        print(c.logs())
        c.close()
        raise
    yield c
    c.close()


def run_plain(*args, timeout=30):
    r = subprocess.run([KUMOTOP] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    return r


def snapshots(out):
    return [s.splitlines() for s in out.strip("\n").split("\n\n")]


def test_usage_exact():
    r = run_plain()
    assert r.returncode == 1
    assert r.stdout == ("Usage: kumotop server-address[:port=19800] ...\n"
                        "       kumotop -m manager-address[:port=19700]\n")
    r = run_plain("-m")
    assert r.returncode == 1 and r.stdout.startswith("Usage: kumotop")
    r = run_plain("-m", "a", "b")
    assert r.returncode == 1 and r.stdout.startswith("Usage: kumotop")
    r = run_plain("--help")
    assert r.returncode == 0 and r.stdout.startswith("Usage: kumotop")


def test_plain_snapshots_list_every_server(two_servers):
    c = two_servers
    addrs = [c.server_addr(0), c.server_addr(1)]
    r = run_plain("-n", "2", "-d", "0.3", *addrs)
    assert r.returncode == 0, r.stderr
    snaps = snapshots(r.stdout)
    assert len(snaps) == 2
    for snap in snaps:
        assert snap[0] == HEADER_ONE
        assert len(snap) == 3
        for line, addr in zip(snap[1:], addrs):
            m = ROW_ONE.match(line)
            assert m, line
            assert m.group(1) == addr
            assert line.index(addr) + len(addr) == 23      # right-aligned in 23 columns
            assert m.group(12) in ("ready", "WAIT", "Copying", "Deleting", "inactive", "?")
            assert len(line) == len(HEADER_ONE)


def test_plain_manager_mode_and_counters(two_servers):
    c = two_servers
    before = {}
    r = run_plain("-n", "1", "-m", c.mgr)
    assert r.returncode == 0, r.stderr
    rows = snapshots(r.stdout)[0][1:]
    for line in rows:
        m = ROW_ONE.match(line)
        assert m, line
        before[m.group(1)] = int(m.group(2))
    assert set(before) == {c.server_addr(0), c.server_addr(1)}
    # the #Get column is the server's cmd_get counter
    for i in (0, 1):
        assert int(c.kumostat(i, "cmd_get")) == before[c.server_addr(i)]


def test_down_server_shows_and_comes_back(two_servers):
    c = two_servers
    dead = "127.0.0.1:%d" % kumo.free_port()          # nothing listens there
    r = run_plain("-n", "1", c.server_addr(0), dead)
    assert r.returncode == 0, r.stderr
    snap = snapshots(r.stdout)[0]
    assert ROW_ONE.match(snap[1])
    assert dead in snap[2] and "refused" in snap[2]
    assert snap[2].rstrip().endswith("down")


def test_stopped_server_does_not_freeze(two_servers):
    """A server that stops answering (SIGSTOP) is shown as down within bounded time."""
    c = two_servers
    d = c.servers[1]["daemon"]
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.time()
        r = run_plain("-n", "2", "-d", "0.2", c.server_addr(0), c.server_addr(1), timeout=20)
        took = time.time() - t0
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)
    assert r.returncode == 0, r.stderr
    assert took < 8, took
    for snap in snapshots(r.stdout):
        assert ROW_ONE.match(snap[1])
        assert snap[2].rstrip().endswith("down"), snap[2]


# ---------------------------------------------------------------- terminal


def spawn_in_pty(args, cols, rows):
    """Start kumotop with a pseudo-terminal of the given size as its terminal."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = dict(os.environ, TERM="xterm", LINES=str(rows), COLUMNS=str(cols))
    p = subprocess.Popen([KUMOTOP] + args, stdin=slave, stdout=slave, stderr=slave,
                         env=env, start_new_session=True)
    os.close(slave)
    return p, master


def read_for(master, seconds):
    out = b""
    deadline = time.time() + seconds
    while time.time() < deadline:
        r, _, _ = select.select([master], [], [], 0.1)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


@pytest.mark.parametrize("cols", [140, 100])
def test_curses_shows_every_server_and_q_quits(two_servers, cols):
    c = two_servers
    p, master = spawn_in_pty(["-m", c.mgr], cols, 12)
    try:
        out = read_for(master, 2.0)
        assert p.poll() is None, out          # still running: it refreshes until q
        os.write(master, b"q")
        rc = p.wait(timeout=10)
        out += read_for(master, 0.3)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    assert rc == 0
    text = out.decode("utf-8", "replace")
    for i in (0, 1):
        assert c.server_addr(i) in text, text
    assert "address" in text and "status" in text
    if cols < 130:
        assert "Get/s" in text and "clock" in text


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
@pytest.mark.parametrize("cols", [140, 100])
def test_curses_screen_layout(two_servers, cols):
    """The exact screen of reference-outputs.md, captured from a private tmux server."""
    c = two_servers
    # a socket of its own per run: the previous run's tmux server may still be exiting
    # (kill-server returns before it is gone), and new-session on its socket then fails
    sock = "kumotop-test-%d-%d" % (os.getpid(), cols)
    tmux = ["tmux", "-L", sock, "-f", "/dev/null"]
    cmd = "%s -m %s; sleep 30" % (KUMOTOP, c.mgr)
    try:
        subprocess.run(tmux + ["new-session", "-d", "-s", "kt", "-x", str(cols), "-y", "12",
                               cmd], check=True, timeout=10, env=dict(os.environ, TERM="xterm"))

        def screen():
            r = subprocess.run(tmux + ["capture-pane", "-p", "-t", "kt"], capture_output=True,
                               text=True, timeout=10)
            lines = r.stdout.splitlines()
            return lines if all(c.server_addr(i) in r.stdout for i in (0, 1)) else None
        lines = kumo.wait_for(screen, timeout=10, what="kumotop screen")
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True, timeout=10)
    if cols >= 130:
        assert lines[0] == HEADER_ONE
        rows = [ROW_ONE.match(l) for l in lines[1:3]]
        assert all(rows), lines
        assert {m.group(1) for m in rows} == {c.server_addr(0), c.server_addr(1)}
    else:
        assert tuple(lines[0:2]) == HEADER_TWO
        for k in (2, 4):
            assert re.match(r"^ +\S+:\d+ +\d+ +\d+ +\d+ +\d+ \d{4}-\d\d-\d\d \d\d:\d\d:\d\d +\S+$",
                            lines[k]), lines
            assert len(lines[k]) == len(HEADER_TWO[0])
            assert re.match(r"^ {22} +-?\d+ +-?\d+ +-?\d+ +-?\d+ +\d+$", lines[k + 1]), lines
        assert {lines[2].split()[0], lines[4].split()[0]} == {c.server_addr(0), c.server_addr(1)}


def test_rates_follow_traffic(two_servers):
    """Gets through a gateway show up in #Get and, per second, in Get/s and QPS."""
    import threading
    c = two_servers
    if not os.path.exists(kumo.BIN["gateway"]):
        pytest.fail("binary not built: %s" % kumo.BIN["gateway"])
    if not c.gateways:
        c.start_gateway()
        c.wait_gateway_ready()
    mc = c.client()
    mc.set("kumotop-key", b"v")
    stop = threading.Event()

    def load():
        while not stop.is_set():
            mc.get("kumotop-key")
    t = threading.Thread(target=load)
    t.start()
    try:
        r = run_plain("-n", "3", "-d", "0.5", c.server_addr(0), c.server_addr(1))
    finally:
        stop.set()
        t.join()
        mc.close()
    assert r.returncode == 0, r.stderr
    snaps = snapshots(r.stdout)
    last = [ROW_ONE.match(l) for l in snaps[-1][1:]]
    first = [ROW_ONE.match(l) for l in snaps[0][1:]]
    assert all(last) and all(first), r.stdout
    # one of the two servers serves the key: its #Get grows and its rate is positive
    busy = [i for i in (0, 1) if int(last[i].group(2)) > int(first[i].group(2))]
    assert busy, r.stdout
    i = busy[0]
    assert int(last[i].group(5)) > 0 and int(last[i].group(8)) >= int(last[i].group(5))
