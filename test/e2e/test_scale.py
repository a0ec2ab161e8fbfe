"""The scale test bed (scale.py) in the suite: 12 servers with one and with two managers
by default, so that bugs that only appear with many destinations (a replace copy with a
5th destination used to fail forever) cannot come back silently; 100 servers x 100,000
keys (and 60 servers) with SCALE=1."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kumo  # noqa: E402
import scale  # noqa: E402

SCALE = os.environ.get("SCALE") == "1"


@pytest.fixture(autouse=True)
def _binaries():
    for n in ("manager", "server", "gateway", "kumoctl", "kumostat"):
        if not os.path.exists(kumo.BIN[n]):
            pytest.fail("binary not built: %s" % kumo.BIN[n])


def test_replace_with_many_destinations_12_servers():
    scale.run(nservers=12, nkeys=3000)


def test_replace_with_many_destinations_12_servers_two_managers():
    scale.run(nservers=12, nkeys=3000, managers=2)


@pytest.mark.skipif(not SCALE, reason="SCALE=1 runs the 60- and 100-server beds")
@pytest.mark.parametrize("nservers,nkeys", [(60, 100000), (100, 100000)])
def test_scale_large(nservers, nkeys):
    scale.run(nservers=nservers, nkeys=nkeys)
