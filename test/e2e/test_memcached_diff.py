"""Differential tests: the same bytes to a real memcached 1.6 (Debian's, started here on a
free loopback port) and to kumo-gateway; the replies must be identical after renaming
CAS uniques (mcdiff.py).  Every deliberate difference is listed in DIFFERENCES below
with its reason, and in doc/protocol-additions.md."""
import shutil
import struct

import pytest

import kumo
import mcdiff
from mcdiff import bin_req, text_exchange

# Deliberate differences (doc/protocol-additions.md, "Differences from memcached"):
DIFFERENCES = {
    "mg flags h l u R N E I, ms I E, md C I T x, ma C":
        "need per-item access history, stale marks or a client-chosen CAS that a "
        "replicated store does not keep; answered 'CLIENT_ERROR invalid flag', as "
        "memcached answers a flag it does not know",
    "control bytes in keys": "refused (DECISIONS.md 3); memcached accepts them",
    "me": "the ME line's la/fetch/cls fields are memcached's internals: la=0 fetch=no cls=1",
    "value size limit": "memcached's -I counts its item header, so its largest value is a "
                        "little under 1 MiB; the gateway's -x is the value size itself",
    "ms without a readable length": "memcached answers CLIENT_ERROR and runs what follows "
    "(the client's data block) as commands; the gateway answers the same and closes",
    "refused storage line": "memcached runs the data block of a refused ms/set/cas line "
                            "(key too long, bad CAS token, negative flags) as commands; "
                            "the gateway always drops the block with its line",
    "flags over 32 bits": "memcached 1.6.18 cuts them to 32 bits; the gateway refuses",
    "incr on ' 12', '+12'": "memcached's strtoull takes them; the server takes digits only",
    "gat without a key": "memcached: END; the gateway: ERROR",
    "version": "1.6.21-kumofs-0.4.13: a memcached with meta commands, and the kumofs release",
    "stats, admin commands": "the gateway's own counters; memcached's memory administration "
                             "(stats detail, slabs, lru_crawler, cache_memlimit) is ERROR",
    "binary Invalid arguments": "memcached closes the connection after it, the gateway not",
    "binary verbosity": "memcached 1.6.18: Unknown command; the gateway: success",
    "bad key in a streamed multi-get": "a get line of more than 256 keys or 8 KiB is read "
        "key by key, so the values before a bad key are sent before the CLIENT_ERROR; "
        "memcached buffers the whole line and sends only the error",
    "long lines": "memcached closes the connection on a non-get line over 2 KiB without "
                  "a newline; the gateway answers CLIENT_ERROR line too long and goes on, "
                  "except after a storage line (closes too: its block must not run)",
}


@pytest.fixture(scope="module")
def pair():
    if not shutil.which("memcached"):
        pytest.skip("memcached is not installed (scripts/install-deps.sh installs it)")
    mc = mcdiff.Memcached()
    binport = kumo.free_port()
    c = kumo.standard_cluster(3, gateway_extra=["-b", "127.0.0.1:%d" % binport])
    try:
        yield mcdiff.Pair(mc.port, c.gateways[0].port, binport)
    finally:
        mc.close()
        c.close()


# ------------------------------------------------------------------ the points

def test_too_large_set_removes_the_key(pair):
    pair.text(b"set d_big 0 0 3\r\nMOO\r\nset d_big 0 0 1048577\r\n" + b"x" * 1048577 +
              b"\r\nget d_big\r\n",
              expect=b"STORED\r\nSERVER_ERROR object too large for cache\r\nEND\r\n")
    # add/cas refused as too large leave the key alone, in both
    pair.text(b"set d_big2 0 0 3\r\nMOO\r\nadd d_big2 0 0 1048577\r\n" + b"x" * 1048577 +
              b"\r\nget d_big2\r\n")
    # noreply: no error line, key still removed
    pair.text(b"set d_big3 0 0 3\r\nMOO\r\nset d_big3 0 0 1048577 noreply\r\n" +
              b"x" * 1048577 + b"\r\nget d_big3\r\n", expect=b"STORED\r\nEND\r\n")


def test_too_large_binary_set_removes_the_key(pair):
    ext = struct.pack(">II", 0, 0)
    r = pair.binary([bin_req(0x01, b"b_big", ext, b"MOO"),
                     bin_req(0x01, b"b_big", ext, b"x" * 1048577),
                     bin_req(0x00, b"b_big")])
    assert [x[1] for x in r] == [0, 3, 1]


def test_delete_of_expired_item_is_not_found(pair):
    pair.text(b"set d_exp 0 -1 1\r\nx\r\ndelete d_exp\r\n", expect=b"STORED\r\nNOT_FOUND\r\n")
    ext = struct.pack(">II", 0, 2592001)         # an absolute time in 1970: expired
    r = pair.binary([bin_req(0x01, b"b_exp", ext, b"x"), bin_req(0x04, b"b_exp")])
    assert [x[1] for x in r] == [0, 1]


def test_gat_with_past_expiry_returns_the_value_once(pair):
    pair.text(b"set d_gat 3 0 2\r\nhi\r\ngat -1 d_gat\r\nget d_gat\r\n",
              expect=b"STORED\r\nVALUE d_gat 3 2\r\nhi\r\nEND\r\nEND\r\n")
    pair.text(b"set d_gats 3 0 2\r\nhi\r\ngets d_gats\r\ngats -1 d_gats\r\nget d_gats\r\n")
    ext = struct.pack(">II", 0, 0)
    r = pair.binary([bin_req(0x01, b"b_gat", ext, b"hi"),
                     bin_req(0x1d, b"b_gat", struct.pack(">I", 2592001)),
                     bin_req(0x00, b"b_gat")])
    assert [x[1] for x in r] == [0, 0, 1] and r[1][4] == b"hi"


def test_http_request_closes_the_connection(pair):
    for line in (b"GET / HTTP/1.0\r\n", b"HEAD / HTTP/1.1\r\n", b"FOO bar HTTP/1.1 \r\n"):
        assert pair.text(line + b"version\r\n", close=True) == b"<EOF>"
    # a known command or no HTTP/ word: not closed
    pair.text(b"get d_http HTTP/1.1\r\nGET foo\r\nFOO bar HTTP\r\n")


def test_touch_keeps_the_cas(pair):
    pair.text(b"set d_cas 0 0 1\r\nA\r\ngets d_cas\r\n")
    pair.text(b"touch d_cas 100\r\ngets d_cas\r\ngat 100 d_cas\r\ngats 200 d_cas\r\n")
    pair.text(b"cas d_cas 0 0 1 {cas}\r\nB\r\nget d_cas\r\n",
              expect=b"STORED\r\nVALUE d_cas 0 1\r\nB\r\nEND\r\n")
    ext = struct.pack(">II", 0, 0)
    pair.binary([bin_req(0x01, b"b_cas", ext, b"A"), bin_req(0x00, b"b_cas"),
                 bin_req(0x1c, b"b_cas", struct.pack(">I", 100)),
                 bin_req(0x00, b"b_cas"),
                 lambda side: bin_req(0x01, b"b_cas", ext, b"B", cas=int(side.cas.last or 0)),
                 bin_req(0x00, b"b_cas")])


def test_storage_data_block_never_runs_as_a_command(pair):
    pair.text(b"set d_safe 0 0 1\r\nx\r\nms d_safe 11\r\nflush_all\r\n\r\nget d_safe\r\n")
    pair.text(b"ms d_safe2 11 zz\r\nflush_all\r\n\r\nms d_safe3 11 MX\r\nflush_all\r\n\r\n"
              b"ms d_safe4 11 Fx\r\nflush_all\r\n\r\nget d_safe\r\n")
    # memcached itself runs the block of an ms whose key is too long (DIFFERENCES)
    a, b = pair.both(b"ms " + b"k" * 300 + b" 12\r\nget d_safe\r\n\r\nmn\r\n")
    assert a.startswith(b"CLIENT_ERROR bad command line format\r\nVALUE d_safe ")
    assert b == b"CLIENT_ERROR bad command line format\r\nMN\r\n"


def test_multiget_over_256_keys_and_long_lines(pair):
    # the gateway used to refuse > 256 keys and lines over 72,448 bytes
    keys = [b"d_mg%04d" % i for i in range(1000)]
    pair.text(b"".join(b"set %s 0 0 4 noreply\r\n%s\r\n" % (k, k[-4:]) for k in keys[::7]))
    pair.text(b"get " + b" ".join(keys) + b"\r\n")
    pair.text(b"gets " + b" ".join(keys) + b" \r\n")
    long_keys = [b"d_l%03d" % i + b"y" * 240 for i in range(400)]     # a 100 KB line
    pair.text(b"set " + long_keys[399] + b" 1 0 1\r\nz\r\n")
    pair.text(b"get " + b" ".join(long_keys) + b"\r\nget d_mg0000\r\n")
    pair.text(b"gat 0 " + b" ".join(keys[:300]) + b"\r\n")
    # a bad key within the first 256 keys of a short line: memcached's exact error
    pair.text(b"get d_mg0000 " + b"k" * 251 + b" d_mg0007\r\n")
    # ... but in a streamed line (DIFFERENCES) the values before it are already sent
    a, b = pair.both(b"get d_mg0000 " + b" ".join(keys[1:300]) + b" " + b"k" * 251 +
                     b" d_mg0007\r\nget d_mg0007\r\n")
    assert a == b"CLIENT_ERROR bad command line format\r\nVALUE d_mg0007 0 4\r\n0007\r\nEND\r\n"
    assert b.startswith(b"VALUE d_mg0000 0 4\r\n0000\r\nVALUE d_mg0007 ") and \
        b.endswith(b"CLIENT_ERROR bad command line format\r\nVALUE d_mg0007 0 4\r\n0007\r\nEND\r\n")


def test_long_storage_line_never_runs_its_block(pair):
    # a whole long storage line is taken, as memcached takes it
    pair.text(b"set d_ll 0 0 5" + b" " * 9000 + b"\r\nhello\r\nget d_ll\r\n")
    pair.text(b"ms d_ll2 5" + b" " * 3000 + b"\r\nhello\r\nmg d_ll2 v\r\n")
    # an unended one (past 8 KiB without a newline) closes: its block cannot be told
    # from commands, and must not run (memcached closes too)
    for line in (b"set d_ll3 0 0 11", b"ms d_ll3 11"):
        with pair.gw.connect() as s:
            try:
                s.sendall(line + b" " * 20000 + b"\r\nflush_all\r\n")
                reply = mcdiff.read_until(s, lambda b: False)
            except ConnectionResetError:   # closed with our bytes unread: a reset
                reply = b"CLIENT_ERROR line too long\r\n<EOF>"
        assert reply == b"CLIENT_ERROR line too long\r\n<EOF>"
        pair.text(b"get d_ll\r\n", expect=b"VALUE d_ll 0 5\r\nhello\r\nEND\r\n")


# ------------------------------------------------------------------ meta protocol

def test_meta_get(pair):
    pair.text(b"ms m_g1 2\r\nhi\r\nmg m_g1\r\nmg m_g1 v\r\nmg m_g1 s v t f c k O123 q\r\n"
              b"mg m_nope v\r\nmg m_nope v q\r\nmg m_nope v k O55\r\nmg m_nope s t c f\r\n")
    pair.text(b"ms m_g2 2 T100 F5 c k O9\r\nhi\r\nmg m_g2 t f v\r\nmg m_g2 k c\r\n")
    pair.text(b"ms m_g3 3 T0 F4294967295\r\nabc\r\nmg m_g3 f t s\r\n"
              b"mg m_g3 T300 t v\r\nmg m_g3 T-1 v\r\nmg m_g3 v\r\n")


def test_meta_set_modes(pair):
    pair.text(b"ms m_s1 2 q\r\nhi\r\nms m_s1 2 MA\r\nyo\r\nmg m_s1 v\r\nms m_s1 2 MP\r\nab\r\n"
              b"mg m_s1 v\r\nms m_s1x 2 ME\r\nab\r\nms m_s1x 2 ME\r\nab\r\nms m_s1y 2 MR\r\nab\r\n"
              b"ms m_s1 2 MX\r\nab\r\nms m_s1 2 Ms\r\ncd\r\nmg m_s1 v\r\n")
    pair.text(b"ms m_s2 2 MS q\r\nab\r\nms m_s2 2 ME q\r\nab\r\nms m_s2 2 MR\r\nab\r\n"
              b"ms m_s2z 2 MA\r\nab\r\nms m_s2z 2 MP q\r\nab\r\n")


def test_meta_set_cas(pair):
    pair.text(b"ms m_c1 2 C1\r\nab\r\nms m_c1 2 c\r\nab\r\nmg m_c1 c\r\n")
    pair.text(b"ms m_c1 2 C{cas} c\r\ncd\r\nmg m_c1 v c\r\n")
    pair.text(b"ms m_c1 2 C1\r\nef\r\nms m_c1 2 C1 q\r\nef\r\nmg m_c1 v\r\n")


def test_meta_delete(pair):
    pair.text(b"ms m_d1 2\r\nab\r\nmd m_d1 q\r\nmd m_d1 q\r\nmd m_d1 k O1\r\nmg m_d1 v\r\n"
              b"ms m_d1 2\r\nab\r\nmd m_d1 k O2\r\n")


def test_meta_arithmetic(pair):
    pair.text(b"ma m_a1\r\nma m_a1 N0 J10\r\nma m_a1 v\r\nma m_a1 D5 v MD\r\n"
              b"ma m_a1 MI D100 v c\r\nma m_a1 M- D1000 v\r\nma m_a1 M+ v k O7\r\n")
    pair.text(b"ma m_a2 q\r\nma m_a2 N0 q\r\nma m_a2 q\r\nma m_a2 v q\r\nms m_a2x 1\r\nx\r\n"
              b"ma m_a2x\r\nma m_a2x q\r\nma m_a2 MZ\r\nma m_a2 Dx\r\n"
              b"ms m_a3 20\r\n18446744073709551615\r\nma m_a3 v\r\n")
    pair.text(b"ma w1 N0 q\r\nma w1 q\r\nma w1 v q\r\nma w1 v\r\nma w2 N0 q v\r\nma w3 N0 v\r\n"
              b"ma w4 N0 J5 MD D9 v\r\nma w4 v MD\r\n")
    # t returns the remaining TTL, T replaces it
    pair.text(b"ms m_a5 1 T100\r\n5\r\nma m_a5 t v\r\nma m_a5 T500 t v\r\nmg m_a5 t\r\n"
              b"ma m_a6 N50 t v\r\nma m_a6 t c\r\nma m_a7 t\r\nma m_a8 N0 t\r\n")


def test_meta_base64_keys(pair):
    pair.text(b"ms m6 2 b\r\nab\r\nms bTY2 2 b\r\nab\r\nmg bTY2 b v k\r\nmg m6 v\r\n"
              b"mg bTY2 b k s\r\nmd bTY2 b k\r\nmg bTY2 b v\r\n")
    pair.text(b"ms AAECAw== 2 b\r\nab\r\nmg AAECAw== b v k c\r\nmg AAEC= b v\r\n")


def test_meta_errors(pair):
    pair.text(b"mg\r\nms\r\nmg k zz\r\nmg k v v\r\nmg " + b"k" * 251 +
              b" v\r\nmd\r\nma\r\nme\r\n")
    pair.text(b"mg z4 O" + b"1" * 40 + b"\r\nmg z4 Tabc\r\nmg z4 T-1\r\nms z4 2 Fx\r\nab\r\n")
    pair.text(b"ms z1 2\r\nabc\r\n")
    pair.text(b"ms z7 2000000\r\n" + b"x" * 2000000 + b"\r\n")
    pair.text(b"mg  m_g1 v\r\nmg m_g1   v  \r\nmgx\r\nmnx\r\n")


def test_meta_pipeline_quiet(pair):
    # the usual quiet pipeline: misses and successes stay silent, mn ends it
    req = b"".join(b"ms m_p%d 1 q\r\n%d\r\n" % (i, i % 10) for i in range(50))
    req += b"".join(b"mg m_p%d v q k\r\n" % i for i in range(0, 100, 3))
    req += b"md m_p1 q\r\nmd m_p1 q\r\n"
    pair.text(req)


def test_me_debug(pair):
    a, b = pair.both(b"ms m_me 2\r\nab\r\nme m_me\r\nme m_none\r\n")
    # field values are memcached internals (DIFFERENCES["me"]): compare the shape
    assert a.split(b" ")[0:2] == b.split(b" ")[0:2]
    assert b.endswith(b"EN\r\n") and a.endswith(b"EN\r\n")


# ------------------------------------------------------------------ classic commands

def test_text_commands(pair):
    pair.text(b"set t1 5 0 3\r\nabc\r\nget t1\r\nappend t1 0 0 2\r\nde\r\nprepend t1 0 0 1\r\nz\r\n"
              b"get t1 t_missing t1\r\nadd t1 0 0 1\r\nx\r\nreplace t_missing 0 0 1\r\nx\r\n"
              b"incr t1 1\r\nset t2 0 0 2\r\n10\r\nincr t2 5\r\ndecr t2 100\r\nincr t_missing 1\r\n"
              b"delete t1\r\ndelete t1\r\ntouch t2 10\r\ntouch t_missing 10\r\n")
    pair.text(b"set t3 0 0 1 noreply\r\nx\r\nadd t3 0 0 1 noreply\r\ny\r\nget t3\r\n"
              b"delete t3 noreply\r\nget t3\r\nincr t3 1 noreply\r\n")
    pair.text(b"set t4 0 0 2\r\nabc\r\nget t4\r\nset t4 0 0 x\r\nget t4\r\n"
              b"incr t4 x\r\ntouch t4 x\r\nbogus\r\n\r\n")
    pair.text(b"get " + b"a" * 251 + b"\r\n")
    pair.text(b"get a " + b"a" * 251 + b" b\r\n")


def test_binary_commands(pair):
    ext = struct.pack(">II", 7, 0)
    pair.binary([bin_req(0x01, b"bt1", ext, b"v1", opaque=1),
                 bin_req(0x00, b"bt1", opaque=2), bin_req(0x0c, b"bt1"),
                 bin_req(0x0d, b"bt_missing"), bin_req(0x09, b"bt_missing"),
                 bin_req(0x02, b"bt1", ext, b"x"), bin_req(0x03, b"bt_missing", ext, b"x"),
                 bin_req(0x0e, b"bt1", b"", b"++"), bin_req(0x00, b"bt1"),
                 bin_req(0x05, b"bt2", struct.pack(">QQI", 5, 100, 0)),
                 bin_req(0x05, b"bt2", struct.pack(">QQI", 5, 100, 0)),
                 bin_req(0x06, b"bt2", struct.pack(">QQI", 500, 0, 0)),
                 bin_req(0x04, b"bt1"), bin_req(0x04, b"bt1"),
                 bin_req(0x1c, b"bt2", struct.pack(">I", 10)),
                 bin_req(0x1c, b"bt_missing", struct.pack(">I", 10)),
                 bin_req(0x11, b"bt3", ext, b"q"), bin_req(0x00, b"bt3")])


# ------------------------------------------------------------------ admin, and the rest of DIFFERENCES

def test_admin_and_error_cases(pair):
    # identical in both (flush_all last: the module's other tests set their own keys)
    pair.text(b"verbosity 1\r\nverbosity\r\nverbosity 1 noreply\r\ngat\r\ngats x k\r\n"
              b"touch k\r\ndelete k 0\r\ndelete k 5\r\nget\r\ngets\r\nSET k 0 0 1\r\n")
    pair.text(b"cas a_f2 0 0 1\r\nx\r\nset a_n 0 0 2\r\nab\r\nincr a_n 1\r\n"
              b"set a_n2 0 0 20\r\n18446744073709551615\r\nincr a_n2 1\r\n"
              b"incr a_n2 18446744073709551616\r\n")
    pair.binary([bin_req(0x0a), bin_req(0x09, b"a_zz"), bin_req(0x50),
                 bin_req(0x0e, b"a_missing", b"", b"x"), bin_req(0x20),
                 bin_req(0x1d, b"a_zz", struct.pack(">I", 1))])
    pair.text(b"set a_f1 0 0 1\r\nx\r\nflush_all\r\nget a_f1\r\nflush_all 0\r\n"
              b"flush_all noreply\r\nflush_all x\r\nflush_all -1\r\n")


def test_documented_differences(pair):
    """Each entry of DIFFERENCES that a short exchange shows, as it is documented."""
    a, b = pair.both(b"cas a_c 0 0 1 abc\r\nx\r\nset a_c -1 0 1\r\nx\r\n")
    assert a == b"CLIENT_ERROR bad command line format\r\nERROR\r\n" * 2
    assert b == b"CLIENT_ERROR bad command line format\r\n" * 2
    a, b = pair.both(b"set a_fl 4294967296 0 1\r\nx\r\nget a_fl\r\n")
    assert a == b"STORED\r\nVALUE a_fl 0 1\r\nx\r\nEND\r\n"
    assert b == b"CLIENT_ERROR bad command line format\r\nEND\r\n"
    a, b = pair.both(b"set a_i 0 0 3\r\n+12\r\nincr a_i 1\r\n")
    assert a == b"STORED\r\n13\r\n"
    assert b == b"STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
    for line in (b"ms k\r\n", b"ms k x\r\n", b"ms k 1x T0\r\n"):
        a = text_exchange(pair.mc, line + b"flush_all\r\n")             # reads on
        b = text_exchange(pair.gw, line + b"flush_all\r\n", close=True)  # hangs up
        assert a == b"CLIENT_ERROR bad command line format\r\nOK\r\n", (line, a)
        assert b == b"CLIENT_ERROR bad command line format\r\n<EOF>", (line, b)
    a, b = pair.both(b"gat 10\r\n")
    assert (a, b) == (b"END\r\n", b"ERROR\r\n")
    a, b = pair.both(b"version\r\n")
    assert a.startswith(b"VERSION 1.6.") and b == b"VERSION 1.6.21-kumofs-0.4.13\r\n"
    a, b = pair.both(b"stats detail on\r\ncache_memlimit 100\r\nslabs automove 1\r\n")
    assert a == b"OK\r\n" * 3 and b == b"ERROR\r\n" * 3
    with pytest.raises(AssertionError) as e:     # memcached closes, the gateway goes on
        pair.binary([bin_req(0x00, b"a_k", b"abcd")])
    assert "'EOF'" in str(e.value).split("gateway:")[0]
    assert "'EOF'" not in str(e.value).split("gateway:")[1]
