"""Outcomes that wait to be recorded together.

When a task leaves nothing to commit but its outcome, the worker keeps the
outcome in memory and records it with others in one commit. How many may
wait is the worker's crash window: if the worker is killed, their jobs run
again when their leases run out. `Unrecorded` holds them, with a limit on
how many and for how long. `Settler` decides when they are recorded: by a
thread of its own when the oldest waited long enough, before a run begins
when too many wait, and once more when the worker stops.
"""
import logging
import threading
import time

import transaction

# The processor's logger: its parts log under one name.
log = logging.getLogger('zodbtasks.processor')

#: How many finished runs may wait unrecorded, unless the worker says.
DEFAULT_LIMIT = 8


class Unrecorded:
    """Runs whose outcomes wait to be recorded, oldest first.

    ``limit`` is how many may wait, unrecorded, when a run begins: those
    waiting and those taken by a commit that has not ended. A thread whose
    run makes more records them, or waits for the commit that does, before
    it begins another: with ``threads`` threads, a worker killed at any
    moment has at most ``limit + threads`` finished or running jobs whose
    outcomes are not recorded. ``settleWithin`` is how long the oldest may
    wait while the worker does something else.
    """

    def __init__(self, limit=DEFAULT_LIMIT, settleWithin=0.2):
        if isinstance(limit, bool) or not isinstance(limit, int) \
                or limit < 0:
            raise ValueError('the number of outcomes that may wait '
                             'unrecorded must be a whole number of 0 or '
                             'more, not %r' % (limit,))
        self.limit = limit
        self.settleWithin = settleWithin
        self._runs = []
        self._recording = 0        # taken, their commit not ended
        self._lock = threading.Lock()
        self._ended = threading.Condition(self._lock)

    def add(self, run):
        """Keep ``run``; return whether more than ``limit`` are now
        unrecorded (see `full`)."""
        with self._lock:
            self._runs.append(run)
            return len(self._runs) + self._recording > self.limit

    def full(self):
        """Whether more than ``limit`` are unrecorded: no run may begin."""
        with self._lock:
            return len(self._runs) + self._recording > self.limit

    def waiting(self):
        """Whether some wait that no commit has taken."""
        with self._lock:
            return bool(self._runs)

    def take(self):
        """Take every run waiting, to record them; then `recorded` or
        `putBack` them."""
        with self._lock:
            runs, self._runs = self._runs, []
            self._recording += len(runs)
        return runs

    def recorded(self, runs):
        """The commit that recorded ``runs`` ended."""
        with self._ended:
            self._recording -= len(runs)
            self._ended.notify_all()

    def putBack(self, runs):
        """Runs taken but not recorded wait again, before newer ones."""
        with self._ended:
            self._recording -= len(runs)
            self._runs[:0] = runs
            self._ended.notify_all()

    def waitForCommits(self, timeout):
        """Wait until a commit that took runs ends, or ``timeout``."""
        with self._ended:
            if self._recording:
                self._ended.wait(timeout)

    def due(self):
        """Whether the oldest has waited ``settleWithin`` seconds."""
        with self._lock:
            return bool(self._runs) and (
                time.monotonic() - self._runs[0].ended >= self.settleWithin)

    def __len__(self):
        """How many are unrecorded: waiting, or taken by a commit."""
        with self._lock:
            return len(self._runs) + self._recording


class Settler:
    """When the outcomes waiting in ``unrecorded`` are recorded.

    ``step()`` records them (`zodbtasks.steps.Steps.step`; it returns None
    when it failed), ``recordAlone(run)`` records one on its own, ``wake``
    is an event set when the worker stops, ``stopping()`` says whether it
    was asked to stop, and ``transactor`` knows the tries per transaction
    and whether the storage is out of reach.
    """

    def __init__(self, unrecorded, step, recordAlone, transactor, wake,
                 stopping):
        self.unrecorded = unrecorded
        self.step = step
        self.recordAlone = recordAlone
        self.transactor = transactor
        self.wake = wake
        self.stopping = stopping

    def recordToLimit(self):
        """Before a run begins: record the outcomes waiting, or wait for
        the commit that records them, until no more than the limit are
        unrecorded (or the worker is stopped)."""
        while self.unrecorded.full() and not self.stopping():
            if not self.unrecorded.waiting():
                self.unrecorded.waitForCommits(0.05)
            elif self.step() is None:
                self.wake.wait(0.1)        # the storage is out of reach

    def settleAll(self):
        """The worker stops: record the outcomes waiting, trying a few
        times, then each on its own."""
        for attempt in range(self.transactor.settings.attempts):
            if not len(self.unrecorded):
                return
            if self.step() is None and self.transactor.down is None:
                break
        runs = self.unrecorded.take()
        for run in runs:
            self.recordAlone(run)
        self.unrecorded.recorded(runs)

    def loop(self):
        """Record the outcomes that waited ``settleWithin`` seconds while
        the worker runs a long job, in a transaction manager of its own
        (the settler thread runs this until the worker stops)."""
        tm = transaction.TransactionManager()
        while not self.stopping():
            self.wake.wait(self.unrecorded.settleWithin / 2 or 0.01)
            if self.unrecorded.due() and not self.stopping():
                try:
                    self.step(tm=tm)
                except Exception:
                    log.exception('recording the outcomes waiting failed')
