"""Processors: the loops that claim jobs from a service and run them.

A processor works on a database, not on an object: it is given the database
and the path of the service from the database root (``'app/tasks'``), opens
its own connections and runs every step in a transaction of its own:

1. **step** -- a short transaction that records the outcomes waiting (see
   below), gives back claims it will not run, and claims due jobs under
   leases (`TaskService.claimJobs`). It commits at once, so that no worker
   holds the service's busy objects while a task runs (`zodbtasks.steps`).
2. **run** -- one transaction per job that runs its task
   (`TaskService.runClaimed`). If the task changed the database, the
   outcome is recorded (`TaskService.recordOutcome`) and committed with its
   work. If it left nothing to commit, the transaction is aborted and the
   outcome waits in memory for the next step: a batch of fast jobs costs
   one commit (`zodbtasks.runclaimed`, `zodbtasks.recorder`).

The loop is here; each of its parts is a module of its own, given what it
works with when the processor is made:

* `zodbtasks.transactor` -- opening, committing and retrying transactions,
  the storage in reach or not, what is said once a transaction ended;
* `zodbtasks.steps` -- the step;
* `zodbtasks.runclaimed` -- the run of one claimed job and its conflict policy;
* `zodbtasks.outcomes` -- writing, failing and reporting the outcomes;
* `zodbtasks.recorder` -- the outcomes waiting, and the settler that
  records them;
* `zodbtasks.heartbeats` and `zodbtasks.renewals` -- when and how leases
  are renewed, and runs past their timeout ended;
* `zodbtasks.presence` -- the worker's own record (`zodbtasks.registry`);
* `zodbtasks.worksettings` -- the options they share.

The promise to a worker's jobs
==============================

* Nothing that may block -- log lines, event subscribers -- runs while a
  step or a run is uncommitted. Events of a step are dispatched, and its
  lines logged, after it committed (`zodbtasks.transactor.Said`).
* While the worker lives, its claims stay leased: a heartbeat thread renews
  every claim in hand after a third of its lease (``heartbeatInterval``;
  `zodbtasks.heartbeats`).
* A worker killed at any moment re-runs, once its leases have run out, at
  most the jobs it was running plus ``maxUnrecorded`` jobs whose outcomes
  waited unrecorded (`zodbtasks.recorder`). The jobs it had claimed but not
  begun go back to their place in the queue and do not count as runs.
* The database learns that a run began from the step that precedes it or
  from its heartbeat. A claim that runs out before that is given back
  uncounted; a run that loses its lease counts against the job's
  ``maxLostLeases``.
* A run past its job's ``timeout`` is failed ("timed out after S s"); its
  late outcome is discarded.
* A job whose task this worker does not know is given back
  (`TaskService.taskMissing`), for a worker that knows it.
* When the storage is out of reach, the worker says so once at WARNING,
  waits for it, and says when it is back.

Conflicts
=========

A ``ConflictError`` when a step commits is ordinary contention between
workers: the step is tried again, a few times, then the loop goes round.
A run whose commit conflicts records its outcome again without running the
task when the task wrote nothing else, and runs the task again when it did
(the ordinary ZODB rule); after ``attempts`` tries the job is failed. The
whole rule is in `zodbtasks.runclaimed`.
"""
import logging
import queue
import threading
import time

from zodbtasks import doorbell
from zodbtasks.heartbeats import Heartbeats
from zodbtasks.middleware import check_middlewares
from zodbtasks.outcomes import OutcomeWriter
from zodbtasks.outcomes import jobLog  # noqa: F401 (the old home)
from zodbtasks.paths import SITE_MANAGER  # noqa: F401 (the old home)
from zodbtasks.paths import findServicePath  # noqa: F401
from zodbtasks.paths import splitPath
from zodbtasks.paths import traverse  # noqa: F401 (the old home)
from zodbtasks.presence import DROP_AT_ONCE  # noqa: F401 (the old home)
from zodbtasks.presence import DROP_EVERY  # noqa: F401 (the old home)
from zodbtasks.presence import WORKER_EVERY
from zodbtasks.presence import Presence
from zodbtasks.queues import check_names as _checkQueues
from zodbtasks.recorder import DEFAULT_LIMIT
from zodbtasks.recorder import Settler
from zodbtasks.recorder import Unrecorded
from zodbtasks.renewals import Renewals
from zodbtasks.runclaimed import ClaimRunner
from zodbtasks.runner import Outcome
from zodbtasks.steps import Steps
from zodbtasks.threads import isProcessing  # noqa: F401
from zodbtasks.threads import running  # noqa: F401
from zodbtasks.threads import startProcessing  # noqa: F401
from zodbtasks.threads import stopAll  # noqa: F401
from zodbtasks.threads import stopProcessing  # noqa: F401
from zodbtasks.transactor import Transactor
from zodbtasks.transactor import disconnected  # noqa: F401 (the old home)
from zodbtasks.worksettings import WorkerSettings

log = logging.getLogger('zodbtasks.processor')

#: Seconds that code written for the reference packages sleeps to let a
#: processor thread start or stop (their tests do). zodbtasks does not need
#: it: `startProcessing` returns with the thread started, `stopProcessing`
#: once it ended (or its timeout passed).
THREAD_STARTUP_WAIT = 0.05


class _Kept:
    """An attribute of the processor that one of its parts keeps: reading
    and setting it read and set that part's attribute of the same name."""

    def __init__(self, part='settings'):
        self.part = part

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return getattr(getattr(obj, self.part), self.name)

    def __set__(self, obj, value):
        setattr(getattr(obj, self.part), self.name, value)


class SimpleProcessor:
    """Run the jobs of the service at ``servicePath`` one at a time.

    ``waitTime`` is how long to sleep when nothing is due. The loop runs
    when the processor is called, until `stop` (or ``running = False``).

    Keyword options: ``clock`` (the time function, default `time.time`),
    ``lease`` (seconds a claim lasts; default: the job's, else the
    service's), ``untilIdle`` (end the loop when the service is idle),
    ``attempts`` (tries per transaction on conflicts), ``name`` (the worker
    name stored on leases; default ``host:pid:thread``),
    ``heartbeatInterval`` (seconds between renewals of each claim's lease;
    default ``'auto'``, a third of the lease; None or 0: only when tasks
    call ``heartbeat()``), ``spread`` (take queued jobs from the heads of
    random lanes, roughly in order, so that workers claiming at once rarely
    want the same job; default False: the oldest first), ``logJobs`` (one
    INFO line per finished job on the ``zodbtasks.jobs`` logger; default
    False, as the reference processors logged none; the ``zodbtasks
    worker`` command turns it on), ``register`` (keep a record of this
    worker in the service while the loop runs, for ``zodbtasks workers``;
    see `zodbtasks.registry`; default False, the command turns it on),
    ``middlewares`` (callables around every run, before the registered
    ones; see `zodbtasks.middleware`).

    Batches: while jobs run fast (each in less than ``batchBelow`` seconds,
    0.01), the loop claims up to ``batch`` jobs (64) in one transaction,
    doubling from 1, and runs them one after the other; a slower job brings
    it back to one. When a claim of fast jobs empties the queue, the loop
    waits ``linger`` seconds (0.02) before it claims again, so that jobs
    added one by one meanwhile are claimed together.

    Outcomes recorded together (``groupOutcomes``, default True): when a
    task left nothing to commit, its outcome waits, in memory, for the next
    step; at most ``maxUnrecorded`` of them (8) and at most
    ``settleWithin`` seconds (0.2) while more jobs run. That number is the
    worker's crash window (see the module docstring). Jobs that run at most
    once, and tasks that write, commit their own run at once.
    """

    maxThreads = 1

    # Options that its parts read from the shared `WorkerSettings`.
    clock = _Kept()
    attempts = _Kept()
    transaction_manager = _Kept()
    lease = _Kept()
    name = _Kept()
    spread = _Kept()
    queues = _Kept()
    middlewares = _Kept()
    logJobs = _Kept()
    db = _Kept('_tx')
    servicePath = _Kept('_tx')
    #: Runs by what came of them: a job status, 'lost', 'missing task'.
    stats = _Kept('_writer')
    #: Conflicts met, by step: claim, run, heartbeat.
    conflicts = _Kept('_tx')
    #: How often the storage went out of reach and came back.
    outages = _Kept('_tx')
    settleWithin = _Kept('_unrecorded')

    def __init__(self, db, servicePath, waitTime=1.0, clock=None, lease=None,
                 untilIdle=False, attempts=5, name=None,
                 heartbeatInterval='auto', transactionManager=None, batch=64,
                 batchBelow=0.01, spread=False, groupOutcomes=True,
                 settleWithin=0.2, linger=0.02, maxUnrecorded=DEFAULT_LIMIT,
                 logJobs=False, register=False, middlewares=(), queues=None):
        queues = _checkQueues(queues)
        self.settings = WorkerSettings(
            clock, attempts, transactionManager, lease, name, spread, queues,
            check_middlewares(middlewares), logJobs)
        servicePath = splitPath(servicePath)
        self.waitTime = waitTime
        self.untilIdle = untilIdle
        self.running = False
        self.batch = max(1, int(batch))
        self.batchBelow = batchBelow
        self.groupOutcomes = groupOutcomes
        self.linger = linger
        self._batch = 1
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._wake = threading.Event()
        # Set when a job may have become due (`zodbtasks.doorbell`), when a
        # thread has an outcome to record, and on stop.
        self._bell = threading.Event()
        self._nextPoll = None      # when an idle loop looks again at the latest
        self._stopRequested = False
        self._tokens = {}          # jobid -> Claim, claimed not run
        interval = (None if heartbeatInterval == 'auto'
                    else heartbeatInterval or 0)
        self.heartbeatInterval = heartbeatInterval
        #: Whether the loop keeps a record of this worker in the service,
        #: renewed at least every ``workerEvery`` seconds.
        self.register = register
        self.workerEvery = min(WORKER_EVERY, interval or WORKER_EVERY)
        self._unrecorded = Unrecorded(maxUnrecorded, settleWithin)
        self._compose(db, servicePath, interval)

    def _compose(self, db, servicePath, interval):
        """Make the parts of the worker, each given the others it uses."""
        settings = self.settings
        self._tx = tx = Transactor(db, servicePath, settings)
        self._beats = beats = Heartbeats(
            self._renew, self._timedOut, interval,
            every=self.workerEvery if self.register else None)
        self._writer = writer = OutcomeWriter(tx, beats, settings, Outcome)
        self._steps = Steps(tx, self._unrecorded, writer, beats, settings)
        self._settler = Settler(self._unrecorded, self._steps.step,
                                writer.recordAlone, tx, self._wake,
                                self._stopping)
        self._presence = Presence(tx, settings, self.workerEvery,
                                  self._snapshot)
        self._renewals = Renewals(tx, settings, self._presence)
        self._runner = ClaimRunner(tx, beats, self._renewals, writer,
                                 self._unrecorded, self._settler, settings,
                                 self._timed, self._notify)

    def __repr__(self):
        return '<%s for %s>' % (type(self).__name__,
                                '/'.join(self.servicePath))

    @property
    def maxUnrecorded(self):
        return self._unrecorded.limit

    # -- the API of the reference processors --------------------------------

    def hasJobsWaiting(self):
        """Whether a job is due now; reads, never writes."""
        return self._tx.read(lambda service, now: service.hasJobsWaiting(
            now, self.queues))

    def isIdle(self):
        """Whether nothing is due and no worker holds a job."""
        return self._tx.read(lambda service, now: service.isIdle(
            now, self.queues))

    def claimNextJob(self):
        """Claim the next due job in a transaction of its own; its id or None.

        Run it with ``processNext(jobid)``.
        """
        claimed = self._step(1, start=1)
        if not claimed:
            return None
        claim = claimed[0]
        with self._lock:
            self._tokens[claim.jobid] = claim
        return claim.jobid

    def processNext(self, jobid=None):
        """Run one job and return whether one ran.

        Without ``jobid``: claim the next due job, commit, run it. With the
        id of a job this processor claimed, run that one. With the id of any
        other job, run it in one transaction, as `TaskService.processNext`
        does.
        """
        if jobid is None:
            claimed = self._step(1, start=1)
            if not claimed:
                return False
            self._runJob(claimed[0])
            return True
        with self._lock:
            claim = self._tokens.pop(jobid, None)
        if claim is not None:
            self._runJob(claim)
            return True
        return self._runner.unleased(jobid)

    def service(self, conn):
        """The service, found by its path from ``conn``'s root (or from the
        application root below it; see `zodbtasks.paths.findService`)."""
        return self._tx.service(conn)

    def stop(self):
        """Ask the loop to end after the job(s) running; the jobs claimed
        but not begun are given back at once."""
        self._stopRequested = True
        self.running = False
        self._wake.set()
        self._bell.set()
        self._notify()

    def __call__(self):
        """The loop: claim and run jobs until stopped (or idle)."""
        if self._stopRequested:
            return
        self.running = True
        self._listen()
        if self.register:
            self._presence.register()
        self._beats.start('%s heartbeats' % self)
        settler = threading.Thread(target=self._settler.loop, daemon=True,
                                   name='%s settler' % self)
        settler.start()
        try:
            self._loop()
        finally:
            self.running = False
            self._stopRequested = True
            self._wake.set()
            self._notify()
            doorbell.bell(self._tx.db).unsubscribe(self._bell)
            settler.join()
            try:
                self._settler.settleAll()
            finally:
                self._beats.stop()
                if self.register:
                    self._presence.stopped()

    # -- the loop -------------------------------------------------------------

    def _listen(self):
        """Be woken when a job may have become due, rather than wait for
        ``waitTime`` (see `zodbtasks.doorbell`)."""
        db = self._tx.db
        try:
            oids = self._tx.read(lambda service, now: service.watchedOids())
        except Exception:
            oids = None     # the storage is out of reach: wake on any change
        doorbell.bell(db).subscribe(self._bell, oids)
        doorbell.listen(db)

    def _loop(self):
        failures = 0
        while self._going():
            self._bell.clear()
            claimed = self._step(self._batch, start=1)
            if claimed is None:
                failures += 1
                self._pause(failures)
                continue
            failures = 0
            if claimed:
                self._nextPoll = None
                self._runBatch(claimed)
                if len(claimed) < self._batch and self._batch > 1:
                    self._linger()
            elif self.untilIdle and not len(self._unrecorded) \
                    and self.isIdle():
                break
            else:
                self._idle()

    def _idle(self):
        """Wait for the doorbell or for the next poll. A ring that found
        nothing due leaves the time of the next poll as it was: workers that
        one commit woke would otherwise poll in step, and the first of them
        would take every job that comes due by time alone."""
        now = time.monotonic()
        if self._nextPoll is None or now >= self._nextPoll:
            self._nextPoll = now + self.waitTime
        self._bell.wait(self._nextPoll - now)

    def _runBatch(self, claimed):
        """Run the claims of a batch in order; give back the rest when the
        loop is stopped."""
        for n, claim in enumerate(claimed):
            if not self._going():
                self._giveBack(claimed[n:])
                return
            if n and (self._unrecorded.full() or self._unrecorded.due()):
                # Record what waits; the database learns that this run
                # begins.
                self._step(mark=[claim])
                self._settler.recordToLimit()
            self._runJob(claim, self.groupOutcomes, flush=False)

    def _linger(self):
        """The queue ran dry while jobs run fast: let the next ones gather
        for ``linger`` seconds, to claim them in one batch."""
        if self.linger:
            self._wake.wait(self.linger)

    def _going(self):
        return self.running and not self._stopRequested

    def _stopping(self):
        return self._stopRequested

    def _pause(self, failures):
        """Wait after a step failed: longer the more failed in a row, but
        briefly while the storage is out of reach, to record the outcomes
        waiting as soon as it is back."""
        if self._tx.down is not None:
            self._wake.wait(min(self.waitTime, 0.2))
        elif failures > 1:
            self._wake.wait(min(60.0, self.waitTime * 2 ** min(failures, 8)))

    def _timed(self, seconds):
        """A run took ``seconds``: fast jobs, claim more at a time; a slow
        one, back to one."""
        with self._lock:
            self._batch = (min(self.batch, self._batch * 2)
                           if seconds < self.batchBelow else 1)

    def _notify(self):
        with self._changed:
            self._changed.notify_all()

    # -- what the parts do for the loop ---------------------------------------

    def _step(self, count=0, start=0, mark=(), release=(), tm=None):
        return self._steps.step(count, start, mark, release, tm)

    def _giveBack(self, claims):
        self._steps.giveBack(claims)

    def _runJob(self, claim, group=False, flush=True):
        return self._runner.run(claim, group, flush)

    def _renew(self, claims, seen=False):
        # The heartbeats are made before the parts they call.
        return self._renewals.renew(claims, seen)

    def _timedOut(self, claim):
        self._writer.timedOut(claim)

    def _snapshot(self):
        """(current job ids, jobs done, counters), for the worker record."""
        counters, done = self._writer.counters()
        counters.update(self._tx.counters())
        jobs = sorted(claim.jobid for claim in self._beats.held())
        return jobs, done, counters


class MultiProcessor(SimpleProcessor):
    """Run up to ``maxThreads`` jobs of the service at once.

    The loop claims as many jobs as there are idle threads, in one
    transaction, and hands them to a pool of threads; each runs its job in a
    transaction of its own.
    """

    def __init__(self, db, servicePath, waitTime=1.0, maxThreads=5, **kw):
        super().__init__(db, servicePath, waitTime, **kw)
        if not isinstance(maxThreads, int) or maxThreads < 1:
            raise ValueError('maxThreads must be a positive int, not %r'
                             % (maxThreads,))
        self.maxThreads = maxThreads
        self._busy = 0
        self._pool = ()

    @property
    def threadsBusy(self):
        return self._busy

    @property
    def threads(self):
        """The threads of the pool that run jobs, a list: empty while the
        loop does not run (the reference processor's attribute)."""
        return [thread for thread in self._pool if thread.is_alive()]

    def _loop(self):
        work = queue.Queue()
        names = ['%s-%d' % (threading.current_thread().name, n)
                 for n in range(self.maxThreads)]
        pool = [threading.Thread(target=self._work, args=(work,),
                                 name=name, daemon=True) for name in names]
        self._pool = tuple(pool)
        for thread in pool:
            thread.start()
        try:
            self._feed(work)
        except BaseException:
            # Interrupted: do not wait for the jobs in hand.
            for thread in pool:
                work.put(None)
            raise
        # Claims not begun go back; the jobs running finish.
        self._giveBack(self._drain(work))
        for thread in pool:
            work.put(None)
        for thread in pool:
            thread.join()

    def _feed(self, work):
        failures = 0
        while self._going():
            with self._changed:
                # Room for a job per thread, and for a batch waiting
                # while jobs run fast.
                room = self.maxThreads + self._batch - 1
                while self._busy >= room and self._going():
                    self._changed.wait(self.waitTime)
                    room = self.maxThreads + self._batch - 1
                free = room - self._busy
                idle = max(0, self.maxThreads - self._busy)
            if not self._going():
                break
            self._bell.clear()
            claimed = self._step(free, start=idle)
            if claimed is None:
                failures += 1
                self._pause(failures)
                continue
            failures = 0
            if claimed:
                self._nextPoll = None
                with self._changed:
                    self._busy += len(claimed)
                for claim in claimed:
                    work.put(claim)
                if len(claimed) < free and self._batch > 1:
                    self._linger()
                continue
            with self._changed:
                busy = self._busy
            if self.untilIdle and busy == 0 and not len(self._unrecorded) \
                    and self.isIdle():
                break
            # A thread with an outcome to record wakes the loop, and so
            # does the doorbell.
            if not len(self._unrecorded) and self._going():
                self._idle()

    def _drain(self, work):
        """The claims still waiting for a thread."""
        left = []
        while True:
            try:
                claim = work.get_nowait()
            except queue.Empty:
                break
            if claim is not None:
                left.append(claim)
                with self._changed:
                    self._busy -= 1
        return left

    def _work(self, work):
        while True:
            claim = work.get()
            if claim is None:
                return
            try:
                if self._stopRequested:
                    self._giveBack([claim])
                else:
                    self._runJob(claim, self.groupOutcomes)
            except BaseException:
                log.exception('running job %s failed', claim.jobid)
            finally:
                with self._changed:
                    self._busy -= 1
                    self._changed.notify_all()
                self._bell.set()
