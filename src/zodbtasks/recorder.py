"""Outcomes that wait to be recorded together.

When a task leaves nothing to commit but its outcome, the worker keeps the
outcome in memory and records it with others in one commit. How many may
wait is the worker's crash window: if the worker is killed, their jobs run
again when their leases run out. `Unrecorded` holds them, with a limit on
how many and for how long; the worker does the recording.
"""
import threading
import time

#: How many finished runs may wait unrecorded, unless the worker says.
DEFAULT_LIMIT = 8


class Unrecorded:
    """Runs whose outcomes wait to be recorded, oldest first.

    ``limit`` is how many may wait; ``settleWithin`` how long the oldest
    may wait while the worker does something else.
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
        self._lock = threading.Lock()

    def add(self, run):
        """Keep ``run``; return whether they must be recorded before the
        next run begins: more wait than ``limit``."""
        with self._lock:
            self._runs.append(run)
            return len(self._runs) > self.limit

    def full(self):
        """Whether more wait than ``limit``."""
        with self._lock:
            return len(self._runs) > self.limit

    def take(self):
        """Take every run waiting, to record them."""
        with self._lock:
            runs, self._runs = self._runs, []
        return runs

    def putBack(self, runs):
        """Runs taken but not recorded wait again, before newer ones."""
        with self._lock:
            self._runs[:0] = runs

    def due(self):
        """Whether the oldest has waited ``settleWithin`` seconds."""
        with self._lock:
            return bool(self._runs) and (
                time.monotonic() - self._runs[0].ended >= self.settleWithin)

    def __len__(self):
        with self._lock:
            return len(self._runs)
