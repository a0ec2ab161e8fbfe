"""Restart safety (DECISIONS.md §2): two failures measured on kumofs 0.4.13.

* test_deleted_keys_do_not_come_back: a server killed before a delete and restarted on
  its old database must not serve the deleted values again (the original did; its docs
  told operators to wipe the file first).  Replace streams now carry tombstones.
* test_no_stale_read_after_restart_attach: with a server killed, restarted and attached
  while clients set and delete, an acknowledged write is never followed by an older
  value (the original served stale values 2-12 times per run): a coordinator whose
  replica refuses a write as not newer learns that replica's version (tombstones
  included) and stamps the write past it.
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import kumo  # noqa: E402
from mpack import Rpc, RpcError, dbkey  # noqa: E402

SRV_GET = 34


def raw_get(port, key):
    """The server's own answer to Get (method 34) for key: the stored DBValue or None."""
    r = Rpc(port)
    try:
        return r.call(SRV_GET, [dbkey(key)])
    finally:
        r.close()


def stored_data(raw):
    """The memcached data of a stored DBValue: after the 10-byte header, and after the
    item header of the tagged form or of meta 1 (doc/storage-format.md)."""
    meta = int.from_bytes(raw[8:10], "big")
    if raw[10:14] == b"\xc1kcI":       # the tagged form: magic, flags, exptime
        return raw[22:]
    return raw[18:] if meta == 1 else raw[10:]


def kill_server(c, i):
    c.servers[i]["daemon"].kill()
    kumo.wait_for(lambda: c.status()[0].get(c.server_addr(i)) == "fault",
                  timeout=15, what="server %d marked fault" % i)


def test_deleted_keys_do_not_come_back(cluster3):
    c = cluster3
    mc = c.client()
    keys = ["gone-%d-%s" % (n, kumo.random_key(6)) for n in range(100)]
    kept = ["kept-%d-%s" % (n, kumo.random_key(6)) for n in range(20)]
    for k in keys + kept:
        assert mc.set(k, ("value of " + k).encode(), noreply=False) is True

    victim = 1
    kill_server(c, victim)
    for k in keys:   # the two live replicas of every key take the delete
        assert mc.delete(k, noreply=False) is True, k

    c.restart_and_attach(victim)

    def check_servers():
        for i, s in c.servers.items():
            for k in keys:
                got = raw_get(s["port"], k)
                assert got is None, "server %d serves deleted key %s again: %r" % (i, k, got)
            for k in kept:   # the live values still travel and stay
                got = raw_get(s["port"], k)
                assert got is not None and stored_data(got) == ("value of " + k).encode(), \
                    (i, k)
    check_servers()
    # A full replace makes every server offer every record to every owner: nothing the
    # restarted server held may spread again.
    before = c.replaces_finished()
    c.kumoctl("full-replace")
    c.wait_replace_ready(before)
    check_servers()
    for k in keys:
        assert mc.get(k) is None, k
        assert mc.gets(k) == (None, None), k
    for k in kept:
        assert mc.get(k) == ("value of " + k).encode()


def _value(key, seq):
    return ("%s|%d|" % (key, seq)).encode() + b"x" * 40


def _seq(key, raw):
    k, seq, _ = raw.decode().split("|")
    assert k == key, (key, raw)
    return int(seq)


class Book:
    """Per key: the sequence number of the last acknowledged operation, the operations
    that were deletes, and every sequence the key may still legally hold (the acked one
    and later operations whose outcome is unknown).  Every 4th operation is a delete."""

    def __init__(self, keys):
        self.lock = threading.Lock()
        self.acked = {k: 0 for k in keys}
        self.deletes = {k: set() for k in keys}
        self.maybe = {k: set() for k in keys}
        self.retired = set()      # a client timeout: the gateway may still retry it
        self.violations = []
        self.acks = 0
        self.failures = 0

    def legal(self, k, floor, got):
        """May a read started after operation `floor` was acknowledged return got
        (a set's sequence number, or None for a miss)?"""
        if got is None:
            return any(d >= floor for d in self.deletes[k])
        return got >= floor


def _writer(c, book, keys, stop):
    mc = c.client(timeout=30)
    seq = {k: 0 for k in keys}
    while not stop.is_set():
        for k in keys:
            if k in book.retired:
                continue
            seq[k] += 1
            delete = seq[k] % 4 == 0
            with book.lock:
                book.maybe[k].add(seq[k])
                if delete:
                    book.deletes[k].add(seq[k])
            try:
                if delete:   # DELETED and NOT_FOUND both acknowledge the delete
                    mc.delete(k, noreply=False)
                    ok = True
                else:
                    ok = mc.set(k, _value(k, seq[k]), noreply=False) is True
            except Exception as e:  # noqa: BLE001 - outcome unknown
                ok = False
                if "timed out" in str(e):
                    with book.lock:
                        book.retired.add(k)
                mc.close()
                mc = c.client(timeout=30)
            with book.lock:
                if ok:
                    book.acked[k] = seq[k]
                    book.maybe[k] = {seq[k]}
                    book.acks += 1
                else:
                    book.failures += 1
    mc.close()


def _reader(c, book, keys, stop):
    mc = c.client(timeout=30)
    while not stop.is_set():
        for k in keys:
            with book.lock:
                floor = book.acked[k]
            try:
                raw = mc.get(k)
            except Exception:  # noqa: BLE001 - a failed read is not a stale read
                mc.close()
                mc = c.client(timeout=30)
                continue
            with book.lock:
                if k in book.retired or floor == 0:
                    continue
                got = None if raw is None else _seq(k, raw)
                if not book.legal(k, floor, got):
                    book.violations.append("%s: read %r after operation %d was acknowledged"
                                           % (k, got, floor))
    mc.close()


def coordinator_keys(c, i, n):
    """n fresh keys whose coordinator (first slot, all servers active) is server i."""
    port = c.servers[i]["port"]
    out = []
    while len(out) < n:
        cand = ["seq-%s" % kumo.random_key(8) for _ in range(24)]
        text = c.tool("kumohash", "-m", c.mgr, "assign", *cand).stdout
        # "key" lines are followed by indented "  slot: addr" lines, coordinator first
        current, first = None, {}
        for line in text.splitlines():
            if line.startswith("  ") and ":" in line and current is not None:
                first.setdefault(current, line.split(":", 1)[1].strip())
            elif line.strip():
                current = line.split()[-1]
        out += [k for k in cand if first.get(k) == "127.0.0.1:%d" % port]
    return out[:n]


def test_no_stale_read_after_restart_attach(cluster3):
    c = cluster3
    victim = 1
    # The keys the victim coordinates: while it is down another server coordinates
    # them and its clock runs ahead; after attach the restarted victim (clock from 0,
    # merged only through the managers every 2 s) coordinates them again.  This is the
    # case that made the original acknowledge sets its replicas refused as not newer.
    keys = coordinator_keys(c, victim, 16)
    book = Book(keys)
    stop = threading.Event()
    groups = [keys[n::4] for n in range(4)]
    threads = [threading.Thread(target=_writer, args=(c, book, g, stop)) for g in groups]
    threads += [threading.Thread(target=_reader, args=(c, book, keys, stop))
                for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        for _ in range(3):
            kill_server(c, victim)
            time.sleep(2.0)      # the other coordinator's clock runs ahead meanwhile
            c.restart_and_attach(victim)
            time.sleep(2.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)

    assert not book.violations, "%d stale reads, e.g. %s" % (len(book.violations),
                                                              book.violations[:5])
    assert book.acks > 100, "too few acknowledged writes (%d) to mean anything" % book.acks

    # Every replica holds the last acknowledged value (or a later set whose answer was
    # lost), and all three agree.
    checked = 0
    for k in keys:
        if k in book.retired:
            continue
        got = []
        for i, s in c.servers.items():
            try:
                raw = raw_get(s["port"], k)
            except RpcError as e:
                raise AssertionError("server %d cannot read %s: %r" % (i, k, e))
            got.append(None if raw is None else _seq(k, stored_data(raw)))
        allowed = {None if m in book.deletes[k] else m for m in book.maybe[k]}
        assert got[0] in allowed and len(set(got)) == 1, \
            "%s: replicas hold %r, last acknowledged %d, allowed %r" % (
                k, got, book.acked[k], allowed)
        checked += 1
    assert checked >= len(keys) // 2
