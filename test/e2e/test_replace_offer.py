"""A replace offer that fails is made again and then given up, so one peer that cannot
take its copy never holds the replace forever (issue 10, case 3)."""
import signal
import time

import kumo


def test_failed_offer_is_retried_then_given_up():
    c = kumo.standard_cluster(nservers=2)
    try:
        mc = c.client()
        for i in range(200):
            assert mc.set("off-%d" % i, b"v%d" % i, noreply=False) is True
        x = c.start_server()
        xaddr = c.server_addr(2)
        kumo.wait_for(lambda: xaddr in c.status()[1], timeout=20, what="newcomer")
        # the newcomer hangs: it is in the new hash space but never pulls its copy
        x.proc.send_signal(signal.SIGSTOP)
        try:
            c.kumoctl("attach")
            time.sleep(1)
        finally:
            x.kill()          # its sessions break: every offer to it fails
        logs = lambda: [c.servers[i]["daemon"].log() for i in (0, 1)]  # noqa: E731
        kumo.wait_for(lambda: any("offer to %s failed 3 times; giving up" % xaddr in l
                                  for l in logs()),
                      timeout=60, what="offer given up")
        kumo.wait_for(lambda: all("replace copy finished" in l for l in logs()),
                      timeout=30, what="copy phase ended")
        for l in logs():
            if "giving up" in l:
                assert "attempt 1 of 3 failed" in l and "attempt 2 of 3 failed" in l
        # the cluster still serves every key
        for i in range(200):
            assert mc.get("off-%d" % i) == b"v%d" % i
    finally:
        c.close()
