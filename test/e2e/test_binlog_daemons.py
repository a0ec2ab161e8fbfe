"""The daemons write the binary log (-g) that kumolog reads, reopened on SIGHUP."""
import os
import signal
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
