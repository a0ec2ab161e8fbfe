"""A daemon whose start-up fails after parsing its options (a log file or -lc cache it
cannot open) exits with status 1 and frees what it allocated.  Against an ASan build
(scripts/test-asan.sh) LeakSanitizer reports on stderr here, which is how the usage text
left behind by those early returns was found; against a plain build the leak check is
silent and only the status and message are checked."""
import os
import subprocess

import kumo


def run(argv):
    # reports to stderr, whatever log_path scripts/test-asan.sh set for the suite
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="print_stacktrace=1")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
    assert "Sanitizer" not in r.stderr, r.stderr[-3000:]
    return r


def test_unopenable_log_exits_1_without_leak(tmp_path):
    log = str(tmp_path / "no" / "such" / "dir" / "x.log")
    p = lambda: "127.0.0.1:%d" % kumo.free_port()   # noqa: E731
    for argv in ([kumo.BIN["manager"], "-l", p(), "-o", log],
                 [kumo.BIN["server"], "-l", p(), "-L", str(kumo.free_port()), "-m", p(),
                  "-s", str(tmp_path / "db.tch"), "-o", log],
                 [kumo.BIN["gateway"], "-m", p(), "-t", p(), "-o", log]):
        r = run(argv)
        assert r.returncode == 1, (argv[0], r.returncode, r.stderr[-2000:])
        assert "log" in r.stderr


def test_unopenable_local_cache_exits_1_without_leak(tmp_path):
    r = run([kumo.BIN["gateway"], "-m", "127.0.0.1:%d" % kumo.free_port(),
             "-t", "127.0.0.1:%d" % kumo.free_port(), "-lc", str(tmp_path / "no" / "dir.tch")])
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "-lc" in r.stderr
