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


class Lease(persistent.Persistent):
    """A worker's claim on a job, valid until ``expires``.

    It is an object of its own so that a heartbeat, which extends it from
    another transaction while the task runs, does not write the job.
    """

    def __init__(self, token, worker, expires):
        self.token = token
        self.worker = worker
        self.expires = expires
        self.key = None     # the key of its entry in the service's index

    def __repr__(self):
        return '<Lease of %r until %r>' % (self.worker, self.expires)


@implementer(interfaces.IJob)
class Job(persistent.Persistent):
    """A request to run a task once, as soon as a worker can."""

    output = None
    error = None
    traceback = None
    started = None
    completed = None
    attempts = 0
    log = ()
    progress = None
    lease = None
    leaseSeconds = None
    atMostOnce = False

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

    scheduledFor = None

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
