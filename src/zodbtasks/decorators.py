"""Declare tasks with decorators, in the style of other job queues.

``@task`` registers a function as a named task. ``@delayed_task`` does the
same and makes calling the function add a job instead of running it.
``@periodic_task`` and ``@cron_task`` declare repeating jobs, which
`sync` creates, updates or removes in a service, the same way however often
it runs and in however many processes.

The service a call adds its job to is the `ITaskService` utility (a local
utility in a Zope site), or the one given with ``.using(service)``.

A decorated function keeps its signature for type checkers: calling it, and
``delay(...)``, take the function's arguments.
"""
from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any
from typing import Generic
from typing import ParamSpec
from typing import Protocol
from typing import TypeVar
from typing import cast

import zope.component
from BTrees.OOBTree import OOBTree
from zope.interface import implementer

from zodbtasks import interfaces
from zodbtasks.job import CronJob
from zodbtasks.job import CronOptions
from zodbtasks.job import JobOptions
from zodbtasks.job import checkDuration
from zodbtasks.job import checkOptions
from zodbtasks.limits import check_concurrency
from zodbtasks.limits import rate_interval

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from typing_extensions import Unpack

P = ParamSpec('P')
R = TypeVar('R')
#: What calling a decorated function gives: its result, or a `JobHandle`.
C = TypeVar('C')

#: The repeating jobs declared so far: task name -> schedule keywords.
declarations: dict[str, dict[str, Any]] = {}


class TaskOptions(JobOptions, total=False):
    """What `task` and `delayed_task` take: the defaults of the jobs, and
    the limit of the task (see `zodbtasks.limits`)."""

    concurrency: int | None
    rate: str | None


class RepeatingTaskOptions(CronOptions, total=False):
    """What `periodic_task` and `cron_task` take: as `TaskOptions`, with
    the options of repeating jobs."""

    concurrency: int | None
    rate: str | None


class TaskQueue(Protocol):
    """What the decorators use of a service (a `TaskService` has it)."""

    def add(self, task: str, input: object = None, startLater: bool = False,
            now: float | None = None, **options: Unpack[JobOptions]) -> int:
        ...

    def addCronJob(self, task: str, input: object = None, *,
                   delay: float | None = None, now: float | None = None,
                   **options: Unpack[CronOptions]) -> int:
        ...

    def getStatus(self, jobid: int) -> str:
        ...

    def getResult(self, jobid: int) -> Any:
        ...

    def getError(self, jobid: int) -> str | None:
        ...


@implementer(interfaces.ITask)
class FunctionTask:
    """The task utility for a decorated function.

    A job's input holds the call's arguments: ``{'args': [...], 'kwargs':
    {...}}``; no input means no arguments. ``jobOptions`` are the defaults
    of the jobs that run it.
    """

    #: At most this many of its jobs run at once, across all workers, and
    #: they start no faster than ``rate`` (see `zodbtasks.limits`).
    concurrency: int | None = None
    rate: str | None = None

    def __init__(self, func: Callable[..., object],
                 options: Mapping[str, object]) -> None:
        self.func = func
        self.jobOptions = options

    def __call__(self, service: object, jobid: int,
                 input: Mapping[str, Any] | None) -> object:
        input = input or {}
        return self.func(*input.get('args', ()), **input.get('kwargs', {}))

    def __repr__(self) -> str:
        return '<%s %s.%s>' % (type(self).__name__, self.func.__module__,
                               self.func.__qualname__)


class TaskFunction(Generic[P, R, C]):
    """What a decorator returns in place of the function.

    Calling it runs the function at once, except for a delayed task, where
    calling it adds a job. ``delay(...)`` always adds a job, and
    ``using(service, now=..., **options)`` gives a callable that adds jobs
    to a given service.

    For type checkers, ``P`` and ``R`` are the function's parameters and
    result, and ``C`` what calling it gives: ``R``, or `JobHandle` for a
    delayed task.
    """

    def __init__(self, func: Callable[P, R], name: str, task: FunctionTask,
                 delay: float | None = None) -> None:
        self.func = func
        self.name = name
        self.task = task
        self.delaySeconds = delay
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __call__(self, *args: P.args, **kw: P.kwargs) -> C:
        if self.delaySeconds is not None:
            return cast(C, self.delay(*args, **kw))
        return cast(C, self.func(*args, **kw))

    def run(self, *args: P.args, **kw: P.kwargs) -> R:
        """Run the function at once, in the caller's transaction."""
        return self.func(*args, **kw)

    def delay(self, *args: P.args, **kw: P.kwargs) -> JobHandle:
        """Add a job that calls the function with these arguments."""
        return self.using()(*args, **kw)

    def using(self, service: TaskQueue | None = None, now: float | None = None,
              **options: Unpack[JobOptions]) -> Callable[P, JobHandle]:
        """A callable that adds jobs to ``service`` (default: the utility)."""
        return _Enqueuer(self, service, now, options)

    def __repr__(self) -> str:
        return '<task %r>' % (self.name,)


class _Enqueuer(Generic[P]):

    def __init__(self, task: TaskFunction[P, Any, Any],
                 service: TaskQueue | None, now: float | None,
                 options: JobOptions) -> None:
        self.task = task
        self.service = service
        self.now = now
        self.options = options

    def __call__(self, *args: P.args, **kw: P.kwargs) -> JobHandle:
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

    def __init__(self, service: TaskQueue, jobid: int) -> None:
        self.service = service
        self.jobid = jobid

    @property
    def status(self) -> str:
        return self.service.getStatus(self.jobid)

    @property
    def ready(self) -> bool:
        """Whether the job has finished: completed, failed or cancelled."""
        return self.status in interfaces.FINISHED

    @property
    def result(self) -> Any:
        return self.service.getResult(self.jobid)

    @property
    def error(self) -> str | None:
        return self.service.getError(self.jobid)

    def __repr__(self) -> str:
        return '<JobHandle %r %s>' % (self.jobid, self.status)


def _defaultService() -> TaskQueue:
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


def task(name: str | None = None, **options: Unpack[TaskOptions]
         ) -> Callable[[Callable[P, R]], TaskFunction[P, R, R]]:
    """Register the decorated function as a task named ``name``.

    The default name is the function's dotted name. ``options`` (retries,
    ttl, queue, priority, ...) are the defaults of the jobs that run it;
    ``concurrency`` and ``rate`` bound its jobs across all workers.
    """
    def decorate(func: Callable[P, R]) -> TaskFunction[P, R, R]:
        return _register(func, name, options)
    return decorate


def delayed_task(delay: float = 0, name: str | None = None,
                 **options: Unpack[TaskOptions]
                 ) -> Callable[[Callable[P, R]], TaskFunction[P, R, JobHandle]]:
    """Like `task`, but calling the function adds a job, due ``delay``
    seconds after the next tick, and returns its `JobHandle`."""
    checkDuration(delay, 'delay')

    def decorate(func: Callable[P, R]) -> TaskFunction[P, R, JobHandle]:
        return _register(func, name, options, delay=delay)
    return decorate


def periodic_task(seconds: float, start_now: bool = False,
                  name: str | None = None,
                  **options: Unpack[RepeatingTaskOptions]
                  ) -> Callable[[Callable[P, R]], TaskFunction[P, R, R]]:
    """Declare a job that runs the function every ``seconds`` seconds.

    The first run is ``seconds`` after `sync` places it, or at once with
    ``start_now``.
    """
    spec: dict[str, Any] = {'interval': seconds}
    CronJob(0, 'check', None, **spec)      # refuse a bad interval now
    return _declare(spec, name, options, start_now)


def cron_task(cron: str | None = None, timezone: str | ZoneInfo | None = None,
              name: str | None = None, minute: Iterable[int] = (),
              hour: Iterable[int] = (), dayOfMonth: Iterable[int] = (),
              month: Iterable[int] = (), dayOfWeek: Iterable[int] = (),
              **options: Unpack[RepeatingTaskOptions]
              ) -> Callable[[Callable[P, R]], TaskFunction[P, R, R]]:
    """Declare a job that runs the function on a cron schedule.

    Give a cron expression, or the field tuples of `addCronJob`.
    """
    spec: dict[str, Any] = {k: v for k, v in dict(
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


def sync(service: Any, now: float | None = None,
         declared: Mapping[str, Mapping[str, Any]] | None = None
         ) -> tuple[list[str], list[str], list[str]]:
    """Make the repeating jobs of ``service`` match the declarations.

    A new declaration adds a job, a changed one updates its job's schedule,
    and a job whose declaration is gone is cancelled. Running it again
    changes nothing. Returns the names added, updated and removed.
    ``service`` is a `TaskService` (typed as Any: this module comes below
    the service, and sync stores its ``declaredJobs`` on it).
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
