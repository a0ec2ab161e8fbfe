"""The daemons write the binary log (-g) that kumolog reads, reopened on SIGHUP."""
import os
import signal
import socket
import subprocess

import kumo


def kumolog(*args):
    r = subprocess.run([os.path.join(kumo.BUILD, "tools", "kumolog", "kumolog")] + list(args),
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_manager_and_server_binary_logs_with_rotation(cluster):
    c = cluster
    mlog = os.path.join(c.dir, "manager.mpac")
    slog = os.path.join(c.dir, "server.mpac")
    m = c.start_manager(extra=["-g", mlog])
    s = c.start_server(extra=["-g", slog])
    kumo.wait_for(lambda: "new server" in kumolog(mlog), what="nS record")

    out = kumolog(mlog)
    assert out.startswith("SM.2  Manager start    address=[%s]  partner=[0.0.0.0:0]  time=["
                          % c.mgr)
    assert "nS.3  new server       address=[%s]" % c.server_addr(0) in out
    sout = kumolog(slog)
    assert sout.startswith("SS.2  Server start     address=[%s]" % c.server_addr(0))
    assert "database=[%s]" % c.servers[0]["db"] in sout
    assert "backup_prefix=[%s-]" % c.servers[0]["db"] in sout

    # logrotate: move the file away, SIGHUP, the next record goes to a new file
    os.rename(mlog, mlog + ".1")
    m.proc.send_signal(signal.SIGHUP)
    kumo.wait_for(lambda: "SIGHUP" in m.log(), what="SIGHUP handled")
    s.kill()
    kumo.wait_for(lambda: os.path.exists(mlog) and "lost server" in kumolog(mlog),
                  timeout=15, what="lS record in the reopened log")
    assert "lS.3  lost server      address=[%s]" % c.server_addr(0) in kumolog(mlog)
    assert "lost server" not in kumolog(mlog + ".1")

    # a truncated copy is read up to the last whole record, exit 0
    data = open(mlog + ".1", "rb").read()
    with open(os.path.join(c.dir, "trunc.mpac"), "wb") as f:
        f.write(data[:-3])
    assert kumolog(os.path.join(c.dir, "trunc.mpac")).startswith("SM.2")


def test_gateway_binary_log_start_and_final_failures(cluster):
    """kumo-gateway -g: SW at start; eg/es/ed when a request finally fails (cli.md §10),
    keyed with the -k prefix.  No server ever joins, so every request fails."""
    c = cluster
    glog = os.path.join(c.dir, "gateway.mpac")
    c.start_manager()
    gw = c.start_gateway(extra=["-g", glog, "-k", "pfx-", "-G", "1", "-S", "1", "-D", "1",
                                "-Ys", "0.2"])
    out = kumolog(glog)
    assert out.startswith("SW.2  Gateway start    manager1=[%s]  manager2=[0.0.0.0:0]  time=["
                          % c.mgr), out

    s = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    f = s.makefile("rb")
    s.sendall(b"get lost-get\r\n")
    assert f.readline() == b"SERVER_ERROR get failed\r\n"
    s.sendall(b"set lost-set 0 0 5\r\nhello\r\n")
    assert f.readline() == b"SERVER_ERROR store failed\r\n"
    s.sendall(b"delete lost-del\r\n")
    assert f.readline() == b"SERVER_ERROR delete failed\r\n"
    s.close()

    kumo.wait_for(lambda: "Delete failed" in kumolog(glog), what="ed record")
    lines = kumolog(glog).splitlines()
    assert [l.split("  ")[0] for l in lines] == ["SW.2", "eg.3", "es.3", "ed.3"], lines
    assert "Get failed" in lines[1] and "pfx-lost-get" in lines[1]
    assert "Set failed" in lines[2] and "pfx-lost-set" in lines[2]
    assert "Delete failed" in lines[3] and "pfx-lost-del" in lines[3]
    assert gw.alive()
