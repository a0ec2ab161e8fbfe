"""Real memcached clients against kumo-gateway (issue 11): pymemcache, pylibmc (text and
binary protocol) and Perl's Cache::Memcached::Fast.  Multi-get of 10,000 keys (far past
the old 256-key / 72 KiB line limit), 1 MiB values, binary-safe values, flags, expiry,
cas, incr/decr, touch, noreply."""
import subprocess
import time

import pytest

import kumo

N_MULTI = 10000


def _eventually(cond, limit=10.0):
    """True once cond() holds: polls (bounded) instead of sleeping a fixed time, so a
    slow machine cannot make it fail."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.2)
    return False


def _gone_within(get):
    """True once get() misses: an item set with a 1-second expiry."""
    return _eventually(lambda: get() is None)


@pytest.fixture(scope="module")
def gw():
    binport = kumo.free_port()
    c = kumo.standard_cluster(3, gateway_extra=["-b", "127.0.0.1:%d" % binport])
    c.binport = binport
    yield c
    c.close()


def _blob():
    return bytes(range(256)) * 4096            # 1 MiB, every byte value, "\r\n" inside


# ------------------------------------------------------------------ pymemcache

def test_pymemcache_multiget_10000(gw):
    from pymemcache.client.base import Client
    c = Client(("127.0.0.1", gw.gateways[0].port), timeout=60)
    keys = ["pm%05d" % i for i in range(N_MULTI)]
    c.set_many({k: k.encode() for k in keys}, noreply=False)
    got = c.get_many(keys)
    assert len(got) == N_MULTI and all(got[k] == k.encode() for k in keys)
    # 250-byte keys too: one line of 2.5 MB
    long_keys = [("L%04d" % i) + "x" * 245 for i in range(N_MULTI)]
    for i in range(0, N_MULTI, 2000):
        c.set_many({k: b"v" for k in long_keys[i:i + 2000]}, noreply=False)
    got = c.get_many(long_keys + ["missing"])
    assert len(got) == N_MULTI
    c.close()


def test_pymemcache_features(gw):
    from pymemcache.client.base import Client
    c = Client(("127.0.0.1", gw.gateways[0].port), timeout=30)
    blob = _blob()
    assert c.set("pm_blob", blob, noreply=False)
    assert c.get("pm_blob") == blob
    assert c.set("pm_flags", b"x", noreply=False, flags=0xfffffffe)
    import socket
    with socket.create_connection(("127.0.0.1", gw.gateways[0].port), timeout=30) as s:
        s.sendall(b"get pm_flags\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            buf += s.recv(4096)
    assert buf == b"VALUE pm_flags 4294967294 1\r\nx\r\nEND\r\n"
    assert c.set("pm_cas", b"1", noreply=False)
    v, cas = c.gets("pm_cas")
    assert c.touch("pm_cas", 100, noreply=False)       # touch keeps the CAS
    assert c.cas("pm_cas", b"2", cas, noreply=False)
    assert c.cas("pm_cas", b"3", cas, noreply=False) is False
    assert c.incr("pm_n", 1, noreply=False) is None
    c.set("pm_n", b"10", noreply=False)
    assert c.incr("pm_n", 5, noreply=False) == 15
    assert c.decr("pm_n", 20, noreply=False) == 0
    c.set("pm_nr", b"a", noreply=True)
    c.delete("pm_nr", noreply=True)
    assert c.get("pm_nr") is None
    c.set("pm_exp", b"x", expire=-1, noreply=False)
    assert c.get("pm_exp") is None
    assert c.delete("pm_exp", noreply=False) is False  # expired: NOT_FOUND
    c.set("pm_exp1", b"x", expire=1, noreply=False)
    assert c.get("pm_exp1") == b"x"
    assert _gone_within(lambda: c.get("pm_exp1"))
    # a key is text, a value is any bytes: NUL, CR LF, "END\r\n" inside a value
    tricky = b"\0\r\nEND\r\nVALUE x 0 1\r\n\xff"
    assert c.set("pm_tricky", tricky, noreply=False) and c.get("pm_tricky") == tricky
    c.close()


# ------------------------------------------------------------------ pylibmc

def _pylibmc(port, binary):
    pylibmc = pytest.importorskip("pylibmc", reason="python3-pylibmc (scripts/install-deps.sh)")
    return pylibmc.Client(["127.0.0.1:%d" % port], binary=binary,
                          behaviors={"cas": True, "tcp_nodelay": True})


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_pylibmc(gw, binary):
    port = gw.binport if binary else gw.gateways[0].port
    c = _pylibmc(port, binary)
    tag = "b" if binary else "t"
    keys = ["pl%s%05d" % (tag, i) for i in range(N_MULTI)]
    assert c.set_multi({k: k.encode() for k in keys}) == []
    got = c.get_multi(keys)
    assert len(got) == N_MULTI and got[keys[-1]] == keys[-1].encode()
    blob = _blob()[:1024 * 1024 - 512]           # pylibmc's own item limit is 1 MiB total
    c.set("pl_blob" + tag, blob, min_compress_len=0)
    assert c.get("pl_blob" + tag) == blob
    c.set("pl_int" + tag, 42)                    # pylibmc's flags say "int"
    assert c.get("pl_int" + tag) == 42
    c.set("pl_n" + tag, "10")
    assert c.incr("pl_n" + tag, 5) == 15 and c.decr("pl_n" + tag, 100) == 0
    c.set("pl_cas" + tag, "a")
    v, cas = c.gets("pl_cas" + tag)
    assert c.touch("pl_cas" + tag, 100)
    assert c.cas("pl_cas" + tag, "b", cas)
    assert not c.cas("pl_cas" + tag, "c", cas)
    c.set("pl_exp" + tag, "x", time=1)
    assert c.get("pl_exp" + tag) == "x"
    assert _gone_within(lambda: c.get("pl_exp" + tag))
    assert not c.delete("pl_exp" + tag)          # expired: NOT_FOUND
    c.set("pl_pick" + tag, {"a": [1, 2]})        # pylibmc's flags say "pickle"
    assert c.get("pl_pick" + tag) == {"a": [1, 2]}
    tricky = b"\0\r\nEND\r\n\xff"
    c.set("pl_tricky" + tag, tricky)
    assert c.get("pl_tricky" + tag) == tricky
    # noreply: libmemcached's NOREPLY behaviour (quiet opcodes on the binary port)
    nr = _pylibmc(port, binary)
    nr.behaviors = {"_noreply": True}
    for i in range(100):
        nr.set("pl_nr%s%d" % (tag, i), "v%d" % i)
    nr.delete("pl_nr%s0" % tag)
    nr.disconnect_all()
    nrkeys = ["pl_nr%s%d" % (tag, i) for i in range(100)]
    # no reply means no ordering point: another connection sees them once they are done
    want = {k: "v%d" % i for i, k in enumerate(nrkeys) if i}
    assert _eventually(lambda: c.get_multi(nrkeys) == want)
    c.disconnect_all()


# ------------------------------------------------------------------ Perl

PERL = r'''
use strict; use warnings;
use Cache::Memcached::Fast;
my $m = Cache::Memcached::Fast->new({servers => ["127.0.0.1:$ARGV[0]"], io_timeout => 60,
                                     max_size => 2 * 1024 * 1024});
my $n = $ARGV[1];
my @k = map { sprintf("cmf%05d", $_) } 0 .. $n - 1;
$m->set_multi(map { [$_, "v$_"] } @k);
my $h = $m->get_multi(@k);
die "multi " . scalar(keys %$h) unless scalar(keys %$h) == $n && $h->{$k[-1]} eq "v$k[-1]";
my $blob = join("", map { chr($_ % 256) } 0 .. 1024 * 1024 - 1);
$m->set("cmf_blob", $blob) or die "set blob";
$m->get("cmf_blob") eq $blob or die "get blob";
$m->set("cmf_n", 10); $m->incr("cmf_n", 5) == 15 or die "incr";
$m->decr("cmf_n", 100) == 0 or die "decr";
$m->set("cmf_c", "a"); my $g = $m->gets("cmf_c");
$m->touch("cmf_c", 100) or die "touch";
$m->cas("cmf_c", @$g[0], "b") or die "cas after touch";
!$m->cas("cmf_c", @$g[0], "c") or die "stale cas";
$m->set("cmf_e", "x", -1); defined($m->get("cmf_e")) and die "expired";
$m->set("cmf_e1", "x", 1); $m->get("cmf_e1") eq "x" or die "expiry 1 s early";
my $gone = 0;
for (1 .. 50) { if (!defined($m->get("cmf_e1"))) { $gone = 1; last } select(undef, undef, undef, 0.2) }
$gone or die "expiry 1 s: still there after 10 s";
$m->set("cmf_h", {a => [1, 2]}) or die "set ref";       # Storable, flagged by the client
$m->get("cmf_h")->{a}[1] == 2 or die "flags (serialized ref)";
$m->set("cmf_q", "y"); $m->delete("cmf_q") or die "delete";
my $nr = Cache::Memcached::Fast->new({servers => [{address => "127.0.0.1:$ARGV[0]",
                                                   noreply => 1}]});
$nr->set("cmf_nr$_", "z$_") for 0 .. 99;           # void context: "noreply" on the wire
$nr->delete("cmf_nr0");
$nr->incr("cmf_n", 7);
$nr->disconnect_all;
# no reply means no ordering point: this connection sees them once they are done
my $seen = 0;
for (1 .. 50) {
    my $r = $m->get_multi(map { "cmf_nr$_" } 0 .. 99);
    if (scalar(keys %$r) == 99 && $r->{cmf_nr99} eq "z99" && $m->get("cmf_n") == 7) {
        $seen = 1; last
    }
    select(undef, undef, undef, 0.2);
}
$seen or die "noreply: not all applied after 10 s";
print "ok\n";
'''


def test_perl_cache_memcached_fast(gw, tmp_path):
    if subprocess.run(["perl", "-MCache::Memcached::Fast", "-e", "1"],
                      capture_output=True).returncode != 0:
        pytest.skip("libcache-memcached-fast-perl is not installed (scripts/install-deps.sh)")
    script = tmp_path / "cmf.pl"
    script.write_text(PERL)
    r = subprocess.run(["perl", str(script), str(gw.gateways[0].port), str(N_MULTI)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
