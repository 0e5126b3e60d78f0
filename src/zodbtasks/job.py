"""Jobs: what the service stores for each request to run a task."""
import numbers

import persistent
from zope.interface import implementer

from zodbtasks import interfaces
from zodbtasks import schedule


def checkTime(value, name='now'):
    """Return ``value`` if it is a number of seconds, else raise TypeError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            '%s must be a number of seconds since the epoch (int or float), '
            'not %r' % (name, value))
    return value


def _seconds(name, value, allowZero=True):
    checkTime(value, name)
    if value < 0 or (value == 0 and not allowZero):
        raise ValueError('%s must be a %s number of seconds, got %r'
                         % (name, 'non-negative' if allowZero else 'positive',
                            value))


def _count(name, value, allowZero=True):
    if isinstance(value, bool) or not isinstance(value, int) \
            or value < (0 if allowZero else 1):
        raise (TypeError if not isinstance(value, int) else ValueError)(
            '%s must be a%s whole number, not %r'
            % (name, ' non-negative' if allowZero else ' positive', value))


def _flag(name, value):
    if not isinstance(value, bool):
        raise TypeError('%s must be True or False, not %r' % (name, value))


def _choice(*choices):
    def check(name, value):
        if value not in choices:
            raise ValueError('%s must be one of %s, not %r'
                             % (name, ', '.join(map(repr, choices)), value))
    return check


def _backoff(name, value):
    checkTime(value, name)
    if value < 1:
        raise ValueError('%s must be a factor of at least 1, not %r'
                         % (name, value))


#: The options every job takes, with their defaults and checks. A default of
#: None means "not set"; checks run only on values that are set.
JOB_OPTIONS = {
    'leaseSeconds': (None, lambda n, v: _seconds(n, v, allowZero=False)),
    'atMostOnce': (False, _flag),
    'retries': (0, _count),
    'retryDelay': (30, _seconds),
    'retryBackoff': (2, _backoff),
    'retryMaxDelay': (3600, _seconds),
    'ttl': (None, _seconds),
}

#: The options only repeating jobs take.
CRON_OPTIONS = {
    'misfire': ('coalesce', _choice('coalesce', 'all', 'skip')),
    'misfireGrace': (60, _seconds),
    'catchUp': (10, lambda n, v: _count(n, v, allowZero=False)),
    'overlap': ('wait', _choice('wait', 'skip')),
    'maxRuns': (None, lambda n, v: _count(n, v, allowZero=False)),
}


def checkOptions(options, repeating=False):
    """Validate job options; raise an error naming the first bad one."""
    known = dict(JOB_OPTIONS, **CRON_OPTIONS) if repeating else JOB_OPTIONS
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError('unknown job option(s) %s; accepted are %s'
                        % (', '.join(unknown), ', '.join(sorted(known))))
    for name, value in options.items():
        if value is not None:
            known[name][1](name, value)


class Lease(persistent.Persistent):
    """A worker's claim on a job, valid until ``expires``.

    It is an object of its own so that a heartbeat, which extends it from
    another transaction while the task runs, does not write the job.
    """

    #: When the database learnt that the run began, or None for a claim
    #: that, as far as the database knows, has not started. Leases stored
    #: before claims were told apart from runs count as started.
    started = 0.0
    #: Where the job waited before it was claimed, to give back a claim that
    #: never started: (index name, key, why it waited, when it was due).
    place = None

    def __init__(self, token, worker, expires, claimed=None, started=None,
                 place=None):
        self.token = token
        self.worker = worker
        self.expires = expires
        self.claimed = claimed
        self.started = started
        self.place = place
        self.key = None     # the key of its entry in the service's index

    def __repr__(self):
        return '<Lease of %r until %r>' % (self.worker, self.expires)


@implementer(interfaces.IJob)
class Job(persistent.Persistent):
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
    log = ()
    progress = None
    lease = None
    scheduledFor = None   # when it is due next, if it waits for a time
    runDue = None         # when the latest run was due, if it had a time
    paused = False
    pausedFrom = None     # the status it had when it was paused
    expires = None        # when a finished job is removed (see ``ttl``)
    target = None         # the persistent object whose method is the task
    _why = None           # why it waits in the schedule (see the service)
    _replayFrom = None
    # The options, see JOB_OPTIONS.
    leaseSeconds = None
    atMostOnce = False
    retries = 0
    retryDelay = 30
    retryBackoff = 2
    retryMaxDelay = 3600
    ttl = None
    timeout = None
    maxLostLeases = 3

    def __init__(self, id, task, input, created=None):
        self.id = id
        self.task = task
        self.input = input
        self.status = interfaces.QUEUED
        self.created = created

    def __repr__(self):
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
    second = ()
    cron = timezone = interval = start = end = None

    #: The keyword arguments that describe a schedule.
    scheduleArguments = frozenset(_NO_SCHEDULE) | {'delay'}

    def __init__(self, id, task, input, minute=(), hour=(), dayOfMonth=(),
                 month=(), dayOfWeek=(), delay=None, created=None, **kw):
        super().__init__(id, task, input, created=created)
        self.update(minute, hour, dayOfMonth, month, dayOfWeek, delay, **kw)
        self.status = (interfaces.CRONJOB if self.delay is None
                       else interfaces.DELAYED)

    def update(self, minute=(), hour=(), dayOfMonth=(), month=(), dayOfWeek=(),
               delay=None, **kw):
        unknown = set(kw) - set(_NO_SCHEDULE)
        if unknown:
            raise TypeError('unknown schedule argument(s): %s; accepted are %s'
                            % (', '.join(sorted(unknown)),
                               ', '.join(sorted(_NO_SCHEDULE))))
        spec = dict(_NO_SCHEDULE, minute=minute, hour=hour,
                    dayOfMonth=dayOfMonth, month=month, dayOfWeek=dayOfWeek)
        spec.update(kw)
        for name in ('minute', 'hour', 'dayOfMonth', 'month', 'dayOfWeek',
                     'second'):
            spec[name] = _asTuple(spec[name], name)
        if delay is not None:
            checkTime(delay, 'delay')
            if delay < 0:
                raise ValueError('delay must not be negative, got %r' % delay)
            given = [k for k, v in spec.items() if v != _NO_SCHEDULE[k]]
            if given:
                raise ValueError('a delayed job runs once and takes no '
                                 'schedule, but %s was given'
                                 % ', '.join(sorted(given)))
            compiled = None
        else:
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
    def schedule(self):
        """The compiled schedule, or None for a delayed job."""
        compiled = getattr(self, '_v_schedule', None)
        if compiled is None and self.delay is None:
            compiled = self._v_schedule = _compile(
                {name: getattr(self, name) for name in _NO_SCHEDULE})
        return compiled

    def timeOfNextCall(self, now):
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
        return self.schedule.next_after(now)


def _asTuple(value, name):
    if isinstance(value, (str, bytes)) or not hasattr(value, '__iter__'):
        raise TypeError('%s must be a tuple of ints, not %r' % (name, value))
    return tuple(value)


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
