"""Heartbeats: the leases of a worker's claims last as long as the worker.

A worker holds each job it claimed under a lease that runs out unless it is
renewed. `Heartbeats` is a thread that renews every claim in hand, started
or not, after a third of its lease, so that a lease runs out only when its
worker died or lost the database for longer than that. It also ends a run
that overstays the job's ``timeout``.

It knows nothing of databases: the worker gives it the functions that renew
a lease and that end a run, and it calls them outside its lock.
"""
import threading
import time

from zodbtasks.interfaces import LeaseLost

#: Renew each claim after this part of its lease.
RENEW_AFTER = 1 / 3


class Claim:
    """A job this worker claimed: its lease and, once begun, its run."""

    def __init__(self, jobid, token, expires, length, timeout=None,
                 started=False):
        self.jobid = jobid
        self.token = token
        self.expires = expires      # when the lease ends, by the clock
        self.length = length        # seconds a renewal adds
        self.timeout = timeout      # seconds the run may take, or None
        self.started = started      # whether the database knows it began
        self.renewed = time.monotonic()
        self.began = None           # time.monotonic() when the run began
        self.timedOut = False
        self.lost = False           # the database said the lease is gone

    def __repr__(self):
        return '<Claim of job %s>' % self.jobid


class Heartbeats:
    """Renew the leases of the claims in hand; end runs past their timeout.

    ``renew(claims)`` extends the leases of several claims at once, in one
    transaction, and returns a dict of job id to the lease's new end, or
    to `LeaseLost` for a lease that is gone; a claim it leaves out could
    not be renewed this time and is tried again at the next tick.
    ``expire(claim)`` ends a run past its timeout.
    ``interval`` is the time between renewals of a claim; None renews after
    a third of its lease; 0 never renews (timeouts still apply).
    """

    def __init__(self, renew, expire, interval=None, tick=0.1):
        self.renew = renew
        self.expire = expire
        self.interval = interval
        self.tick = tick
        self._claims = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = None

    def hold(self, claim):
        with self._lock:
            self._claims[claim.jobid] = claim

    def begin(self, claim):
        """The claim's run begins now."""
        claim.began = time.monotonic()

    def lose(self, claim):
        """The lease is gone: drop the claim, and never run it."""
        claim.lost = True
        self.drop(claim)

    def drop(self, claim):
        with self._lock:
            if self._claims.get(claim.jobid) is claim:
                del self._claims[claim.jobid]

    def held(self):
        with self._lock:
            return list(self._claims.values())

    def due(self, now=None):
        """(claims to renew, runs past their timeout) at ``now``, a
        `time.monotonic` time."""
        now = time.monotonic() if now is None else now
        renew, late = [], []
        for claim in self.held():
            if claim.timeout is not None and claim.began is not None \
                    and now - claim.began >= claim.timeout:
                late.append(claim)
                continue
            every = (claim.length * RENEW_AFTER if self.interval is None
                     else self.interval)
            if every and now - claim.renewed >= every:
                renew.append(claim)
        return renew, late

    def beat(self):
        """Renew what is due and end what is late, once."""
        renew, late = self.due()
        for claim in late:
            self.drop(claim)
            claim.timedOut = True
            self.expire(claim)
        if not renew:
            return
        renewed = self.renew(renew)
        now = time.monotonic()
        for claim in renew:
            expires = renewed.get(claim.jobid)
            if expires is LeaseLost:
                self.lose(claim)
            elif expires is not None:
                claim.expires = expires
                claim.renewed = now

    def start(self, name):
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=name)
        self._thread.start()

    def _run(self):
        while not self._stopped.wait(self.tick):
            self.beat()

    def stop(self):
        self._stopped.set()
        if self._thread is not None and \
                self._thread is not threading.current_thread():
            self._thread.join()
