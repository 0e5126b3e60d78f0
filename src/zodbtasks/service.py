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
from zodbtasks._trees import ShardedMapping
from zodbtasks._trees import ShardedSet
from zodbtasks.job import CronJob
from zodbtasks.job import Job
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

    def __init__(self):
        self.jobs = ShardedMapping()
        self._queue = tuple(LLBTree() for _ in range(_LANES))
        self._scheduled = LLBTree()
        self._unplaced = LLBTree()
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

    def add(self, task, input=None, startLater=False):
        self._checkNewJob(task, input)
        job = Job(self._newId(), task, input, created=self.clock())
        self._store(job)
        if startLater:
            job.status = interfaces.STARTLATER
        else:
            self._enqueue(job)
        return job.id

    def addCronJob(self, task, input=None, minute=(), hour=(), dayOfMonth=(),
                   month=(), dayOfWeek=(), delay=None, startLater=False,
                   **schedule):
        self._checkNewJob(task, input)
        job = CronJob(0, task, input, minute, hour, dayOfMonth, month,
                      dayOfWeek, delay, created=self.clock(), **schedule)
        job.id = self._newId()
        self._store(job)
        if startLater:
            job.status = interfaces.STARTLATER
        else:
            self._index(_UNPLACED, job, _randomKey())
        return job.id

    def _checkNewJob(self, task, input):
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

    def _newId(self):
        return random.randint(1, MAX_JOB_ID)

    def _store(self, job):
        while not self.jobs.insert(job.id, job):
            job.id = self._newId()

    # -- the indexes -------------------------------------------------------

    def _orderKey(self):
        """An order key after every one this copy of the service made before.

        The clock orders jobs added by different processes, and random low
        bits keep two of them adding in the same millisecond from choosing
        the same key. Within one connection a volatile counter keeps jobs in
        the order they were added, even when the clock stands still.
        """
        key = max(max(0, math.floor(self.clock() * 1000)) << _ORDER_SHIFT
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

    def _enqueue(self, job):
        job.status = interfaces.QUEUED
        lane = random.randrange(_LANES)
        self._index(_QUEUE, job, lane << _LANE_SHIFT | self._orderKey())

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

    def startJob(self, jobid):
        job = self._job(jobid)
        if job.status != interfaces.STARTLATER:
            raise ValueError('job %r is %r, not waiting to start (%r)'
                             % (jobid, job.status, interfaces.STARTLATER))
        if isinstance(job, CronJob):
            job.status = (interfaces.CRONJOB if job.delay is None
                          else interfaces.DELAYED)
            self._index(_UNPLACED, job, _randomKey())
        else:
            self._enqueue(job)
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

    # -- running jobs ------------------------------------------------------

    def hasJobsWaiting(self, now=None):
        now = self._now(now)
        if any(self._queue):
            return True
        if self._scheduled:
            key = self._scheduled.minKey()
            return (key <= _timeKey(now) | _LOW_MASK
                    and self.jobs[self._scheduled[key]].scheduledFor <= now)
        return False

    def claimNextJob(self, now=None):
        job = self._claim(self._now(now))
        return None if job is None else job.id

    def _claim(self, now):
        if self._unplaced:
            self._placeNewJobs(now)
        job = None
        if self._scheduled:
            key = self._scheduled.minKey()
            if key <= _timeKey(now) | _LOW_MASK:
                candidate = self.jobs[self._scheduled[key]]
                if candidate.scheduledFor <= now:
                    job = candidate
        if job is None:
            head = self._queueHead()
            if head is not None:
                lane, key = head
                job = self.jobs[lane[key]]
        if job is not None:
            self._startRun(job, now)
        return job

    def _startRun(self, job, now):
        self._unindex(job)
        job.status = interfaces.PROCESSING
        job.started = now

    def processNext(self, now=None, jobid=None):
        now = self._now(now)
        if jobid is None:
            job = self._claim(now)
            if job is None:
                return False
        else:
            job = self._job(jobid)
            if job.status in interfaces.FINISHED:
                return False
            if job.status != interfaces.PROCESSING:
                if self._unplaced:
                    self._placeNewJobs(now)
                self._startRun(job, now)
        self._run(job, now)
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

    def _run(self, job, now):
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
            savepoint.rollback()
        job.completed = now
        if failure is None:
            job.output = output
            job.error = job.traceback = None
        else:
            job.error, job.traceback = failure
        self._endRun(job, now, failed=failure is not None)

    def _endRun(self, job, now, failed):
        if job.status == interfaces.CANCELLED:
            return  # cancelled while running: it stays cancelled
        if isinstance(job, CronJob) and job.delay is None:
            job.status = interfaces.CRONJOB
            due = job.timeOfNextCall(now)
            if due is not None:
                self._schedule(job, due)
                return
            job.scheduledFor = None
        self._finish(job, interfaces.ERROR if failed else interfaces.COMPLETED)
