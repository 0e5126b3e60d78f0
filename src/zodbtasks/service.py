"""The task service: a persistent queue and scheduler of jobs.

Layout of the data, chosen so that every operation costs O(log n) and that
two connections adding jobs at once nearly never write or split the same
BTree (see `zodbtasks._trees` for why splits matter):

``jobs``
    job id -> job, over 256 LOBTrees chosen by the top bits of the id. Ids
    are random, so concurrent adds land in different trees.
``_queue``
    16 LLBTrees, the lanes, of order key -> job id: jobs to run as soon as
    possible, oldest first. Each job goes to a random lane; its key holds the
    lane in its top bits and below them an order key that grows with the
    time the job was added. The oldest job is the smallest order key among
    the lane heads.
``_scheduled``
    LLBTree, due key -> job id: delayed and cron jobs by the time they are
    due next, in milliseconds, with 20 random low bits that keep keys unique.
``_unplaced``
    LLBTree, random key -> job id: delayed and cron jobs whose first due time
    is fixed at the next tick (the reference package's behaviour).
``_finished``
    OOBTree, status -> set of ids (16 LLTreeSets): finished jobs, so that
    ``clean`` costs what it removes.

Each job remembers which index holds it and under which key.
"""
import math
import pickle
import random
import time
import traceback

import persistent
import transaction
import zope.component
from BTrees.LLBTree import LLBTree
from BTrees.OOBTree import OOBTree
from transaction.interfaces import TransientError
from zope.interface import implementer

from zodbtasks import interfaces
from zodbtasks.context import JobContext
from zodbtasks.context import appendLog
from zodbtasks.interfaces import LeaseLost
from zodbtasks._trees import ShardedMapping
from zodbtasks._trees import ShardedSet
from zodbtasks.job import CronJob
from zodbtasks.job import Job
from zodbtasks.job import Lease
from zodbtasks.job import checkTime
from zodbtasks.task import TaskError

#: Job ids are drawn from [1, MAX_JOB_ID]: random, and exact in JSON.
MAX_JOB_ID = 2 ** 53 - 1

_LOW_BITS = 20
_LOW_MASK = (1 << _LOW_BITS) - 1
_LANES = 16
_LANE_SHIFT = 59          # 4 lane bits above a 59-bit order key
_ORDER_SHIFT = 12         # order keys: milliseconds, 4096 per millisecond
_MAX_KEY = 2 ** 63 - 1
_ORDER_MASK = (1 << _LANE_SHIFT) - 1
_QUEUE, _SCHEDULED, _UNPLACED = '_queue', '_scheduled', '_unplaced'
_WAITING = (interfaces.QUEUED, interfaces.DELAYED, interfaces.CRONJOB,
            interfaces.STARTLATER)


def _timeKey(seconds):
    """The first due key of the millisecond that holds ``seconds``."""
    return math.floor(seconds * 1000) << _LOW_BITS


def _randomKey():
    return random.randint(0, _MAX_KEY)


@implementer(interfaces.ITaskService)
class TaskService(persistent.Persistent):
    """A persistent queue and scheduler of jobs; see `ITaskService`."""

    taskInterface = interfaces.ITask
    __parent__ = __name__ = None
    #: How long a claim lasts, in seconds, unless the job says otherwise.
    leaseSeconds = 60
    #: The processor class that `startProcessing` starts (None: the
    #: processor module's default) and the keyword arguments it gets.
    processorFactory = None
    processorArguments = {'waitTime': 1.0}

    def __init__(self):
        self.jobs = ShardedMapping()
        self._queue = tuple(LLBTree() for _ in range(_LANES))
        self._scheduled = LLBTree()
        self._unplaced = LLBTree()
        self._leases = LLBTree()
        self._finished = OOBTree()
        for status in interfaces.FINISHED:
            self._finished[status] = ShardedSet()

    # -- the clock ---------------------------------------------------------

    @property
    def clock(self):
        """The function giving the time when a call gets no ``now``.

        It defaults to `time.time`. Setting it affects this copy of the
        service in memory only: it is never stored in the database.
        """
        return getattr(self, '_v_clock', None) or time.time

    @clock.setter
    def clock(self, func):
        self._v_clock = func

    @clock.deleter
    def clock(self):
        self._v_clock = None

    def _now(self, now):
        return self.clock() if now is None else checkTime(now)

    # -- adding jobs -------------------------------------------------------

    def getAvailableTasks(self):
        return dict(zope.component.getUtilitiesFor(self.taskInterface))

    def add(self, task, input=None, startLater=False, now=None, **options):
        now = self._now(now)
        self._checkNewJob(task, input, options)
        job = Job(self._newId(), task, input, created=now)
        self._store(job, options)
        if startLater:
            job.status = interfaces.STARTLATER
        else:
            self._enqueue(job, now)
        return job.id

    def addCronJob(self, task, input=None, minute=(), hour=(), dayOfMonth=(),
                   month=(), dayOfWeek=(), delay=None, startLater=False,
                   now=None, leaseSeconds=None, atMostOnce=False, **schedule):
        now = self._now(now)
        options = dict(leaseSeconds=leaseSeconds, atMostOnce=atMostOnce)
        self._checkNewJob(task, input, options)
        job = CronJob(0, task, input, minute, hour, dayOfMonth, month,
                      dayOfWeek, delay, created=now, **schedule)
        job.id = self._newId()
        self._store(job, options)
        if startLater:
            job.status = interfaces.STARTLATER
        else:
            self._index(_UNPLACED, job, _randomKey())
        return job.id

    #: Per-job options that `add` and `addCronJob` accept, with defaults.
    jobOptions = {'leaseSeconds': None, 'atMostOnce': False}

    def _checkNewJob(self, task, input, options):
        unknown = set(options) - set(self.jobOptions)
        if unknown:
            raise TypeError('unknown job option(s) %s; accepted are %s' % (
                ', '.join(sorted(unknown)), ', '.join(sorted(self.jobOptions))))
        if zope.component.queryUtility(self.taskInterface, task) is None:
            names = sorted(self.getAvailableTasks())
            raise ValueError('no task is registered under the name %r; '
                             'registered tasks: %s'
                             % (task, ', '.join(map(repr, names)) or 'none'))
        try:
            pickle.dumps(input, 3)
        except Exception as error:
            raise TypeError('the input of a job must be picklable, but %r '
                            'is not: %s' % (input, error)) from error
        seconds = options.get('leaseSeconds')
        if seconds is not None:
            checkTime(seconds, 'leaseSeconds')
            if seconds <= 0:
                raise ValueError('leaseSeconds must be a positive number of '
                                 'seconds, got %r' % (seconds,))
        if not isinstance(options.get('atMostOnce', False), bool):
            raise TypeError('atMostOnce must be True or False, not %r'
                            % (options['atMostOnce'],))

    def _newId(self):
        return random.randint(1, MAX_JOB_ID)

    def _store(self, job, options):
        for name, value in options.items():
            if value != self.jobOptions[name]:
                setattr(job, name, value)
        while not self.jobs.insert(job.id, job):
            job.id = self._newId()

    # -- the indexes -------------------------------------------------------

    def _orderKey(self, now):
        """An order key after every one this copy of the service made before.

        The clock orders jobs added by different processes, and random low
        bits keep two of them adding in the same millisecond from choosing
        the same key. Within one connection a volatile counter keeps jobs in
        the order they were added, even when the clock stands still.
        """
        key = max(max(0, math.floor(now * 1000)) << _ORDER_SHIFT
                  | random.getrandbits(_ORDER_SHIFT),
                  getattr(self, '_v_lastOrderKey', -1) + 1)
        self._v_lastOrderKey = key
        return key

    def _index(self, name, job, key):
        tree = self._tree(name, key)
        while not tree.insert(key, job.id):
            key = _randomKey() if name == _UNPLACED else key + 1
        job._index = name
        job._indexKey = key

    def _tree(self, name, key):
        if name == _QUEUE:
            return self._queue[key >> _LANE_SHIFT]
        return getattr(self, name)

    def _unindex(self, job):
        name = getattr(job, '_index', None)
        if name is not None:
            del self._tree(name, job._indexKey)[job._indexKey]
            job._index = job._indexKey = None

    def _enqueue(self, job, now):
        job.status = interfaces.QUEUED
        lane = random.randrange(_LANES)
        self._index(_QUEUE, job, lane << _LANE_SHIFT | self._orderKey(now))

    def _queueHead(self):
        """The oldest queued job's lane and key, or None."""
        best = bestOrder = None
        for lane in self._queue:
            if lane:
                key = lane.minKey()
                if bestOrder is None or key & _ORDER_MASK < bestOrder:
                    best, bestOrder = (lane, key), key & _ORDER_MASK
        return best

    def _schedule(self, job, due):
        job.scheduledFor = due
        key = _timeKey(due) | random.randint(0, _LOW_MASK)
        self._index(_SCHEDULED, job, key)

    def _finish(self, job, status):
        job.status = status
        self._finished[status].insert(job.id)

    def _placeNewJobs(self, now):
        """Fix the first due time of the jobs added since the last tick."""
        while self._unplaced:
            key = self._unplaced.minKey()
            job = self.jobs[self._unplaced.pop(key)]
            job._index = job._indexKey = None
            due = job.timeOfNextCall(now)
            if due is None:
                job.scheduledFor = None
                self._finish(job, interfaces.COMPLETED)
            else:
                self._schedule(job, due)

    # -- managing jobs -----------------------------------------------------

    def _job(self, jobid):
        try:
            return self.jobs[jobid]
        except (KeyError, IndexError, TypeError):
            raise KeyError('no job with id %r in this service' % (jobid,))

    def startJob(self, jobid, now=None):
        now = self._now(now)
        job = self._job(jobid)
        if job.status != interfaces.STARTLATER:
            raise ValueError('job %r is %r, not waiting to start (%r)'
                             % (jobid, job.status, interfaces.STARTLATER))
        if isinstance(job, CronJob):
            job.status = (interfaces.CRONJOB if job.delay is None
                          else interfaces.DELAYED)
            self._index(_UNPLACED, job, _randomKey())
        else:
            self._enqueue(job, now)
        return True

    def reschedule(self, jobid):
        job = self._job(jobid)
        if not isinstance(job, CronJob):
            raise ValueError('job %r is not a cron job and has no schedule'
                             % (jobid,))
        if job.status in interfaces.FINISHED:
            raise ValueError('job %r is %r and will not run again'
                             % (jobid, job.status))
        if job.status in (interfaces.CRONJOB, interfaces.DELAYED):
            self._unindex(job)
            job.scheduledFor = None
            self._index(_UNPLACED, job, _randomKey())
        # A job that is processing or starts later is placed by the
        # schedule it has then.

    def cancel(self, jobid):
        job = self._job(jobid)
        if job.status in interfaces.FINISHED:
            return
        self._unindex(job)
        if isinstance(job, CronJob):
            job.scheduledFor = None
        self._finish(job, interfaces.CANCELLED)

    def clean(self, status=interfaces.FINISHED):
        if isinstance(status, str):
            status = (status,)
        unknown = [s for s in status if s not in interfaces.FINISHED]
        if unknown:
            raise ValueError('clean removes finished jobs only; %s is not '
                             'one of %s' % (', '.join(map(repr, unknown)),
                                            ', '.join(interfaces.FINISHED)))
        for name in status:
            ids = self._finished[name]
            for jobid in list(ids):
                del self.jobs[jobid]
            ids.clear()

    def getStatus(self, jobid):
        return self._job(jobid).status

    def getResult(self, jobid):
        return self._job(jobid).output

    def getError(self, jobid):
        return self._job(jobid).error

    # -- processor threads -------------------------------------------------
    # The service only delegates: threads are the processor module's job.

    def startProcessing(self, path=None):
        """Start a processor thread for this service (stored in a database).

        ``path`` is the slash-separated path of keys from the database root
        to this service; without it the processor looks the service up.
        """
        from zodbtasks import processor
        processor.startProcessing(self, path)

    def stopProcessing(self):
        """Stop this service's processor thread after the job in hand."""
        from zodbtasks import processor
        processor.stopProcessing(self)

    def isProcessing(self):
        """Whether a processor thread runs for this service."""
        from zodbtasks import processor
        return processor.isProcessing(self)

    # -- running jobs ------------------------------------------------------

    def hasJobsWaiting(self, now=None):
        now = self._now(now)
        if any(self._queue):
            return True
        limit = _timeKey(now) | _LOW_MASK
        if self._scheduled and self._scheduled.minKey() <= limit:
            return True
        # An expired lease counts: its job is to be given back.
        return any(self._liveLeases(max=limit))

    def isIdle(self, now=None):
        """Whether no job is due at ``now`` and no worker holds one."""
        return not self.hasJobsWaiting(now) and not any(self._liveLeases())

    def _liveLeases(self, max=None):
        """The keys of the leases still held, up to ``max``.

        A run that ends leaves its lease's index entry behind (so that the
        run's transaction does not write the shared index); such entries are
        skipped here and dropped by the next claim after they expire.
        """
        for key, jobid in self._leases.items(max=max):
            job = self.jobs.get(jobid)
            if job is not None and job.lease is not None \
                    and job.lease.key == key:
                yield key

    def claimNextJob(self, now=None, worker=None, lease=None):
        """Claim the next due job for ``worker`` and return its id, or None.

        The job is ``processing`` under a lease of ``lease`` seconds (default:
        the job's ``leaseSeconds``, else the service's). Commit, then run it
        with ``processNext(now, jobid, token=job.lease.token)``. A lease that
        expires before the run is recorded gives the job back to the queue,
        or fails it if it runs at most once.
        """
        now = self._now(now)
        if lease is not None:
            checkTime(lease, 'lease')
            if lease <= 0:
                raise ValueError('lease must be a positive number of '
                                 'seconds, got %r' % (lease,))
        job = self._claim(now)
        if job is None:
            return None
        seconds = lease or job.leaseSeconds or self.leaseSeconds
        job.lease = Lease(random.getrandbits(63), worker, now + seconds)
        self._indexLease(job.lease, job.id)
        return job.id

    def heartbeat(self, jobid, token, now=None, seconds=None):
        """Extend the lease ``token`` on job ``jobid``; return its new end.

        Raises `LeaseLost` if that lease is no longer the job's.
        """
        now = self._now(now)
        job = self._job(jobid)
        lease = self._checkLease(job, token)
        seconds = seconds or job.leaseSeconds or self.leaseSeconds
        del self._leases[lease.key]
        lease.expires = now + seconds
        self._indexLease(lease, jobid)
        return lease.expires

    def _checkLease(self, job, token):
        lease = job.lease
        if (job.status != interfaces.PROCESSING or lease is None
                or lease.token != token):
            raise LeaseLost('job %r is no longer held under lease %r (it is '
                            '%r)' % (job.id, token, job.status))
        return lease

    def _indexLease(self, lease, jobid):
        key = _timeKey(lease.expires) | random.getrandbits(_LOW_BITS)
        while not self._leases.insert(key, jobid):
            key = _timeKey(lease.expires) | random.getrandbits(_LOW_BITS)
        lease.key = key

    def _recoverExpired(self, now):
        """Give back the jobs whose worker let its lease expire."""
        leases = self._leases
        limit = _timeKey(now) | _LOW_MASK
        while leases and leases.minKey() <= limit:
            key = leases.minKey()
            job = self.jobs.get(leases[key])
            lease = None if job is None else job.lease
            if lease is None or lease.key != key:
                del leases[key]       # the run ended, or was extended
                continue
            if lease.expires > now:
                break                 # within the same millisecond
            del leases[key]
            job.lease = None
            message = ('the worker %s lost its lease on this job at %s'
                       % (lease.worker or '(unnamed)', lease.expires))
            if job.atMostOnce:
                job.error, job.traceback = message, None
                job.completed = now
                self._endRun(job, now, failed=True)
            elif isinstance(job, CronJob):
                # The lost run is due again at once; the schedule goes on
                # from there.
                self._unindex(job)
                job.status = (interfaces.CRONJOB if job.delay is None
                              else interfaces.DELAYED)
                self._schedule(job, now)
            else:
                job.status = interfaces.QUEUED
                # Ahead of the jobs that were added after it.
                lane = random.randrange(_LANES)
                self._index(_QUEUE, job, lane << _LANE_SHIFT
                            | random.getrandbits(_ORDER_SHIFT))

    def _claim(self, now):
        if self._unplaced:
            self._placeNewJobs(now)
        if self._leases:
            self._recoverExpired(now)
        scheduled = self._scheduled
        limit = _timeKey(now) | _LOW_MASK
        while scheduled and scheduled.minKey() <= limit:
            job = self.jobs[scheduled[scheduled.minKey()]]
            if job.scheduledFor > now:
                break
            if job.status != interfaces.PROCESSING:
                self._startRun(job, now)
                return job
            # Its last run is still going: this one waits for the next time.
            self._unindex(job)
            self._placeAfter(job, now)
        head = self._queueHead()
        if head is None:
            return None
        lane, key = head
        job = self.jobs[lane[key]]
        self._startRun(job, now)
        return job

    def _placeAfter(self, job, now):
        due = job.timeOfNextCall(now)
        if due is None:
            job.scheduledFor = None
        else:
            self._schedule(job, due)

    def _startRun(self, job, now):
        self._unindex(job)
        job.status = interfaces.PROCESSING
        job.started = now
        job.attempts += 1
        if isinstance(job, CronJob) and job.delay is None:
            # A cron job is placed at its next time when a run starts, so
            # that the run's own transaction need not touch the schedule.
            self._placeAfter(job, now)

    def processNext(self, now=None, jobid=None, token=None, heartbeat=None):
        now = self._now(now)
        if jobid is None:
            job = self._claim(now)
            if job is None:
                return False
        else:
            job = self._job(jobid)
            if token is not None:
                self._checkLease(job, token)
            elif job.status in interfaces.FINISHED:
                return False
            elif job.status != interfaces.PROCESSING:
                if self._unplaced:
                    self._placeNewJobs(now)
                self._startRun(job, now)
        self._run(job, now, heartbeat)
        return True

    def process(self, now=None):
        now = self._now(now)
        count = 0
        while self.processNext(now):
            count += 1
        return count

    def _transaction(self):
        # The connection may use its own transaction manager, not the
        # thread's default one (``db.transaction()`` does that).
        jar = self._p_jar
        if jar is not None and jar.transaction_manager is not None:
            return jar.transaction_manager.get()
        return transaction.get()

    def _run(self, job, now, heartbeat=None):
        """Run a claimed job and record its outcome."""
        task = zope.component.queryUtility(self.taskInterface, job.task)
        savepoint = self._transaction().savepoint(optimistic=True)
        failure = None
        if task is None:
            failure = ('no task is registered under the name %r; registered '
                       'tasks: %s' % (job.task, ', '.join(
                           map(repr, sorted(self.getAvailableTasks())))
                           or 'none'), None)
        else:
            try:
                with JobContext(self, job, now, heartbeat):
                    output = task(self, job.id, job.input)
                pickle.dumps(output, 3)
            except TransientError:
                raise
            except TaskError as error:
                failure = (str(error), traceback.format_exc())
            except Exception as error:
                failure = ('%s: %s' % (type(error).__name__, error),
                           traceback.format_exc())
        if failure is not None:
            # Undo what the task changed, but keep what it told its job.
            told = job.log, job.progress
            savepoint.rollback()
            job.log, job.progress = told
            appendLog(job, failure[1] or failure[0])
        job.completed = now
        if failure is None:
            job.output = output
            job.error = job.traceback = None
        else:
            job.error, job.traceback = failure
        self._endRun(job, now, failed=failure is not None)

    def _endRun(self, job, now, failed):
        job.lease = None   # its index entry is dropped when it comes due
        if job.status == interfaces.CANCELLED:
            return  # cancelled while running: it stays cancelled
        if (isinstance(job, CronJob) and job.delay is None
                and job.scheduledFor is not None):
            job.status = interfaces.CRONJOB
            return
        if isinstance(job, CronJob):
            job.scheduledFor = None
        self._finish(job, interfaces.ERROR if failed else interfaces.COMPLETED)
