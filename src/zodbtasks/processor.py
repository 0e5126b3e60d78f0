"""Processors: the loops that claim jobs from a service and run them.

A processor works on a database, not on an object: it is given the database
and the path of the service from the database root (``'app/tasks'``), opens
its own connections and runs every step in a transaction of its own:

1. **step** -- a short transaction that records the outcomes waiting (see
   below), gives back claims it will not run, and claims due jobs under
   leases (`TaskService.claimJobs`). It commits at once, so that no worker
   holds the service's busy objects while a task runs.
2. **run** -- one transaction per job that runs its task
   (`TaskService.runClaimed`). If the task changed the database, the
   outcome is recorded (`TaskService.recordOutcome`) and committed with its
   work. If it left nothing to commit, the transaction is aborted and the
   outcome waits in memory for the next step: a batch of fast jobs costs
   one commit.

The promise to a worker's jobs
==============================

* Nothing that may block -- log lines, event subscribers -- runs while a
  step or a run is uncommitted. Events of a step are dispatched, and its
  lines logged, after it committed.
* While the worker lives, its claims stay leased: a heartbeat thread renews
  every claim in hand after a third of its lease (``heartbeatInterval``).
* A worker killed at any moment re-runs, once its leases have run out, at
  most the jobs it was running plus ``maxUnrecorded`` jobs whose outcomes
  waited unrecorded. The jobs it had claimed but not begun go back to
  their place in the queue and do not count as runs.
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

When the run transaction fails to commit with a conflict, running the task
again would repeat whatever it did outside the database (mail sent, lines
written to a file). So the processor looks at what the transaction wrote
(`zodbtasks.writes`): if the task wrote nothing but its outcome, the
outcome is recorded again in a fresh transaction **without running the
task**; if it changed persistent objects of its own, those changes are lost
with the failed commit and the task is **run again** -- the ordinary ZODB
rule. In both cases the fresh transaction first checks that the job is
still held under this worker's lease. A ``ClientDisconnected`` at commit
leaves the commit's fate unknown: a task that wrote may then run again.
After ``attempts`` tries the job is failed with a message that says so.
"""
import collections
import logging
import os
import queue
import random
import socket
import threading
import time
import traceback

import transaction
import zope.event
from transaction.interfaces import DoomedTransaction
from transaction.interfaces import TransientError

from zodbtasks import interfaces
from zodbtasks import writes
from zodbtasks.queues import check_names as _checkQueues
from zodbtasks.context import appendLog
from zodbtasks.heartbeats import Claim
from zodbtasks.heartbeats import Heartbeats
from zodbtasks.interfaces import LeaseLost
from zodbtasks.interfaces import TaskMissing
from zodbtasks.middleware import check_middlewares
from zodbtasks.paths import SITE_MANAGER  # noqa: F401 (the old home)
from zodbtasks.paths import findService
from zodbtasks.paths import findServicePath  # noqa: F401
from zodbtasks.paths import splitPath
from zodbtasks.paths import traverse  # noqa: F401 (the old home)
from zodbtasks.recorder import DEFAULT_LIMIT
from zodbtasks.recorder import Unrecorded
from zodbtasks.runner import Outcome
from zodbtasks.threads import isProcessing  # noqa: F401
from zodbtasks.threads import running  # noqa: F401
from zodbtasks.threads import startProcessing  # noqa: F401
from zodbtasks.threads import stopAll  # noqa: F401
from zodbtasks.threads import stopProcessing  # noqa: F401

log = logging.getLogger('zodbtasks.processor')
#: One line per finished job goes to this logger, at INFO level, when the
#: processor's ``logJobs`` is true.
jobLog = logging.getLogger('zodbtasks.jobs')

#: Seconds that code written for the reference packages sleeps to let a
#: processor thread start or stop (their tests do). zodbtasks does not need
#: it: `startProcessing` returns with the thread started, `stopProcessing`
#: once it ended (or its timeout passed).
THREAD_STARTUP_WAIT = 0.05

_HOST = socket.gethostname()
#: A worker renews its record at least this often (more often when its
#: heartbeats are more frequent); see `zodbtasks.registry`.
WORKER_EVERY = 5.0
#: Each worker drops up to DROP_AT_ONCE records of workers long dead when it
#: registers, and then every DROP_EVERY seconds, with a renewal.
DROP_AT_ONCE = 10
DROP_EVERY = 60.0
_GAVE_UP = object()      # what `SimpleProcessor._transact` returns then
_MISSING = object()      # a run given back: its task is not known here


def disconnected(error):
    """Whether ``error`` says that the storage is out of reach (ZEO's
    ClientDisconnected, a database driver's lost connection)."""
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {'ClientDisconnected', 'DisconnectedError',
                         'OperationalError', 'InterfaceError'})


class _Run:
    """A run in a worker's hands: its claim, job and outcome."""

    def __init__(self, claim, task, attempts, outcome):
        self.claim = claim
        self.jobid = claim.jobid
        self.token = claim.token
        self.task = task
        self.attempts = attempts
        self.outcome = outcome
        self.seconds = None
        self.status = None      # once recorded
        self.ended = time.monotonic()


class _Said:
    """Log lines and events kept while a transaction is open, to be
    delivered once it has ended."""

    def __init__(self):
        self.lines = []
        self.events = []

    def __call__(self, level, message, *args, logger=log):
        self.lines.append((logger, level, message, args))

    def deliver(self):
        for logger, level, message, args in self.lines:
            logger.log(level, message, *args)
        for event in self.events:
            try:
                zope.event.notify(event)
            except Exception:
                log.exception('an event subscriber failed on %r', event)
        self.lines, self.events = [], []


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

    def __init__(self, db, servicePath, waitTime=1.0, clock=None, lease=None,
                 untilIdle=False, attempts=5, name=None,
                 heartbeatInterval='auto', transactionManager=None, batch=64,
                 batchBelow=0.01, spread=False, groupOutcomes=True,
                 settleWithin=0.2, linger=0.02, maxUnrecorded=DEFAULT_LIMIT,
                 logJobs=False, register=False, middlewares=(), queues=None):
        self.db = db
        #: The names of the queues it claims from; None: every queue.
        self.queues = _checkQueues(queues)
        #: Callables around every run, before the registered ones (see
        #: `zodbtasks.middleware`).
        self.middlewares = check_middlewares(middlewares)
        self.servicePath = splitPath(servicePath)
        self.waitTime = waitTime
        self.clock = clock or time.time
        self.lease = lease
        self.untilIdle = untilIdle
        self.attempts = attempts
        self.name = name
        self.transaction_manager = transactionManager or transaction.manager
        self.running = False
        self.stats = collections.Counter()
        #: Conflicts met, by step: claim, run, heartbeat.
        self.conflicts = collections.Counter()
        self.batch = max(1, int(batch))
        self.batchBelow = batchBelow
        self.spread = spread
        self.groupOutcomes = groupOutcomes
        self.linger = linger
        self.logJobs = logJobs
        self._batch = 1
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stopRequested = False
        self._tokens = {}          # jobid -> Claim, claimed not run
        self._unrecorded = Unrecorded(maxUnrecorded, settleWithin)
        self._down = None          # since when the storage is out of reach
        #: How often the storage went out of reach and came back.
        self.outages = 0
        interval = (None if heartbeatInterval == 'auto'
                    else heartbeatInterval or 0)
        self.heartbeatInterval = heartbeatInterval
        #: Whether the loop keeps a record of this worker in the service,
        #: renewed at least every ``workerEvery`` seconds.
        self.register = register
        self.workerEvery = min(WORKER_EVERY, interval or WORKER_EVERY)
        self._worker = None        # the name of this worker's record
        self._lastDrop = 0.0       # time.monotonic() of the last drop pass
        self._beats = Heartbeats(self._renew, self._timedOut, interval,
                                 every=self.workerEvery if register else None)

    def __repr__(self):
        return '<%s for %s>' % (type(self).__name__, '/'.join(self.servicePath))

    @property
    def maxUnrecorded(self):
        return self._unrecorded.limit

    @property
    def settleWithin(self):
        return self._unrecorded.settleWithin

    # -- the API of the reference processors --------------------------------

    def hasJobsWaiting(self):
        """Whether a job is due now; reads, never writes."""
        return self._read(lambda service, now: service.hasJobsWaiting(
            now, self.queues))

    def isIdle(self):
        """Whether nothing is due and no worker holds a job."""
        return self._read(lambda service, now: service.isIdle(
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
        return self._unleased(jobid)

    def stop(self):
        """Ask the loop to end after the job(s) running; the jobs claimed
        but not begun are given back at once."""
        self._stopRequested = True
        self.running = False
        self._wake.set()
        with self._changed:
            self._changed.notify_all()

    def __call__(self):
        """The loop: claim and run jobs until stopped (or idle)."""
        if self._stopRequested:
            return
        self.running = True
        if self.register:
            self._register()
        self._beats.start('%s heartbeats' % self)
        settler = threading.Thread(target=self._settleLoop, daemon=True,
                                   name='%s settler' % self)
        settler.start()
        try:
            self._loop()
        finally:
            self.running = False
            self._stopRequested = True
            self._wake.set()
            with self._changed:
                self._changed.notify_all()
            settler.join()
            try:
                self._settleAll()
            finally:
                self._beats.stop()
                if self.register:
                    self._registerStop()

    def _loop(self):
        failures = 0
        while self._going():
            claimed = self._step(self._batch, start=1)
            if claimed is None:
                failures += 1
                self._pause(failures)
                continue
            failures = 0
            if claimed:
                self._runBatch(claimed)
                if len(claimed) < self._batch and self._batch > 1:
                    self._linger()
            elif self.untilIdle and not len(self._unrecorded) \
                    and self.isIdle():
                break
            else:
                self._wake.wait(self.waitTime)

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
                self._recordToLimit()
            self._runJob(claim, self.groupOutcomes, flush=False)

    def _linger(self):
        """The queue ran dry while jobs run fast: let the next ones gather
        for ``linger`` seconds, to claim them in one batch."""
        if self.linger:
            self._wake.wait(self.linger)

    def _going(self):
        return self.running and not self._stopRequested

    def _pause(self, failures):
        """Wait after a step failed: longer the more failed in a row, but
        briefly while the storage is out of reach, to record the outcomes
        waiting as soon as it is back."""
        if self._down is not None:
            self._wake.wait(min(self.waitTime, 0.2))
        elif failures > 1:
            self._wake.wait(min(60.0, self.waitTime * 2 ** min(failures, 8)))

    # -- transactions ---------------------------------------------------------

    def _open(self, tm=None):
        tm = tm or self.transaction_manager
        conn = self.db.open(transaction_manager=tm)
        tm.begin()
        return conn, tm

    def service(self, conn):
        """The service, found by its path from ``conn``'s root (or from the
        application root below it; see `zodbtasks.paths.findService`)."""
        return findService(conn.root(), self.servicePath)

    def _read(self, func):
        conn, tm = self._open()
        try:
            return func(self.service(conn), self.clock())
        finally:
            tm.abort()
            conn.close()

    def _workerName(self, slot=None):
        if self.name:
            base = self.name
        else:
            base = '%s:%d' % (_HOST, os.getpid())
        return '%s:%s' % (base, slot if slot is not None
                          else threading.current_thread().name)

    def _backoff(self, attempt):
        time.sleep(random.uniform(0, min(0.05, 0.002 * 2 ** attempt)))

    def _count(self, step):
        with self._lock:
            self.conflicts[step] += 1

    def _reached(self, said):
        """The storage answered: say so if it was out of reach."""
        if self._down is not None:
            with self._lock:
                since, self._down = self._down, None
            if since is not None:
                self.outages += 1
                said(logging.WARNING, 'storage of /%s reconnected after '
                     '%.1f s', '/'.join(self.servicePath),
                     time.monotonic() - since)

    def _unreached(self, error, said):
        with self._lock:
            first = self._down is None
            if first:
                self._down = time.monotonic()
        if first:
            said(logging.WARNING, 'storage of /%s disconnected (%s: %s); '
                 'waiting for it', '/'.join(self.servicePath),
                 type(error).__name__, error)

    def _transact(self, func, step=None, tm=None):
        """Call ``func(service)`` in a transaction and commit it.

        Conflicts are retried, up to ``attempts`` tries; returns what
        ``func`` returned, or `_GAVE_UP`. Other errors propagate.
        """
        for attempt in range(self.attempts):
            conn, tm = self._open(tm)
            try:
                result = func(self.service(conn))
                tm.commit()
                return result
            except TransientError as error:
                tm.abort()
                if disconnected(error):
                    raise
                if step is not None:
                    self._count(step)
                self._backoff(attempt)
            except BaseException:
                tm.abort()
                raise
            finally:
                conn.close()
        return _GAVE_UP

    # -- steps: record, give back, claim --------------------------------------

    def _step(self, count=0, start=0, mark=(), release=(), tm=None):
        """One step: record the outcomes waiting, mark the claims ``mark``
        as begun, give back ``release``, and claim up to ``count`` jobs of
        which the first ``start`` begin at once.

        Returns the new `Claim` objects, or None if the step failed. What it
        has to say is said after its transaction ended.
        """
        said = _Said()
        runs = self._unrecorded.take()
        dealt = []
        try:
            result = self._stepOnce(runs, count, start, mark, release, tm,
                                    said, dealt)
        finally:
            if dealt:
                self._unrecorded.recorded(runs)
            else:
                self._unrecorded.putBack(runs)
            said.deliver()
        return result

    def _stepOnce(self, runs, count, start, mark, release, tm, said, dealt):
        """The transaction of `_step`; ``dealt`` gets an item once the
        outcomes ``runs`` were recorded, or failed, or dropped."""
        last = None
        for attempt in range(self.attempts):
            try:
                conn, tm = self._open(tm)
            except Exception as error:
                self._failedStep(error, said)
                return None
            service = None
            try:
                service = self.service(conn)
                service.keepEvents()
                service.prefetch(run.jobid for run in runs)
                dropped = self._recordAll(service, runs)
                now = self.clock()
                for claim in mark:
                    self._tryLease(service.markStarted, claim, now)
                    claim.started = True
                for claim in release:
                    self._tryLease(service.releaseClaim, claim, now)
                claims = self._claimJobs(service, now, count, start)
                events = service.takeEvents()
                tm.commit()
            except TransientError as error:
                tm.abort()
                if disconnected(error):
                    self._unreached(error, said)
                    return None
                last = error
                self._count('claim')
                self._backoff(attempt)
                continue
            except Exception as error:
                tm.abort()
                if runs and not disconnected(error):
                    # Maybe an outcome that cannot be recorded: record each
                    # on its own, then step again.
                    said(logging.WARNING, 'recording %d outcomes with a '
                         'claim failed (%s: %s); recording them one by one',
                         len(runs), type(error).__name__, error)
                    said.deliver()
                    for run in runs:
                        self._recordAlone(run, tm)
                    dealt.append(True)
                    return self._stepOnce([], count, start, mark, release,
                                          tm, said, [])
                self._failedStep(error, said)
                return None
            except BaseException:
                tm.abort()
                raise
            finally:
                if service is not None:
                    service.takeEvents()
                conn.close()
            dealt.append(True)
            said.events.extend(events)
            self._reached(said)
            self._settled(runs, dropped, said)
            for claim in claims:
                self._beats.hold(claim)
            return claims
        said(logging.DEBUG, 'claiming from /%s gave up after %d conflicts: '
             '%s', '/'.join(self.servicePath), self.attempts, last)
        return []

    def _failedStep(self, error, said):
        if disconnected(error):
            self._unreached(error, said)
        else:
            said(logging.ERROR, 'claiming jobs from /%s failed: %s',
                 '/'.join(self.servicePath), traceback.format_exc())

    def _tryLease(self, method, claim, now):
        try:
            method(claim.jobid, claim.token, now)
        except LeaseLost:
            self._beats.lose(claim)

    def _claimJobs(self, service, now, count, start):
        if not count:
            return []
        claims = []
        ids = service.claimJobs(now, count, self._workerName(), self.lease,
                                self.spread, start=start, queues=self.queues)
        for n, jobid in enumerate(ids):
            job = service.jobs[jobid]
            lease = job.lease
            claims.append(Claim(jobid, lease.token, lease.expires,
                                lease.expires - now, job.timeout,
                                started=n < start))
        return claims

    def _giveBack(self, claims):
        """Give back claims that will not run, at once."""
        if claims:
            for claim in claims:
                self._beats.drop(claim)
            self._step(release=claims)

    # -- outcomes waiting to be recorded --------------------------------------

    def _recordAll(self, service, runs):
        """Record the outcomes of ``runs``; return those whose lease is
        gone (nothing is written for them)."""
        dropped = []
        for run in runs:
            try:
                service.recordOutcome(
                    run.jobid, run.token,
                    writes.rebound(run.outcome, service._p_jar), release=True)
            except LeaseLost:
                dropped.append(run)
            else:
                run.status = service.jobs[run.jobid].status
        return dropped

    def _settled(self, runs, dropped, said):
        """``runs`` were committed (but ``dropped``): report them."""
        lost = set(map(id, dropped))
        for run in runs:
            self._beats.drop(run.claim)
            if id(run) in lost:
                run.status = None
                self._dropped(run, said)
            self._report(run, said)

    def _dropped(self, run, said):
        if run.claim.timedOut:
            said(logging.WARNING, 'discarded the late outcome of job %s: '
                 'it timed out after %s s', run.jobid, run.claim.timeout)
        else:
            said(logging.INFO, 'dropped the outcome of job %s: its lease is '
                 'gone', run.jobid)

    def _recordToLimit(self):
        """Before a run begins: record the outcomes waiting, or wait for
        the commit that records them, until no more than ``maxUnrecorded``
        are unrecorded (or the loop is stopped)."""
        while self._unrecorded.full() and not self._stopRequested:
            if not self._unrecorded.waiting():
                self._unrecorded.waitForCommits(0.05)
            elif self._step() is None:
                self._wake.wait(0.1)       # the storage is out of reach

    def _settleAll(self):
        """Record the outcomes waiting, trying a few times."""
        for attempt in range(self.attempts):
            if not len(self._unrecorded):
                return
            if self._step() is None and self._down is None:
                break
        runs = self._unrecorded.take()
        for run in runs:
            self._recordAlone(run)
        self._unrecorded.recorded(runs)

    def _recordAlone(self, run, tm=None):
        """Record one outcome in a transaction of its own; if that fails,
        fail the job; if that fails too, leave it to its lease."""
        def record(service):
            return self._recordAll(service, [run])
        said = _Said()
        try:
            dropped = self._transact(record, tm=tm)
        except Exception as error:
            said(logging.ERROR, 'recording the outcome of job %s failed: %s',
                 run.jobid, traceback.format_exc())
            try:
                failed = self._fail(
                    run.claim, '%s while recording the outcome: %s'
                    % (type(error).__name__, error), traceback.format_exc(),
                    tm=tm)
            except Exception:
                said(logging.ERROR, 'could not record job %s at all; its '
                     'lease will expire and it will run again: %s',
                     run.jobid, traceback.format_exc())
                failed = None
            run.status = None if failed is None else failed.status
        else:
            if dropped is _GAVE_UP:
                said(logging.ERROR, 'could not record the outcome of job %s '
                     'for conflicts; its lease will expire and it will run '
                     'again', run.jobid)
                run.status = None
            elif dropped:
                self._dropped(run, said)
                run.status = None
        self._beats.drop(run.claim)
        self._report(run, said)
        said.deliver()

    def _settleLoop(self):
        """Record the outcomes that waited ``settleWithin`` seconds while
        the loop runs a long job, in a transaction manager of its own."""
        tm = transaction.TransactionManager()
        while not self._stopRequested:
            self._wake.wait(self.settleWithin / 2 or 0.01)
            if self._unrecorded.due() and not self._stopRequested:
                try:
                    self._step(tm=tm)
                except Exception:
                    log.exception('recording the outcomes waiting failed')

    def _report(self, run, said):
        """Count a recorded run and say its line (or its loss)."""
        with self._lock:
            self.stats[run.status or 'lost'] += 1
        if run.status is None or not self.logJobs:
            return
        outcome = run.outcome
        seconds = run.seconds or 0.0
        if not outcome.failed:
            said(logging.INFO, 'job %s %s completed in %.3f s (attempt %d)',
                 run.jobid, run.task, seconds, run.attempts, logger=jobLog)
        else:
            said(logging.INFO, 'job %s %s failed after %.3f s%s (attempt %d): '
                 '%s', run.jobid, run.task, seconds,
                 ', retrying' if run.status == interfaces.RETRYING else '',
                 run.attempts, outcome.error, logger=jobLog)

    # -- heartbeats and time-outs ----------------------------------------------

    def _renew(self, claims, seen=False):
        """Extend the leases of ``claims`` in one transaction of their own
        (the heartbeat thread calls this); see `Heartbeats`. With ``seen``,
        renew this worker's record in it too."""
        def renew(service):
            now = self.clock()
            if seen:
                self._seen(service, now)
            renewed = {}
            for claim in claims:
                try:
                    renewed[claim.jobid] = service.heartbeat(
                        claim.jobid, claim.token, now, seconds=self.lease,
                        started=claim.began is not None)
                except LeaseLost:
                    renewed[claim.jobid] = LeaseLost
            return renewed
        said = _Said()
        try:
            renewed = self._transact(renew, 'heartbeat',
                                     transaction.TransactionManager())
        except Exception as error:
            if disconnected(error):
                self._unreached(error, said)
            else:
                said(logging.ERROR, 'renewing %d leases%s failed: %s',
                     len(claims), ' and the worker record' if seen else '',
                     traceback.format_exc())
            renewed = {}
        else:
            if renewed is _GAVE_UP:
                renewed = {}
            else:
                self._reached(said)
        said.deliver()
        return renewed

    # -- this worker's record (see zodbtasks.registry) ------------------------

    def _recordName(self):
        base = self.name or '%s:%d' % (_HOST, os.getpid())
        loop = threading.current_thread()
        return base if loop is threading.main_thread() \
            else '%s:%s' % (base, loop.name)

    def _snapshot(self):
        """(current job ids, jobs done, counters), copied under the lock."""
        with self._lock:
            counters = dict(self.stats)
            counters.update(('%s conflicts' % step, n)
                            for step, n in self.conflicts.items())
            if self.outages:
                counters['storage outages'] = self.outages
            done = sum(n for key, n in self.stats.items()
                       if key not in ('lost', 'missing task'))
        jobs = sorted(claim.jobid for claim in self._beats.held())
        return jobs, done, counters

    def _register(self, service=None, now=None):
        """Register this worker, in a transaction of its own unless given
        the ``service`` of one. A failure is logged: the record is made by
        a later renewal."""
        self._worker = self._worker or self._recordName()

        def register(service, now=None):
            now = self.clock() if now is None else now
            service.registerWorker(self._worker, now, _HOST, os.getpid(),
                                   self.workerEvery,
                                   sorted(service.getAvailableTasks()),
                                   self.queues)
            self._lastDrop = time.monotonic()
            service.dropDeadWorkers(now, DROP_AT_ONCE)
        if service is not None:
            return register(service, now)
        try:
            if self._transact(register, tm=transaction.TransactionManager()) \
                    is _GAVE_UP:
                log.warning('could not register worker %s for conflicts; '
                            'its next renewal will', self._worker)
        except Exception as error:
            log.warning('could not register worker %s (%s: %s); its next '
                        'renewal will', self._worker, type(error).__name__,
                        error)

    def _seen(self, service, now):
        """Renew this worker's record (in the heartbeat's transaction); now
        and then, drop a few records of workers long dead."""
        jobs, done, counters = self._snapshot()
        if service.workerSeen(self._worker, now, jobs, done, counters) is None:
            self._register(service, now)
            service.workerSeen(self._worker, now, jobs, done, counters)
        elif time.monotonic() - self._lastDrop >= DROP_EVERY:
            self._lastDrop = time.monotonic()
            service.dropDeadWorkers(now, DROP_AT_ONCE)

    def _registerStop(self):
        """The loop ended: mark this worker's record stopped."""
        def stopped(service):
            jobs, done, counters = self._snapshot()
            service.workerStopped(self._worker, self.clock(), done, counters)
        try:
            self._transact(stopped, tm=transaction.TransactionManager())
        except Exception as error:
            log.warning('could not mark worker %s stopped (%s: %s)',
                        self._worker, type(error).__name__, error)

    def _heartbeat(self, jobid, token, started=True):
        """Extend the lease; return its new end, or None if it could not be
        written this time (the next heartbeat tries again). Raises
        LeaseLost."""
        def beat(service):
            return service.heartbeat(jobid, token, self.clock(),
                                     seconds=self.lease, started=started)
        said = _Said()
        try:
            expires = self._transact(beat, 'heartbeat',
                                     transaction.TransactionManager())
        except LeaseLost:
            raise
        except Exception as error:
            # Not written this time, for whatever reason: the claim keeps
            # its lease until the next heartbeat or the run's commit.
            if disconnected(error):
                self._unreached(error, said)
            else:
                said(logging.WARNING, 'could not extend the lease on job %s: '
                     '%s: %s', jobid, type(error).__name__, error)
            expires = None
        else:
            if expires is _GAVE_UP:
                said(logging.WARNING, 'could not extend the lease on job %s '
                     'for conflicts', jobid)
                expires = None
            else:
                self._reached(said)
        finally:
            said.deliver()
        return expires

    def _timedOut(self, claim):
        """A run went past its job's timeout: fail it (the heartbeat thread
        calls this). The task goes on in its thread; its outcome will be
        discarded."""
        run = self._fail(claim, 'timed out after %s s' % claim.timeout)
        if run is not None:
            said = _Said()
            self._report(run, said)
            said.deliver()

    # -- running a claimed job ------------------------------------------------

    def _lostBeforeRun(self, claim, why):
        log.info('dropped job %s before running it: %s', claim.jobid, why)
        with self._lock:
            self.stats['lost'] += 1
        return None

    def _runJob(self, claim, group=False, flush=True):
        """Run a claimed job; return its `_Run` or None.

        A job whose turn came when half of its lease was gone is heartbeat
        first (when heartbeats are off). With ``group``, an outcome with nothing else to
        commit waits to be recorded by a later step (``run.status`` is None
        until then); with ``flush``, such a step follows at once when
        ``maxUnrecorded`` outcomes wait.
        """
        if claim.lost:
            return self._lostBeforeRun(claim, 'its lease is gone')
        if self.clock() >= claim.expires - claim.length / 2:
            try:
                expires = self._heartbeat(claim.jobid, claim.token)
            except LeaseLost as error:
                self._beats.lose(claim)
                return self._lostBeforeRun(claim, error)
            if expires is not None:
                claim.expires = expires
            elif self.clock() >= claim.expires:
                # Not renewed, and over by our clock: another worker may
                # hold the job by now.
                self._beats.lose(claim)
                return self._lostBeforeRun(claim, 'its lease ran out and '
                                           'could not be renewed')
        if group:
            self._recordToLimit()
        self._beats.hold(claim)
        self._beats.begin(claim)
        began = time.monotonic()
        try:
            run = self._runAttempts(claim, group)
        except Exception:
            # The database is gone or broken: the lease will expire and the
            # job will be given back.
            log.exception('could not run job %s', claim.jobid)
            run = None
        seconds = time.monotonic() - began
        with self._lock:
            # Fast jobs: claim more at a time; a slow one: back to one.
            self._batch = (min(self.batch, self._batch * 2)
                           if seconds < self.batchBelow else 1)
        if run is None or run is _MISSING:
            self._beats.drop(claim)
            if run is None:
                with self._lock:
                    self.stats['lost'] += 1
            return None
        run.seconds = seconds
        if run.status is None:
            if self._unrecorded.add(run) and flush:
                self._recordToLimit()
            with self._changed:
                self._changed.notify_all()
        else:
            self._beats.drop(claim)
            said = _Said()
            self._report(run, said)
            said.deliver()
        return run

    def _runAttempts(self, claim, group):
        jobid, token = claim.jobid, claim.token
        rerun = True
        run = None
        last = None
        for attempt in range(self.attempts):
            conn, tm = self._open()
            txn = tm.get()
            try:
                service = self.service(conn)
                if rerun:
                    job = service.jobs[jobid]
                    before = writes.job_state(job)
                    heartbeat = self._heartbeatFor(claim)
                    started = self.clock()
                    outcome = service.runClaimed(
                        jobid, token, started, heartbeat, missing=True,
                        middlewares=self.middlewares)
                    outcome.completed = self.clock()
                    run = _Run(claim, job.task, job.attempts, outcome)
                    replaced = tm.get() is not txn
                    # What the task did that only this transaction can
                    # commit: objects written (its job's log and progress
                    # aside), or an outcome that refers to stored objects.
                    rerun = (replaced or writes.left_work(conn, txn, job._p_oid)
                             or writes.job_state(job) != before)
                    if group and not rerun and not job.atMostOnce \
                            and not txn.isDoomed():
                        tm.abort()
                        return run      # to be recorded by a later step
                    if replaced:
                        # The task committed or aborted: the lease was
                        # checked in a transaction that is gone.
                        self._checkLease(jobid, token)
                        rerun = writes.left_work(conn, tm.get(), job._p_oid)
                if claim.timedOut:
                    raise LeaseLost('the run timed out')
                service.recordOutcome(jobid, token,
                                      writes.rebound(run.outcome, conn))
                status = service.jobs[jobid].status
                tm.commit()
                run.status = status
                return run
            except TaskMissing as error:
                tm.abort()
                return self._taskMissing(claim, str(error))
            except LeaseLost as error:
                tm.abort()
                if claim.timedOut:
                    log.warning('discarded the late outcome of job %s: it '
                                'timed out after %s s', jobid, claim.timeout)
                else:
                    log.info('dropped the run of job %s: %s', jobid, error)
                return None
            except TransientError as error:
                # From the task (rerun is still True) or from the commit.
                tm.abort()
                last = error
                self._count('run')
                log.debug('run of job %s conflicted (attempt %d, %s): %s',
                          jobid, attempt + 1,
                          'running the task again' if rerun
                          else 'recording the outcome again', error)
                self._backoff(attempt)
            except DoomedTransaction:
                tm.abort()
                return self._fail(claim, 'the task doomed its transaction; '
                                  'nothing it did was committed')
            except Exception as error:
                tm.abort()
                log.exception('committing the run of job %s failed', jobid)
                return self._fail(claim, '%s while committing the run: %s'
                                  % (type(error).__name__, error),
                                  traceback.format_exc())
            except BaseException:
                tm.abort()
                raise
            finally:
                conn.close()
        return self._fail(claim, 'gave up after %d attempts that conflicted; '
                          'last: %s' % (self.attempts, last))

    def _heartbeatFor(self, claim):
        """The function a running task calls to extend its lease."""
        def heartbeat():
            if claim.timedOut:
                raise LeaseLost('job %s timed out after %s s'
                                % (claim.jobid, claim.timeout))
            expires = self._heartbeat(claim.jobid, claim.token)
            if expires is not None:
                claim.expires = expires
                claim.renewed = time.monotonic()
            return expires
        return heartbeat

    def _taskMissing(self, claim, reason):
        """Give back a job whose task this worker cannot find."""
        status = self._transact(lambda service: service.taskMissing(
            claim.jobid, claim.token, reason, self.clock()))
        self._beats.drop(claim)
        with self._lock:
            self.stats['missing task'] += 1
        log.warning('gave back job %s (%s): %s', claim.jobid,
                    status if status is not _GAVE_UP else 'not recorded',
                    reason)
        return _MISSING

    def _checkLease(self, jobid, token):
        """Raise LeaseLost unless the committed job is held under ``token``."""
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        try:
            tm.begin()
            self.service(conn).checkLease(jobid, token)
        finally:
            tm.abort()
            conn.close()

    def _fail(self, claim, message, tb=None, tm=None):
        """Fail the job in a fresh transaction; return its `_Run` or None."""
        def record(service):
            job = service.jobs[claim.jobid]
            service.checkLease(claim.jobid, claim.token)
            appendLog(job, tb or message)
            outcome = Outcome(job, self.clock(), failure=(message, tb))
            service.recordOutcome(claim.jobid, claim.token, outcome)
            run = _Run(claim, job.task, job.attempts, outcome)
            run.status = job.status
            return run
        try:
            run = self._transact(record, tm=tm)
        except LeaseLost as error:
            log.info('dropped the run of job %s: %s', claim.jobid, error)
            return None
        if run is _GAVE_UP:
            log.error('could not record the failure of job %s (%s); its '
                      'lease will expire and the service will recover it',
                      claim.jobid, message)
            return None
        return run

    def _unleased(self, jobid):
        """Run a job by id in one transaction, as the service itself does."""
        ran = self._transact(
            lambda service: service.processNext(self.clock(), jobid))
        if ran is _GAVE_UP:
            log.error('gave up running job %s after %d conflicts', jobid,
                      self.attempts)
            return False
        return ran


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
            claimed = self._step(free, start=idle)
            if claimed is None:
                failures += 1
                self._pause(failures)
                continue
            failures = 0
            if claimed:
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
            with self._changed:
                # A thread with an outcome to record wakes the loop.
                if not len(self._unrecorded) and self._going():
                    self._changed.wait(self.waitTime)

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
