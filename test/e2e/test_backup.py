"""`kumoctl backup` and kumomergedb (algorithms.md §10, storage.md §6-§7, tools.md §7):
every server copies its database to <db>-<suffix>; merging the copies gives one file with
every live key once, holding its newest value, and without the deleted keys."""
import os
import random
import shutil
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kumo  # noqa: E402
import replcheck as rc  # noqa: E402

MERGEDB = os.path.join(kumo.BUILD, "tools", "kumomergedb", "kumomergedb")


def tch_records(path):
    """{key bytes: value bytes} of a Tokyo Cabinet hash file, read with tchmgr."""
    r = subprocess.run(["tchmgr", "list", "-pv", "-px", path], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.splitlines():
        k, v = line.split("\t")
        key = bytes.fromhex(k.replace(" ", ""))
        assert key not in out
        out[key] = bytes.fromhex(v.replace(" ", ""))
    return out


def test_backup_and_merge(cluster3):
    if shutil.which("tchmgr") is None or not os.path.exists(MERGEDB):
        pytest.skip("tchmgr or kumomergedb missing")
    c = cluster3
    gw = c.gateways[0].port
    data = rc.make_data("bk", 1000)
    rc.load(gw, data.items())
    # newer values for some keys, deletes for others
    newer = {k: b"newer-" + v for k, v in list(data.items())[:200]}
    rc.load(gw, newer.items())
    data.update(newer)
    mc = c.client()
    deleted = list(data)[500:600]
    for k in deleted:
        assert mc.delete(k, noreply=False) is True
        del data[k]
    data["__ready__"] = b"1"
    assert rc.missing_or_wrong(gw, data) == []

    out = c.kumoctl("backup", "bk1")
    assert out == "suffix=bk1\nnil\n"
    backups = [c.servers[i]["db"] + "-bk1" for i in range(3)]
    kumo.wait_for(lambda: all(os.path.exists(b) for b in backups), timeout=20,
                  what="backup files")
    for i, b in enumerate(backups):
        assert not os.path.exists(b + ".tmp")
        recs = tch_records(b)
        live = [k for k, v in recs.items() if len(v) >= 10]
        assert len(live) == len(data), (i, len(live), len(data))   # 3 servers: all keys

    dst = os.path.join(c.dir, "merged.tch")
    r = subprocess.run([MERGEDB, dst] + backups, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    n = len(data)
    assert r.stdout.splitlines() == [
        "merging %s...  merged %d records of %d records" % (backups[0], n, n),
        "merging %s...  merged %d records of %d records" % (backups[1], n, 2 * n),
        "merging %s...  merged %d records of %d records" % (backups[2], n, 3 * n),
        "closing %s..." % dst,
        "done."]
    merged = tch_records(dst)
    assert {k[8:].decode() for k in merged} == set(data)
    for k, v in merged.items():
        key = k[8:].decode()
        assert k == rc.mpack.dbkey(key)
        assert v.endswith(data[key]), key           # the newest value
    for k in deleted:
        assert rc.mpack.dbkey(k) not in merged

    # backups taken at different times: the newest version of each key wins, whichever
    # file it comes from (store-if-newer, storage.md §7)
    newest = {k: b"newest-" + v for k, v in list(data.items())[300:400]}
    rc.load(gw, newest.items())
    data.update(newest)
    assert c.kumoctl("backup", "bk2") == "suffix=bk2\nnil\n"
    mixed = [backups[0], c.servers[1]["db"] + "-bk2", backups[2]]
    kumo.wait_for(lambda: os.path.exists(mixed[1]), timeout=20, what="second backup")
    dst2 = os.path.join(c.dir, "merged2.tch")
    r = subprocess.run([MERGEDB, dst2] + mixed, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "merged %d records of %d records" % (n + len(newest), 2 * n) in r.stdout
    merged = tch_records(dst2)
    assert len(merged) == n
    for k, v in merged.items():
        assert v.endswith(data[k[8:].decode()]), k


def percentiles(lat):
    """'p50 … max' of latencies in seconds, printed in ms (figures, never asserted)."""
    if not lat:
        return "no samples"
    s = sorted(lat)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))] * 1000  # noqa: E731
    return "n=%d p50=%.2f p99=%.2f p99.9=%.2f max=%.2f ms" % (
        len(s), pick(0.5), pick(0.99), pick(0.999), s[-1] * 1000)


def test_backup_does_not_stall_gets(cluster3):
    """Issue 9: the backup held the store's lock across the whole Tokyo Cabinet copy, so
    every get on every server waited for it (3.2 s at 600 MB).  Now gets are answered,
    correctly, while the backup runs and writers grow records (which moves them inside
    the file); the backup still holds every record, at its value from the start of the
    backup or a later one, and kumomergedb merges the copies."""
    if shutil.which("tchmgr") is None or not os.path.exists(MERGEDB):
        pytest.skip("tchmgr or kumomergedb missing")
    c = cluster3
    gw = c.gateways[0].port
    data = rc.make_data("stall", 20000, size=1000)      # ~20 MB on each server
    rc.load(gw, data.items())
    keys = list(data)
    grow = set(keys[:3000])                             # rewritten larger meanwhile
    steady = [k for k in keys if k not in grow]
    grown = {k: b"grown-" + data[k] * 2 for k in grow}

    stop = threading.Event()
    in_backup = threading.Event()
    errors, lat, during = [], [], [0]

    def reader():
        t = rc.Text(gw)
        deadline = time.time() + 120
        while not stop.is_set() and time.time() < deadline:
            k = random.choice(steady)
            t0 = time.monotonic()
            got = t.get_many([k])
            dt = time.monotonic() - t0
            if got.get(k) != data[k]:
                errors.append((k, got.get(k)))
                break
            if in_backup.is_set():
                lat.append(dt)
                during[0] += 1
        t.close()

    def writer():
        t = rc.Text(gw)
        todo = sorted(grow)
        deadline = time.time() + 120
        i = 0
        while not stop.is_set() and time.time() < deadline and i < len(todo):
            chunk = todo[i:i + 50]
            for k, r in zip(chunk, t.set_many([(k, grown[k]) for k in chunk])):
                if r != b"STORED":
                    errors.append((k, r))
            i += 50
        t.close()

    threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
    for th in threads:
        th.start()
    try:
        in_backup.set()
        assert c.kumoctl("backup", "live") == "suffix=live\nnil\n"
        backups = [c.servers[i]["db"] + "-live" for i in range(3)]
        kumo.wait_for(lambda: all(os.path.exists(b) for b in backups), timeout=60,
                      what="backup files")
        in_backup.clear()
    finally:
        stop.set()
        for th in threads:
            th.join()
    print("gets during the backup:", percentiles(lat))
    assert not errors, errors[:5]
    assert during[0] > 0

    for b in backups:
        assert not os.path.exists(b + ".tmp")
        recs = tch_records(b)
        for k in steady:
            assert recs[rc.mpack.dbkey(k)].endswith(data[k]), k
        for k in grow:
            v = recs.get(rc.mpack.dbkey(k))
            assert v is not None, "%s missing from %s" % (k, b)
            assert v.endswith(data[k]) or v.endswith(grown[k]), k
    dst = os.path.join(c.dir, "merged-live.tch")
    r = subprocess.run([MERGEDB, dst] + backups, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    merged = tch_records(dst)
    assert {rc.mpack.dbkey(k) for k in keys} <= set(merged)


def test_backup_failure_is_reported_and_the_server_keeps_serving(cluster3):
    """A backup that cannot create its file (here: the suffix names a missing directory)
    leaves no file behind, logs why on every server, and changes nothing for clients."""
    c = cluster3
    gw = c.gateways[0].port
    data = rc.make_data("bkfail", 500)
    rc.load(gw, data.items())
    assert c.kumoctl("backup", "x/y") == "suffix=x/y\nnil\n"
    kumo.wait_for(lambda: all("backup: can't create" in c.servers[i]["daemon"].log()
                              for i in range(3)), timeout=20, what="backup errors logged")
    assert rc.missing_or_wrong(gw, data) == []
    for i in range(3):
        assert c.servers[i]["daemon"].alive()
        assert not os.path.exists(c.servers[i]["db"] + "-x")
