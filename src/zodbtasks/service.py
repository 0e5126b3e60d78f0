"""The task service: a persistent queue and scheduler of jobs.

Layout of the data, chosen so that every operation costs O(log n) and that
two connections adding jobs at once nearly never write or split the same
BTree (see `zodbtasks._trees` for why splits matter):

``jobs``
    job id -> job, over 256 LOBTrees chosen by the top bits of the id. Ids
    are random, so concurrent adds land in different trees.
``_queues``
    OOBTree, queue name -> `zodbtasks.queues.Queue`: each named queue's 16
    lanes (jobs to run as soon as possible, by priority, then age) and its
    tree of due times (delayed, cron and retrying jobs), so that a claim
    reads only the queues it serves. ``_queue`` and ``_scheduled`` are the
    default queue's trees, where layouts before 4 kept every job.
``_unplaced``
    LLBTree, random key -> job id: delayed and cron jobs whose first due time
    is fixed at the next tick (the reference package's behaviour).
``_leases``
    16 LLBTrees, expiry key -> job id: the claims of workers, so that a job
    whose worker died is found when its lease runs out. The lowest bits of
    a key name its tree, which the worker's name chooses: a worker's claims
    write one tree, and workers claiming at once rarely write the same one.
    Like the lanes, each tree keeps a placeholder first key (0). Each lease
    says whether its run began (``Lease.started``) and where its job waited
    (``Lease.place``), so that a claim that never began is given back.
``_listing``
    16 OOBTrees of (status, task[, queue]) -> LLBTree: every job but the
    running ones, in the order that matters for its status, so that a page
    of jobs costs what it shows (see `zodbtasks.listing`); each connection
    writes one of them. Layouts before 4 kept the finished ids in
    ``_finished`` instead, which goes once their listings are built.
``_expiry``
    LLBTree, expiry key -> job id: finished jobs with a time to live.
``_counts``
    16 `zodbtasks.counts.Counts`, (status, task) -> number of jobs: each
    connection writes its changes to one of them, and concurrent changes
    to one are added up, so that counts never make claims conflict. Each
    job remembers what it is counted as (``_counted``). A service of an
    older layout counts and lists its jobs in bounded batches
    (`buildCounts`, the ``zodbtasks upgrade`` command); ``_countBuild`` and
    ``_listBuild`` say how far they got, and are None once every job is
    counted and listed.

Each job remembers which index holds it and under which key.

A run's own transaction writes only the job, its listing and count shards
and, for a job with a time to live, the expiry index: a cron job's next time is placed
when its run starts, and a lease's index entry is left behind to be dropped
by a later claim. Workers that run tasks concurrently therefore rarely
conflict, and a conflict never forces a task to run twice for bookkeeping.
"""
import collections
import datetime
import heapq
import importlib
import itertools
import logging
import math
import pickle
import random
import time
import traceback
import weakref
import zlib

import persistent
import transaction
import zope.component
import zope.event
from BTrees.LLBTree import LLBTree
from BTrees.OOBTree import OOBTree
from transaction.interfaces import TransientError
from zope.interface import implementer

from zodbtasks import counts as _counting
from zodbtasks import events
from zodbtasks import interfaces
from zodbtasks import limits as _limits
from zodbtasks import listing as _listing
from zodbtasks import queues as _queues
from zodbtasks._trees import ShardedMapping
from zodbtasks._trees import ShardedSet
from zodbtasks._trees import pathTo
from zodbtasks.context import JobContext
from zodbtasks.context import appendLog
from zodbtasks.interfaces import LeaseLost
from zodbtasks.interfaces import TaskMissing
from zodbtasks.job import JOB_OPTIONS
from zodbtasks.job import MAX_DURATION as _MAX_DURATION
from zodbtasks.job import MAX_NOW
from zodbtasks.job import CronJob
from zodbtasks.job import Job
from zodbtasks.job import Lease
from zodbtasks.job import checkDuration
from zodbtasks.job import checkMoment
from zodbtasks.job import checkOptions
from zodbtasks.job import checkTime  # noqa: F401 (for the claim and run code)
from zodbtasks.middleware import run_task as runTask
from zodbtasks.task import Retry
from zodbtasks.task import TaskError

_log = logging.getLogger('zodbtasks')

#: Job ids are drawn from [1, MAX_JOB_ID]: random, and exact in JSON.
MAX_JOB_ID = 2 ** 53 - 1

#: The current layout of a service's data.
LAYOUT = 4

#: How many failures a job remembers.
KEEP_FAILURES = 10

#: How many runs before the latest one a job remembers (``history``).
KEEP_RUNS = 10

#: How many expired jobs one claim removes at most, to keep claims short.
PURGE_PER_CLAIM = 100

_LOW_BITS = 20
_LOW_MASK = (1 << _LOW_BITS) - 1
_LEASE_SHARD_BITS = 4
_LEASE_SHARDS = 1 << _LEASE_SHARD_BITS
_LEASE_SHARD_MASK = _LEASE_SHARDS - 1
_LANE_BITS = _queues.LANE_BITS
_LANES = _queues.LANES
_LANE_SHIFT = _queues.LANE_SHIFT
_ORDER_SHIFT = _queues.ORDER_SHIFT
_MAX_KEY = 2 ** 63 - 1
_PLACEHOLDER = _queues.PLACEHOLDER
_laneFirst = _queues.lane_first
_laneItems = _queues.lane_items
_newLane = _queues.new_lane
_QUEUE, _SCHEDULED, _UNPLACED = '_queue', '_scheduled', '_unplaced'
_LIMITED = '_limited'     # held back by a limit (see `zodbtasks.limits`)

#: The counts shard of each connection (see `TaskService._countShard`).
_SHARD_OF = weakref.WeakKeyDictionary()
_NEXT_SHARD = itertools.count(random.randrange(1 << 16))

#: Marks a value not worked out yet.
_UNKNOWN = object()

#: What `TaskService._findTask` gives for a task it must not run.
_UNTRUSTED = object()

#: The statuses listed by where the job waits (the others by the time of
#: the change that gave them).
_LISTED_BY_INDEX = frozenset((interfaces.QUEUED, interfaces.DELAYED,
                              interfaces.CRONJOB, interfaces.RETRYING))

# Why a job waits in the schedule; only regular runs can misfire.
_REGULAR, _RETRY, _NOW = None, 'retry', 'now'


def _timeKey(seconds):
    """The first due key of the millisecond that holds ``seconds``."""
    return math.floor(seconds * 1000) << _LOW_BITS


def _randomKey():
    return random.getrandbits(63)


def _waiting(job):
    """The status of a repeating or delayed job waiting for its time."""
    return interfaces.CRONJOB if job.delay is None else interfaces.DELAYED


def _repeats(job):
    return isinstance(job, CronJob) and job.delay is None


def _notify(event, service, job, now, **details):
    if zope.event.subscribers:
        made = event(service, job, now, **details)
        kept = getattr(service, '_v_keptEvents', None)
        if kept is None:
            zope.event.notify(made)
        else:
            kept.append(made)


class _Setting:
    """A setting of the service stored in its state, checked when it is set
    (by `check`, which returns the value to store)."""

    default = None

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, service, owner=None):
        if service is None:
            return self
        service._p_activate()
        return service.__dict__.get(self.name, self.default)

    def __set__(self, service, value):
        value = self.check(value)
        service._p_activate()
        service.__dict__[self.name] = value
        service._p_changed = True

    def __delete__(self, service):
        service._p_activate()
        service.__dict__.pop(self.name, None)
        service._p_changed = True


class _Duration(_Setting):
    """A setting in seconds: a bad value would otherwise reach the indexes
    with every job that uses it."""

    def __init__(self, default, positive=False, optional=False):
        self.default = default
        self.positive = positive
        self.optional = optional

    def check(self, value):
        if not (self.optional and value is None):
            checkDuration(value, self.name, positive=self.positive)
        return value


class _Prefixes(_Setting):
    """The ``trustedModules`` setting: module names (prefixes) whose
    functions and methods may be tasks without being registered."""

    default = ()

    def check(self, value):
        if isinstance(value, str):
            value = value.replace(',', ' ').split()
        try:
            prefixes = tuple(value)
        except TypeError:
            prefixes = None
        if prefixes is None or not all(
                isinstance(p, str) and p and p.strip('.') == p
                and ' ' not in p for p in prefixes):
            raise TypeError('%s is a list of module names such as '
                            '["myapp.tasks"], not %r' % (self.name, value))
        return prefixes


def _trusted(prefixes, module):
    """Whether ``module`` is one of ``prefixes`` or inside one of them."""
    return isinstance(module, str) and any(
        module == p or module.startswith(p + '.') for p in prefixes)


class _ProcessorFactory:
    """``TaskService.processorFactory``: the processor class that
    `startProcessing` runs, `zodbtasks.processor.SimpleProcessor` unless a
    service is given another, as in the reference package.

    The default is imported when it is first asked for: the processor
    module imports this one, so this one must not import it when it loads.
    """

    def __get__(self, service, owner=None):
        if service is not None:
            service._p_activate()
            chosen = service.__dict__.get('processorFactory')
            if chosen is not None:
                return chosen
        from zodbtasks.processor import SimpleProcessor
        return SimpleProcessor

    def __set__(self, service, factory):
        if factory is not None and not callable(factory):
            raise TypeError('processorFactory is a processor class (or a '
                            'callable that makes one) or None for the '
                            'default, not %r' % (factory,))
        service._p_activate()
        if factory is None:
            service.__dict__.pop('processorFactory', None)
        else:
            service.__dict__['processorFactory'] = factory
        service._p_changed = True


@implementer(interfaces.IScheduledTaskService)
class TaskService(persistent.Persistent):
    """A persistent queue and scheduler of jobs; see `ITaskService`."""

    taskInterface = interfaces.ITask
    __parent__ = __name__ = None
    #: How long a claim lasts, in seconds, unless the job says otherwise.
    leaseSeconds = _Duration(60, positive=True)
    #: How long finished jobs are kept, in seconds, unless the job says
    #: otherwise; None keeps them until ``clean``.
    resultTTL = _Duration(None, optional=True)
    #: While True, no job is claimed.
    paused = False
    #: A worker that claims a job whose task it does not know gives it back
    #: for this many seconds, so that a worker that knows it may take it...
    missingTaskDelay = _Duration(10)
    #: ... and the job fails after this many seconds without such a worker.
    missingTaskTimeout = _Duration(3600)
    #: The processor class that `startProcessing` starts (setting None
    #: goes back to the default, `SimpleProcessor`) and the keyword
    #: arguments it gets.
    processorFactory = _ProcessorFactory()
    processorArguments = {'waitTime': 1.0}
    #: The modules (names or prefixes: ``'myapp'`` covers ``myapp.tasks``)
    #: whose functions, by dotted name, and whose classes' methods may be
    #: tasks without being registered. Empty: only registered tasks run.
    trustedModules = _Prefixes()
    #: The version of the data layout. A service unpickled from an older
    #: layout (such as a converted z3c.taskqueue service) has the class's 0
    #: and is upgraded by its first tick; see `zodbtasks.migration`.
    _layout = 0
    #: The counts by status and task, and the counting of the jobs of an
    #: older layout (see the module's docstring).
    _counts = None
    _countBuild = None
    #: The named queues, the listings and their building (layout 4).
    _queues = None
    _listing = None
    _listBuild = None
    _limits = None
    #: Finished job ids by status, kept by layouts before 4 until their
    #: listings are built.
    _finished = None

    def __init__(self):
        self._layout = LAYOUT
        self._counts = tuple(_counting.Counts()
                             for _ in range(_counting.SHARDS))
        self.jobs = ShardedMapping()
        self._queue = tuple(_newLane(n) for n in range(_LANES))
        self._scheduled = LLBTree()
        self._queues = OOBTree()
        self._queues[_queues.DEFAULT] = _queues.Queue(
            _queues.DEFAULT, self._queue, self._scheduled)
        self._unplaced = LLBTree()
        self._leases = tuple(_newLeaseTree() for _ in range(_LEASE_SHARDS))
        self._expiry = LLBTree()
        self._listing = _listing.new_listing()
        self._limits = OOBTree()

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
        """``now``, or the clock's time, once checked: a time that the
        indexes can file with any duration a job may hold added to it."""
        if now is None:
            return checkMoment(self.clock(), "now (the service's clock)")
        return checkMoment(now)

    def keepEvents(self):
        """Keep this copy's events instead of dispatching them, until
        `takeEvents`. A worker dispatches them after its commit, so that no
        subscriber runs while its leases are at stake, and none hears of a
        change that did not commit."""
        self._v_keptEvents = []

    def takeEvents(self):
        """The events kept since `keepEvents`; dispatch resumes."""
        kept = getattr(self, '_v_keptEvents', None) or []
        self._v_keptEvents = None
        return kept

    # -- adding jobs -------------------------------------------------------

    def getAvailableTasks(self):
        return dict(zope.component.getUtilitiesFor(self.taskInterface))

    def add(self, task, input=None, startLater=False, now=None, **options):
        # Everything is checked before anything is written (an upgrade of
        # old data included): a refused call leaves no trace.
        now = self._now(now)
        name, target, options, limit = self._checkNewJob(task, input,
                                                         options, False)
        self._current(now)
        if limit is not None:
            self._configureLimit(*limit, now)
        job = Job(self._newId(), name, input, created=now)
        self._store(job, target, options)
        if startLater:
            self._setStatus(job, interfaces.STARTLATER, now)
        else:
            self._enqueue(job, now)
            _notify(events.JobQueued, self, job, now)
        return job.id

    def addCronJob(self, task, input=None, minute=(), hour=(), dayOfMonth=(),
                   month=(), dayOfWeek=(), delay=None, startLater=False,
                   now=None, **kw):
        now = self._now(now)
        options = {k: kw.pop(k) for k in list(kw) if k not in CronJob.scheduleArguments}
        name, target, options, limit = self._checkNewJob(
            task, input, options, delay is None)
        # The job checks its schedule; it is not stored until it is valid.
        job = CronJob(0, name, input, minute, hour, dayOfMonth, month,
                      dayOfWeek, delay, created=now, **kw)
        self._current(now)
        if limit is not None:
            self._configureLimit(*limit, now)
        job.id = self._newId()
        self._store(job, target, options)
        if startLater:
            self._setStatus(job, interfaces.STARTLATER, now)
        else:
            self._index(_UNPLACED, job, _randomKey())
            _notify(events.JobQueued, self, job, now)
        return job.id

    def _checkNewJob(self, task, input, options, repeating):
        """Validate a new job; return its task name, target, options and
        the limit its task declares, as (name, concurrency, rate), if any."""
        name, target, found = self._resolveNew(task)
        checkOptions(options, repeating)
        # Options a task declares (see `zodbtasks.decorators`) are defaults.
        # The decorators check them, but a task made by hand may declare
        # any: those a job will hold are checked here either way.
        declared = {k: v for k, v in getattr(found, 'jobOptions', {}).items()
                    if (repeating or k in JOB_OPTIONS)
                    and options.get(k) is None}
        try:
            checkOptions(declared, repeating)
        except (TypeError, ValueError) as error:
            raise type(error)('task %r declares a bad default: %s'
                              % (name, error)) from None
        options = dict(declared, **{k: v for k, v in options.items()
                                    if v is not None})
        limit = self._checkLimit(name, found, options)
        try:
            pickle.dumps(input, 3)
        except Exception as error:
            raise TypeError('the input of a job must be picklable, but %r '
                            'is not: %s' % (input, error)) from error
        return name, target, options, limit

    def _checkLimit(self, name, found, options):
        """The limit a task declares (its ``concurrency`` and ``rate``
        attributes) as (limit name, concurrency, rate); its jobs join it.
        A job naming a limit that neither its task nor `setLimit` made is
        refused."""
        concurrency = getattr(found, 'concurrency', None)
        rate = getattr(found, 'rate', None)
        if concurrency is None and rate is None:
            wanted = options.get('limit')
            if wanted is not None and (self._limits is None
                                       or wanted not in self._limits):
                raise ValueError(
                    'no limit is named %r; make it with setLimit(%r, '
                    'concurrency=..., rate=...), or declare concurrency or '
                    'rate on the task' % (wanted, wanted))
            return None
        try:
            _limits.check_concurrency(concurrency)
            if rate is not None:
                _limits.rate_interval(rate)
            limit = options.setdefault('limit', name)
            _limits.check_name(limit)
        except (TypeError, ValueError) as error:
            raise type(error)('task %r declares a bad limit: %s'
                              % (name, error)) from None
        return limit, concurrency, rate

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
            found = _importDotted(task)
        if found is None:
            names = sorted(self.getAvailableTasks())
            raise ValueError('no task is registered under the name %r%s; '
                             'registered tasks: %s' % (
                                 task, ' and it names no function that can be '
                                 'imported' if '.' in task else '',
                                 ', '.join(map(repr, names)) or 'none'))
        return task, None, found

    def _checkTrusted(self, module, what):
        """Refuse a task that is not registered and whose module the
        service does not trust (``trustedModules``)."""
        why = self._untrusted(module, what)
        if why is not None:
            raise ValueError(why)

    def _untrusted(self, module, what):
        """Why a task from ``module`` may not run, or None if it may."""
        prefixes = self.trustedModules
        if _trusted(prefixes, module):
            return None
        return ('%s is not a registered task, and its module %r is not in '
                'the trustedModules setting of the service (%s); register '
                'the task, or add its module to trustedModules'
                % (what, module, ', '.join(map(repr, prefixes)) or 'empty'))

    def _newId(self):
        return random.getrandbits(53) or 1

    def _store(self, job, target, options):
        for name, value in options.items():
            setattr(job, name, value)
        if target is not None:
            job.target = target
        while not self.jobs.insert(job.id, job):
            job.id = self._newId()
        self._recount(job)
        self._relist(job, job.created or 0)

    # -- counts --------------------------------------------------------------

    def _setStatus(self, job, status, now=None):
        job.status = status
        self._recount(job)
        self._relist(job, now)

    def _recount(self, job, gone=False):
        """Count ``job`` as what it is now (or, ``gone``, no more).

        A job is counted once it says what it is counted as (``_counted``).
        Jobs stored by an older layout are counted by `buildCounts`; a
        change to one before that counts it here. Either way the job is
        written, so that a batch and a change of the same job conflict
        rather than both count it.
        """
        shards = self._counts
        if shards is None:
            return      # an old layout, until its upgrade
        now = None if gone else _countKey(job)
        was = job._counted
        if gone and (self._countBuild is not None
                     or self._listBuild is not None):
            job._p_changed = True
        if was == now:
            return
        shard = shards[self._countShard()]
        if was is not None:
            shard.add(was, -1)
        if now is not None:
            shard.add(now, 1)
        job._counted = now

    def _countShard(self):
        # Connections of one process count in different shards, in turn,
        # so that an application's commits and its processor threads' never
        # meet in one: not every storage adds up concurrent changes
        # (MappingStorage does not). Processes start at a random shard.
        shard = getattr(self, '_v_countShard', None)
        if shard is not None:
            return shard
        jar = self._p_jar
        if jar is None:
            return 0
        shard = _SHARD_OF.get(jar)
        if shard is None:
            shard = _SHARD_OF[jar] = next(_NEXT_SHARD) % _counting.SHARDS
        return shard

    def countsComplete(self):
        """Whether every job is counted (see `buildCounts`)."""
        return self._counts is not None and self._countBuild is None

    def jobCounts(self):
        """{(status, task): number of jobs}, from the counts kept: O(1).

        Before the counts of an older layout are complete, the jobs are
        counted one by one instead.
        """
        return _counting.by_status_and_task(self._allCounts())

    def queueCounts(self):
        """{(queue, status): number of jobs}: O(1), as `jobCounts`."""
        return _counting.by_queue(self._allCounts())

    def _allCounts(self):
        """{count key: n} (see `_countKey`), kept or counted."""
        if self.countsComplete():
            return _counting.total(self._counts)
        found = collections.Counter(map(_countKey, self.jobs.values()))
        return dict(found)

    def countJobs(self, status=None, task=None, queue=None):
        """How many jobs have ``status``, ``task`` and ``queue`` (None:
        any)."""
        if status is not None and status not in interfaces.STATUSES:
            raise ValueError('status must be one of %s, not %r'
                             % (', '.join(interfaces.STATUSES), status))
        return sum(n for key, n in self._allCounts().items()
                   if status in (None, key[0]) and task in (None, key[1])
                   and queue in (None, _counting.queue_of(key)))

    def buildCounts(self, limit=1000):
        """Count and list up to ``limit`` jobs of an older layout that are
        not counted or listed yet; return how many it went through (0: all
        are counted and listed).

        Each call is meant for a transaction of its own: claims and runs go
        on meanwhile, and a commit that conflicts with one is retried.
        """
        if not isinstance(limit, int) or isinstance(limit, bool) \
                or limit < 1:
            raise ValueError('limit must be a whole number of jobs, 1 or '
                             'more, not %r' % (limit,))
        self._current(None)
        builds = [b for b in (self._countBuild, self._listBuild)
                  if b is not None]
        if not builds:
            return 0
        start = min(build.next for build in builds)
        shard = self._countShard()
        n = 0
        last = None
        for jobid, job in self.jobs.items(min=start):
            if n == limit:
                break
            if self._countBuild is not None and job._counted is None:
                key = _countKey(job)
                self._counts[shard].add(key, 1)
                job._counted = key
            if self._listBuild is not None and job._listed is None:
                self._relist(job, job.completed or job.created or 0)
            n += 1
            last = jobid
        for build in builds:
            if n < limit:
                build.next = None
            else:
                build.next = max(build.next, last + 1)
                build.counted += n
        if self._countBuild is not None and self._countBuild.next is None:
            self._countBuild = None       # every job is counted
        if self._listBuild is not None and self._listBuild.next is None:
            self._listBuild = None        # and listed
            self._finished = None         # the listings replace it
        return n

    def listingComplete(self):
        """Whether every job is listed (see `buildCounts`)."""
        return self._listing is not None and self._listBuild is None

    def _startCounting(self):
        """Give a service of an older layout its counts; the jobs are
        counted by `buildCounts`."""
        if self._counts is None:
            self._counts = tuple(_counting.Counts()
                                 for _ in range(_counting.SHARDS))
            self._countBuild = _counting.CountBuild()

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
        if key > _queues.ORDER_MASK:
            # Only a time `_now` would refuse gets here; refuse it before
            # the counter moves, or every later add would fail too.
            raise ValueError('now must be a time from 0 to %d, not %r: its '
                             'order key does not fit the queue'
                             % (MAX_NOW, now))
        self._v_lastOrderKey = key
        return key

    def _index(self, name, job, key):
        tree = self._tree(job, name, key)
        tries = 0
        while not tree.insert(key, job.id):
            tries += 1
            if name == _UNPLACED:
                key = _randomKey()
            elif name == _SCHEDULED and tries < 8:
                # Many jobs due in the same millisecond: draw other low
                # bits rather than probe along a crowded run of keys.
                key = key & ~_LOW_MASK | random.getrandbits(_LOW_BITS)
            else:
                key += 1
        job._index = name
        job._indexKey = key
        self._relist(job)

    def _tree(self, job, name, key):
        if name == _QUEUE:
            return self._queueOf(job).lanes[key >> _LANE_SHIFT]
        if name == _SCHEDULED:
            return self._queueOf(job).due
        if name == _LIMITED:
            return self._limits[job.limit].waiting
        return getattr(self, name)

    def _queueOf(self, job):
        """The `Queue` of ``job``, made when a job first names it."""
        name = job.queue
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _queues.Queue(name)
        return queue

    def _servedQueues(self, names=None):
        """The queues of ``names`` that exist (None: every queue)."""
        if names is None:
            return list(self._queues.values())
        found = []
        for name in names:
            queue = self._queues.get(name)
            if queue is not None:
                found.append(queue)
        return found

    def _unindex(self, job):
        name = getattr(job, '_index', None)
        if name is not None:
            del self._tree(job, name, job._indexKey)[job._indexKey]
            job._index = job._indexKey = None
            self._relist(job)

    def _enqueue(self, job, now, front=False):
        self._setStatus(job, interfaces.QUEUED)
        order = (random.getrandbits(_ORDER_SHIFT) if front
                 else self._orderKey(now))
        if job.limit is not None:
            self._wait(job, now, order)
            return
        lane = random.getrandbits(_LANE_BITS)
        self._index(_QUEUE, job, _queues.lane_key(lane, job.priority, order))

    # -- limits (see `zodbtasks.limits`) ------------------------------------

    def _wait(self, job, now, order):
        """Hold a job of a limit back, and let through what the limit
        allows: a queued job that may start at once goes to the queue's
        lanes, the others to its due tree, for their time."""
        limit = self._limits[job.limit]
        limit.leave(job.id)
        self._index(_LIMITED, job, _queues.lane_key(0, job.priority, order))
        self._admit(limit, now)

    def _admit(self, limit, now):
        waiting = limit.waiting
        while waiting and limit.canAdmit():
            key = waiting.minKey()
            job = self.jobs.get(waiting[key])
            if _stale(job, _LIMITED, key):
                del waiting[key]
                continue
            self._unindex(job)
            at = limit.admit(job.id)
            if job.status == interfaces.QUEUED and at <= now:
                lane = random.getrandbits(_LANE_BITS)
                self._index(_QUEUE, job, lane << _LANE_SHIFT | key)
            else:
                why = _NOW if job.status == interfaces.QUEUED else job._why
                self._schedule(job, max(now, at), why)

    def _leaveLimit(self, job, now):
        """A job of a limit gives back what it holds there."""
        if job.limit is None or self._limits is None:
            return
        limit = self._limits.get(job.limit)
        if limit is not None and limit.leave(job.id):
            self._admit(limit, now)

    def _limitLetsThrough(self, job, now):
        """Whether a due job may start under its limit; if not, it now
        waits there."""
        if job.limit is None or job.status == interfaces.PROCESSING:
            return True
        limit = self._limits.get(job.limit)
        if limit is None or limit.holds(job.id):
            return True
        self._unindex(job)
        self._wait(job, now, self._orderKey(now))
        return False

    def _limitStarted(self, job, now):
        limit = None if job.limit is None else self._limits.get(job.limit)
        if limit is not None:
            limit.started(job.id, now)
            self._admit(limit, now)

    def setLimit(self, name, concurrency=None, rate=None, now=None):
        """Bound the jobs of limit ``name``: at most ``concurrency`` let
        through at once, and starts no faster than ``rate`` ('10/s',
        '100/m', '1000/h'); None lifts a bound. Jobs join a limit with the
        ``limit`` option."""
        now = self._now(now)
        _limits.check_name(name)
        _limits.check_concurrency(concurrency)
        if rate is not None:
            _limits.rate_interval(rate)
        self._current(now)
        self._configureLimit(name, concurrency, rate, now)

    def _configureLimit(self, name, concurrency, rate, now):
        limit = self._limits.get(name)
        if limit is None:
            limit = self._limits[name] = _limits.Limit(name)
        if limit.configure(concurrency, rate):
            self._admit(limit, now)

    def getLimits(self):
        """{name: `zodbtasks.limits.Limit`} of the limits jobs may join."""
        return dict(self._limits.items()) if self._limits is not None else {}

    def waitingFor(self, jobid, now=None):
        """What a job waits for under its limit, in words, or None."""
        now = self._now(now)
        job = self._job(jobid)
        limit = (None if job.limit is None or self._limits is None
                 else self._limits.get(job.limit))
        if limit is None:
            return None
        if getattr(job, '_index', None) == _LIMITED:
            return 'held back by limit %r (%s)' % (limit.name,
                                                   limit.describe())
        if limit.released == job.id and job.scheduledFor is not None \
                and job.scheduledFor > now:
            return 'rate limited until %s (limit %r, at most %s)' % (
                _shownTime(job.scheduledFor), limit.name, limit.rate)
        return None


    def _queueHead(self, queues=None):
        """The next job's lane and key in ``queues`` (default: all), or
        None."""
        heads = _queues.heads(self._servedQueues(queues))
        if not heads:
            return None
        lane, _, key = min(heads, key=lambda head: _queues.rank_of(head[2]))
        return lane, key

    def _queued(self):
        """(key, job id) of the queued jobs, lane by lane."""
        for queue in self._queues.values():
            for n, lane in enumerate(queue.lanes):
                yield from _laneItems(lane, n)

    def _laneHead(self, start=None, queues=None):
        """The head of the first lane from ``start`` (default: a random
        lane) on whose head has the highest priority in ``queues``, as
        `_queueHead`, or None."""
        heads = _queues.heads(self._servedQueues(queues))
        if not heads:
            return None
        if start is None:
            start = random.getrandbits(_LANE_BITS)
        best = max(_queues.priority_of(key) for _, _, key in heads)
        lane, _, key = min(
            (head for head in heads if _queues.priority_of(head[2]) == best),
            key=lambda head: (head[1] - start) % _LANES)
        return lane, key

    def _schedule(self, job, due, why=_REGULAR):
        job.scheduledFor = due
        job._why = why
        key = _timeKey(due) | random.getrandbits(_LOW_BITS)
        self._index(_SCHEDULED, job, key)

    def _placeAfter(self, job, now, due=_UNKNOWN):
        """Place a repeating job at its first time after ``now``, if any.

        ``due`` is that time when the caller has worked it out already.
        """
        if due is _UNKNOWN:
            due = job.timeOfNextCall(now)
        if due is None:
            job.scheduledFor = None
        else:
            self._schedule(job, due)

    def _placeNewJobs(self, now):
        """Fix the first due time of the jobs added since the last tick."""
        while self._unplaced:
            key = self._unplaced.minKey()
            job = self.jobs[self._unplaced.pop(key)]
            job._index = job._indexKey = None
            try:
                self._placeAfter(job, now)
            except Exception as error:
                self._poisoned(job, now, error)
                continue
            if job.scheduledFor is None:
                self._finish(job, interfaces.COMPLETED, now)

    def _finish(self, job, status, now):
        self._leaveLimit(job, now)
        self._setStatus(job, status, now)
        if self._finished is not None:
            self._finished[status].insert(job.id)
        ttl = job.ttl if job.ttl is not None else self.resultTTL
        if ttl is not None:
            job.expires = now + ttl
            key = _timeKey(job.expires) | random.getrandbits(_LOW_BITS)
            while not self._expiry.insert(key, job.id):
                key = _timeKey(job.expires) | random.getrandbits(_LOW_BITS)

    def _unfinish(self, job):
        """Take a finished job off what only finished jobs are in."""
        if self._finished is not None:
            self._finished[job.status].remove(job.id)

    def _finishedIds(self, status):
        """The ids of the jobs of a finished ``status``."""
        if self._finished is not None:
            return list(self._finished[status])
        return _listing.job_ids(_listing.trees(self._listing, status))

    # -- listings (see `zodbtasks.listing`) ---------------------------------

    def _unlist(self, job):
        if job._listed is not None:
            _listing.remove(self._listing, job._listed, job._listShard,
                            job._listKey)
            job._listed = job._listKey = job._listShard = None

    def _relist(self, job, now=None):
        """List ``job`` as what it is now, or not at all while it runs or
        moves between indexes."""
        if self._listing is None:
            return              # an old layout, until its upgrade
        status = job.status
        sort = None
        spare = _LOW_BITS       # the random bits of time and due keys
        if status == interfaces.PROCESSING:
            listed = None
        elif status in _LISTED_BY_INDEX:
            index = getattr(job, '_index', None)
            if index is None:
                listed = None   # between two indexes, or done waiting
            else:
                listed = _countKey(job)
                sort = job._indexKey
                if index in (_QUEUE, _LIMITED):
                    # Ranks have 59 bits: room for 4 spare bits below.
                    spare = 4
                    sort = _queues.rank_of(sort) << spare
                elif index == _UNPLACED:
                    spare = 62
        else:
            listed = _countKey(job)
        was = job._listed
        if was is not None:
            if was == listed and (sort is None or job._listKey >> spare
                                  == sort >> spare):
                return          # listed so already
            self._unlist(job)
        if listed is None:
            return
        if sort is None:
            when = now if now is not None else self._now(None)
            sort = _timeKey(when) | random.getrandbits(_LOW_BITS)
        shard = self._countShard()
        job._listKey = _listing.add(self._listing, listed, sort, job.id,
                                    shard, spare)
        job._listed, job._listShard = listed, shard

    # -- managing jobs -----------------------------------------------------

    def _job(self, jobid):
        try:
            return self.jobs[jobid]
        except (KeyError, IndexError, TypeError):
            raise KeyError('no job with id %r in this service' % (jobid,))

    def startJob(self, jobid, now=None):
        now = self._now(now)
        if self._job(jobid).status != interfaces.STARTLATER:
            # As in the reference package: a question answered, nothing
            # written (not even an upgrade of old data).
            return False
        self._current(now)
        job = self._job(jobid)
        if isinstance(job, CronJob):
            self._setStatus(job, _waiting(job))
            self._index(_UNPLACED, job, _randomKey())
        else:
            self._enqueue(job, now)
        _notify(events.JobQueued, self, job, now)
        return True

    def reschedule(self, jobid):
        self._current(None)
        job = self._job(jobid)
        if not isinstance(job, CronJob):
            raise ValueError('job %r is not a cron job and has no schedule'
                             % (jobid,))
        if job.status in interfaces.FINISHED:
            raise ValueError('job %r is %r and will not run again'
                             % (jobid, job.status))
        if job.status in (interfaces.STARTLATER, interfaces.PAUSED) or (
                job.status == interfaces.PROCESSING and not _repeats(job)):
            return  # placed when it starts, resumes, or never again
        self._unindex(job)
        job.scheduledFor = None
        job.waitingRun = False
        self._index(_UNPLACED, job, _randomKey())

    def cancel(self, jobid, now=None):
        now = self._now(now)
        self._current(now)
        job = self._job(jobid)
        if job.status in interfaces.FINISHED:
            return
        self._unindex(job)
        job.scheduledFor = None
        job.paused = False
        # A worker running it loses its lease: what it records is refused.
        if job.lease is not None:
            job.lease.revoked = True
        job.lease = None
        self._finish(job, interfaces.CANCELLED, now)
        _notify(events.JobCancelled, self, job, now)

    def pause(self, jobid=None, now=None):
        """Hold a job, or with no id the whole service, until `resume`.

        A paused job is out of every queue; a repeating job paused during a
        run finishes the run and then waits. A paused service claims
        nothing, but jobs can still be added.
        """
        if now is not None:
            now = self._now(now)
        self._current(now)
        if jobid is None:
            self.paused = True
            return
        job = self._job(jobid)
        if job.status in interfaces.FINISHED:
            raise ValueError('job %r is %r; only unfinished jobs can be '
                             'paused' % (jobid, job.status))
        if job.status == interfaces.PROCESSING:
            if not _repeats(job):
                raise ValueError('job %r is running and runs only once; it '
                                 'cannot be paused' % (jobid,))
        elif job.status != interfaces.PAUSED:
            job.pausedFrom = job.status
            self._setStatus(job, interfaces.PAUSED, now)
        self._unindex(job)
        if job.status != interfaces.PROCESSING:
            self._leaveLimit(job, self._now(now))
        job.waitingRun = False
        job.paused = True

    def resume(self, jobid=None, now=None):
        """Undo `pause`. A repeating job goes on from its next time after
        ``now``: the times it was paused for are not made up."""
        now = self._now(now)
        self._current(now)
        if jobid is None:
            self.paused = False
            return
        job = self._job(jobid)
        if not job.paused:
            raise ValueError('job %r is %r, not paused' % (jobid, job.status))
        job.paused = False
        if job.status == interfaces.PROCESSING:
            self._placeAfter(job, now)
            return
        status, job.pausedFrom = job.pausedFrom, None
        self._setStatus(job, status)
        if status == interfaces.QUEUED:
            self._enqueue(job, now)
        elif status == interfaces.CRONJOB:
            self._placeAfter(job, now)
            if job.scheduledFor is None:
                self._finish(job, interfaces.COMPLETED, now)
        elif status in (interfaces.DELAYED, interfaces.RETRYING):
            if job.scheduledFor is None:
                self._index(_UNPLACED, job, _randomKey())
            else:
                self._schedule(job, job.scheduledFor, job._why)

    def isPaused(self, jobid=None):
        """Whether the job, or with no id the service, is paused."""
        return self.paused if jobid is None else self._job(jobid).paused

    def runNow(self, jobid, now=None):
        """Make a waiting job due at ``now``, once.

        A repeating job keeps its schedule: after this run it is due at its
        first time after the run's start.
        """
        now = self._now(now)
        self._current(now)
        job = self._job(jobid)
        if job.status == interfaces.QUEUED:
            return
        if job.status not in (interfaces.DELAYED, interfaces.CRONJOB,
                              interfaces.RETRYING):
            raise ValueError('job %r is %r; only a queued, delayed, cron or '
                             'retrying job can be run now'
                             % (jobid, job.status))
        self._unindex(job)
        self._schedule(job, now, _NOW)

    def retry(self, jobid, now=None):
        """Give a failed or cancelled job another run, due at ``now``.

        A job waiting for a retry has it at once. A repeating job goes back
        on its schedule after that run. The retry count starts afresh.
        """
        now = self._now(now)
        self._current(now)
        job = self._job(jobid)
        if job.status == interfaces.RETRYING:
            return self.runNow(jobid, now)
        if job.status not in (interfaces.ERROR, interfaces.CANCELLED):
            raise ValueError('job %r is %r; only a failed, cancelled or '
                             'retrying job can be retried'
                             % (jobid, job.status))
        self._unfinish(job)
        job.expires = None
        job.retried = 0
        if isinstance(job, CronJob):
            self._setStatus(job, _waiting(job))
            self._schedule(job, now, _NOW)
        else:
            self._enqueue(job, now, front=True)
        _notify(events.JobQueued, self, job, now)

    def clean(self, status=interfaces.FINISHED):
        if isinstance(status, str):
            status = (status,)
        unknown = [s for s in status if s not in interfaces.FINISHED]
        if unknown:
            raise ValueError('clean removes finished jobs only; %s is not '
                             'one of %s' % (', '.join(map(repr, unknown)),
                                            ', '.join(interfaces.FINISHED)))
        self._current(None)
        for name in status:
            ids = self._finishedIds(name)
            if self._countBuild is not None:
                for jobid in ids:
                    self._recount(self.jobs[jobid], gone=True)
            elif self._counts is not None:
                # All jobs of the status go: take off what every shard
                # counts of it, in this connection's shard alone (so that
                # clean meets no other writer; what others change
                # meanwhile still adds up).
                shard = self._counts[self._countShard()]
                for key, n in _counting.total(self._counts).items():
                    if key[0] == name:
                        shard.add(key, -n)
            for jobid in ids:
                if self._listBuild is not None:
                    # A batch listing it at once must conflict with this.
                    self.jobs[jobid]._p_changed = True
                del self.jobs[jobid]
            if self._finished is not None:
                self._finished[name].clear()
            if self._listing is not None:
                _listing.drop(self._listing, name)

    def remove(self, jobid):
        """Remove one finished job; return whether it was there to remove.

        Unfinished jobs are refused (cancel them first): a worker may hold
        one, or its schedule may still want it.
        """
        job = self.jobs.get(jobid)
        if job is None:
            return False
        if job.status not in interfaces.FINISHED:
            raise ValueError('job %r is %r; only finished jobs (%s) can be '
                             'removed' % (jobid, job.status,
                                          ', '.join(interfaces.FINISHED)))
        self._current(None)
        self._unfinish(job)
        self._recount(job, gone=True)
        self._unlist(job)
        del self.jobs[jobid]
        return True

    def purgeExpired(self, now=None, limit=None):
        """Remove finished jobs whose time to live ran out; return how many.

        Workers call this as they go; it costs what it removes.
        """
        now = self._now(now)
        expiry = self._expiry
        bound = _timeKey(now) | _LOW_MASK
        removed = 0
        while expiry and (limit is None or removed < limit):
            key = expiry.minKey()
            if key > bound:
                break
            job = self.jobs.get(expiry[key])
            if job is not None and job.expires is not None \
                    and job.expires > now:
                break                 # within the same millisecond
            del expiry[key]
            if job is None or job.status not in interfaces.FINISHED:
                continue              # cleaned away already
            self._unfinish(job)
            self._recount(job, gone=True)
            self._unlist(job)
            del self.jobs[job.id]
            removed += 1
        return removed

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
        to this service; without it the processor looks the service up. A
        service not stored in a database yet is not processed: nothing
        happens but a warning, as the reference package did nothing.
        """
        if self._p_jar is None:
            _log.warning('not processing %r: it is not stored in a database '
                         'yet (add it and commit first)', self)
            return
        from zodbtasks import threads
        threads.startProcessing(self, path)

    def stopProcessing(self):
        """Stop this service's processor thread after the job in hand; do
        nothing when none runs."""
        if self._p_jar is None:
            return
        from zodbtasks import threads
        threads.stopProcessing(self)

    def isProcessing(self):
        """Whether a processor thread runs for this service (False for a
        service that is not stored in a database)."""
        if self._p_jar is None:
            return False
        from zodbtasks import threads
        return threads.isProcessing(self)

    # -- looking at the queue, from its indexes ------------------------------

    def oldestQueued(self, queues=None):
        """The queued job that the next claim (from ``queues``, default
        all) takes, or None. O(1)."""
        head = self._queueHead(_queues.check_names(queues))
        if head is None:
            return None
        lane, key = head
        job = self.jobs.get(lane[key])
        return None if _stale(job, _QUEUE, key) else job

    def overdueJobs(self, now=None, limit=10):
        """Up to ``limit`` jobs due at ``now`` that no claim took yet,
        the longest overdue first. O(log n + limit)."""
        now = self._now(now)
        limit = _limit(limit)
        found = []
        for key, jobid in self._dueItems(max=_timeKey(now) | _LOW_MASK):
            if len(found) >= limit:
                break
            job = self.jobs.get(jobid)
            if not _stale(job, _SCHEDULED, key) and job.scheduledFor <= now:
                found.append(job)
        return found

    def upcomingJobs(self, now=None, limit=10, repeating=True):
        """Up to ``limit`` jobs due after ``now``, soonest first: with
        ``repeating``, only cron and interval jobs. It looks at no more
        than 100 entries per job returned."""
        now = self._now(now)
        limit = _limit(limit)
        found = []
        entries = self._dueItems(min=_timeKey(now) | _LOW_MASK)
        for key, jobid in itertools.islice(entries, 100 * limit):
            if len(found) >= limit:
                break
            job = self.jobs.get(jobid)
            if _stale(job, _SCHEDULED, key) or job.scheduledFor <= now:
                continue
            if not repeating or _repeats(job):
                found.append(job)
        return found

    def _dueItems(self, min=None, max=None):
        """(key, job id) of the jobs due in every queue, soonest first."""
        return heapq.merge(*[queue.due.items(min=min, max=max)
                             for queue in self._queues.values()])

    def listJobs(self, status=None, task=None, limit=100, cursor=None,
                 queue=None):
        """A page of jobs and the cursor of the next page (see
        `interfaces.ITaskService.listJobs`)."""
        if status is not None and status not in interfaces.STATUSES:
            raise ValueError('status must be one of %s, not %r'
                             % (', '.join(interfaces.STATUSES), status))
        limit = _limit(limit)
        order = interfaces.LISTING_ORDER
        statuses = order if status is None else (status,)
        if queue is not None:
            _queues.check_name(queue)
        if not self.listingComplete():
            return self._scanJobs(statuses, task, queue, limit, cursor)
        first, after = _readCursor(cursor, statuses)
        entries = itertools.chain.from_iterable(
            ((name, key, jobid) for key, jobid in self._listingOf(
                name, task, queue, after if name == first else None))
            for name in statuses[statuses.index(first):])
        found = []
        for name, key, jobid in entries:
            if len(found) == limit:
                return found, '%d.%d' % (order.index(last), lastKey)
            job = self.jobs.get(jobid)
            if job is not None:
                found.append(job)
                last, lastKey = name, key
        return found, None

    def _listingOf(self, status, task, queue, after):
        """(key, job id) of the jobs of ``status`` (and ``task``, ``queue``)
        in the order of their listing, after the key ``after``."""
        if status == interfaces.PROCESSING:
            for key, jobid in self._liveLeases():
                if after is not None and key <= after:
                    continue
                job = self.jobs[jobid]
                if task in (None, job.task) and queue in (None, job.queue):
                    yield key, jobid
            return
        trees = _listing.trees(self._listing, status, task, queue)
        if status in _LISTED_BY_INDEX:
            yield from _listing.ascending(trees, after)
        else:
            yield from _listing.descending(trees, after)

    def _scanJobs(self, statuses, task, queue, limit, cursor):
        """`listJobs` by reading every job, until the listings are built."""
        start = 0
        if cursor is not None:
            text = cursor[5:] if isinstance(cursor, str) \
                and cursor.startswith('scan.') else ''
            if not (text.isascii() and text.isdigit()):
                raise ValueError('cursor must be one that listJobs gave, '
                                 'not %r' % (cursor,))
            start = int(text)
        rank = {s: n for n, s in enumerate(statuses)}
        found = sorted(
            (job for job in self.jobs.values()
             if job.status in rank and task in (None, job.task)
             and queue in (None, job.queue)),
            key=lambda job: (rank[job.status], _listingOrder(job)))
        page = found[start:start + limit]
        more = start + limit < len(found)
        return page, ('scan.%d' % (start + limit) if more else None)

    def expiredLeases(self, now=None, limit=10):
        """Up to ``limit`` running jobs whose lease ran out by ``now``
        (the next claim gives them back), the longest expired first."""
        now = self._now(now)
        limit = _limit(limit)
        found = []
        for _, jobid in self._liveLeases(max=_timeKey(now) | _LOW_MASK):
            if len(found) >= limit:
                break
            job = self.jobs[jobid]
            if job.lease.expires <= now:
                found.append(job)
        return found

    # -- running jobs ------------------------------------------------------

    def hasJobsWaiting(self, now=None, queues=None):
        now = self._now(now)
        queues = _queues.check_names(queues)
        if self._layout != LAYOUT:
            return True     # the claim that follows upgrades the data
        if self.paused:
            return False
        if self._queueHead(queues) is not None:
            return True
        limit = _timeKey(now) | _LOW_MASK
        if _earliestDue(self._servedQueues(queues), limit) is not None:
            return True
        # An expired lease counts: its job is to be given back. (Entries of
        # leases that heartbeats extended wait to be moved on by a claim.)
        return any(self.jobs[jobid].lease.expires <= now
                   for _, jobid in self._liveLeases(max=limit))

    def isIdle(self, now=None, queues=None):
        """Whether no job of ``queues`` (default: any) is due at ``now``
        and no worker holds one."""
        queues = _queues.check_names(queues)
        if self._layout != LAYOUT or self.hasJobsWaiting(now, queues):
            return False
        return not any(queues is None or self.jobs[jobid].queue in queues
                       for _, jobid in self._liveLeases())

    def _liveLeases(self, max=None):
        """The keys of the leases still held, up to ``max``.

        A run that ends leaves its lease's index entry behind (so that the
        run's transaction does not write the shared index); such entries are
        skipped here and dropped by the next claim after they expire.
        """
        for key, jobid in heapq.merge(*[tree.items(min=1, max=max)
                                        for tree in self._leases]):
            job = self.jobs.get(jobid)
            if job is not None and job.status == interfaces.PROCESSING \
                    and job.lease is not None and job.lease.key == key:
                yield key, jobid

    def claimNextJob(self, now=None, worker=None, lease=None, spread=False,
                     queues=None):
        """Claim the next due job for ``worker`` and return its id, or None.

        The job is ``processing`` under a lease of ``lease`` seconds (default:
        the job's ``leaseSeconds``, else the service's). Commit, then run it
        with ``processNext(now, jobid, token=job.lease.token)``. A lease that
        expires before the run is recorded gives the job back to the queue,
        or fails it if it runs at most once.

        With ``spread``, a queued job is taken from the head of a random
        lane instead of being the oldest of all: workers claiming at the
        same moment then rarely want the same job, at the price of a queue
        that is only roughly first in, first out (priorities still hold).

        ``queues`` names the queues to claim from (default: all of them).
        """
        return self._claimNext(self._now(now), worker, _leaseSeconds(lease),
                               spread, shard=_leaseShard(worker),
                               queues=_queues.check_names(queues))

    def claimJobs(self, now=None, count=1, worker=None, lease=None,
                  spread=False, start=None, queues=None):
        """Claim up to ``count`` due jobs for ``worker``; a list of their ids.

        As ``count`` calls of `claimNextJob`, but with ``spread`` the queued
        jobs come from one random lane, in order, until it is empty, then
        from the next: workers claiming batches at the same moment then
        rarely touch the same lane.

        ``start`` is how many of them, the first, begin to run as soon as
        the claim commits (default: all). The others are claims that have
        not started until `markStarted` or a heartbeat says so: if their
        lease runs out first, they go back to where they waited, and the
        claim does not count as a run. ``queues`` names the queues to claim
        from (default: all of them).
        """
        now = self._now(now)
        lease = _leaseSeconds(lease)
        queues = _queues.check_names(queues)
        if not isinstance(count, int) or isinstance(count, bool) \
                or count < 0:
            raise ValueError('count must be an int of 0 or more, not %r'
                             % (count,))
        lane = random.getrandbits(_LANE_BITS) if spread else None
        shard = _leaseShard(worker)
        if count > 1:
            self._prefetchQueue(count, lane, queues)
        if start is None:
            start = count
        claimed = []
        for n in range(count):
            jobid = self._claimNext(now, worker, lease, spread, lane, shard,
                                    start=n < start, queues=queues)
            if jobid is None:
                break
            claimed.append(jobid)
        return claimed

    def _claimNext(self, now, worker, lease, spread, lane=None, shard=None,
                   start=True, queues=None):
        while True:
            claimed = self._claim(now, spread, lane, queues)
            if claimed is None:
                return None
            job, place = claimed
            seconds = lease or job.leaseSeconds or self.leaseSeconds
            job.lease = Lease(random.getrandbits(63), worker, now + seconds,
                              claimed=now, started=now if start else None,
                              place=place)
            try:
                self._indexLease(job.lease, job.id, shard)
            except Exception as error:
                self._poisoned(job, now, error)
                continue
            return job.id

    def prefetch(self, jobids):
        """Ask the storage to load the jobs ``jobids`` and the trees that
        hold them, as recording their outcomes will read them.

        With a storage that loads over the network (ZEO, RelStorage) this
        turns one round trip per object into one per level of the trees;
        elsewhere it does nothing. Nothing is changed.
        """
        jar = self._p_jar
        if jar is None or not hasattr(jar, 'prefetch'):
            return
        ids = list(jobids)
        if not ids:
            return
        shards = self.jobs._shards
        shift = self.jobs._shift
        _prefetch(jar, {id(shard): shard for shard in
                        (shards[jobid >> shift] for jobid in ids)}.values())
        _prefetch(jar, [job for job in map(self.jobs.get, ids)
                        if job is not None])

    def _prefetchQueue(self, count, lane=None, queues=None):
        """Prefetch what claiming ``count`` queued jobs will read: the
        next ones, or with ``lane`` those from that lane on."""
        jar = self._p_jar
        if jar is None or not hasattr(jar, 'prefetch') or count < 1:
            return
        served = self._servedQueues(queues)
        lanes = [(n, tree) for queue in served
                 for n, tree in enumerate(queue.lanes)]
        _prefetch(jar, (self._unplaced, self._expiry) + self._leases
                  + tuple(queue.due for queue in served)
                  + tuple(tree for _, tree in lanes))
        if lane is None:
            _prefetch(jar, [_firstBucket(tree) for _, tree in lanes])
            heads = heapq.nsmallest(count, itertools.chain.from_iterable(
                itertools.islice(_laneItems(tree, n), count)
                for n, tree in lanes),
                key=lambda item: _queues.rank_of(item[0]))
        else:
            heads = []
            lanes.sort(key=lambda item: (item[0] - lane) % _LANES)
            for n, tree in lanes:
                heads.extend(itertools.islice(_laneItems(tree, n),
                                              count - len(heads)))
                if len(heads) >= count:
                    break
        self.prefetch(jobid for _, jobid in heads)

    def heartbeat(self, jobid, token, now=None, seconds=None, started=True):
        """Extend the lease ``token`` on job ``jobid``; return its new end.

        The heartbeat of a running job tells that its run started; a worker
        that renews a claim it has not started yet says ``started=False``.
        It writes the lease alone: the lease index keeps the old end, and
        the claim that finds it there moves it on. Raises `LeaseLost` if
        that lease is no longer the job's.
        """
        now = self._now(now)
        _leaseSeconds(seconds)
        job = self._job(jobid)
        lease = self._checkLease(job, token)
        seconds = seconds or job.leaseSeconds or self.leaseSeconds
        expires = max(lease.expires, now + seconds)
        if expires > MAX_NOW + _MAX_DURATION:
            raise ValueError('a lease cannot end after %r, but now + seconds '
                             'is %r' % (MAX_NOW + _MAX_DURATION, expires))
        if started and lease.started is None:
            lease.started = now
        lease.expires = expires
        return expires

    def markStarted(self, jobid, token, now=None):
        """Tell that the run of a job claimed under ``token`` begins.

        From then on, a lease that runs out is a lost run: it counts against
        the job's ``maxLostLeases``. Raises `LeaseLost`.
        """
        now = self._now(now)
        lease = self._checkLease(self._job(jobid), token)
        if lease.started is None:
            lease.started = now

    def releaseClaim(self, jobid, token, now=None, delay=None):
        """Give back a claim whose run has not started.

        The job goes back to where it waited (its place in the queue, or its
        due time), as if it had never been claimed; with ``delay`` it is
        not due before ``now + delay``. Raises `LeaseLost`.
        """
        now = self._now(now)
        if delay is not None:
            _leaseSeconds(delay)
        job = self._job(jobid)
        lease = self._checkLease(job, token)
        self._leases[lease.key & _LEASE_SHARD_MASK].pop(lease.key, None)
        self._giveBack(job, lease, now, delay)

    def taskMissing(self, jobid, token, reason, now=None):
        """A worker that claimed job ``jobid`` cannot find its task.

        The claim is given back for ``missingTaskDelay`` seconds, since
        another worker may know the task; after ``missingTaskTimeout``
        seconds of such answers the job fails with ``reason``. Returns the
        job's status. Raises `LeaseLost`.
        """
        now = self._now(now)
        job = self._job(jobid)
        lease = self._checkLease(job, token)
        if job.waitingForTask is None:
            job.missingSince = now
        job.waitingForTask = job.task
        if now - job.missingSince < self.missingTaskTimeout:
            self.releaseClaim(jobid, token, now, self.missingTaskDelay)
            return job.status
        self._leases[lease.key & _LEASE_SHARD_MASK].pop(lease.key, None)
        job.error = ('no worker could run task %r for %s s: %s' % (
            job.task, _number(now - job.missingSince), reason))
        job.traceback = None
        job.completed = now
        appendLog(job, job.error)
        self._endRun(job, now, failed=True, retry=False)
        return job.status

    def _giveBack(self, job, lease, now, delay=None):
        """Undo a claim that never started."""
        self._leaveLimit(job, now)
        job.lease = None
        job.attempts = max(0, job.attempts - 1)
        name, key, why, due = lease.place or (None, None, _REGULAR, None)
        if _repeats(job) and why is not _RETRY:
            job.runs = max(0, job.runs - 1)
        if isinstance(job, CronJob):
            self._unindex(job)       # the next time its claim placed
        when = due if due is not None else now
        if delay is not None:
            when = max(when, now + delay)
        if job.paused:
            self._setStatus(job, interfaces.PAUSED, now)
            job.pausedFrom = (interfaces.CRONJOB if _repeats(job)
                              else interfaces.QUEUED)
            job.scheduledFor = when if isinstance(job, CronJob) else None
        elif isinstance(job, CronJob):
            self._setStatus(job, _waiting(job))
            self._schedule(job, when, why)
        elif why is _RETRY:
            self._setStatus(job, interfaces.RETRYING)
            self._schedule(job, when, why)
        elif delay is not None:
            self._setStatus(job, interfaces.QUEUED)
            self._schedule(job, when, _NOW)
        else:
            self._setStatus(job, interfaces.QUEUED)
            if name == _QUEUE:
                self._index(_QUEUE, job, key)
            else:
                self._enqueue(job, now, front=True)

    def checkLease(self, jobid, token):
        """Return the lease ``token`` of job ``jobid``; raise `LeaseLost` if
        the job is no longer held under it."""
        return self._checkLease(self._job(jobid), token)

    def recordOutcome(self, jobid, token, outcome, release=False):
        """Record the `Outcome` of a run of a job still held under ``token``.

        For a worker that ran the task with `runClaimed`, or whose run's
        transaction could not be committed: the job ends the run as
        `processNext` would have ended it. Raises `LeaseLost`, having
        written nothing, if the lease is gone.

        With ``release`` the lease's entry in the lease index goes too. That
        writes a tree that the worker's claims write: do it in a claim's
        transaction, not in a run's (where the entry is left to be dropped
        by a claim after it expires).
        """
        job = self._job(jobid)
        lease = self._checkLease(job, token)
        if release:
            self._leases[lease.key & _LEASE_SHARD_MASK].pop(lease.key, None)
        job.log, job.progress = outcome.log, outcome.progress
        self._conclude(job, outcome)

    def outcomeFootprint(self, jobid):
        """The oids that recording the outcome of job ``jobid`` writes.

        A worker compares them with what a run's transaction wrote to tell
        whether the task changed anything else.
        """
        job = self._job(jobid)
        nodes = [job]
        if self._finished is not None and job.status in self._finished:
            nodes.extend(self._finished[job.status].nodesWrittenBy(job.id))
        if job._listed is not None:
            tree = self._listing[job._listShard][job._listed]
            nodes.extend(pathTo(tree, job._listKey))
        return {node._p_oid for node in nodes}

    def _checkLease(self, job, token):
        lease = job.lease
        if (job.status != interfaces.PROCESSING or lease is None
                or lease.token != token or lease.revoked):
            raise LeaseLost('job %r is no longer held under lease %r (it is '
                            '%r)' % (job.id, token, job.status))
        return lease

    def _indexLease(self, lease, jobid, shard=None):
        if shard is None:
            shard = random.getrandbits(_LEASE_SHARD_BITS)
        tree = self._leases[shard]
        while True:
            key = (_timeKey(lease.expires) | shard
                   | random.getrandbits(_LOW_BITS) & ~_LEASE_SHARD_MASK)
            if tree.insert(key, jobid):
                break
        lease.key = key

    def _recoverExpired(self, now):
        """Give back the jobs whose worker let its lease expire."""
        for leases in self._leases:
            self._recoverExpiredIn(leases, now)

    def _recoverExpiredIn(self, leases, now):
        limit = _timeKey(now) | _LOW_MASK
        while True:
            key = _leaseFirst(leases)
            if key is None or key > limit:
                break
            job = self.jobs.get(leases[key])
            lease = None if job is None else job.lease
            if lease is None or lease.key != key:
                del leases[key]       # the run ended, or was extended
                continue
            if lease.expires > now:
                if _timeKey(lease.expires) >> _LOW_BITS \
                        == _timeKey(now) >> _LOW_BITS:
                    break             # it ends within this millisecond
                # Extended by heartbeats since it was indexed: move it on.
                del leases[key]
                self._indexLease(lease, job.id, key & _LEASE_SHARD_MASK)
                continue
            del leases[key]
            lease.revoked = True
            worker = lease.worker or '(unnamed)'
            if lease.started is None:
                appendLog(job, 'the worker %s let its claim on this job '
                          'expire at %s before it started; given back'
                          % (worker, lease.expires))
                self._giveBack(job, lease, now)
                continue
            message = ('the worker %s lost its lease on this job at %s'
                       % (worker, lease.expires))
            job.lostLeases += 1
            most = job.maxLostLeases
            if not job.atMostOnce and most is not None \
                    and job.lostLeases >= most:
                message += ('; runs of this job lost their lease %d times '
                            '(maxLostLeases is %d)' % (job.lostLeases, most))
            if job.atMostOnce or message.endswith(')'):
                job.error, job.traceback = message, None
                job.completed = now
                appendLog(job, message)
                self._endRun(job, now, failed=True, retry=False)
                continue
            job.lease = None
            self._leaveLimit(job, now)
            job.history = (job.history + ((
                job.started, lease.expires, lease.worker, 'lost',
                message),))[-KEEP_RUNS:]
            appendLog(job, message + '; it runs again')
            if job.paused:
                self._setStatus(job, interfaces.PAUSED, now)
                job.pausedFrom = (interfaces.CRONJOB if _repeats(job)
                                  else interfaces.QUEUED)
            elif isinstance(job, CronJob):
                # The lost run is due again at once; a repeating job's
                # schedule goes on from there.
                self._unindex(job)
                self._setStatus(job, _waiting(job))
                self._schedule(job, now, _NOW)
            else:
                self._enqueue(job, now, front=True)

    def _current(self, now):
        # Old data is upgraded before anything is changed; see `upgrade`.
        if self._layout != LAYOUT:
            self.upgrade(now)

    def upgrade(self, now=None):
        """Bring data of an older layout up to date; True if it did."""
        if self._layout == LAYOUT:
            return False
        if self._layout == 1:
            self._upgradeFromLayout1()
        elif self._layout == 0:
            from zodbtasks import migration
            migration.upgrade(self, self._now(now))
        # From layout 2: lease trees get their placeholder, and counting
        # begins (the jobs are counted by `buildCounts`, in batches).
        for tree in self._leases:
            if 0 not in tree:
                tree[0] = _PLACEHOLDER
        self._startCounting()
        # From layout 3: the queue and the schedule become the default
        # queue, and listing begins (the jobs are listed by `buildCounts`
        # too, in the same batches).
        if self._queues is None:
            self._queues = OOBTree()
            self._queues[_queues.DEFAULT] = _queues.Queue(
                _queues.DEFAULT, self._queue, self._scheduled)
        if self._listing is None:
            self._listing = _listing.new_listing()
            self._listBuild = _counting.CountBuild()
        if self._limits is None:
            self._limits = OOBTree()
        self._layout = LAYOUT
        return True

    def _upgradeFromLayout1(self):
        """Layout 1 (development versions): one lease tree, and lanes
        without their placeholders."""
        # Some development versions of layout 1 had the trees already; the
        # steps below leave what is done as it is.
        old = self._leases
        if not isinstance(old, tuple):
            self._leases = tuple(_newLeaseTree() for _ in range(_LEASE_SHARDS))
            for key, jobid in old.items():
                self._leases[key & _LEASE_SHARD_MASK][key] = jobid
        for n, lane in enumerate(self._queue):
            first = n << _LANE_SHIFT
            jobid = lane.get(first)
            if jobid is not None and jobid != _PLACEHOLDER:
                del lane[first]
                self._index(_QUEUE, self.jobs[jobid], first + 1)
            lane[first] = _PLACEHOLDER

    def _claim(self, now, spread=False, lane=None, queues=None):
        self._current(now)
        if self.paused:
            return None
        if self._unplaced:
            self._placeNewJobs(now)
        self._recoverExpired(now)
        if self._expiry:
            self.purgeExpired(now, limit=PURGE_PER_CLAIM)
        limit = _timeKey(now) | _LOW_MASK
        served = self._servedQueues(queues)
        while True:
            scheduled = _earliestDue(served, limit)
            if scheduled is None:
                break
            key = scheduled.minKey()
            job = self.jobs.get(scheduled[key])
            if _stale(job, _SCHEDULED, key):
                del scheduled[key]
                continue
            if job.scheduledFor > now:
                break
            if not self._limitLetsThrough(job, now):
                continue
            place = _placeOf(job)
            self._unindex(job)
            try:
                if job.status == interfaces.PROCESSING:
                    self._overlap(job, now)
                    continue
                run, following = self._misfire(job, now)
                if run:
                    self._startRun(job, now, job.scheduledFor, following)
                    self._limitStarted(job, now)
                    return job, place
            except Exception as error:
                self._poisoned(job, now, error)
        while True:
            head = (self._laneHead(lane, queues) if spread
                    else self._queueHead(queues))
            if head is None:
                return None
            tree, key = head
            job = self.jobs.get(tree[key])
            if not _stale(job, _QUEUE, key):
                break
            del tree[key]
        place = _placeOf(job)
        self._unindex(job)
        self._startRun(job, now)
        self._limitStarted(job, now)
        return job, place

    def _poisoned(self, job, now, error):
        """End a job that the queue cannot handle, so that claims go on."""
        self._unindex(job)
        job.scheduledFor = None
        job.lease = None
        job.error = ('could not be scheduled or claimed: %s: %s'
                     % (type(error).__name__, error))
        job.traceback = None
        job.completed = now
        appendLog(job, job.error)
        self._finish(job, interfaces.ERROR, now)
        _notify(events.JobFailed, self, job, now, error=job.error)

    def _overlap(self, job, now):
        """A repeating job came due while its last run is still going."""
        if job.overlap == 'skip':
            self._placeAfter(job, now)
            self._missed(job, now, 1, 'skipped')
        else:
            job.waitingRun = True
            self._missed(job, now, 1, 'waiting', count=False)

    def _misfire(self, job, now):
        """Apply a repeating job's misfire policy to a run due at or before
        ``now``: (whether to run it, its next time after ``now`` if that was
        worked out on the way, else `_UNKNOWN`)."""
        due = job.scheduledFor
        if not _repeats(job) or job._why is not _REGULAR or due >= now:
            return True, _UNKNOWN
        missed, following = self._countTimes(job, due, now)
        if job.misfire == 'skip' and now - due > job.misfireGrace:
            self._placeAfter(job, now, following)
            self._missed(job, now, 1 + missed, 'skipped')
            return False, _UNKNOWN
        if missed:
            if job.misfire == 'all' and missed <= job.catchUp:
                job._replayFrom = due
                self._missed(job, now, missed, 'replaying', count=False)
                return True, _UNKNOWN
            self._missed(job, now, missed, 'coalesced')
        return True, following

    def _countTimes(self, job, after, until):
        """How many times the job is due in (after, until], counting up to
        catchUp + 1, and its first time after ``until`` if counting got
        there (else `_UNKNOWN`)."""
        count = 0
        t = job.timeOfNextCall(after)
        while t is not None and t <= until:
            if count > job.catchUp:
                return count, _UNKNOWN
            count += 1
            t = job.timeOfNextCall(t)
        return count, t

    def _missed(self, job, now, n, action, count=True):
        if count:
            job.missedRuns += n
        job.lastMissed = (now, n, action)
        _notify(events.JobMissed, self, job, now, count=n, action=action)

    def _startRun(self, job, now, due=None, following=_UNKNOWN):
        if job.completed is not None and job.started is not None:
            # The run before this one goes to the history, and the job
            # tells of the run in hand: it has not ended.
            job.history = (job.history + ((
                job.started, job.completed, job.ranOn,
                interfaces.ERROR if job.error else interfaces.COMPLETED,
                job.error),))[-KEEP_RUNS:]
            job.completed = None
        job.runDue = due
        self._setStatus(job, interfaces.PROCESSING)
        job.claimed = job.started = now
        job.attempts += 1
        job.progress = None
        if _repeats(job):
            why = job._why
            replayFrom = getattr(job, '_replayFrom', None)
            job._replayFrom = None
            if why is not _RETRY:
                job.runs += 1
            # A cron job is placed at its next time when a run starts, so
            # that the run's own transaction need not touch the schedule.
            if job.maxRuns is not None and job.runs >= job.maxRuns:
                job.scheduledFor = None
            elif replayFrom is not None:
                self._placeAfter(job, replayFrom)
            else:
                self._placeAfter(job, now, following)
        _notify(events.JobStarted, self, job, now)

    def processNext(self, now=None, jobid=None, token=None, heartbeat=None):
        fixed = now is not None
        now = self._now(now)
        if jobid is None:
            claimed = self._claim(now)
            if claimed is None:
                return False
            job = claimed[0]
        else:
            job = self._job(jobid)
            if token is not None:
                self._checkLease(job, token)
            elif job.status in interfaces.FINISHED:
                return False
            elif job.status != interfaces.PROCESSING:
                if self._unplaced:
                    self._placeNewJobs(now)
                self._unindex(job)
                self._startRun(job, now)
        self._run(job, now, heartbeat, fixed)
        return True

    def process(self, now=None):
        # Returns None, as the reference package's did.
        now = self._now(now)
        while self.processNext(now):
            pass

    def _transaction(self):
        # The connection may use its own transaction manager, not the
        # thread's default one (``db.transaction()`` does that).
        jar = self._p_jar
        if jar is not None and jar.transaction_manager is not None:
            return jar.transaction_manager.get()
        return transaction.get()

    def _findTask(self, job):
        """The callable for a job's task, or an error message."""
        target = getattr(job, 'target', None)
        if target is not None:
            # Checked again at run time: the job may predate the setting.
            untrusted = self._untrusted(type(target).__module__,
                                        'the method %r of %r'
                                        % (job.task, target))
            if untrusted is not None:
                return _UNTRUSTED, untrusted
            method = getattr(target, job.task, None)
            if method is None:
                return None, ('%r has no method %r any more'
                              % (target, job.task))
            return _InputTask(method), None
        task = zope.component.queryUtility(self.taskInterface, job.task)
        if task is None and '.' in job.task:
            untrusted = self._untrusted(job.task.rpartition('.')[0],
                                        repr(job.task))
            if untrusted is not None:
                return _UNTRUSTED, untrusted
            task = _importDotted(job.task)
            if task is not None and not interfaces.ITask.providedBy(task):
                task = _InputTask(task)   # a plain function
        if task is None:
            return None, ('no task is registered under the name %r; '
                          'registered tasks: %s' % (job.task, ', '.join(
                              map(repr, sorted(self.getAvailableTasks())))
                              or 'none'))
        return task, None

    def _run(self, job, now, heartbeat=None, fixed=True):
        """Run a claimed job and record its outcome."""
        outcome = self._execute(job, now, heartbeat, fixed)
        self._conclude(job, outcome)

    def runClaimed(self, jobid, token, now=None, heartbeat=None,
                   missing=False, middlewares=()):
        """Run the task of a job held under ``token``; record nothing.

        Returns the run's `Outcome`, for `recordOutcome` in this transaction
        or a later one. Whatever the task changed stays in the transaction
        (a failed task's changes are rolled back); the job itself is changed
        only by what the task told it through its context (log, progress),
        and a failure's traceback added to the log. The outcome's
        ``completed`` is ``now`` if given, else the clock's time at the end.

        With ``missing``, a task that cannot be found raises `TaskMissing`
        instead of making a failed outcome.

        ``middlewares`` wrap the run, before those registered as utilities
        (see `zodbtasks.middleware`).
        """
        fixed = now is not None
        now = self._now(now)
        job = self._job(jobid)
        self._checkLease(job, token)
        return self._execute(job, now, heartbeat, fixed, missing,
                             middlewares)

    def _execute(self, job, now, heartbeat=None, fixed=True, missing=False,
                 middlewares=()):
        task, why = self._findTask(job)
        if task is None and missing:
            raise TaskMissing(why)
        if task is _UNTRUSTED:
            task = None       # a failure, not a task another worker knows
        savepoint = self._transaction().savepoint(optimistic=True)
        output = failure = retryDelay = None
        if task is None:
            failure = (why, None)
        else:
            try:
                with JobContext(self, job, now, heartbeat):
                    output = runTask(task, self, job, now, middlewares)
                pickle.dumps(output, 3)
            except TransientError:
                raise
            except Retry as error:
                failure = (str(error), traceback.format_exc())
                retryDelay = _retryDelay(error)
                if retryDelay is _REFUSED:
                    retryDelay = None
                    failure = ('%s (its Retry delay was refused: %s)'
                               % (error, error.refused), failure[1])
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
            output = None
        return Outcome(job, now if fixed else self.clock(), output, failure,
                       retryDelay, started=now)

    def _conclude(self, job, outcome):
        if outcome.started is not None:
            job.started = outcome.started
        job.completed = outcome.completed
        job.waitingForTask = job.missingSince = None
        if not outcome.failed:
            job.output = outcome.output   # a failed run keeps the last one
        job.error, job.traceback = outcome.error, outcome.traceback
        self._endRun(job, outcome.completed, outcome.failed,
                     retryDelay=outcome.retryDelay)

    def _endRun(self, job, now, failed, retry=True, retryDelay=None):
        self._leaveLimit(job, now)
        if job.lease is not None:
            job.ranOn = job.lease.worker
        job.lease = None   # its index entry is dropped when it comes due
        job.lostLeases = 0
        if job.status == interfaces.CANCELLED:
            return  # cancelled while running: it stays cancelled
        if failed:
            job.failures = (job.failures + ((now, job.error),))[-KEEP_FAILURES:]
            if retry and job.retried < job.retries and self._retry(
                    job, now, retryDelay):
                return
            job.retried = 0
            _notify(events.JobFailed, self, job, now, error=job.error)
        else:
            job.retried = 0
            _notify(events.JobCompleted, self, job, now)
        if _repeats(job):
            if job.paused:
                self._unindex(job)
                self._setStatus(job, interfaces.PAUSED, now)
                job.pausedFrom = interfaces.CRONJOB
                return
            if job.waitingRun:
                job.waitingRun = False
                self._unindex(job)
                self._schedule(job, now)
            if job.scheduledFor is not None:
                self._setStatus(job, interfaces.CRONJOB)
                return
        elif isinstance(job, CronJob):
            job.scheduledFor = None
        self._finish(job, interfaces.ERROR if failed else interfaces.COMPLETED,
                     now)

    def _retry(self, job, now, delay):
        """Schedule another attempt of a failed run; False if none fits."""
        if delay is None:
            delay = min(job.retryDelay * job.retryBackoff ** job.retried,
                        job.retryMaxDelay)
        due = now + delay
        if _repeats(job):
            # A retry never pushes the schedule: if the next regular run
            # comes first, that run is the retry.
            if job.scheduledFor is not None and due >= job.scheduledFor:
                return False
            self._unindex(job)
            self._schedule(job, due, _RETRY)
            self._setStatus(job, interfaces.CRONJOB)
        else:
            self._setStatus(job, interfaces.RETRYING)
            self._schedule(job, due, _RETRY)
        job.retried += 1
        _notify(events.JobRetried, self, job, now, error=job.error, due=due)
        return True

    # -- the workers' records (see `zodbtasks.registry`) --------------------

    #: worker name -> `WorkerRecord`, created by the first registration: a
    #: service stored before workers registered has none.
    _workers = None
    #: Records of workers dead or stopped for this long are dropped.
    workerDropAfter = _Duration(3600, positive=True)

    def registerWorker(self, name, now, host, pid, every, tasks=(),
                       queues=None):
        from zodbtasks.registry import WorkerRecord
        now = checkMoment(now)
        if not isinstance(name, str) or not isinstance(host, str):
            raise TypeError('a worker name and host are strings, not %r and '
                            '%r' % (name, host))
        if not name.strip():
            raise ValueError('a worker needs a name, not %r' % (name,))
        if isinstance(pid, bool) or not isinstance(pid, int) or pid < 0:
            raise TypeError('pid must be a process id (an int from 0), not '
                            '%r' % (pid,))
        checkDuration(every, 'every', positive=True)
        tasks = tuple(tasks)
        if not all(isinstance(task, str) for task in tasks):
            raise TypeError('tasks are task names (strings), not %r'
                            % (tasks,))
        queues = _queues.check_names(queues)
        if self._workers is None:
            self._workers = OOBTree()
        record = self._workers.get(name)
        if record is None:
            record = self._workers[name] = WorkerRecord(
                name, host, pid, now, every, tasks, queues)
        else:
            # The name came back (a worker restarted with it): reset the
            # record in place, leaving the mapping alone.
            record.__init__(name, host, pid, now, every, tasks, queues)
            record.stopped = None
        return record

    def _worker(self, name):
        return None if self._workers is None else self._workers.get(name)

    def workerSeen(self, name, now, jobs=None, jobsDone=None, counters=None):
        now = checkMoment(now)
        record = self._worker(name)
        if record is not None:
            record.renew(now, jobs, jobsDone, counters)
        return record

    def workerStopped(self, name, now, jobsDone=None, counters=None):
        now = checkMoment(now)
        record = self._worker(name)
        if record is not None:
            record.renew(now, (), jobsDone, counters)
            record.stopped = now
        return record

    def workers(self, now):
        checkMoment(now)
        return list(self._workers.values()) if self._workers else []

    def liveWorkers(self, now):
        from zodbtasks.registry import LIVE
        return [record for record in self.workers(now)
                if record.state(now) == LIVE]

    def dropDeadWorkers(self, now, limit=100):
        now = checkMoment(now)
        limit = _limit(limit)
        if not self._workers:
            return []
        after = self.workerDropAfter
        gone = []
        for name, record in self._workers.items():
            if len(gone) >= limit:
                break
            since = record.deadSince(now)
            if since is not None and now - since > after:
                gone.append(name)
        for name in gone:
            del self._workers[name]
        return gone

    def unservedTasks(self, now):
        known = set()
        for record in self.liveWorkers(now):
            known.update(record.tasks)
        unserved = {}
        for (status, task), n in self.jobCounts().items():
            if status == interfaces.QUEUED and n > 0 and task not in known:
                unserved[task] = unserved.get(task, 0) + n
        return unserved

    def unservedQueues(self, now):
        """{queue: number of queued jobs} of the queues that no live worker
        claims from."""
        served = set()
        for record in self.liveWorkers(now):
            if record.queues is None:
                return {}
            served.update(record.queues)
        return {queue: n for (queue, status), n in self.queueCounts().items()
                if status == interfaces.QUEUED and n > 0
                and queue not in served}


implementer(interfaces.IWorkerRegistry)(TaskService)


@implementer(interfaces.IOutcome)
class Outcome:
    """What a run of a job came to, before it is recorded on the job."""

    def __init__(self, job, completed, output=None, failure=None,
                 retryDelay=None, started=None):
        self.jobid = job.id
        self.started = started
        self.completed = completed
        self.output = output
        self.failed = failure is not None
        self.error, self.traceback = failure or (None, None)
        self.retryDelay = retryDelay
        self.log = job.log
        self.progress = job.progress

    def __repr__(self):
        return '<Outcome of job %s: %s>' % (
            self.jobid, 'failed: %s' % self.error if self.failed else 'ok')


def _limit(limit):
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise ValueError('limit must be a whole number, 0 or more, not %r'
                         % (limit,))
    return limit


def _readCursor(cursor, statuses):
    """(status, key) where the page of ``cursor`` begins."""
    if cursor is None:
        return statuses[0], None
    order = interfaces.LISTING_ORDER
    try:
        if not isinstance(cursor, str) or not cursor.isascii():
            raise ValueError
        n, key = cursor.split('.')
        status, key = order[int(n)], int(key)
        if status not in statuses or not 0 <= key <= _MAX_KEY:
            raise ValueError
    except (ValueError, IndexError):
        raise ValueError('cursor must be one that listJobs gave for these '
                         'filters, not %r' % (cursor,)) from None
    return status, key


def _listingOrder(job):
    if job.status == interfaces.QUEUED:
        return _queues.rank_of(job._indexKey or 0)
    if job.status == interfaces.PROCESSING:
        return job.claimed or 0
    if job.status in (interfaces.RETRYING, interfaces.DELAYED,
                      interfaces.CRONJOB):
        return job.scheduledFor if job.scheduledFor is not None else math.inf
    return -(job.completed or job.created or 0)


def _shownTime(seconds):
    return datetime.datetime.fromtimestamp(
        seconds, datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S.%f')[
            :-3] + ' UTC'


def _earliestDue(queues, limit):
    """The due tree of ``queues`` whose first key is the smallest, if it is
    at most ``limit``; else None."""
    best = bestKey = None
    for queue in queues:
        due = queue.due
        if due:
            key = due.minKey()
            if key <= limit and (bestKey is None or key < bestKey):
                best, bestKey = due, key
    return best


def _countKey(job):
    """What a job is counted as: (status, task), and its queue if it is
    not the default one (so that counts kept before queues stay right)."""
    queue = job.queue
    if queue == _queues.DEFAULT:
        return (job.status, job.task)
    return (job.status, job.task, queue)


def _stale(job, index, key):
    """Whether an index entry is not where its job says it waits (the job
    is gone, or waits elsewhere): such an entry is dropped, never run."""
    return (job is None or job._index != index or job._indexKey != key)


def _placeOf(job):
    """Where a job waits: what a claim that never starts gives back."""
    return (job._index, job._indexKey, job._why, job.scheduledFor)


def _number(seconds):
    return '%d' % seconds if seconds == int(seconds) else '%.1f' % seconds


def _newLane(n):
    """Lane ``n`` of the queue, with its placeholder.

    BTrees cannot resolve a conflict in which one transaction removes the
    first key of a bucket: a worker taking the head of a short lane would
    conflict with every add to that lane at the same moment. So each lane
    keeps a placeholder as its smallest key, which is never removed.
    """
    lane = LLBTree()
    lane[n << _LANE_SHIFT] = _PLACEHOLDER
    return lane


def _newLeaseTree():
    """A tree of the lease index, with a placeholder as its first key (0),
    for the reason given in `_newLane`: claims, renewals and releases all
    remove its oldest entries. Trees stored without one work as well."""
    tree = LLBTree()
    tree[0] = _PLACEHOLDER
    return tree


def _leaseFirst(tree):
    """The smallest key of a lease tree but its placeholder, or None."""
    try:
        return tree.minKey(1)
    except ValueError:
        return None


def _laneItems(lane, n):
    """(key, job id) of the jobs in lane ``n``, oldest first."""
    return lane.items(min=n << _LANE_SHIFT, excludemin=True)


def _laneFirst(lane, n):
    """The key of the oldest job in lane ``n``, or None."""
    try:
        return lane.minKey((n << _LANE_SHIFT) + 1)
    except ValueError:
        return None


def _leaseShard(worker):
    """The tree of the lease index for ``worker``'s leases: the same for a
    worker's claims, so that a claim that also releases the leases of the
    runs before it writes one tree; random for an unnamed worker."""
    if worker is None:
        return random.getrandbits(_LEASE_SHARD_BITS)
    return zlib.crc32(str(worker).encode('utf-8')) & _LEASE_SHARD_MASK


_REFUSED = object()


def _retryDelay(retry):
    """The delay a `Retry` asks for, None, or `_REFUSED` (the reason is
    then ``retry.refused``)."""
    if retry.delay is None:
        return None
    try:
        checkDuration(retry.delay, 'delay')
    except (TypeError, ValueError) as error:
        retry.refused = str(error)
        return _REFUSED
    return retry.delay


def _leaseSeconds(lease):
    """``lease`` (seconds) if it is None or a duration of more than 0."""
    if lease is not None:
        checkDuration(lease, 'lease', positive=True)
    return lease


def _prefetch(jar, objects):
    ghosts = [ob for ob in objects
              if ob is not None and ob._p_changed is None and ob._p_oid]
    if ghosts:
        jar.prefetch(ghosts)


def _firstBucket(tree):
    """The first bucket of a BTree of more than one bucket, else None."""
    tree._p_activate()
    state = tree.__getstate__()
    if state and len(state) == 2:
        return state[1]
    return None


class _InputTask:
    """Call a function or method with the job's input alone."""

    def __init__(self, func):
        self.func = func

    def __call__(self, service, jobid, input):
        return self.func(input)


def _importDotted(name):
    """The object a dotted name points to, or None if it cannot be found."""
    module, _, attr = name.rpartition('.')
    try:
        found = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None
    return found if callable(found) else None


def __getattr__(name):
    # lovely.remotetask's autostart lived in its service module; ours is in
    # `zodbtasks.startup`, imported on first use as it imports this module.
    if name in ('getAutostartServiceNames', 'bootStrapSubscriber'):
        from zodbtasks import startup
        return getattr(startup, name)
    raise AttributeError('module %r has no attribute %r' % (__name__, name))
