"""flush_all on a loaded cluster (doc/protocol-additions.md §1.2, issue 9): the flush no
longer walks the whole database on the event loop.  It hides every item set before it
the moment it answers OK, keeps every item set after it, and tombstones the records in
steps while gets and sets go on."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import kumo  # noqa: E402
import replcheck as rc  # noqa: E402
from test_backup import percentiles  # noqa: E402

DONE = "flush_all: "       # the server's log line when its walk has ended


def walks_done(c):
    return sum(s["daemon"].log().count(DONE) for s in c.servers.values())


def test_flush_all_does_not_stall_gets(cluster3):
    """Issue 9: flush_all walked every record on the event loop (336 ms of stalled gets at
    300,000 records).  Now, while the walk runs: every pre-flush item is a miss at once,
    items set after the OK are read back (on every replica, whatever the clock skew
    between coordinator and replica), and after the walk both still hold."""
    c = cluster3
    gw = c.gateways[0].port
    old = rc.make_data("old", 30000, size=100)
    rc.load(gw, old.items())
    reset = {k: b"after-" + v for k, v in list(old.items())[:2000]}   # set again after
    fresh = rc.make_data("fresh", 2000, size=100)                       # new after

    stop = threading.Event()
    errors, lat = [], []

    def reader_writer():
        """Own keys set and read back in a loop while the walk runs."""
        t = rc.Text(gw)
        n = 0
        deadline = time.time() + 60
        while not stop.is_set() and time.time() < deadline:
            k, v = "live-%d" % n, b"v%d" % n
            if t.set_many([(k, v)]) != [b"STORED"]:
                errors.append((k, "set"))
                break
            t0 = time.monotonic()
            got = t.get_many([k]).get(k)
            lat.append(time.monotonic() - t0)
            if got != v:
                errors.append((k, got))
                break
            n += 1
        t.close()

    before = walks_done(c)
    t = rc.Text(gw)
    t.sock.sendall(b"flush_all\r\n")
    assert t._line() == b"OK"
    th = threading.Thread(target=reader_writer)
    th.start()
    try:
        # at once: nothing set before the flush is readable
        assert rc.read_all(gw, old) == {}
        rc.load(gw, reset.items())
        rc.load(gw, fresh.items())
        assert rc.missing_or_wrong(gw, reset) == []
        assert rc.missing_or_wrong(gw, fresh) == []
        kumo.wait_for(lambda: walks_done(c) >= before + 3, timeout=60,
                      what="every server's flush walk")
    finally:
        stop.set()
        th.join()
        t.close()
    print("gets during the flush:", percentiles(lat))
    assert not errors, errors[:5]
    assert lat

    # after the walk: the flushed items stay gone, the later ones stay, on every replica
    gone = {k: v for k, v in old.items() if k not in reset}
    assert rc.read_all(gw, gone) == {}
    assert rc.missing_or_wrong(gw, reset) == []
    assert rc.missing_or_wrong(gw, fresh) == []
    rc.assert_copies(c, reset, want=3)
    rc.assert_copies(c, fresh, want=3)
    assert max(rc.copies(c, gone).values()) == 0
    for i in range(3):     # each server tombstoned the old items and "__ready__", once each
        log = c.servers[i]["daemon"].log()
        assert "flush_all: %d items removed" % (len(old) + 1) in log, log[-500:]
