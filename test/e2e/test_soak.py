"""The soak (soak.py) in its short form: 3 minutes, a server killed, detached, restarted
and attached every 50 s, under the checker's load.  HEAVY=1 only (CI time); the one-hour
run is scripts/soak.sh."""
import os

import pytest

import soak

HEAVY = bool(os.environ.get("HEAVY"))


@pytest.mark.skipif(not HEAVY, reason="HEAVY=1 only: a 3-minute soak")
def test_soak_three_minutes_no_violation_no_growth():
    res = soak.run(minutes=float(os.environ.get("SOAK_MINUTES", "3")), kill_every=50.0,
                   out=lambda s: print(s, flush=True))
    assert res["violations"] == [], "\n".join(res["violations"][:10])
    assert res["cycles"] >= 2
    first, last = res["samples"][0], res["samples"][-1]
    for name in res["long_lived"]:
        # descriptors flat: the same connections at the end as at the start, give or take
        # the checker's reconnects
        assert last[name][1] <= first[name][1] + 16, (name, first[name], last[name])
