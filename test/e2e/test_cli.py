"""Command lines of the daemons (cli.md): usage, required options, bad values, clean exit."""
import os
import signal
import socket
import subprocess

import pytest

import kumo


def run(name, *args):
    return subprocess.run([kumo.BIN[name]] + list(args), capture_output=True, text=True,
                          timeout=20)


@pytest.mark.parametrize("name,missing", [
    ("manager", "error: required but not set: -l"),
    ("server", "error: required but not set: -s, -m, -l"),
    ("gateway", "error: required but not set: -m"),
])
def test_no_arguments_reports_required_options(name, missing):
    r = run(name)
    assert r.returncode == 1
    assert r.stdout.startswith("usage: ")
    assert r.stderr.strip() == missing


@pytest.mark.parametrize("name", ["manager", "server", "gateway"])
def test_help_prints_usage_and_exits_0(name):
    r = run(name, "--help")
    assert r.returncode == 0
    assert r.stdout.startswith("usage: ")
    assert "--connect-timeout" in r.stdout
    assert "v0.4.13 revision" in r.stdout


def test_bad_values():
    r = run("manager", "-l", "127.0.0.1:abc")
    assert r.returncode == 1
    assert r.stderr.strip() == "error: argument error `-l': invalid port number: abc"
    r = run("manager", "-l", "127.0.0.1:1", "-Yn", "70000")
    assert r.stderr.strip() == "error: argument error `-Yn': unsigned short is expected: 70000"
    r = run("manager", "-l", "127.0.0.1:1", "extra")
    assert r.stderr.strip() == "error: unexpected argument: extra"
    r = run("gateway", "-m", "127.0.0.1")
    assert r.stderr.strip() == "error: -t, -b or -c is required"
    r = run("server", "-l", "127.0.0.1:%d" % kumo.free_port(), "-L", str(kumo.free_port()),
            "-m", "127.0.0.1:5", "-p", "127.0.0.1:5", "-s", "/tmp/x.tch")
    assert r.stderr.strip() == "error: -m and -p must be different"


def test_port_in_use_is_a_clear_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        r = run("manager", "-l", "127.0.0.1:%d" % port)
        assert r.returncode == 1
        assert r.stderr.strip() == "error: bind failed"
    finally:
        s.close()


def test_server_refuses_unopenable_database(tmp_path):
    port, stream = kumo.free_port(), kumo.free_port()
    r = run("server", "-l", "127.0.0.1:%d" % port, "-L", str(stream), "-m", "127.0.0.1:1",
            "-s", str(tmp_path / "no" / "such" / "dir" / "db.tch"))
    assert r.returncode != 0 and r.returncode != -signal.SIGABRT
    assert "error" in r.stderr.lower()


def test_sigterm_exits_0_and_closes_database(tmp_path):
    mport = kumo.free_port()
    m = kumo.Daemon("m", [kumo.BIN["manager"], "-v", "-l", "127.0.0.1:%d" % mport],
                    str(tmp_path / "m.log")).start()
    port, stream = kumo.free_port(), kumo.free_port()
    db = tmp_path / "db.tch"
    s = kumo.Daemon("s", [kumo.BIN["server"], "-v", "-l", "127.0.0.1:%d" % port, "-L", str(stream),
                          "-m", "127.0.0.1:%d" % mport, "-s", str(db)],
                    str(tmp_path / "s.log")).start()
    try:
        # signals are handled once start-up is complete ("start ..." logged)
        kumo.wait_for(lambda: "start server" in s.log() and "start manager" in m.log(),
                      what="daemons started")
        assert s.stop() == 0
        assert m.stop() == 0
        # the database file is a valid, closed Tokyo Cabinet hash DB
        r = subprocess.run(["tchmgr", "inform", str(db)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "record number: 0" in r.stdout
    finally:
        s.kill()
        m.kill()
