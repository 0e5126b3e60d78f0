"""Processors: the loops that claim jobs from a service and run them.

A processor works on a database, not on an object: it is given the database
and the path of the service from the database root (``'app/tasks'``), opens
its own connections and runs every step in a transaction of its own:

1. **claim** -- a short transaction that takes one or more due jobs off the
   queue under a lease (`TaskService.claimNextJob`) and commits at once, so
   that no worker holds the service's busy objects while a task runs;
2. **run** -- one transaction per job that runs its task
   (`TaskService.runClaimed` with the lease's token). If the task changed
   the database, the outcome is recorded (`TaskService.recordOutcome`) and
   committed with its work. If it left nothing to commit, the loop aborts
   that transaction and records the outcome with its next claim: a batch
   of fast jobs costs one commit.

`SimpleProcessor` runs one job at a time, `MultiProcessor` several, in a pool
of threads. Both use the transaction manager of the thread they run in
(``transaction.manager``), so a task may call ``transaction.savepoint()``,
``transaction.doom()`` and the like as it would in a web request.

Conflicts
=========

A ``ConflictError`` when a claim commits is ordinary contention between
workers: the claim is tried again, a few times, then the loop goes round.

When the run transaction fails to commit with a conflict, running the task
again would repeat whatever it did outside the database (mail sent, lines
written to a file). So the processor looks at what the transaction wrote:

* The run itself writes only the job and the bucket(s) of the finished-jobs
  set that the job's id goes to. If the task wrote nothing else, the outcome
  is recorded again in a fresh transaction **without running the task**.
* If the task changed persistent objects of its own, those changes are lost
  with the failed commit and the task is **run again** -- the ordinary ZODB
  rule. Such tasks must tolerate repeating their external effects.
* In both cases the fresh transaction first checks that the job is still
  held under this worker's lease; if not (it was cancelled, or the lease
  expired and another worker took the job), the outcome is dropped and the
  loss is logged at INFO level.

After ``attempts`` tries the job is failed with a message that says so. A
task that dooms its transaction, or any other error when the run commits,
fails the job in a fresh transaction; it is never run again by that worker.
"""
import atexit
import collections
import copy
import io
import logging
import os
import pickle
import random
import socket
import threading
import time
import traceback

import persistent
import transaction
from transaction.interfaces import DoomedTransaction
from transaction.interfaces import TransientError

from zodbtasks.context import appendLog
from zodbtasks.interfaces import LeaseLost
from zodbtasks.service import Outcome

log = logging.getLogger('zodbtasks.processor')
#: One line per finished job goes to this logger, at INFO level.
jobLog = logging.getLogger('zodbtasks.jobs')

_HOST = socket.gethostname()
_GAVE_UP = object()      # what `SimpleProcessor._transact` returns then


def splitPath(path):
    """The keys of a service path: ``'a/b'`` or ``('a', 'b')`` -> a tuple."""
    if isinstance(path, str):
        keys = tuple(part for part in path.split('/') if part)
    elif isinstance(path, (tuple, list)):
        keys = tuple(path)
        if not all(isinstance(key, str) and key for key in keys):
            raise TypeError('a service path must be made of non-empty '
                            'strings, not %r' % (path,))
    else:
        raise TypeError('a service path is a string like "app/tasks" or a '
                        'tuple of keys, not %r' % (path,))
    if not keys:
        raise ValueError('a service path needs at least one key, got %r'
                         % (path,))
    return keys


#: The path key that steps from a site to its site manager.
SITE_MANAGER = '++etc++site'


def traverse(root, keys):
    """The object at ``keys`` below ``root``; KeyError names what is missing.

    Each key is an item (``obj[key]``) or else an attribute; the key
    ``++etc++site`` steps into a site's site manager.
    """
    obj = root
    for depth, key in enumerate(keys):
        try:
            if key == SITE_MANAGER and hasattr(obj, 'getSiteManager'):
                obj = obj.getSiteManager()
                continue
            obj = obj[key]
        except (KeyError, TypeError, AttributeError):
            try:
                obj = getattr(obj, key)
            except AttributeError:
                raise KeyError('no %r at /%s in the database' % (
                    key, '/'.join(keys[:depth]))) from None
    return obj


def _writtenOids(conn):
    """The oids that the connection's transaction would write, so far."""
    oids = {obj._p_oid for obj in conn._registered_objects}
    saved = conn._savepoint_storage
    if saved is not None:
        oids.update(oid for oid in saved.index if oid not in saved.creating)
    oids.discard(None)
    return oids


def _leftWork(conn, txn, jobOid):
    """Whether a task left work in ``txn`` beyond what it told its job:
    objects written, another data manager joined, or commit hooks."""
    if _writtenOids(conn) - {jobOid}:
        return True
    if any(resource is not conn for resource in txn._resources):
        return True
    return bool(list(txn.getBeforeCommitHooks())
                or list(txn.getAfterCommitHooks()))


class _Sink:
    """A file that keeps nothing: for pickling only to look."""

    def write(self, data):
        return len(data)


class _ByOid(pickle.Pickler):
    """Pickles stored persistent objects as their oids."""

    def persistent_id(self, obj):
        if isinstance(obj, persistent.Persistent) and obj._p_oid is not None:
            return obj._p_oid
        return None


class _Found(Exception):
    pass


class _PersistentFinder(pickle.Pickler):
    # reducer_override is not called for plain ints, strings, lists and the
    # like, so a look at a large plain output costs what pickling it does.
    def reducer_override(self, obj):
        if isinstance(obj, persistent.Persistent):
            raise _Found
        return NotImplemented


def _jobState(job):
    """A job's state but for what a task tells it (log and progress), as
    bytes: a change to an attribute, in place or not, changes them."""
    state = dict(job.__getstate__())
    state.pop('log', None)
    state.pop('progress', None)
    out = io.BytesIO()
    _ByOid(out, 3).dump(sorted(state.items()))
    return out.getvalue()


def _rebound(outcome, conn):
    """``outcome``, with the stored objects its output and progress refer
    to taken from ``conn``: only the connection that loaded an object may
    store a reference to it, and the outcome is recorded by another."""
    try:
        _PersistentFinder(_Sink(), 3).dump((outcome.output, outcome.progress))
        return outcome
    except _Found:
        pass
    out = io.BytesIO()
    _ByOid(out, 3).dump((outcome.output, outcome.progress))
    unpickler = pickle.Unpickler(io.BytesIO(out.getvalue()))
    unpickler.persistent_load = conn.get
    rebound = copy.copy(outcome)
    rebound.output, rebound.progress = unpickler.load()
    return rebound


class _Run:
    """A run in a worker's hands: the job, its lease and the outcome."""

    def __init__(self, jobid, token, task, attempts, outcome, seconds=None):
        self.jobid = jobid
        self.token = token
        self.task = task
        self.attempts = attempts
        self.outcome = outcome
        self.seconds = seconds
        self.status = None      # once recorded
        self.ended = time.monotonic()


class SimpleProcessor:
    """Run the jobs of the service at ``servicePath`` one at a time.

    ``waitTime`` is how long to sleep when nothing is due. The loop runs
    when the processor is called, until `stop` (or ``running = False``).

    Keyword options: ``clock`` (the time function, default `time.time`),
    ``lease`` (seconds a claim lasts; default: the job's, else the
    service's), ``untilIdle`` (end the loop when the service is idle),
    ``attempts`` (tries per transaction on conflicts), ``name`` (the worker
    name stored on leases; default ``host:pid:thread``) and
    ``heartbeatInterval`` (extend the leases of running jobs every so many
    seconds, in a thread of the processor; default None: tasks heartbeat
    themselves) and ``spread`` (take queued jobs from the heads of random
    lanes, roughly in order, so that workers claiming at once rarely want
    the same job; default False: the oldest first).

    Batches: while jobs run fast (each in less than ``batchBelow`` seconds,
    0.01), the loop claims up to ``batch`` jobs (64) in one transaction,
    doubling from 1, and runs them one after the other; a slower job brings
    it back to one. A claimed job whose lease is half gone when its turn
    comes is heartbeat first, and skipped if its lease was lost. The jobs of
    a batch count as "in hand" when the loop is stopped. When a claim of
    fast jobs empties the queue, the loop waits ``linger`` seconds (0.02)
    before it claims again, so that jobs added one by one meanwhile are
    claimed together rather than each in a commit of its own.

    Outcomes recorded together (``groupOutcomes``, default True): the loop
    runs each task in a transaction of its own, but when the task left
    nothing to commit (it wrote no object, joined no other data manager and
    added no commit hook; what it told its job's log and progress is kept
    apart), that transaction is aborted and the outcome waits, in memory,
    to be recorded with the next claim, in one commit for a whole batch.
    Outcomes wait at most ``settleWithin`` seconds (0.2) while more jobs of
    the batch run, and are recorded when the loop ends. A worker killed
    before that loses them: the leases expire and the jobs run again, as
    they would if it were killed while they ran. Jobs that run at most once,
    and tasks that write, commit their own run at once.
    """

    maxThreads = 1

    def __init__(self, db, servicePath, waitTime=1.0, clock=None, lease=None,
                 untilIdle=False, attempts=5, name=None,
                 heartbeatInterval=None, transactionManager=None, batch=64,
                 batchBelow=0.01, spread=False, groupOutcomes=True,
                 settleWithin=0.2, linger=0.02):
        self.db = db
        self.servicePath = splitPath(servicePath)
        self.waitTime = waitTime
        self.clock = clock or time.time
        self.lease = lease
        self.untilIdle = untilIdle
        self.attempts = attempts
        self.name = name
        self.heartbeatInterval = heartbeatInterval
        self.transaction_manager = transactionManager or transaction.manager
        self.running = False
        self.stats = collections.Counter()
        #: Conflicts met, by step: claim, run, heartbeat.
        self.conflicts = collections.Counter()
        self.batch = max(1, int(batch))
        self.batchBelow = batchBelow
        self.spread = spread
        self.groupOutcomes = groupOutcomes
        self.settleWithin = settleWithin
        self.linger = linger
        self._batch = 1
        # Reentrant: `stop` may run in a signal handler of the loop's thread.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._pending = []         # runs whose outcomes wait to be recorded
        self._claiming = threading.Lock()
        self._stopRequested = False
        self._tokens = {}          # jobid -> lease token, claimed not run
        self._inHand = {}          # jobid -> [token, last heartbeat]

    def __repr__(self):
        return '<%s for %s>' % (type(self).__name__, '/'.join(self.servicePath))

    # -- the API of the reference processors --------------------------------

    def hasJobsWaiting(self):
        """Whether a job is due now; reads, never writes."""
        return self._read(lambda service, now: service.hasJobsWaiting(now))

    def isIdle(self):
        """Whether nothing is due and no worker holds a job."""
        return self._read(lambda service, now: service.isIdle(now))

    def claimNextJob(self):
        """Claim the next due job in a transaction of its own; its id or None.

        Run it with ``processNext(jobid)``.
        """
        claimed = self._claim(1)
        if not claimed:
            return None
        jobid, token = claimed[0][:2]
        with self._lock:
            self._tokens[jobid] = token
        return jobid

    def processNext(self, jobid=None):
        """Run one job and return whether one ran.

        Without ``jobid``: claim the next due job, commit, run it. With the
        id of a job this processor claimed, run that one. With the id of any
        other job, run it in one transaction, as `TaskService.processNext`
        does.
        """
        if jobid is None:
            claimed = self._claim(1)
            if not claimed:
                return False
            self._runJob(*claimed[0][:2])
            return True
        with self._lock:
            token = self._tokens.pop(jobid, None)
        if token is not None:
            self._runJob(jobid, token)
            return True
        return self._unleased(jobid)

    def stop(self):
        """Ask the loop to end after the job in hand."""
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
        beating = self._helper(self.heartbeatInterval, self._beatLoop,
                               'heartbeats')
        settling = self._helper(self.groupOutcomes, self._settleLoop,
                                'settler')
        try:
            self._loop()
        finally:
            try:
                self._settleAll()
            finally:
                self.running = False
                self._stopRequested = True
                self._wake.set()
                with self._changed:
                    self._changed.notify_all()
                for thread in (beating, settling):
                    if thread is not None:
                        thread.join()

    def _helper(self, wanted, target, what):
        """Start a daemon thread running ``target`` if ``wanted``."""
        if not wanted:
            return None
        thread = threading.Thread(target=target, daemon=True,
                                  name='%s %s' % (self, what))
        thread.start()
        return thread

    def _loop(self):
        failures = 0
        while self._going():
            claimed = self._claim(self._batch)
            if claimed is None:
                failures += 1
                self._pause(failures)
                continue
            failures = 0
            if claimed:
                wanted = self._batch
                for item in claimed:        # all of them are in hand
                    if self._settleDue():
                        self._claim(0)
                    self._runJob(*item, group=self.groupOutcomes)
                if len(claimed) < wanted and self._batch > 1:
                    self._linger()
            elif self.untilIdle and self.isIdle():
                break
            else:
                self._wake.wait(self.waitTime)

    def _linger(self):
        """The queue ran dry while jobs run fast: let the next ones gather
        for ``linger`` seconds, to claim them in one batch."""
        if self.linger:
            self._wake.wait(self.linger)

    def _going(self):
        return self.running and not self._stopRequested

    def _pause(self, failures):
        """Wait after a step failed: longer the more failed in a row."""
        if failures > 1:
            self._wake.wait(min(60.0, self.waitTime * 2 ** min(failures, 8)))

    # -- transactions ---------------------------------------------------------

    def _open(self, tm=None):
        tm = tm or self.transaction_manager
        conn = self.db.open(transaction_manager=tm)
        tm.begin()
        return conn, tm

    def service(self, conn):
        """The service, found by its path from ``conn``'s root."""
        return traverse(conn.root(), self.servicePath)

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

    def _claim(self, count, tm=None):
        """Record the outcomes waiting, and claim up to ``count`` due jobs,
        in one transaction (of ``tm``, default the processor's).

        Returns a list of (jobid, token, claimed at, lease expires), or None
        if the claim failed (it was logged).
        """
        # One at a time: the loop's claims and the settler's must not record
        # the same outcome twice.
        with self._claiming:
            return self._claimOnce(count, tm)

    def _claimOnce(self, count, tm):
        with self._lock:
            pending = list(self._pending)
        last = None
        unrecordable = False
        for attempt in range(self.attempts):
            try:
                conn, tm = self._open(tm)
            except Exception:
                log.exception('cannot open a connection to claim jobs')
                return None
            try:
                service = self.service(conn)
                service.prefetch(run.jobid for run in pending)
                dropped = self._recordAll(service, pending)
                now = self.clock()
                claimed = []
                for jobid in service.claimJobs(now, count, self._workerName(),
                                               self.lease, self.spread):
                    lease = service.jobs[jobid].lease
                    claimed.append((jobid, lease.token, now, lease.expires))
                tm.commit()
                self._settled(pending, dropped)
                return claimed
            except TransientError as error:
                tm.abort()
                last = error
                self._count('claim')
                log.debug('claim attempt %d conflicted: %s', attempt + 1,
                          error)
                self._backoff(attempt)
            except Exception:
                tm.abort()
                if not pending:
                    log.exception('claiming jobs from /%s failed',
                                  '/'.join(self.servicePath))
                    return None
                # Maybe an outcome that cannot be recorded: record each on
                # its own, then claim again.
                log.warning('recording %d outcomes with a claim failed; '
                            'recording them one by one', len(pending),
                            exc_info=True)
                unrecordable = True
                break
            except BaseException:
                tm.abort()
                raise
            finally:
                conn.close()
        if unrecordable:
            for run in pending:
                self._recordAlone(run, tm)
            return self._claimOnce(count, tm)
        log.debug('claiming from /%s gave up after %d conflicts: %s',
                 '/'.join(self.servicePath), self.attempts, last)
        return []

    # -- outcomes waiting to be recorded --------------------------------------

    def _recordAll(self, service, runs):
        """Record the outcomes of ``runs``; return those whose lease is
        gone (nothing is written for them)."""
        dropped = []
        for run in runs:
            try:
                service.recordOutcome(run.jobid, run.token,
                                      _rebound(run.outcome, service._p_jar),
                                      release=True)
            except LeaseLost:
                dropped.append(run)
            else:
                run.status = service.jobs[run.jobid].status
        return dropped

    def _settled(self, runs, dropped):
        """``runs`` were committed (but ``dropped``): report them."""
        if not runs:
            return
        with self._lock:
            done = set(map(id, runs))
            self._pending = [run for run in self._pending
                             if id(run) not in done]
        lost = set(map(id, dropped))
        for run in runs:
            if id(run) in lost:
                log.info('dropped the outcome of job %s: its lease is gone',
                         run.jobid)
                run.status = None
            self._report(run)

    def _settleDue(self):
        """Whether the oldest outcome waiting has waited long enough."""
        with self._lock:
            return bool(self._pending) and (
                time.monotonic() - self._pending[0].ended
                >= self.settleWithin)

    def _settleAll(self):
        """Record the outcomes waiting, trying a few times."""
        with self._claiming:
            for attempt in range(self.attempts):
                with self._lock:
                    if not self._pending:
                        return
                if self._claimOnce(0, None) is None:
                    break
            with self._lock:
                left = list(self._pending)
            for run in left:
                self._recordAlone(run)

    def _recordAlone(self, run, tm=None):
        """Record one outcome in a transaction of its own; if that fails,
        fail the job; if that fails too, leave it to its lease."""
        def record(service):
            return self._recordAll(service, [run])
        try:
            try:
                dropped = self._transact(record, tm=tm)
            except Exception as error:
                log.exception('recording the outcome of job %s failed',
                              run.jobid)
                failed = self._fail(
                    run.jobid, run.token, '%s while recording the outcome: '
                    '%s' % (type(error).__name__, error),
                    traceback.format_exc(), tm=tm)
                run.status = None if failed is None else failed.status
            else:
                if dropped is _GAVE_UP:
                    log.error('could not record the outcome of job %s for '
                              'conflicts; its lease will expire and it will '
                              'run again', run.jobid)
                    run.status = None
                elif dropped:
                    log.info('dropped the outcome of job %s: its lease is '
                             'gone', run.jobid)
                    run.status = None
        except Exception:
            log.exception('could not record job %s at all; its lease will '
                          'expire and it will run again', run.jobid)
            run.status = None
        finally:
            with self._lock:
                self._pending = [p for p in self._pending if p is not run]
        self._report(run)

    # -- the settler: outcomes do not wait for a long run -------------------

    def _settleLoop(self):
        """Record the outcomes that waited ``settleWithin`` seconds while
        the loop runs a long job, in a transaction manager of its own."""
        tm = transaction.TransactionManager()
        while not self._stopRequested:
            self._wake.wait(self.settleWithin / 2 or 0.01)
            if self._settleDue() and not self._stopRequested:
                try:
                    self._claim(0, tm)
                except Exception:
                    log.exception('recording the outcomes waiting failed')

    # -- running a claimed job ------------------------------------------------

    def _heartbeatFor(self, jobid, token):
        """The function a running task calls to extend its lease."""
        def heartbeat():
            return self._heartbeat(jobid, token)
        return heartbeat

    def _heartbeat(self, jobid, token):
        """Extend the lease in a connection and transaction of its own.

        Returns the lease's new end, or None if it could not be written for
        conflicts (the next heartbeat tries again). Raises LeaseLost.
        """
        tm = transaction.TransactionManager()
        last = None
        for attempt in range(self.attempts):
            conn = self.db.open(transaction_manager=tm)
            try:
                tm.begin()
                service = self.service(conn)
                expires = service.heartbeat(jobid, token, self.clock(),
                                            seconds=self.lease)
                tm.commit()
                with self._lock:
                    if jobid in self._inHand:
                        self._inHand[jobid][1] = time.monotonic()
                return expires
            except TransientError as error:
                tm.abort()
                last = error
                self._count('heartbeat')
                self._backoff(attempt)
            except BaseException:
                tm.abort()
                raise
            finally:
                conn.close()
        log.warning('could not extend the lease on job %s: %s', jobid, last)
        return None

    def _count(self, step):
        with self._lock:
            self.conflicts[step] += 1

    def _runJob(self, jobid, token, claimedAt=None, expires=None,
                group=False):
        """Run a job claimed under ``token``; return its `_Run` or None.

        ``claimedAt`` and ``expires`` (clock times) say when the claim was
        made and when its lease ends: a job that waited in a batch until
        half of its lease was gone is heartbeat before it runs. With
        ``group``, an outcome with nothing else to commit waits to be
        recorded with the next claim (``run.status`` is None until then).
        """
        if claimedAt is not None and expires is not None \
                and self.clock() >= (claimedAt + expires) / 2:
            try:
                self._heartbeat(jobid, token)
            except LeaseLost as error:
                log.info('dropped job %s before running it: %s', jobid, error)
                with self._lock:
                    self.stats['lost'] += 1
                return None
        started = time.monotonic()
        heartbeat = self._heartbeatFor(jobid, token)
        with self._lock:
            self._inHand[jobid] = [token, started]
        try:
            run = self._runAttempts(jobid, token, heartbeat, group)
        except Exception:
            # The database is gone or broken: the lease will expire and the
            # job will be given back.
            log.exception('could not run job %s', jobid)
            run = None
        finally:
            with self._lock:
                self._inHand.pop(jobid, None)
        seconds = time.monotonic() - started
        # Fast jobs: claim more at a time; a slow one: back to one.
        with self._lock:
            self._batch = (min(self.batch, self._batch * 2)
                           if seconds < self.batchBelow else 1)
        if run is None:
            with self._lock:
                self.stats['lost'] += 1
            return None
        run.seconds = seconds
        if run.status is None:
            with self._changed:
                self._pending.append(run)
                self._changed.notify_all()
        else:
            self._report(run)
        return run

    def _report(self, run):
        """Count a recorded run and log its line (or its loss)."""
        with self._lock:
            self.stats[run.status or 'lost'] += 1
        if run.status is None:
            return
        outcome = run.outcome
        jobLog.info('job %s %s %s in %.3fs (attempt %d)%s', run.jobid,
                    run.task, run.status, run.seconds or 0.0, run.attempts,
                    ': ' + outcome.error if outcome.failed else '')

    def _runAttempts(self, jobid, token, heartbeat, group=False):
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
                    before = _jobState(job)
                    outcome = service.runClaimed(jobid, token, self.clock(),
                                                 heartbeat)
                    run = _Run(jobid, token, job.task, job.attempts, outcome)
                    replaced = tm.get() is not txn
                    # What the task did that only this transaction can
                    # commit: objects written (its job's log and progress
                    # aside), or an outcome that refers to stored objects.
                    rerun = (replaced or _leftWork(conn, txn, job._p_oid)
                             or _jobState(job) != before)
                    if group and not rerun and not job.atMostOnce \
                            and not txn.isDoomed():
                        tm.abort()
                        return run      # to be recorded with the next claim
                    if replaced:
                        # The task committed or aborted: the lease was
                        # checked in a transaction that is gone.
                        self._checkLease(jobid, token)
                        rerun = _leftWork(conn, tm.get(), job._p_oid)
                service.recordOutcome(jobid, token,
                                      _rebound(run.outcome, conn))
                status = service.jobs[jobid].status
                tm.commit()
                run.status = status
                return run
            except LeaseLost as error:
                tm.abort()
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
                return self._fail(jobid, token, 'the task doomed its '
                                  'transaction; nothing it did was committed')
            except Exception as error:
                tm.abort()
                log.exception('committing the run of job %s failed', jobid)
                return self._fail(jobid, token, '%s while committing the '
                                  'run: %s' % (type(error).__name__, error),
                                  traceback.format_exc())
            except BaseException:
                tm.abort()
                raise
            finally:
                conn.close()
        return self._fail(jobid, token, 'gave up after %d attempts that '
                          'conflicted; last: %s' % (self.attempts, last))

    def _checkLease(self, jobid, token):
        """Raise LeaseLost unless the committed job is held under ``token``."""
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        try:
            tm.begin()
            service = self.service(conn)
            service.checkLease(jobid, token)
        finally:
            tm.abort()
            conn.close()

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
            except TransientError:
                tm.abort()
                if step is not None:
                    self._count(step)
                self._backoff(attempt)
            except BaseException:
                tm.abort()
                raise
            finally:
                conn.close()
        return _GAVE_UP

    def _fail(self, jobid, token, message, tb=None, tm=None):
        """Fail the job in a fresh transaction; return its `_Run` or None."""
        def record(service):
            job = service.jobs[jobid]
            service.checkLease(jobid, token)
            appendLog(job, tb or message)
            outcome = Outcome(job, self.clock(), failure=(message, tb))
            service.recordOutcome(jobid, token, outcome)
            run = _Run(jobid, token, job.task, job.attempts, outcome)
            run.status = job.status
            return run
        try:
            run = self._transact(record, tm=tm)
        except LeaseLost as error:
            log.info('dropped the run of job %s: %s', jobid, error)
            return None
        if run is _GAVE_UP:
            log.error('could not record the failure of job %s (%s); its '
                      'lease will expire and the service will recover it',
                      jobid, message)
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

    # -- automatic heartbeats ---------------------------------------------------

    def _beatLoop(self):
        interval = self.heartbeatInterval
        while not self._stopRequested:
            self._wake.wait(interval / 2)
            with self._lock:
                due = [(jobid, held[0]) for jobid, held in self._inHand.items()
                       if time.monotonic() - held[1] >= interval]
            for jobid, token in due:
                try:
                    self._heartbeat(jobid, token)
                except LeaseLost:
                    pass    # the run finds out when it commits
                except Exception:
                    log.exception('heartbeat for job %s failed', jobid)


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
        self._idleChanged = self._changed

    @property
    def threadsBusy(self):
        return self._busy

    def _loop(self):
        import queue
        work = queue.Queue()
        names = ['%s-%d' % (threading.current_thread().name, n)
                 for n in range(self.maxThreads)]
        pool = [threading.Thread(target=self._work, args=(work,),
                                 name=name, daemon=True) for name in names]
        for thread in pool:
            thread.start()
        try:
            failures = 0
            while self._going():
                with self._idleChanged:
                    # Room for a job per thread, and for a batch waiting
                    # while jobs run fast.
                    room = self.maxThreads + self._batch - 1
                    while self._busy >= room and self._going():
                        self._idleChanged.wait(self.waitTime)
                        room = self.maxThreads + self._batch - 1
                    free = room - self._busy
                if not self._going():
                    break
                claimed = self._claim(free)
                if claimed is None:
                    failures += 1
                    self._pause(failures)
                    continue
                failures = 0
                if claimed:
                    with self._idleChanged:
                        self._busy += len(claimed)
                    for item in claimed:
                        work.put(item)
                    if len(claimed) < free and self._batch > 1:
                        self._linger()
                    continue
                with self._idleChanged:
                    busy = self._busy
                if self.untilIdle and busy == 0 and not self._pending \
                        and self.isIdle():
                    break
                with self._idleChanged:
                    # A thread with an outcome to record wakes the loop.
                    if not self._pending and self._going():
                        self._idleChanged.wait(self.waitTime)
        except BaseException:
            # Interrupted: do not wait for the jobs in hand.
            for thread in pool:
                work.put(None)
            raise
        # Every job handed out is run before the threads see the end.
        for thread in pool:
            work.put(None)
        for thread in pool:
            thread.join()

    def _work(self, work):
        while True:
            item = work.get()
            if item is None:
                return
            try:
                self._runJob(*item, group=self.groupOutcomes)
            except BaseException:
                log.exception('running job %s failed', item[0])
            finally:
                with self._idleChanged:
                    self._busy -= 1
                    self._idleChanged.notify_all()


# -- processor threads, as the service starts and stops them -----------------

_registry = {}          # (db, path) -> (processor, thread)
_registryLock = threading.Lock()
_atexitRegistered = False


def findServicePath(service, depth=4, limit=10000):
    """The keys from the database root to ``service``, a stored service.

    Follows ``__parent__``/``__name__`` up as far as they go; the object
    where they end (the root, or a root folder without a name) is found by
    searching the root's mappings ``depth`` levels deep, looking at no more
    than ``limit`` entries. Without names the service itself is searched
    for. Raises ValueError when it is not found.
    """
    jar = service._p_jar
    if jar is None:
        raise ValueError('the service is not stored in a database: add it '
                         'and commit before starting to process its jobs')
    root = jar.root()
    names = []
    top = service
    while getattr(top, '__name__', None) and len(names) < 64:
        names.append(top.__name__)
        top = getattr(top, '__parent__', None)
    if names and top is not None:
        keys = tuple(reversed(names))
        above = () if top is root else _search(root, top, depth, limit)
        if above is not None:
            try:
                if traverse(root, above + keys) is service:
                    return above + keys
            except KeyError:
                pass
    found = _search(root, service, depth, limit)
    if found is None:
        raise ValueError('cannot find the service in its database (searched '
                         '%d levels from the root); give its path, e.g. '
                         'startProcessing("app/tasks")' % depth)
    return found


def _search(root, target, depth, limit):
    """The keys of ``target`` below ``root``, breadth first, or None."""
    seen = 0
    level = [((), root)]
    for _ in range(depth):
        following = []
        for keys, container in level:
            items = getattr(container, 'items', None)
            if not callable(items):
                continue
            try:
                entries = iter(items())
            except Exception:
                continue
            for key, value in entries:
                seen += 1
                if seen > limit:
                    return None
                if not isinstance(key, str):
                    continue
                if value is target:
                    return keys + (key,)
                following.append((keys + (key,), value))
        level = following
    return None


def _key(service, path=None):
    jar = service._p_jar
    if jar is None:
        raise ValueError('the service is not stored in a database: add it '
                         'and commit before starting to process its jobs')
    keys = splitPath(path) if path is not None else findServicePath(service)
    return jar.db(), keys


def startProcessing(service, path=None):
    """Start a processor thread for ``service`` unless one runs already.

    The processor is ``service.processorFactory`` (default
    `SimpleProcessor`) called with the database, the path and
    ``service.processorArguments``. Returns the processor.
    """
    global _atexitRegistered
    db, keys = _key(service, path)
    factory = service.processorFactory or SimpleProcessor
    arguments = dict(service.processorArguments or {})
    with _registryLock:
        running = _registry.get((db, keys))
        if running is not None and running[1].is_alive() \
                and not running[0]._stopRequested:
            return running[0]
        processor = factory(db, keys, **arguments)
        thread = threading.Thread(target=processor, daemon=True,
                                  name='zodbtasks %s' % '/'.join(keys))
        _registry[db, keys] = (processor, thread)
        if not _atexitRegistered:
            atexit.register(stopAll, 10)
            _atexitRegistered = True
        thread.start()
    log.info('started %r', processor)
    return processor


def stopProcessing(service, path=None, timeout=None):
    """Stop the processor thread of ``service`` after the job in hand.

    Waits up to ``timeout`` seconds (None: until the job in hand ends) and
    returns whether the thread ended. Python threads cannot be interrupted
    safely, so a second request waits again; a worker *process* (the
    ``zodbtasks worker`` command) is interrupted by a second signal.
    """
    db, keys = _key(service, path)
    with _registryLock:
        entry = _registry.get((db, keys))
    if entry is None:
        return True
    return _stop(entry, timeout, (db, keys))


def _stop(entry, timeout, key):
    processor, thread = entry
    processor.stop()
    if thread is not threading.current_thread():
        thread.join(timeout)
    stopped = not thread.is_alive()
    if stopped:
        with _registryLock:
            if _registry.get(key) is entry:
                del _registry[key]
    return stopped


def isProcessing(service, path=None):
    """Whether a processor thread runs for ``service`` and was not stopped."""
    db, keys = _key(service, path)
    with _registryLock:
        entry = _registry.get((db, keys))
    return (entry is not None and entry[1].is_alive()
            and not entry[0]._stopRequested)


def stopAll(timeout=None, db=None):
    """Stop every processor thread (of ``db`` only, if given)."""
    with _registryLock:
        entries = [(key, entry) for key, entry in _registry.items()
                   if db is None or key[0] is db]
    for _, (processor, _thread) in entries:
        processor.stop()
    return all([_stop(entry, timeout, key) for key, entry in entries])


def running():
    """The processors whose threads run, as ((db, path), processor) pairs."""
    with _registryLock:
        return [(key, entry[0]) for key, entry in _registry.items()
                if entry[1].is_alive()]
