"""pytest fixtures: real kumofs clusters on loopback, cleaned up after each test."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kumo  # noqa: E402


def _require_binaries(*names):
    missing = [n for n in names if not os.path.exists(kumo.BIN[n])]
    if missing:
        pytest.fail("binaries not built: %s (build dir %s)" % (", ".join(missing), kumo.BUILD))


@pytest.fixture
def cluster():
    """An empty Cluster object; the test starts what it needs."""
    _require_binaries("manager", "server", "gateway", "kumoctl", "kumostat")
    c = kumo.Cluster()
    yield c
    c.close()


@pytest.fixture
def cluster3(request):
    """1 manager, 3 attached servers, 1 gateway, ready for memcached clients."""
    _require_binaries("manager", "server", "gateway", "kumoctl", "kumostat")
    c = kumo.standard_cluster(3)
    yield c
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(c.logs())
    c.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
