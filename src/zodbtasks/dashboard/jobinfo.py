"""What the dashboard says about one job: its actions, schedule and runs."""
from zodbtasks import interfaces
from zodbtasks import schedule as schedules
from zodbtasks.display import moment
from zodbtasks.job import CronJob

#: How many next times of a schedule the job page shows.
NEXT_TIMES = 5

#: The job actions: URL name -> (label, service method name).
ACTIONS = {
    'cancel': ('Cancel', 'cancel'),
    'retry': ('Retry', 'retry'),
    'pause': ('Pause', 'pause'),
    'resume': ('Resume', 'resume'),
    'run-now': ('Run now', 'runNow'),
    'start': ('Start', 'startJob'),
}

#: The actions that the job list offers on many jobs at once.
BULK_ACTIONS = ('cancel', 'retry')


def lookup(service, jobid):
    """The job ``jobid`` or None (an id too large for the tree included)."""
    try:
        return service.jobs.get(jobid)
    except (TypeError, OverflowError, ValueError):
        return None


def possibleActions(job):
    """The URL names of the actions that make sense for ``job`` now."""
    status = job.status
    found = []
    if status == interfaces.STARTLATER:
        found.append('start')
    if status not in interfaces.FINISHED:
        found.append('cancel')
    if status in (interfaces.ERROR, interfaces.CANCELLED,
                  interfaces.RETRYING):
        found.append('retry')
    repeating = isinstance(job, CronJob) and job.delay is None
    if getattr(job, 'paused', False):
        found.append('resume')
    elif status not in interfaces.FINISHED and (
            status != interfaces.PROCESSING or repeating):
        found.append('pause')
    if status in (interfaces.DELAYED, interfaces.CRONJOB,
                  interfaces.RETRYING):
        found.append('run-now')
    return found


def describeSchedule(job):
    """A line saying when a cron job or a delayed job runs, or None."""
    if not isinstance(job, CronJob):
        return None
    if job.delay is not None:
        return 'once, %s seconds after the tick that places it' % (job.delay,)
    if job.cron is not None:
        text = 'cron %r' % (job.cron,)
    elif job.interval is not None:
        text = 'every %s seconds' % (job.interval,)
    else:
        fields = [('second', job.second), ('minute', job.minute),
                  ('hour', job.hour), ('dayOfMonth', job.dayOfMonth),
                  ('month', job.month), ('dayOfWeek', job.dayOfWeek)]
        text = ', '.join('%s %s' % (name, ','.join(map(str, values)))
                         for name, values in fields if values)
        text = text or 'every minute'
    if job.timezone:
        text += ' in %s' % (job.timezone,)
    if job.start is not None:
        text += ', from %s' % moment(job.start)
    if job.end is not None:
        text += ', until %s' % moment(job.end)
    return text


def nextRuns(job, now, count=NEXT_TIMES):
    """The next ``count`` times of a repeating job's schedule after ``now``.

    Returns (times, problem): a schedule that cannot be compiled any more
    (a time zone that went away, say) gives no times and a message.
    """
    if not isinstance(job, CronJob) or job.delay is not None:
        return [], None
    try:
        compiled = job.schedule
        if (job.interval is not None and job.start is None
                and job.scheduledFor is not None):
            # As the service does: an interval counts from the last due time.
            compiled = schedules.bounded(schedules.every(
                job.interval, anchor=job.scheduledFor), end=job.end)
        return schedules.next_times(compiled, now, count), None
    except Exception as error:
        return [], '%s: %s' % (type(error).__name__, error)


class Attempt:
    """One run of a job as far as the job remembers it."""

    def __init__(self, state, started=None, ended=None, worker=None,
                 error=None):
        self.state = state
        self.started = started
        self.ended = ended
        self.worker = worker
        self.error = error

    @property
    def duration(self):
        if self.started is None or self.ended is None \
                or self.ended < self.started:
            return None
        return self.ended - self.started

    def __repr__(self):
        return '<Attempt %s %r-%r>' % (self.state, self.started, self.ended)


_STATES = {interfaces.ERROR: 'failed', interfaces.COMPLETED: 'succeeded',
           'lost': 'lost its lease'}


def attempts(job, now):
    """The runs that ``job`` records, the latest first: the run in hand
    (from its lease), the latest one and those of its ``history``."""
    found = []
    lease = job.lease
    if job.status == interfaces.PROCESSING and lease is not None:
        began = lease.started or None
        found.append(Attempt(
            'running' if began else 'claimed', started=began or lease.claimed,
            worker=lease.worker))
    elif job.completed is not None:
        failed = bool(job.error)
        found.append(Attempt('failed' if failed else 'succeeded',
                             started=job.started, ended=job.completed,
                             worker=getattr(job, 'ranOn', None),
                             error=job.error if failed else None))
    for started, ended, worker, status, error in reversed(
            getattr(job, 'history', ())):
        found.append(Attempt(_STATES.get(status, status), started=started,
                             ended=ended, worker=worker, error=error))
    return found


def shownError(job):
    """(heading, error) of the error the job page shows, or (None, None).

    While a job runs, its stored error is that of an earlier run.
    """
    if not job.error:
        return None, None
    if job.status == interfaces.PROCESSING:
        return 'Error of the previous run', job.error
    return 'Error', job.error
