"""The task service: a persistent queue and scheduler of jobs.

`TaskService` is the API of the reference packages and what zodbtasks adds
to it (`interfaces.IScheduledTaskService` is the contract). It holds the
data and the settings, and hands the work to its parts:

* `zodbtasks.indexes` -- where each job waits (the data layout is
  described there), with `zodbtasks.lease_index` for the workers' claims
  and `zodbtasks.catalog` for counts and listings;
* `zodbtasks.lifecycle` -- the policy: what a run's outcome or a missed
  time does to a job, as pure functions;
* `zodbtasks.transitions` -- applying that policy to the indexes;
* `zodbtasks.claims`, `zodbtasks.control`, `zodbtasks.views` -- the
  workers' claims, what people do to jobs, and looking at the queue;
* `zodbtasks.runner` -- running one task and making its `Outcome`.

The service knows nothing of threads: processors (`zodbtasks.processor`)
call its claim, run and record methods, each in a transaction of their own.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any
from typing import cast

import persistent
import transaction
import zope.component
from BTrees.OOBTree import OOBTree
from zope.interface import implementer

from zodbtasks import admission
from zodbtasks import counts as counting
from zodbtasks import doorbell
from zodbtasks import events
from zodbtasks import indexes
from zodbtasks import interfaces
from zodbtasks import limits
from zodbtasks import prefetch
from zodbtasks import registry
from zodbtasks import runner
from zodbtasks.catalog import Catalog
from zodbtasks.claims import Claims
from zodbtasks.claims import check_lease
from zodbtasks.claims import check_lease_seconds
from zodbtasks.control import Control
from zodbtasks.indexes import LAYOUT
from zodbtasks.indexes import MAX_JOB_ID
from zodbtasks.job import CronJob
from zodbtasks.job import Job
from zodbtasks.job import checkMoment
from zodbtasks.queues import check_name as check_queue_name
from zodbtasks.queues import check_names as check_queue_names
from zodbtasks.runner import Outcome
from zodbtasks.settings import Duration
from zodbtasks.settings import Factory
from zodbtasks.settings import Prefixes
from zodbtasks.transitions import Transitions
from zodbtasks.views import QueueView

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from zodbtasks.events import JobEvent
    from zodbtasks.job import CronJobArguments
    from zodbtasks.job import JobOptions
    from zodbtasks.job import Lease
    from zodbtasks.limits import Limit
    from zodbtasks.middleware import Middleware
    from zodbtasks.paths import ServicePath
    from zodbtasks.registry import WorkerRecord

__all__ = ['TaskService', 'Outcome', 'LAYOUT', 'MAX_JOB_ID']

_log = logging.getLogger('zodbtasks')


def _defaultProcessor():
    from zodbtasks.processor import SimpleProcessor
    return SimpleProcessor


class _Parts:
    """The parts that work for one copy of a service in memory."""

    def __init__(self, service):
        self.catalog = Catalog(service, lambda: service._now(None))
        self.indexes = indexes.Indexes(service, self.catalog)
        self.transitions = Transitions(service, self.indexes)
        self.claims = Claims(service, self.transitions)
        self.control = Control(self.transitions)
        self.view = QueueView(service, self.indexes)


@implementer(interfaces.IScheduledTaskService, interfaces.IWorkerRegistry)
class TaskService(persistent.Persistent):
    """A persistent queue and scheduler of jobs; see `ITaskService`."""

    taskInterface = interfaces.ITask
    __parent__ = __name__ = None
    #: How long a claim lasts, in seconds, unless the job says otherwise.
    leaseSeconds = Duration(60, positive=True)
    #: How long finished jobs are kept, in seconds, unless the job says
    #: otherwise; None keeps them until ``clean``.
    resultTTL = Duration(None, optional=True)
    #: While True, no job is claimed.
    paused = False
    #: A worker that claims a job whose task it does not know gives it back
    #: for this many seconds, so that a worker that knows it may take it...
    missingTaskDelay = Duration(10)
    #: ... and the job fails after this many seconds without such a worker.
    missingTaskTimeout = Duration(3600)
    #: The processor class that `startProcessing` starts (setting None
    #: goes back to the default, `zodbtasks.processor.SimpleProcessor`)
    #: and the keyword arguments it gets.
    processorFactory = Factory(_defaultProcessor, 'a processor class')
    processorArguments: dict[str, Any] = {'waitTime': 1.0}
    #: The modules (names or prefixes: ``'myapp'`` covers ``myapp.tasks``)
    #: whose functions, by dotted name, and whose classes' methods may be
    #: tasks without being registered. Empty: only registered tasks run.
    trustedModules = Prefixes()
    #: Records of workers dead or stopped for this long are dropped.
    workerDropAfter = Duration(3600, positive=True)
    #: The version of the data layout. A service unpickled from an older
    #: layout (such as a converted z3c.taskqueue service) has the class's 0
    #: and is upgraded by its first tick; see `zodbtasks.migration`.
    _layout = 0
    # Trees that older layouts lack (see `zodbtasks.indexes`).
    _counts = _countBuild = None
    _queues = _listing = _listBuild = _limits = _finished = None
    #: worker name -> `WorkerRecord`, made by the first registration.
    _workers = None
    # Of this copy in memory only (never stored): see `clock`, `keepEvents`.
    _v_clock: Callable[[], float] | None
    _v_keptEvents: list[JobEvent] | None

    def __init__(self) -> None:
        indexes.create(self)

    @property
    def _parts(self):
        try:
            return self._v_parts
        except AttributeError:
            parts = self._v_parts = _Parts(self)
            return parts

    @property
    def _indexes(self):
        return self._parts.indexes

    @property
    def _catalog(self):
        return self._parts.catalog

    # -- the clock and events ------------------------------------------------

    @property
    def clock(self) -> Callable[[], float]:
        """The function giving the time when a call gets no ``now``
        (`time.time` by default). Setting it affects this copy of the
        service in memory only: it is never stored."""
        return getattr(self, '_v_clock', None) or time.time

    @clock.setter
    def clock(self, func: Callable[[], float] | None) -> None:
        self._v_clock = func

    @clock.deleter
    def clock(self) -> None:
        self._v_clock = None

    def _now(self, now: float | None) -> float:
        """``now``, or the clock's time, once checked: a time that the
        indexes can file with any duration a job may hold added to it."""
        if now is None:
            return checkMoment(self.clock(), "now (the service's clock)")
        return checkMoment(now)

    def keepEvents(self) -> None:
        self._v_keptEvents = []

    def takeEvents(self) -> list[JobEvent]:
        kept = getattr(self, '_v_keptEvents', None) or []
        self._v_keptEvents = None
        return kept

    # -- adding jobs ---------------------------------------------------------

    def getAvailableTasks(self) -> dict[str, interfaces.ITask]:
        return dict(zope.component.getUtilitiesFor(self.taskInterface))

    def add(self, task: str | Callable[[Any], object], input: object = None,
            startLater: bool = False, now: float | None = None,
            **options: Unpack[JobOptions]) -> int:
        # Everything is checked before anything is written (an upgrade of
        # old data included): a refused call leaves no trace.
        now = self._now(now)
        name, target, options, limit = self._checkNewJob(task, input,
                                                         options, False)
        job = Job(0, name, input, created=now)
        self._addJob(job, target, options, limit, startLater, now)
        return job.id

    def addCronJob(self, task: str | Callable[[Any], object],
                   input: object = None, minute: Iterable[int] = (),
                   hour: Iterable[int] = (), dayOfMonth: Iterable[int] = (),
                   month: Iterable[int] = (), dayOfWeek: Iterable[int] = (),
                   delay: float | None = None, startLater: bool = False,
                   now: float | None = None,
                   **arguments: Unpack[CronJobArguments]) -> int:
        now = self._now(now)
        kw = cast('dict[str, Any]', arguments)   # split by name below
        options = {k: kw.pop(k) for k in list(kw)
                   if k not in CronJob.scheduleArguments}
        name, target, options, limit = self._checkNewJob(
            task, input, options, delay is None)
        # The job checks its schedule; it is not stored until it is valid.
        job = CronJob(0, name, input, minute, hour, dayOfMonth, month,
                      dayOfWeek, delay, created=now, **kw)
        self._addJob(job, target, options, limit, startLater, now)
        return job.id

    def _checkNewJob(self, task, input, options, repeating):
        """Validate a new job; return its task name, target, options and
        the limit its task declares, as (name, concurrency, rate), if any."""
        name, target, found = self._resolveNew(task)
        options = admission.job_options(name, found, options, repeating)
        limit = admission.job_limit(name, found, options, self._limits)
        admission.check_input(input)
        return name, target, options, limit

    def _addJob(self, job, target, options, limit, startLater, now):
        self._current(now)
        ix = self._indexes
        if limit is not None:
            ix.configure_limit(*limit, now)
        job.id = self._newId()
        for name, value in options.items():
            setattr(job, name, value)
        if target is not None:
            job.target = target
        ix.store(job, self._newId)
        if startLater:
            ix.set_status(job, interfaces.STARTLATER, now)
            return
        if isinstance(job, CronJob):
            ix.unplace(job)
        else:
            ix.enqueue(job, now)
        self._ringAfterCommit()
        self._parts.transitions.notify(events.JobQueued, job, now)

    def _ringAfterCommit(self):
        """Wake this process's idle workers once the transaction commits:
        a job may be due (see `zodbtasks.doorbell`)."""
        jar = self._p_jar
        if jar is not None:
            tm = jar.transaction_manager
            doorbell.ring_after_commit(
                tm.get() if tm is not None else transaction.get(), jar.db())

    def watchedOids(self):
        # The counts shards: every change of a job's status writes one.
        if self._counts is None:
            return None
        oids = {shard._p_oid for shard in self._counts}
        return None if None in oids else oids

    def _resolveNew(self, task):
        """Find what a new job will run: a name, a dotted name or a method."""
        target = getattr(task, '__self__', None)
        if isinstance(target, persistent.Persistent):
            name = task.__name__
            self._checkTrusted(type(target).__module__, 'the method %r of %r'
                               % (name, target))
            return name, target, task
        if not isinstance(task, str):
            raise TypeError('a task is given by its registered name, a dotted '
                            'name, or a method of a persistent object, not %r'
                            % (task,))
        found = zope.component.queryUtility(self.taskInterface, task)
        if found is None and '.' in task:
            self._checkTrusted(task.rpartition('.')[0], repr(task))
            found = runner.import_dotted(task)
        if found is None:
            names = sorted(self.getAvailableTasks())
            raise ValueError('no task is registered under the name %r%s; '
                             'registered tasks: %s' % (
                                 task, ' and it names no function that can be '
                                 'imported' if '.' in task else '',
                                 ', '.join(map(repr, names)) or 'none'))
        return task, None, found

    def _checkTrusted(self, module, what):
        why = runner.untrusted(self.trustedModules, module, what)
        if why is not None:
            raise ValueError(why)

    def _newId(self):
        return indexes.new_job_id()

    # -- counts, listings and limits -----------------------------------------

    def countsComplete(self) -> bool:
        return self._catalog.counts_complete()

    def listingComplete(self) -> bool:
        return self._catalog.listing_complete()

    def jobCounts(self) -> dict[tuple[str, str], int]:
        """{(status, task): number of jobs}."""
        return counting.by_status_and_task(self._catalog.all_counts(self.jobs))

    def queueCounts(self) -> dict[tuple[str, str], int]:
        """{(queue, status): number of jobs}."""
        return counting.by_queue(self._catalog.all_counts(self.jobs))

    def countJobs(self, status: str | None = None, task: str | None = None,
                  queue: str | None = None) -> int:
        _checkStatus(status)
        return sum(n for key, n in self._catalog.all_counts(self.jobs).items()
                   if status in (None, key[0]) and task in (None, key[1])
                   and queue in (None, counting.queue_of(key)))

    def buildCounts(self, limit: int = 1000) -> int:
        _checkCount(limit, 1, 'limit must be a whole number of jobs, 1 or '
                    'more, not %r')
        self._current(None)
        return self._catalog.build(self.jobs, limit)

    def listJobs(self, status: str | None = None, task: str | None = None,
                 limit: int = 100, cursor: str | None = None,
                 queue: str | None = None
                 ) -> tuple[list[interfaces.IJob], str | None]:
        _checkStatus(status)
        limit = _limit(limit)
        if queue is not None:
            check_queue_name(queue)
        statuses = (interfaces.LISTING_ORDER if status is None
                    else (status,))
        return self._parts.view.list_jobs(statuses, task, limit, cursor,
                                          queue)

    def setLimit(self, name: str, concurrency: int | None = None,
                 rate: str | None = None, now: float | None = None) -> None:
        now = self._now(now)
        limits.check_name(name)
        limits.check_concurrency(concurrency)
        if rate is not None:
            limits.rate_interval(rate)
        self._current(now)
        self._indexes.configure_limit(name, concurrency, rate, now)
        self._ringAfterCommit()

    def getLimits(self) -> dict[str, Limit]:
        return dict(self._limits.items()) if self._limits is not None else {}

    def waitingFor(self, jobid: int, now: float | None = None) -> str | None:
        """What the job waits for under its limit, in words, or None."""
        now = self._now(now)
        return self._parts.view.waiting_for(self._job(jobid), now)

    # -- managing jobs -------------------------------------------------------

    def _job(self, jobid):
        try:
            return self.jobs[jobid]
        except (KeyError, IndexError, TypeError):
            raise KeyError('no job with id %r in this service' % (jobid,))

    def startJob(self, jobid: int, now: float | None = None) -> bool:
        now = self._now(now)
        if self._job(jobid).status != interfaces.STARTLATER:
            # As in the reference package: a question answered, nothing
            # written (not even an upgrade of old data).
            return False
        self._current(now)
        self._parts.control.start_job(self._job(jobid), now)
        self._ringAfterCommit()
        return True

    def reschedule(self, jobid: int) -> None:
        self._current(None)
        self._parts.control.reschedule(self._job(jobid))

    def cancel(self, jobid: int, now: float | None = None) -> None:
        now = self._now(now)
        self._current(now)
        self._parts.control.cancel(self._job(jobid), now)

    def pause(self, jobid: int | None = None,
              now: float | None = None) -> None:
        if now is not None:
            now = self._now(now)
        self._current(now)
        if jobid is None:
            self.paused = True
        else:
            job = self._job(jobid)
            self._parts.control.pause(job, now, now if now is not None
                                      else self._now(None))

    def resume(self, jobid: int | None = None,
               now: float | None = None) -> None:
        now = self._now(now)
        self._current(now)
        if jobid is None:
            self.paused = False
        else:
            self._parts.control.resume(self._job(jobid), now)
        self._ringAfterCommit()

    def isPaused(self, jobid: int | None = None) -> bool:
        return self.paused if jobid is None else self._job(jobid).paused

    def runNow(self, jobid: int, now: float | None = None) -> None:
        now = self._now(now)
        self._current(now)
        self._parts.control.run_now(self._job(jobid), now)
        self._ringAfterCommit()

    def retry(self, jobid: int, now: float | None = None) -> None:
        now = self._now(now)
        self._current(now)
        self._parts.control.retry(self._job(jobid), now)
        self._ringAfterCommit()

    def clean(self, status: str | Iterable[str] = interfaces.FINISHED
              ) -> None:
        if isinstance(status, str):
            status = (status,)
        unknown = [s for s in status if s not in interfaces.FINISHED]
        if unknown:
            raise ValueError('clean removes finished jobs only; %s is not '
                             'one of %s' % (', '.join(map(repr, unknown)),
                                            ', '.join(interfaces.FINISHED)))
        self._current(None)
        for name in status:
            self._indexes.drop_status(name)

    def remove(self, jobid: int) -> bool:
        job = self.jobs.get(jobid)
        if job is None:
            return False
        if job.status not in interfaces.FINISHED:
            raise ValueError('job %r is %r; only finished jobs (%s) can be '
                             'removed' % (jobid, job.status,
                                          ', '.join(interfaces.FINISHED)))
        self._current(None)
        self._indexes.forget(job)
        return True

    def purgeExpired(self, now: float | None = None,
                     limit: int | None = None) -> int:
        return self._indexes.purge(self._now(now), limit)

    def getStatus(self, jobid: int) -> str:
        return self._job(jobid).status

    def getResult(self, jobid: int) -> Any:
        return self._job(jobid).output

    def getError(self, jobid: int) -> str | None:
        return self._job(jobid).error

    # -- processor threads (`zodbtasks.threads` keeps them) ------------------

    def startProcessing(self, path: ServicePath | None = None) -> None:
        """Start a processor thread for this service. ``path`` is the
        slash-separated path of keys from the database root to it (default:
        looked up). A service not stored in a database yet is not processed:
        nothing happens but a warning, as in the reference package."""
        if self._p_jar is None:
            _log.warning('not processing %r: it is not stored in a database '
                         'yet (add it and commit first)', self)
            return
        from zodbtasks import threads
        threads.startProcessing(self, path)

    def stopProcessing(self) -> None:
        if self._p_jar is not None:
            from zodbtasks import threads
            threads.stopProcessing(self)

    def isProcessing(self) -> bool:
        if self._p_jar is None:
            return False
        from zodbtasks import threads
        return threads.isProcessing(self)

    # -- looking at the queue ------------------------------------------------

    def oldestQueued(self, queues: str | Iterable[str] | None = None
                     ) -> interfaces.IJob | None:
        return self._parts.view.oldest_queued(check_queue_names(queues))

    def overdueJobs(self, now: float | None = None,
                    limit: int = 10) -> list[interfaces.IJob]:
        return self._parts.view.overdue(self._now(now), _limit(limit))

    def upcomingJobs(self, now: float | None = None, limit: int = 10,
                     repeating: bool = True) -> list[interfaces.IJob]:
        return self._parts.view.upcoming(self._now(now), _limit(limit),
                                         repeating)

    def expiredLeases(self, now: float | None = None,
                      limit: int = 10) -> list[interfaces.IJob]:
        return self._parts.view.expired_leases(self._now(now), _limit(limit))

    def hasJobsWaiting(self, now: float | None = None,
                       queues: str | Iterable[str] | None = None) -> bool:
        now = self._now(now)
        queues = check_queue_names(queues)
        if self._layout != LAYOUT:
            return True     # the claim that follows upgrades the data
        return self._parts.view.has_jobs_waiting(now, queues)

    def isIdle(self, now: float | None = None,
               queues: str | Iterable[str] | None = None) -> bool:
        now = self._now(now)
        queues = check_queue_names(queues)
        if self._layout != LAYOUT:
            return False
        return self._parts.view.is_idle(now, queues)

    # -- claims and leases ---------------------------------------------------

    def claimNextJob(self, now: float | None = None, worker: str | None = None,
                     lease: float | None = None, spread: bool = False,
                     queues: str | Iterable[str] | None = None) -> int | None:
        now = self._now(now)
        lease = check_lease_seconds(lease)
        queues = check_queue_names(queues)
        self._current(now)
        return self._parts.claims.claim_next(now, worker, lease, spread,
                                             queues=queues)

    def claimJobs(self, now: float | None = None, count: int = 1,
                  worker: str | None = None, lease: float | None = None,
                  spread: bool = False, start: int | None = None,
                  queues: str | Iterable[str] | None = None) -> list[int]:
        now = self._now(now)
        lease = check_lease_seconds(lease)
        queues = check_queue_names(queues)
        _checkCount(count, 0, 'count must be an int of 0 or more, not %r')
        self._current(now)
        return self._parts.claims.claim_jobs(now, count, worker, lease,
                                             spread, start, queues)

    def prefetch(self, jobids: Iterable[int]) -> None:
        prefetch.jobs(self, jobids)

    def heartbeat(self, jobid: int, token: int, now: float | None = None,
                  seconds: float | None = None, started: bool = True) -> float:
        now = self._now(now)
        check_lease_seconds(seconds)
        return self._parts.claims.heartbeat(self._job(jobid), token, now,
                                            seconds, started)

    def markStarted(self, jobid: int, token: int,
                    now: float | None = None) -> None:
        now = self._now(now)
        lease = check_lease(self._job(jobid), token)
        if lease.started is None:
            lease.started = now

    def releaseClaim(self, jobid: int, token: int, now: float | None = None,
                     delay: float | None = None) -> None:
        now = self._now(now)
        check_lease_seconds(delay)
        self._parts.claims.release(self._job(jobid), token, now, delay)

    def taskMissing(self, jobid: int, token: int, reason: str,
                    now: float | None = None) -> str:
        now = self._now(now)
        job = self._job(jobid)
        self._parts.claims.task_missing(job, token, reason, now)
        return job.status

    def checkLease(self, jobid: int, token: int) -> Lease:
        return check_lease(self._job(jobid), token)

    # -- runs ----------------------------------------------------------------

    def processNext(self, now: float | None = None, jobid: int | None = None,
                    token: int | None = None,
                    heartbeat: Callable[[], float | None] | None = None
                    ) -> bool:
        fixed = now is not None
        now = self._now(now)
        parts = self._parts
        if jobid is None:
            self._current(now)
            claimed = parts.claims.claim(now)
            if claimed is None:
                return False
            job = claimed[0]
        else:
            job = self._job(jobid)
            if token is not None:
                check_lease(job, token)
            elif job.status in interfaces.FINISHED:
                return False
            elif job.status != interfaces.PROCESSING:
                if self._unplaced:
                    parts.transitions.place_new_jobs(now)
                self._indexes.unindex(job)
                parts.transitions.start_run(job, now)
        parts.transitions.conclude(job, self._execute(job, now, heartbeat,
                                                      fixed))
        return True

    def process(self, now: float | None = None) -> None:
        # Returns None, as the reference package's did.
        now = self._now(now)
        while self.processNext(now):
            pass

    def runClaimed(self, jobid: int, token: int, now: float | None = None,
                   heartbeat: Callable[[], float | None] | None = None,
                   missing: bool = False,
                   middlewares: Iterable[Middleware] = ()) -> Outcome:
        fixed = now is not None
        now = self._now(now)
        job = self._job(jobid)
        check_lease(job, token)
        return self._execute(job, now, heartbeat, fixed, missing,
                             middlewares)

    def _execute(self, job, now, heartbeat=None, fixed=True, missing=False,
                 middlewares=()):
        # The connection may use its own transaction manager, not the
        # thread's default one (``db.transaction()`` does that).
        jar = self._p_jar
        if jar is not None and jar.transaction_manager is not None:
            txn = jar.transaction_manager.get()
        else:
            txn = transaction.get()
        return runner.execute(self, job, now, txn, heartbeat,
                              None if fixed else self.clock, missing,
                              middlewares)

    def recordOutcome(self, jobid: int, token: int, outcome: interfaces.IOutcome,
                      release: bool = False) -> None:
        job = self._job(jobid)
        lease = check_lease(job, token)
        if release:
            self._parts.claims.leases.drop(lease)
        job.log, job.progress = outcome.log, outcome.progress
        self._parts.transitions.conclude(job, outcome)

    def outcomeFootprint(self, jobid: int) -> set[bytes]:
        job = self._job(jobid)
        nodes = [job] + self._catalog.footprint(job)
        return {node._p_oid for node in nodes}

    # -- older layouts -------------------------------------------------------

    def _current(self, now):
        # Old data is upgraded before anything is changed; see `upgrade`.
        if self._layout != LAYOUT:
            self.upgrade(now)

    def upgrade(self, now: float | None = None) -> bool:
        if self._layout == LAYOUT:
            return False
        from zodbtasks import migration
        if self._layout == 0:
            migration.upgrade(self, self._now(now))
        migration.upgrade_layout(self)
        return True

    # -- the workers' records (see `zodbtasks.registry`) ---------------------

    def registerWorker(self, name: str, now: float, host: str, pid: int,
                       every: float, tasks: Iterable[str] = (),
                       queues: str | Iterable[str] | None = None
                       ) -> WorkerRecord:
        now = checkMoment(now)
        tasks, queues = registry.check_registration(name, host, pid, every,
                                                    tasks, queues)
        if self._workers is None:
            self._workers = OOBTree()
        return registry.register(self._workers, name, now, host, pid, every,
                                 tasks, queues)

    def _worker(self, name):
        return None if self._workers is None else self._workers.get(name)

    def workerSeen(self, name: str, now: float,
                   jobs: Iterable[int] | None = None,
                   jobsDone: int | None = None,
                   counters: Mapping[str, int] | None = None
                   ) -> WorkerRecord | None:
        now = checkMoment(now)
        record = self._worker(name)
        if record is not None:
            record.renew(now, jobs, jobsDone, counters)
        return record

    def workerStopped(self, name: str, now: float, jobsDone: int | None = None,
                      counters: Mapping[str, int] | None = None
                      ) -> WorkerRecord | None:
        now = checkMoment(now)
        record = self._worker(name)
        if record is not None:
            record.renew(now, (), jobsDone, counters)
            record.stopped = now
        return record

    def workers(self, now: float) -> list[WorkerRecord]:
        checkMoment(now)
        return list(self._workers.values()) if self._workers else []

    def liveWorkers(self, now: float) -> list[WorkerRecord]:
        return [record for record in self.workers(now)
                if record.state(now) == registry.LIVE]

    def dropDeadWorkers(self, now: float, limit: int = 100) -> list[str]:
        now = checkMoment(now)
        limit = _limit(limit)
        if not self._workers:
            return []
        gone = registry.long_dead(self._workers, now, self.workerDropAfter,
                                  limit)
        for name in gone:
            del self._workers[name]
        return gone

    def unservedTasks(self, now: float) -> dict[str, int]:
        return registry.unserved_tasks(self.liveWorkers(now),
                                       self.jobCounts())

    def unservedQueues(self, now: float) -> dict[str, int]:
        return registry.unserved_queues(self.liveWorkers(now),
                                        self.queueCounts())


def _checkStatus(status):
    if status is not None and status not in interfaces.STATUSES:
        raise ValueError('status must be one of %s, not %r'
                         % (', '.join(interfaces.STATUSES), status))


def _checkCount(value, least, message):
    if not isinstance(value, int) or isinstance(value, bool) \
            or value < least:
        raise ValueError(message % (value,))


def _limit(limit):
    _checkCount(limit, 0, 'limit must be a whole number, 0 or more, not %r')
    return limit


def __getattr__(name):
    # lovely.remotetask's autostart lived in its service module; ours is in
    # `zodbtasks.startup`, imported on first use as it imports this module.
    if name in ('getAutostartServiceNames', 'bootStrapSubscriber'):
        from zodbtasks import startup
        return getattr(startup, name)
    raise AttributeError('module %r has no attribute %r' % (__name__, name))
