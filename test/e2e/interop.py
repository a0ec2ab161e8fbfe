"""The original kumofs 0.4.13 as a test oracle (issue 10): where it is, and clusters that
mix its daemons with ours.  The reference lives outside the repository, in
../shared/reference/kumofs-0.4.13 relative to the repo top; tests skip without it."""
import os
import shutil
import time

import pytest

import kumo

REF = os.path.normpath(os.path.join(kumo.TOP, "..", "shared", "reference", "kumofs-0.4.13"))
ORIG = {n: os.path.join(REF, "bin", "kumo-" + n) for n in ("manager", "server", "gateway")}
ORIG_TOOL = {n: os.path.join(REF, "bin", n) for n in ("kumoctl", "kumostat", "kumohash")}


def require_reference():
    """Skip (with the reason) unless the original daemons are there and runnable."""
    missing = [p for p in ORIG.values() if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip("original kumofs 0.4.13 not found at %s (needed: %s)" % (REF, missing[0]))


def require_ruby():
    require_reference()
    if shutil.which("ruby") is None:
        pytest.skip("the original's Ruby tools need Debian ruby and ruby-msgpack")


def run_original_tool(name, *args, timeout=30):
    """Run an original Ruby tool (kumoctl, kumostat, kumohash); returns the
    CompletedProcess."""
    import subprocess
    return subprocess.run(["ruby", ORIG_TOOL[name]] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout)


def binary(kind, original):
    """The daemon binary of kind ('manager', 'server', 'gateway'), original or ours."""
    return ORIG[kind] if original else kumo.BIN[kind]


def mixed_cluster(manager, servers, gateways=()):
    """A cluster whose manager is original (True) or ours (False), one server per
    element of servers and one gateway per element of gateways, all attached and the
    gateways ready.  Returns the kumo.Cluster (close it)."""
    c = kumo.Cluster()
    try:
        c.start_manager(binary=binary("manager", manager))
        for orig in servers:
            c.start_server(binary=binary("server", orig))
        c.attach_all()
        for orig in gateways:
            gw = c.start_gateway(binary=binary("gateway", orig))
            c.wait_gateway_ready(gw)
    except BaseException:
        print(c.logs())
        c.close()
        raise
    return c


def restart_server_as(c, i, original, fresh=False, timeout=60):
    """Stop server i (SIGTERM: a clean close of its .tch) and start the other kind on
    the same ports and database (fresh: an empty one, the old file kept as .bak); attach
    it and wait until it is active."""
    c.servers[i]["daemon"].stop()
    db = c.servers[i]["db"]
    if fresh and os.path.exists(db):
        os.replace(db, db + ".bak")
    addr = c.server_addr(i)
    kumo.wait_for(lambda: c.status()[0].get(addr) == "fault", timeout=timeout,
                  what="server %d marked fault" % i)
    before = c.replaces_finished()
    c.start_server(i, binary=binary("server", original))
    kumo.wait_for(lambda: addr in c.status()[1], timeout=timeout,
                  what="server %d registered" % i)
    c.kumoctl("attach")
    kumo.wait_for(lambda: c.status()[0].get(addr) == "active", timeout=timeout,
                  what="server %d active" % i)
    # the replace that attaches it has ended (both managers log "replace finished"); a
    # copy phase that waits on an original peer's ReplicateDelete retries takes longer on
    # a loaded host (it once passed 60 s at a load average of 20)
    kumo.wait_for(lambda: c.replaces_finished() > before, timeout=2 * timeout,
                  what="replace after attaching server %d" % i)


def restart_manager_as(c, original, timeout=60):
    """Stop the (only) manager and start the other kind on the same port; once every
    server has reconnected, attach them (user guide 3.2: the hash space is rebuilt from
    the running servers) and wait until the cluster is quiet."""
    old = c.managers[0]
    old.stop()
    c.managers.pop(0)
    c.start_manager(binary=binary("manager", original), port=old.port)
    c.managers.insert(0, c.managers.pop())
    want = {c.server_addr(i) for i in c.live_servers()}
    kumo.wait_for(lambda: want <= set(c.status()[1]) | set(c.status()[0]), timeout=timeout,
                  what="servers reconnected to the new manager")
    if set(c.status()[1]):
        c.kumoctl("attach")
    kumo.wait_for(lambda: all(c.status()[0].get(a) == "active" for a in want),
                  timeout=timeout, what="servers active")
    c.wait_replace_done(timeout=timeout)


def restart_gateway_as(c, gi, original):
    """Stop gateway gi and start the other kind on the same port (clients reconnect)."""
    old = c.gateways[gi]
    old.stop()
    gw = c.start_gateway(binary=binary("gateway", original), port=old.port)
    c.gateways.pop()
    c.gateways[gi] = gw
    try:
        c.wait_gateway_ready(gw)
    except AssertionError as e:
        # seen once in a full-suite run: the original gateway on the reused port refused
        # connections after answering one "No server"; say whether it had exited (and how)
        raise AssertionError("%s; %s gateway %s, log tail:\n%s" % (
            e, "original" if original else "kumofs-c",
            "running" if gw.alive() else "exited with %r" % gw.proc.returncode,
            gw.log()[-1500:])) from e
    return gw


def rolling_restart(c, original, log=lambda m: print("%.3f %s" % (time.time(), m)),
                    before_server=lambda i: None):
    """Replace every daemon by the given kind, one at a time, as the user guide's
    migration how-to says: each server (waiting for the replace that attaches it), then
    the manager, then the gateway.  Upgraded servers start on their own .tch; a server
    going back to the original starts on an empty database, since the original cannot
    learn the deletes it missed from original peers (user guide, section 8)."""
    for i in sorted(c.servers):
        before_server(i)
        restart_server_as(c, i, original, fresh=original)
        c.wait_replace_done(timeout=90)
        log("server %d is now %s" % (i, "original" if original else "kumofs-c"))
    restart_manager_as(c, original)
    log("manager is now %s" % ("original" if original else "kumofs-c"))
    for gi in range(len(c.gateways)):
        restart_gateway_as(c, gi, original)
    log("gateways are now %s" % ("original" if original else "kumofs-c"))
