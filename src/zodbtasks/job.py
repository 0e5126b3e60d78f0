"""Jobs: what the service stores for each request to run a task."""
from __future__ import annotations

import datetime
import numbers
from collections.abc import Iterable
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any
from typing import Literal
from typing import TypedDict
from typing import TypeGuard
from typing import cast

from zope.interface import implementer

from zodbtasks import interfaces
from zodbtasks import limits
from zodbtasks import queues
from zodbtasks import schedule
from zodbtasks.records import CompactRecord
from zodbtasks.records import compact
from zodbtasks.records import expand

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from typing_extensions import Unpack

    from zodbtasks.schedule import Schedule

# -- the range of times and durations ----------------------------------------
#
# The service files a job under a time by the key ``floor(ms) << 20`` (the 20
# low bits are random, to keep keys apart) in BTrees of signed 64-bit keys. So
# the latest time a key can hold is (2**63 - 1) >> 20 milliseconds: MAX_TIME,
# in September 2248. A NaN, an infinity or a later time has no key at all, and
# a job holding one would make every claim fail.
#
# The times filed are sums: the ``now`` of a later call (a tick, a claim, the
# end of a run) plus a delay, an interval, a lease, a retry delay or a time to
# live. A check when a job is added cannot know that later ``now``, so the
# ranges are chosen so that every sum fits whatever it is: a duration is at
# most MAX_DURATION and a time the service is given (``now``, or a schedule's
# ``start`` and ``end``) at most MAX_NOW = MAX_TIME - MAX_DURATION. Schedules
# fire at most decades apart, well within MAX_DURATION.

#: The latest time, in whole seconds since the epoch, that an index key can
#: hold: 8796093022, 2248-09-26 UTC.
MAX_TIME = ((2 ** 63 - 1) >> 20) // 1000

#: The longest duration accepted, in seconds: 100 years of 365.25 days.
MAX_DURATION = 36525 * 86400

#: The latest ``now``, ``start`` or ``end`` accepted: 5640333022, 2148-09-25
#: UTC. Any time accepted plus any duration accepted is at most MAX_TIME.
MAX_NOW = MAX_TIME - MAX_DURATION

#: The shortest interval of a repeating job, in seconds: the index counts
#: milliseconds, and a shorter step would not move a time on.
MIN_INTERVAL = 0.001

#: The most retries a job may have, and the largest backoff factor: with
#: them ``retryDelay * retryBackoff ** retried`` stays a finite float
#: (100 ** 99 * MAX_DURATION is about 3e207).
MAX_RETRIES = 100
MAX_BACKOFF = 100

#: The most missed runs a repeating job replays: a claim counts up to this
#: many missed times, so the bound is the most work a claim does for it.
MAX_CATCH_UP = 1000

#: The largest count (``maxRuns``, ``maxLostLeases``): exact in JSON.
MAX_COUNT = 2 ** 53 - 1


def _utc(seconds):
    return datetime.datetime.fromtimestamp(
        seconds, datetime.timezone.utc).strftime('%Y-%m-%d')


def _shown(value):
    """``repr(value)``, short for an int of many digits."""
    if isinstance(value, int) and not -10 ** 30 < value < 10 ** 30:
        return 'an int of %d bits' % value.bit_length()
    return repr(value)


def _isNumber(value: object) -> TypeGuard[float]:
    # An int or a float, as the schedules take: other kinds of number
    # (Fraction, Decimal, numpy's ints) would reach them as they are.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def checkTime(value: object, name: str = 'now') -> float:
    """Return ``value`` if it is a number of seconds, else raise TypeError.

    (Any real number passes, a `fractions.Fraction` too: it is returned as
    it is.)
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            '%s must be a number of seconds since the epoch (int or float), '
            'not %s' % (name, _shown(value)))
    return cast(float, value)


def checkMoment(value: object, name: str = 'now') -> float:
    """Return ``value`` if it is a time the service can file, else raise.

    A time is an int or a float of seconds since the epoch from 0 to
    `MAX_NOW`; NaN and the infinities are refused.
    """
    if not _isNumber(value):
        raise TypeError(
            '%s must be a time in seconds since the epoch (int or float), '
            'not %s' % (name, _shown(value)))
    if not 0 <= value <= MAX_NOW:   # False for NaN too
        raise ValueError(
            '%s must be a finite time in seconds since the epoch, from 0 to '
            '%d (%s UTC), not %s' % (name, MAX_NOW, _utc(MAX_NOW),
                                     _shown(value)))
    return value


def checkDuration(value: object, name: str, positive: bool = False,
                  minimum: float | None = None) -> float:
    """Return ``value`` if it is a duration the service can use, else raise.

    A duration is an int or a float of seconds, at least ``minimum`` (0 by
    default; more than 0 if ``positive``) and at most `MAX_DURATION`.
    """
    if not _isNumber(value):
        raise TypeError('%s must be a number of seconds (int or float), '
                        'not %s' % (name, _shown(value)))
    if minimum is not None:
        fits = minimum <= value <= MAX_DURATION
        low = 'from %r' % minimum
    elif positive:
        fits = 0 < value <= MAX_DURATION
        low = 'more than 0 and'
    else:
        fits = 0 <= value <= MAX_DURATION
        low = 'from 0'
    if not fits:                    # False for NaN too
        raise ValueError(
            '%s must be a finite number of seconds, %s up to %d (100 years), '
            'not %s' % (name, low, MAX_DURATION, _shown(value)))
    return value


def _duration(positive=False, minimum=None):
    return lambda name, value: checkDuration(value, name, positive, minimum)


def _count(low, high):
    def check(name, value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError('%s must be a whole number (an int) from %d to '
                            '%d, not %s' % (name, low, high, _shown(value)))
        if not low <= value <= high:
            raise ValueError('%s must be a whole number from %d to %d, not %s'
                             % (name, low, high, _shown(value)))
    return check


def _flag(name, value):
    if not isinstance(value, bool):
        raise TypeError('%s must be True or False, not %r' % (name, value))


def _choice(*choices):
    def check(name, value):
        if not isinstance(value, str):
            raise TypeError('%s must be one of %s, not %r'
                            % (name, ', '.join(map(repr, choices)), value))
        if value not in choices:
            raise ValueError('%s must be one of %s, not %r'
                             % (name, ', '.join(map(repr, choices)), value))
    return check


def _queueName(name, value):
    queues.check_name(value, name)


def _priority(name, value):
    queues.check_priority(value, name)


def _limitName(name, value):
    limits.check_name(value, name)


def _backoff(name, value):
    if not _isNumber(value):
        raise TypeError('%s must be a factor (int or float) from 1 to %d, '
                        'not %s' % (name, MAX_BACKOFF, _shown(value)))
    if not 1 <= value <= MAX_BACKOFF:
        raise ValueError('%s must be a finite factor from 1 to %d, not %s'
                         % (name, MAX_BACKOFF, _shown(value)))


#: The options every job takes, with their defaults and checks. A default of
#: None means "not set"; checks run only on values that are set.
JOB_OPTIONS = {
    'leaseSeconds': (None, _duration(positive=True)),
    'atMostOnce': (False, _flag),
    'retries': (0, _count(0, MAX_RETRIES)),
    'retryDelay': (30, _duration()),
    'retryBackoff': (2, _backoff),
    'retryMaxDelay': (3600, _duration()),
    'ttl': (None, _duration()),
    'timeout': (None, _duration(positive=True)),
    'maxLostLeases': (3, _count(1, MAX_COUNT)),
    'queue': (queues.DEFAULT, _queueName),
    'priority': (queues.DEFAULT_PRIORITY, _priority),
    'limit': (None, _limitName),
}

#: The options only repeating jobs take.
CRON_OPTIONS = {
    'misfire': ('coalesce', _choice('coalesce', 'all', 'skip')),
    'misfireGrace': (60, _duration()),
    'catchUp': (10, _count(1, MAX_CATCH_UP)),
    'overlap': ('wait', _choice('wait', 'skip')),
    'maxRuns': (None, _count(1, MAX_COUNT)),
}

# The same options as keyword arguments, for type checkers (JOB_OPTIONS and
# CRON_OPTIONS hold the ranges; tests/test_typing.py keeps the keys equal).
# None is accepted for each and means "not set".


class JobOptions(TypedDict, total=False):
    """The options of `JOB_OPTIONS`, as keyword arguments of ``add``."""

    leaseSeconds: float | None
    atMostOnce: bool | None
    retries: int | None
    retryDelay: float | None
    retryBackoff: float | None
    retryMaxDelay: float | None
    ttl: float | None
    timeout: float | None
    maxLostLeases: int | None
    queue: str | None
    priority: int | None
    limit: str | None


class CronOptions(JobOptions, total=False):
    """The options of a repeating job: `JOB_OPTIONS` and `CRON_OPTIONS`."""

    misfire: Literal['coalesce', 'all', 'skip'] | None
    misfireGrace: float | None
    catchUp: int | None
    overlap: Literal['wait', 'skip'] | None
    maxRuns: int | None


class ScheduleArguments(TypedDict, total=False):
    """The schedule keywords of a `CronJob` beyond the field tuples."""

    second: Iterable[int]
    cron: str | None
    timezone: str | ZoneInfo | None
    interval: float | None
    start: float | None
    end: float | None


class CronJobArguments(CronOptions, ScheduleArguments, total=False):
    """What ``addCronJob`` takes as keywords: a schedule and options."""


def checkOptions(options: Mapping[str, object],
                 repeating: bool = False) -> None:
    """Validate job options; raise an error naming the first bad one."""
    known = dict(JOB_OPTIONS, **CRON_OPTIONS) if repeating else JOB_OPTIONS
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError('unknown job option(s) %s; accepted are %s'
                        % (', '.join(unknown), ', '.join(sorted(known))))
    for name, value in options.items():
        if value is not None:
            known[name][1](name, value)


class Lease(CompactRecord):
    """A worker's claim on a job, valid until ``expires``.

    It is an object of its own so that a heartbeat, which extends it from
    another transaction while the task runs, does not write the job.
    """

    #: When the database learnt that the run began, or None for a claim
    #: that, as far as the database knows, has not started. Leases stored
    #: before claims were told apart from runs count as started.
    started: float | None = 0.0
    #: Where the job waited before it was claimed, to give back a claim that
    #: never started: (index name, key, why it waited, when it was due).
    place: tuple[Any, ...] | None = None
    #: Set when the lease was taken from its worker (it expired, or the job
    #: was cancelled), so that a worker whose view of the database lags
    #: cannot renew or start it: their writes of the lease conflict.
    revoked = False

    def __init__(self, token: int, worker: str | None, expires: float,
                 claimed: float | None = None, started: float | None = None,
                 place: tuple[Any, ...] | None = None) -> None:
        self.token = token
        self.worker = worker
        self.expires = expires
        self.claimed = claimed
        self.started = started
        self.place = place
        self.key = None     # the key of its entry in the service's index

    def __repr__(self) -> str:
        return '<Lease of %r until %r>' % (self.worker, self.expires)

    def _p_resolveConflict(self, old, committed, new):
        # A heartbeat (which moves ``expires`` on) and the commit that says
        # the run began (``started``) may write a lease at once: keep both.
        # Any other difference is a real conflict, above all a revocation:
        # it was decided on a view that the other commit made stale.
        old, committed, new = expand(old), expand(committed), expand(new)
        if committed.get('revoked') or new.get('revoked'):
            raise ValueError('a revoked lease was written meanwhile')
        merged = dict(new)
        for name in set(old) | set(committed) | set(new):
            if name in ('expires', 'started'):
                continue
            if committed.get(name) != old.get(name) \
                    and new.get(name) != old.get(name):
                raise ValueError('conflicting changes to %s' % name)
            if committed.get(name) != old.get(name):
                merged[name] = committed.get(name)
        merged['expires'] = max(committed['expires'], new['expires'])
        starts = [s for s in (committed.get('started'), new.get('started'))
                  if s is not None]
        merged['started'] = min(starts) if starts else None
        return compact(type(self), merged)


@implementer(interfaces.IJob)
class Job(CompactRecord):
    """A request to run a task once, as soon as a worker can."""

    output = None
    error = None
    traceback = None
    claimed = None        # when a worker last claimed it
    started = None
    completed = None
    attempts = 0          # runs started, including retries and lost runs
    lostLeases = 0        # runs in a row whose worker lost the lease
    waitingForTask = None  # the task no worker that claimed it could find
    missingSince = None   # when a worker first could not find it
    retried = 0           # failed runs in a row that were retried
    failures = ()         # ((time, message), ...) of the latest failures
    ranOn = None          # the worker of the latest run
    history = ()          # (start, end, worker, status, error) of the runs
                          # before the latest one, oldest first
    log = ()
    progress = None
    data = None           # the mapping kept between runs (context.data)
    lease = None
    scheduledFor: float | None = None  # when it is due next, if it waits
    runDue = None         # when the latest run was due, if it had a time
    paused = False
    pausedFrom = None     # the status it had when it was paused
    expires = None        # when a finished job is removed (see ``ttl``)
    target = None         # the persistent object whose method is the task
    _why = None           # why it waits in the schedule (see the service)
    _counted = None       # what the service counts it as
    _listed = None        # (status, task) the service lists it under...
    _listKey = None       # ... and the key of its entry...
    _listShard = None     # ... in this shard of the listing
    _replayFrom = None
    # The options, see JOB_OPTIONS.
    leaseSeconds = None
    atMostOnce = False
    retries = 0
    retryDelay = 30
    retryBackoff = 2
    retryMaxDelay = 3600
    ttl = None
    timeout = None        # seconds a run may take; None: no limit
    maxLostLeases = 3     # lost leases after which the job fails
    queue = queues.DEFAULT  # the queue it waits in
    priority = queues.DEFAULT_PRIORITY  # 0-9: higher runs first
    limit = None          # the name of the limit it is bound by

    def __init__(self, id: int, task: str, input: Any,
                 created: float | None = None) -> None:
        self.id = id
        self.task = task
        self.input = input
        self.status = interfaces.QUEUED
        self.created = created

    def __repr__(self) -> str:
        return '<%s %r>' % (self.__class__.__name__, self.id)


_NO_SCHEDULE = dict(minute=(), hour=(), dayOfMonth=(), month=(), dayOfWeek=(),
                    second=(), cron=None, timezone=None, interval=None,
                    start=None, end=None)


@implementer(interfaces.ICronJob)
class CronJob(Job):
    """A job that runs on a schedule, or once after a delay.

    The schedule is stored as given and compiled by `zodbtasks.schedule`
    when first needed; the compiled form is not stored.
    """

    runs = 0              # scheduled runs started
    missedRuns = 0        # scheduled times that passed without their run
    lastMissed = None     # (time, count, what was done) of the latest miss
    waitingRun = False    # a run came due while the last one was going
    # The options, see CRON_OPTIONS.
    misfire = 'coalesce'
    misfireGrace = 60
    catchUp = 10
    overlap = 'wait'
    maxRuns = None

    # Defaults for schedules stored before these arguments existed.
    second: tuple[int, ...] = ()
    cron: str | None = None
    timezone: str | ZoneInfo | None = None
    interval: float | None = None
    start: float | None = None
    end: float | None = None

    #: The keyword arguments that describe a schedule.
    scheduleArguments = frozenset(_NO_SCHEDULE) | {'delay'}

    def __init__(self, id: int, task: str, input: Any,
                 minute: Iterable[int] = (), hour: Iterable[int] = (),
                 dayOfMonth: Iterable[int] = (), month: Iterable[int] = (),
                 dayOfWeek: Iterable[int] = (), delay: float | None = None,
                 created: float | None = None,
                 **kw: Unpack[ScheduleArguments]) -> None:
        super().__init__(id, task, input, created=created)
        self.update(minute, hour, dayOfMonth, month, dayOfWeek, delay, **kw)
        self.status = (interfaces.CRONJOB if self.delay is None
                       else interfaces.DELAYED)

    def update(self, minute: Iterable[int] = (), hour: Iterable[int] = (),
               dayOfMonth: Iterable[int] = (), month: Iterable[int] = (),
               dayOfWeek: Iterable[int] = (), delay: float | None = None,
               **kw: Unpack[ScheduleArguments]) -> None:
        unknown = set(kw) - set(_NO_SCHEDULE)
        if unknown:
            raise TypeError('unknown schedule argument(s): %s; accepted are %s'
                            % (', '.join(sorted(unknown)),
                               ', '.join(sorted(_NO_SCHEDULE))))
        spec: dict[str, Any] = dict(_NO_SCHEDULE, minute=minute, hour=hour,
                    dayOfMonth=dayOfMonth, month=month, dayOfWeek=dayOfWeek)
        spec.update(kw)
        for name in ('minute', 'hour', 'dayOfMonth', 'month', 'dayOfWeek',
                     'second'):
            spec[name] = _asTuple(spec[name], name)
        if delay is not None:
            checkDuration(delay, 'delay')
            given = [k for k, v in spec.items() if v != _NO_SCHEDULE[k]]
            if given:
                raise ValueError('a delayed job runs once and takes no '
                                 'schedule, but %s was given'
                                 % ', '.join(sorted(given)))
            compiled = None
        else:
            _checkTimes(spec)
            compiled = _compile(spec)
        # Everything is valid: only now change the job.
        for name, value in spec.items():
            setattr(self, name, value)
        self.delay = delay
        self._v_schedule = compiled
        if self.status in (interfaces.CRONJOB, interfaces.DELAYED):
            self.status = (interfaces.CRONJOB if delay is None
                           else interfaces.DELAYED)

    @property
    def schedule(self) -> Schedule | None:
        """The compiled schedule, or None for a delayed job."""
        compiled = getattr(self, '_v_schedule', None)
        if compiled is None and self.delay is None:
            compiled = self._v_schedule = _compile(
                {name: getattr(self, name) for name in _NO_SCHEDULE})
        return compiled

    def timeOfNextCall(self, now: float) -> float | None:
        checkTime(now)
        if self.delay is not None:
            return now + self.delay
        if (self.interval is not None and self.start is None
                and self.scheduledFor is not None):
            # An interval counts from the time the job was last due, not from
            # when a late tick ran it, so that it does not drift.
            return schedule.bounded(
                schedule.every(self.interval, anchor=self.scheduledFor),
                end=self.end).next_after(now)
        # Not None: only a delayed job has no compiled schedule.
        return cast('Schedule', self.schedule).next_after(now)


def _asTuple(value, name):
    if isinstance(value, (str, bytes)) or not hasattr(value, '__iter__'):
        raise TypeError('%s must be a tuple of ints, not %r' % (name, value))
    return tuple(value)


def _checkTimes(spec):
    """Refuse an interval, start or end that the service cannot file."""
    if spec['interval'] is not None:
        checkDuration(spec['interval'], 'interval', minimum=MIN_INTERVAL)
    for name in ('start', 'end'):
        if spec[name] is not None:
            checkMoment(spec[name], name)


def _compile(spec):
    """Build the schedule object for a stored schedule spec."""
    fields = {k: spec[k] for k in ('minute', 'hour', 'dayOfMonth', 'month',
                                   'dayOfWeek', 'second')}
    if spec['cron'] is not None or spec['interval'] is not None:
        given = sorted(k for k, v in fields.items() if v)
        if given:
            raise ValueError('%s cannot be combined with the field tuples '
                             '(%s)' % ('cron' if spec['cron'] is not None
                                       else 'interval', ', '.join(given)))
    if spec['cron'] is not None and spec['interval'] is not None:
        raise ValueError('give either cron or interval, not both')
    if spec['cron'] is not None:
        compiled = schedule.from_cron(spec['cron'], timezone=spec['timezone'])
    elif spec['interval'] is not None:
        if spec['timezone'] is not None:
            raise ValueError('an interval counts elapsed seconds and takes no '
                             'timezone, but timezone=%r was given'
                             % spec['timezone'])
        compiled = schedule.every(spec['interval'], anchor=spec['start'])
    else:
        compiled = schedule.from_fields(
            minute=fields['minute'], hour=fields['hour'],
            day_of_month=fields['dayOfMonth'], month=fields['month'],
            day_of_week=fields['dayOfWeek'], second=fields['second'],
            timezone=spec['timezone'])
    if spec['start'] is not None or spec['end'] is not None:
        for name in ('start', 'end'):
            if spec[name] is not None:
                checkTime(spec[name], name)
        compiled = schedule.bounded(compiled, start=spec['start'],
                                    end=spec['end'])
    return compiled
