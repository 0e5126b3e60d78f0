"""Limits that jobs share across every worker and machine.

A limit has a name; jobs join it with the ``limit`` option (a task that
declares ``concurrency`` or ``rate`` puts its jobs in a limit named after
it). It bounds two things, either or both:

concurrency
    At most this many of its jobs are let through at once. A job let
    through holds a slot until its run ends (or it is cancelled, paused,
    or its worker loses the lease).
rate
    Its jobs start no faster than this: one start every ``interval``
    seconds. One job at a time is let through to wait for its start time,
    as a delayed job waits; its start lets the next one through.

Jobs that may not go yet wait in the limit's own tree, by priority then
age, out of the queue's lanes: workers never see them until they are let
through. The service does the moving (`TaskService._admit`); this module
holds the state and the arithmetic, and knows nothing of queues.
"""
import math
import re

import persistent
from BTrees.LLBTree import LLBTree

#: The largest concurrency accepted.
MAX_CONCURRENCY = 1000000

_UNITS = {'s': 1, 'sec': 1, 'second': 1, 'm': 60, 'min': 60, 'minute': 60,
          'h': 3600, 'hour': 3600, 'd': 86400, 'day': 86400}
_RATE = re.compile(r'\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+?)s?\s*\Z')


class Limit(persistent.Persistent):
    """The state of one named limit."""

    concurrency = None    # most jobs let through at once; None: no bound
    rate = None           # as given, e.g. '10/s'; None: no rate
    interval = None       # seconds between starts, from ``rate``
    nextStart = 0.0       # when the next job may start, under the rate
    released = None       # the job let through by the rate, not started

    def __init__(self, name):
        self.name = name
        self.holders = frozenset()   # ids of the jobs holding a slot
        self.waiting = LLBTree()     # rank key -> id of a job held back

    def __repr__(self):
        return '<Limit %r>' % (self.name,)

    def configure(self, concurrency, rate):
        """Set the bounds (checked); return whether anything changed."""
        check_concurrency(concurrency)
        interval = None if rate is None else rate_interval(rate)
        if (concurrency, rate) == (self.concurrency, self.rate):
            return False
        self.concurrency, self.rate, self.interval = concurrency, rate, \
            interval
        return True

    def holds(self, jobid):
        """Whether job ``jobid`` is let through (a slot, or the rate's
        turn); every job is, under a limit without bounds."""
        if self.concurrency is None and self.interval is None:
            return True
        return jobid in self.holders or self.released == jobid

    def canAdmit(self):
        """Whether one more job may be let through."""
        if self.concurrency is not None \
                and len(self.holders) >= self.concurrency:
            return False
        return self.interval is None or self.released is None

    def admit(self, jobid):
        """Let job ``jobid`` through; return when it may start at the
        earliest (0 without a rate)."""
        if self.concurrency is not None:
            self.holders = self.holders | {jobid}
        if self.interval is None:
            return 0.0
        self.released = jobid
        return self.nextStart

    def started(self, jobid, now):
        """Job ``jobid``, let through, starts at ``now``."""
        if self.interval is not None and self.released == jobid:
            # Rounded to the microsecond, so that sums of intervals such as
            # 0.1 land on the times they name.
            self.nextStart = round(max(self.nextStart, now) + self.interval,
                                   6)
            self.released = None

    def leave(self, jobid):
        """Job ``jobid`` gives back what it holds; whether it held any."""
        held = False
        if jobid in self.holders:
            self.holders = self.holders - {jobid}
            held = True
        if self.released == jobid:
            self.released = None
            held = True
        return held

    def describe(self):
        running = len(self.holders)
        parts = []
        if self.concurrency is not None:
            parts.append('%d of %d slots in use' % (running,
                                                    self.concurrency))
        if self.rate is not None:
            parts.append('at most %s' % self.rate)
        return ', '.join(parts) or 'no bounds'


def check_name(value, name='limit'):
    """Return ``value`` if it can name a limit, else raise."""
    if not isinstance(value, str):
        raise TypeError('%s must be the name of a limit (a str), not %r'
                        % (name, value))
    if not 0 < len(value) <= 200 or not value.isprintable() \
            or value != value.strip():
        raise ValueError('%s must be a name of 1 to 200 printable '
                         'characters, without spaces around it, not %r'
                         % (name, value))
    return value


def check_concurrency(value, name='concurrency'):
    """Return ``value`` if it is None or a number of slots, else raise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError('%s must be a whole number of jobs from 1 to %d, '
                        'not %r' % (name, MAX_CONCURRENCY, value))
    if not 1 <= value <= MAX_CONCURRENCY:
        raise ValueError('%s must be a whole number of jobs from 1 to %d, '
                         'not %r' % (name, MAX_CONCURRENCY, value))
    return value


def rate_interval(rate, name='rate'):
    """The seconds between starts that ``rate`` ('10/s', '100/m',
    '1000/h', '5/d') allows; raise for anything else."""
    if not isinstance(rate, str):
        raise TypeError("%s must be a string like '10/s', '100/m' or "
                        "'1000/h', not %r" % (name, rate))
    found = _RATE.match(rate.lower())
    unit = _UNITS.get(found.group(2)) if found else None
    if unit is None:
        raise ValueError("%s must be a number of jobs per second, minute, "
                         "hour or day, like '10/s', '100/m' or '1000/h', "
                         "not %r" % (name, rate))
    count = float(found.group(1))
    interval = unit / count if count else math.inf
    if not 0.001 <= interval <= 86400:
        raise ValueError('%s must allow from one job a day to 1000 a second, '
                         'not %r' % (name, rate))
    return interval
