"""Data-integrity checker for the fault scenarios: the RandomTester of the original
rt/ suite (tests.md §3.3), made exact about what a read may return.

N worker threads each own a disjoint set of keys and drive real memcached clients
(pymemcache, text protocol) against one or more gateways. Per key a worker keeps the set
of values a read may legally return, following the consistency contract of the user
guide §6.1 and DECISIONS.md §2:

* a set that answered STORED makes that value the only acceptable one (an acknowledged
  set is never followed by a stale read);
* a set that failed (exception, SERVER_ERROR, NOT_STORED) leaves the key indeterminate:
  the old and the new value are both acceptable until the next successful set;
* a delete that answered DELETED or NOT_FOUND makes a miss the only acceptable result;
  a failed delete adds "miss" to the acceptable set (NOT_FOUND for a key that should
  exist is counted among the failures: a retried delete legitimately answers it);
* every value carries its key, a sequence number and a digest, so a mixed value, a value
  of another key, or a value that was never written is detected as such.

A client-side timeout is different: the gateway may still be retrying that request
(algorithms.md §5.1, up to -S attempts), so it could land after a later acknowledged set.
The worker therefore retires the key (it is no longer checked) and continues with a
fresh key name; retired keys are counted.

Errors are allowed (they are counted in `failures`); only `violations` are bugs.
"""
import hashlib
import random
import socket
import threading
import time

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheError, MemcacheServerError

MISS = None


def _digest(key, seq):
    return hashlib.sha1(("%s|%d|" % (key, seq)).encode()).hexdigest()[:12]


def make_value(key, seq, size):
    """The value of the seq-th write of key: "<key>|<seq>|<digest>|xxx..." (size bytes)."""
    head = "%s|%d|%s|" % (key, seq, _digest(key, seq))
    return (head + "x" * max(0, size - len(head))).encode()


def parse_value(key, raw):
    """Check that raw is a value make_value wrote for key.
    Returns (seq or None, problem or None)."""
    try:
        parts = raw.decode().split("|")
    except UnicodeDecodeError:
        return None, "garbage value (not utf-8)"
    if len(parts) != 4:
        return None, "garbage value"
    vkey, seq_s, digest, pad = parts
    if vkey != key:
        return None, "foreign value (belongs to key %r)" % vkey
    try:
        seq = int(seq_s)
    except ValueError:
        return None, "garbage sequence number"
    if _digest(key, seq) != digest or pad.strip("x"):
        return seq, "mixed/corrupt value"
    return seq, None


def _describe(v):
    if v is MISS:
        return "<miss>"
    s = v.decode("utf-8", "replace")
    return s.rstrip("x")[:100]


class _KeyState:
    __slots__ = ("name", "seq", "ok", "history")

    def __init__(self, name):
        self.name = name
        self.seq = 0              # sequence number of the last write attempt
        self.ok = {MISS}          # acceptable read results
        self.history = []         # last few (time, op, value, outcome) for reports

    def note(self, op, value, outcome):
        self.history.append((round(time.time(), 3), op, _describe(value), outcome))
        del self.history[:-8]


class Checker:
    """Background RandomTester. start() spawns the threads, stop() joins them.

    ports: gateway text ports (each operation picks one at random, so reads and writes of
    a key travel through different gateways when several are given).
    Bounded: each thread stops after max_ops operations or max_time seconds.
    """

    def __init__(self, ports, threads=2, keys=40, value_size=64, delete_ratio=0.08,
                 max_ops=10 ** 7, max_time=600.0, timeout=30.0, prefix=None, probe=None,
                 rmw_ratio=0.0, op_interval=0.0, host="127.0.0.1", thread_init=None):
        self.ports = list(ports)
        self.nthreads = threads
        self.nkeys = keys
        self.value_size = value_size
        self.delete_ratio = delete_ratio
        self.rmw_ratio = rmw_ratio        # gets + cas (add on a miss): the Update path
        self.op_interval = op_interval    # seconds between a thread's operations
        self.max_ops = max_ops
        self.max_time = max_time
        self.timeout = timeout
        self.probe = probe                # probe(key) -> text: replica states, for reports
        self.host = host                  # the gateways' address
        self.thread_init = thread_init    # run first in each worker (e.g. enter a netns)
        # (start, seconds, kind, outcome) of every operation, outcome "ok", "error" or
        # "timeout" (no answer within `timeout`): see latency_stats()
        self.samples = []
        self.prefix = prefix or "rt%d-%06x" % (int(time.time()) % 100000,
                                                random.getrandbits(24))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = []
        self._states = {}                 # thread index -> list of _KeyState
        self.ops = 0                      # operations whose outcome was checked
        self.reads_checked = 0
        self.failures = 0                 # allowed errors
        self.failure_kinds = {}
        self.retired = 0                  # keys dropped after a client timeout
        self.violations = []              # details of every contract violation
        self.started = None
        self.elapsed = 0.0

    # ---- lifecycle
    def start(self):
        self.started = time.time()
        for t in range(self.nthreads):
            th = threading.Thread(target=self._run, args=(t,), name="checker-%d" % t,
                                  daemon=True)
            self._threads.append(th)
            th.start()
        return self

    def stop(self, verify=True):
        """Stop the workers, join them, and (verify) read every live key once more."""
        self._stop.set()
        for th in self._threads:
            th.join(timeout=self.timeout * 3 + 10)
        self.elapsed = time.time() - (self.started or time.time())
        if verify:
            # in a thread of its own, set up like the workers (e.g. inside a netns)
            def final():
                if self.thread_init is not None:
                    self.thread_init()
                self._final_pass()
            th = threading.Thread(target=final, name="checker-final", daemon=True)
            th.start()
            th.join()
        return self

    def summary(self):
        return ("ops=%d reads=%d failures=%d retired=%d violations=%d"
                % (self.ops, self.reads_checked, self.failures, self.retired,
                   len(self.violations)))

    def report(self, limit=20):
        lines = [self.summary()]
        if self.failure_kinds:
            lines.append("failure kinds: %s" % ", ".join(
                "%s=%d" % kv for kv in sorted(self.failure_kinds.items())))
        for v in self.violations[:limit]:
            lines.append("VIOLATION %s" % v)
        return "\n".join(lines)

    # ---- worker
    def latency_stats(self, t0=None, t1=None):
        """Figures over the operations that started in [t0, t1) (time.time() values;
        None = unbounded): ops, ok, errors, timeouts (unanswered), max and p99 latency
        in seconds, and ops per second over the window."""
        lo = t0 if t0 is not None else float("-inf")
        hi = t1 if t1 is not None else float("inf")
        sel = [x for x in list(self.samples) if lo <= x[0] < hi]
        lats = sorted(x[1] for x in sel)
        span = ((t1 if t1 is not None else time.time())
                - (t0 if t0 is not None else (self.started or time.time())))
        n = len(lats)
        return {
            "ops": n,
            "ok": sum(1 for x in sel if x[3] == "ok"),
            "errors": sum(1 for x in sel if x[3] == "error"),
            "timeouts": sum(1 for x in sel if x[3] == "timeout"),
            "max": lats[-1] if n else 0.0,
            "p99": lats[min(n - 1, int(n * 0.99))] if n else 0.0,
            "rate": n / span if span > 0 else 0.0,
            "ok_rate": sum(1 for x in sel if x[3] == "ok") / span if span > 0 else 0.0,
        }

    def _client(self, port):
        return Client((self.host, port), connect_timeout=5, timeout=self.timeout,
                      no_delay=True)

    def _fail(self, kind):
        with self._lock:
            self.failures += 1
            self.failure_kinds[kind] = self.failure_kinds.get(kind, 0) + 1

    def _violate(self, ks, got, what, port):
        detail = ("key=%s got=%s acceptable=%s via=%d %s at=%.3f history=%s"
                  % (ks.name, _describe(got), sorted(_describe(v) for v in ks.ok), port,
                     what, time.time(), ks.history))
        if self.probe is not None:
            try:
                detail += " replicas=%s" % self.probe(ks.name)
            except Exception as e:  # noqa: BLE001 - diagnostics only
                detail += " replicas=<probe failed: %r>" % e
        with self._lock:
            self.violations.append(detail)

    def _check_read(self, ks, got, port):
        """One read result against the key's acceptable set."""
        with self._lock:
            self.reads_checked += 1
        if got is not MISS:
            _, problem = parse_value(ks.name, got)
            if problem:
                self._violate(ks, got, problem, port)
                return
        if got not in ks.ok:
            if got is MISS:
                what = "lost value: miss after acknowledged set"
            else:
                seq, _ = parse_value(ks.name, got)
                what = ("stale value (seq %d older than acknowledged)" % seq
                        if seq <= ks.seq else "value never written (seq %d)" % seq)
            self._violate(ks, got, what, port)
        ks.note("get", got, "ok")

    def _run(self, t):
        if self.thread_init is not None:
            self.thread_init()
        rnd = random.Random(hash((self.prefix, t)))
        states = [_KeyState("%s-t%d-k%d-g0" % (self.prefix, t, i)) for i in range(self.nkeys)]
        self._states[t] = states
        clients = {}
        deadline = self.started + self.max_time
        done = 0
        while not self._stop.is_set() and done < self.max_ops and time.time() < deadline:
            port = rnd.choice(self.ports)
            t_start, kind, outcome = time.time(), "?", "error"
            try:
                if port not in clients:
                    clients[port] = self._client(port)
                mc = clients[port]
                r = rnd.random()
                if r < self.rmw_ratio:
                    kind = "rmw"
                    self._op_rmw(mc, rnd.choice(states), rnd, port)
                elif r < 0.45:
                    kind = "set"
                    self._op_set(mc, rnd.choice(states), rnd)
                elif r < 0.45 + self.delete_ratio:
                    kind = "delete"
                    self._op_delete(mc, rnd.choice(states))
                elif r < 0.9:
                    kind = "get"
                    ks = rnd.choice(states)
                    got = mc.get(ks.name)
                    self._check_read(ks, got, port)
                else:
                    kind = "get_multi"
                    batch = rnd.sample(states, min(5, len(states)))
                    got = mc.get_many([ks.name for ks in batch])
                    for ks in batch:
                        self._check_read(ks, got.get(ks.name, MISS), port)
                outcome = "ok"
                with self._lock:
                    self.ops += 1
                done += 1
                if self.op_interval:
                    time.sleep(self.op_interval)
            except (socket.timeout, TimeoutError) as e:
                outcome = "timeout"
                # The gateway may still apply the request later: retire the keys this
                # operation may have touched (see the module comment).
                self._fail("timeout")
                self._retire(states, getattr(e, "_rt_key", None))
                self._drop(clients, port)
            except MemcacheServerError as e:
                # SERVER_ERROR: the gateway answered; the connection is fine
                self._fail(type(e).__name__)
                self.samples.append((t_start, time.time() - t_start, kind, outcome))
                continue
            except (MemcacheError, OSError) as e:
                self._fail(type(e).__name__)
                self._drop(clients, port)
                self.samples.append((t_start, time.time() - t_start, kind, outcome))
                time.sleep(0.05)
                continue
            self.samples.append((t_start, time.time() - t_start, kind, outcome))
        for c in clients.values():
            c.close()

    def _drop(self, clients, port):
        c = clients.pop(port, None)
        if c is not None:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - best effort
                pass

    def _retire(self, states, ks):
        """Replace ks (or, unknown, nothing) with a fresh key name."""
        if ks is None:
            return
        i = states.index(ks)
        base, gen = ks.name.rsplit("-g", 1)
        states[i] = _KeyState("%s-g%d" % (base, int(gen) + 1))
        with self._lock:
            self.retired += 1

    def _op_set(self, mc, ks, rnd):
        ks.seq += 1
        value = make_value(ks.name, ks.seq, self.value_size + rnd.randrange(0, 64))
        try:
            stored = mc.set(ks.name, value, noreply=False)
        except (socket.timeout, TimeoutError) as e:
            e._rt_key = ks
            raise
        except (MemcacheError, OSError):
            ks.ok.add(value)           # indeterminate: old or new
            ks.note("set", value, "error")
            raise
        if stored:
            ks.ok = {value}
            ks.note("set", value, "STORED")
        else:
            ks.ok.add(value)
            ks.note("set", value, "NOT_STORED")
            self._fail("not_stored")

    def _op_rmw(self, mc, ks, rnd, port):
        """A read-modify-write as applications write it: gets, then cas with the token
        (add when the key is absent).  Both run on the coordinator as Update."""
        try:
            got, token = mc.gets(ks.name)
        except (socket.timeout, TimeoutError) as e:
            e._rt_key = ks
            raise
        self._check_read(ks, got, port)
        ks.seq += 1
        value = make_value(ks.name, ks.seq, self.value_size + rnd.randrange(0, 64))
        op = "add" if got is MISS else "cas"
        try:
            if got is MISS:
                res = mc.add(ks.name, value, noreply=False)
            else:
                res = mc.cas(ks.name, value, token, noreply=False)
        except (socket.timeout, TimeoutError) as e:
            e._rt_key = ks
            raise
        except (MemcacheError, OSError):
            ks.ok.add(value)           # indeterminate: old or new
            ks.note(op, value, "error")
            raise
        if res:
            ks.ok = {value}
            ks.note(op, value, "STORED")
        else:
            # The key has one writer, so a refused add/cas means the gateway's retry of
            # an applied request, or a read that missed the newest version: counted.
            ks.ok.add(value)
            ks.note(op, value, "refused")
            self._fail("%s_refused" % op)

    def _op_delete(self, mc, ks):
        try:
            found = mc.delete(ks.name, noreply=False)   # False: NOT_FOUND
        except (socket.timeout, TimeoutError) as e:
            e._rt_key = ks
            raise
        except (MemcacheError, OSError):
            ks.ok.add(MISS)
            ks.note("delete", MISS, "error")
            raise
        if not found and MISS not in ks.ok:
            # Not a violation: a retried delete whose first attempt was applied answers
            # NOT_FOUND (algorithms.md §5.1); counted so that a pattern would show.
            self._fail("delete_not_found_after_set")
        ks.ok = {MISS}
        ks.note("delete", MISS, "DELETED" if found else "NOT_FOUND")

    # ---- final verification
    def _final_pass(self):
        """Read every live key once through every gateway (errors retried a little)."""
        for t, states in self._states.items():
            for port in self.ports:
                mc = self._client(port)
                try:
                    for ks in states:
                        for attempt in range(5):
                            try:
                                got = mc.get(ks.name)
                            except (MemcacheError, OSError):
                                self._fail("final_error")
                                mc.close()
                                mc = self._client(port)
                                time.sleep(0.5)
                                continue
                            self._check_read(ks, got, port)
                            with self._lock:
                                self.ops += 1
                            break
                finally:
                    mc.close()
