"""Declare tasks with decorators, in the style of other job queues.

``@task`` registers a function as a named task. ``@delayed_task`` does the
same and makes calling the function add a job instead of running it.
``@periodic_task`` and ``@cron_task`` declare repeating jobs, which
`sync` creates, updates or removes in a service, the same way however often
it runs and in however many processes.

The service a call adds its job to is the `ITaskService` utility (a local
utility in a Zope site), or the one given with ``.using(service)``.
"""
import zope.component
from BTrees.OOBTree import OOBTree
from zope.interface import implementer

from zodbtasks import interfaces
from zodbtasks.job import CronJob
from zodbtasks.job import checkDuration
from zodbtasks.job import checkOptions
from zodbtasks.limits import check_concurrency
from zodbtasks.limits import rate_interval

#: The repeating jobs declared so far: task name -> schedule keywords.
declarations = {}


@implementer(interfaces.ITask)
class FunctionTask:
    """The task utility for a decorated function.

    A job's input holds the call's arguments: ``{'args': [...], 'kwargs':
    {...}}``; no input means no arguments. ``jobOptions`` are the defaults
    of the jobs that run it.
    """

    #: At most this many of its jobs run at once, across all workers, and
    #: they start no faster than ``rate`` (see `zodbtasks.limits`).
    concurrency = None
    rate = None

    def __init__(self, func, options):
        self.func = func
        self.jobOptions = options

    def __call__(self, service, jobid, input):
        input = input or {}
        return self.func(*input.get('args', ()), **input.get('kwargs', {}))

    def __repr__(self):
        return '<%s %s.%s>' % (type(self).__name__, self.func.__module__,
                               self.func.__qualname__)


class TaskFunction:
    """What a decorator returns in place of the function.

    Calling it runs the function at once, except for a delayed task, where
    calling it adds a job. ``delay(...)`` always adds a job, and
    ``using(service, now=..., **options)`` gives a callable that adds jobs
    to a given service.
    """

    def __init__(self, func, name, task, delay=None):
        self.func = func
        self.name = name
        self.task = task
        self.delaySeconds = delay
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __call__(self, *args, **kw):
        if self.delaySeconds is not None:
            return self.delay(*args, **kw)
        return self.func(*args, **kw)

    def run(self, *args, **kw):
        """Run the function at once, in the caller's transaction."""
        return self.func(*args, **kw)

    def delay(self, *args, **kw):
        """Add a job that calls the function with these arguments."""
        return self.using()(*args, **kw)

    def using(self, service=None, now=None, **options):
        """A callable that adds jobs to ``service`` (default: the utility)."""
        return _Enqueuer(self, service, now, options)

    def __repr__(self):
        return '<task %r>' % (self.name,)


class _Enqueuer:

    def __init__(self, task, service, now, options):
        self.task = task
        self.service = service
        self.now = now
        self.options = options

    def __call__(self, *args, **kw):
        service = self.service or _defaultService()
        input = {'args': list(args), 'kwargs': kw}
        if self.task.delaySeconds:
            jobid = service.addCronJob(self.task.name, input,
                                       delay=self.task.delaySeconds,
                                       now=self.now, **self.options)
        else:
            jobid = service.add(self.task.name, input, now=self.now,
                                **self.options)
        return JobHandle(service, jobid)


class JobHandle:
    """What application code keeps of a job it added."""

    def __init__(self, service, jobid):
        self.service = service
        self.jobid = jobid

    @property
    def status(self):
        return self.service.getStatus(self.jobid)

    @property
    def ready(self):
        """Whether the job has finished: completed, failed or cancelled."""
        return self.status in interfaces.FINISHED

    @property
    def result(self):
        return self.service.getResult(self.jobid)

    @property
    def error(self):
        return self.service.getError(self.jobid)

    def __repr__(self):
        return '<JobHandle %r %s>' % (self.jobid, self.status)


def _defaultService():
    service = zope.component.queryUtility(interfaces.ITaskService)
    if service is None:
        raise LookupError(
            'no task service to add the job to: register one as an '
            'ITaskService utility, or call .using(service)')
    return service


def _register(func, name, options, repeating=False, delay=None):
    options = dict(options)
    concurrency = check_concurrency(options.pop('concurrency', None))
    rate = options.pop('rate', None)
    if rate is not None:
        rate_interval(rate)
    checkOptions(options, repeating)
    name = name or '%s.%s' % (func.__module__, func.__qualname__)
    utility = FunctionTask(func, options)
    utility.concurrency, utility.rate = concurrency, rate
    zope.component.provideUtility(utility, interfaces.ITask, name=name)
    return TaskFunction(func, name, utility, delay)


def task(name=None, **options):
    """Register the decorated function as a task named ``name``.

    The default name is the function's dotted name. ``options`` (retries,
    ttl, queue, priority, ...) are the defaults of the jobs that run it;
    ``concurrency`` and ``rate`` bound its jobs across all workers.
    """
    def decorate(func):
        return _register(func, name, options)
    return decorate


def delayed_task(delay=0, name=None, **options):
    """Like `task`, but calling the function adds a job, due ``delay``
    seconds after the next tick, and returns its `JobHandle`."""
    checkDuration(delay, 'delay')

    def decorate(func):
        return _register(func, name, options, delay=delay)
    return decorate


def periodic_task(seconds, start_now=False, name=None, **options):
    """Declare a job that runs the function every ``seconds`` seconds.

    The first run is ``seconds`` after `sync` places it, or at once with
    ``start_now``.
    """
    spec = {'interval': seconds}
    CronJob(0, 'check', None, **spec)      # refuse a bad interval now
    return _declare(spec, name, options, start_now)


def cron_task(cron=None, timezone=None, name=None, minute=(), hour=(),
              dayOfMonth=(), month=(), dayOfWeek=(), **options):
    """Declare a job that runs the function on a cron schedule.

    Give a cron expression, or the field tuples of `addCronJob`.
    """
    spec = {k: v for k, v in dict(
        cron=cron, timezone=timezone, minute=tuple(minute), hour=tuple(hour),
        dayOfMonth=tuple(dayOfMonth), month=tuple(month),
        dayOfWeek=tuple(dayOfWeek)).items() if v not in (None, ())}
    CronJob(0, 'check', None, **spec)      # refuse a bad schedule now
    return _declare(spec, name, options, False)


def _declare(spec, name, options, start_now):
    def decorate(func):
        made = _register(func, name, options, repeating=True)
        declarations[made.name] = dict(spec, startNow=start_now)
        return made
    return decorate


def sync(service, now=None, declared=None):
    """Make the repeating jobs of ``service`` match the declarations.

    A new declaration adds a job, a changed one updates its job's schedule,
    and a job whose declaration is gone is cancelled. Running it again
    changes nothing. Returns the names added, updated and removed.
    """
    declared = declarations if declared is None else declared
    jobs = getattr(service, 'declaredJobs', None)
    if jobs is None:
        jobs = service.declaredJobs = OOBTree()
    added, updated, removed = [], [], []
    for name, spec in sorted(declared.items()):
        schedule = {k: v for k, v in spec.items() if k != 'startNow'}
        job = service.jobs.get(jobs.get(name, -1))
        if job is None or job.status in interfaces.FINISHED:
            jobid = service.addCronJob(name, {'args': [], 'kwargs': {}},
                                       now=now, **schedule)
            jobs[name] = jobid
            if spec.get('startNow'):
                service.runNow(jobid, now=now)
            added.append(name)
        elif _scheduleOf(job) != _scheduleOf(CronJob(0, name, None,
                                                     **schedule)):
            job.update(**schedule)
            service.reschedule(job.id)
            updated.append(name)
    for name in [n for n in jobs if n not in declared]:
        job = service.jobs.get(jobs.pop(name))
        if job is not None:
            service.cancel(job.id, now=now)
        removed.append(name)
    return added, updated, removed


def _scheduleOf(job):
    return {name: getattr(job, name) for name in CronJob.scheduleArguments}
