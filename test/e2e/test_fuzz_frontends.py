"""A short libFuzzer run (seconds) of the harnesses in test/fuzz/: the memcached text
parser alone; the text (classic + meta), binary and cloudy ports through the real
connection machinery; kumo-server's and kumo-manager's RPC ports (every method) and the
replace stream, each on a real daemon core.  Long runs: build/fuzz/<harness> -max_total_time=3600
<corpus dir> test/fuzz/corpus/<name> (test/fuzz/build.sh builds them)."""
import os
import shutil
import subprocess

import pytest

import kumo

SECONDS = int(os.environ.get("FUZZ_SECONDS", "5"))


@pytest.fixture(scope="module")
def fuzzers(tmp_path_factory):
    if not shutil.which("clang"):
        pytest.skip("clang is not installed: no libFuzzer")
    out = tmp_path_factory.mktemp("fuzz")
    r = subprocess.run([os.path.join(kumo.TOP, "test", "fuzz", "build.sh"), str(out)],
                       capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, KUMO_BUILD_DIR=kumo.BUILD))
    assert r.returncode == 0, r.stdout + r.stderr
    return out


@pytest.mark.parametrize("harness,corpus", [("fuzz_memtext", "memtext"),
                                            ("fuzz_frontend", "frontend"),
                                            ("fuzz_rpc_server", "rpc_server"),
                                            ("fuzz_rpc_manager", "rpc_manager"),
                                            ("fuzz_stream", "stream")])
def test_fuzz_short_run(fuzzers, tmp_path, harness, corpus):
    work = tmp_path / "corpus"
    work.mkdir()
    r = subprocess.run([str(fuzzers / harness), "-max_total_time=%d" % SECONDS,
                        "-rss_limit_mb=2048", "-timeout=10", "-artifact_prefix=%s/" % tmp_path,
                        str(work), os.path.join(kumo.TOP, "test", "fuzz", "corpus", corpus)],
                       capture_output=True, text=True, timeout=SECONDS + 120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Done " in r.stderr
