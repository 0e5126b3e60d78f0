"""Bring a z3c.taskqueue or lovely.remotetask database over to zodbtasks.

Two steps, described in ``docs/migration.rst``:

1. `renames`, a rename map for zodbupdate, makes the stored services and jobs
   load as zodbtasks classes. zodbupdate finds it through the ``zodbupdate``
   entry point group once zodbtasks is installed.

2. `upgrade` rebuilds a converted service in the layout of this version. The
   service calls it from its first tick (``TaskService.upgrade``), so nothing
   has to be run by hand.

The old layout, common to both packages, is on the service:

``jobs``
    IOBTree, job id -> job.
``_queue``
    a zc.queue queue (``Queue``, or ``CompositeQueue`` whose ``_data`` holds
    sub-queues) of the jobs waiting to run, oldest first.
``_scheduledJobs``
    IOBTree, due time in epoch seconds -> tuple of delayed and cron jobs.
``_scheduledQueue``
    a zc.queue queue of the delayed and cron jobs not placed in
    ``_scheduledJobs`` yet (the next tick placed them).

Jobs kept their fields in their ``__dict__`` under the names zodbtasks uses,
but ``created``, ``started``, ``completed`` and ``scheduledFor`` were naive
local datetimes, and lovely.remotetask stored a failed job's exception object
as its ``error``.

zc.queue classes are deliberately not renamed: applications use zc.queue for
their own queues, and zodbupdate renames a class everywhere in the database.
Without zc.queue installed, the old queues load as ZODB broken objects, whose
state `upgrade` reads all the same; once upgraded, nothing refers to them and
packing the database removes them.
"""
import datetime
import logging

import persistent
from BTrees.OOBTree import OOBTree
from ZODB.broken import Broken

from zodbtasks import interfaces
from zodbtasks.job import _NO_SCHEDULE
from zodbtasks.job import CronJob
from zodbtasks.job import Job
from zodbtasks import indexes
from zodbtasks import lease_index
from zodbtasks import lifecycle
from zodbtasks import queues
from zodbtasks.catalog import Catalog
from zodbtasks.indexes import LAYOUT
from zodbtasks.indexes import MAX_JOB_ID
from zodbtasks.keys import NOW
from zodbtasks.keys import QUEUE
from zodbtasks.task import TaskError

log = logging.getLogger('zodbtasks.migration')

_OLD_PACKAGES = ('z3c.taskqueue', 'lovely.remotetask')

# What each old package stored, and what it is now. Keys and values are in
# zodbupdate's format: 'dotted.module ClassName'.
_CLASSES = {
    'service TaskService': 'zodbtasks.service TaskService',
    'job Job': 'zodbtasks.job Job',
    'job CronJob': 'zodbtasks.job CronJob',
    # Tasks can be stored as local utilities, and lovely.remotetask stored a
    # failed job's exception (TaskError among others) as its error.
    'task SimpleTask': 'zodbtasks.task SimpleTask',
    'task TaskError': 'zodbtasks.task TaskError',
    # A service whose processorFactory was set on the instance; the new
    # classes take the same (db, servicePath, waitTime) arguments.
    'processor SimpleProcessor': 'zodbtasks.processor SimpleProcessor',
    'processor MultiProcessor': 'zodbtasks.processor MultiProcessor',
    # Interfaces, as stored in the registrations of local site managers and
    # in the declarations of persistent objects.
    'interfaces ITask': 'zodbtasks.interfaces ITask',
    'interfaces ITaskService': 'zodbtasks.interfaces ITaskService',
    'interfaces IJob': 'zodbtasks.interfaces IJob',
    'interfaces ICronJob': 'zodbtasks.interfaces ICronJob',
}

#: The zodbupdate rename map: old class path -> zodbtasks class path.
renames = {'%s.%s' % (package, old): new
           for package in _OLD_PACKAGES for old, new in _CLASSES.items()}

#: Attributes of the old layout that the upgrade removes from the service.
OLD_ATTRIBUTES = ('jobs', '_queue', '_scheduledJobs', '_scheduledQueue',
                  'containerClass', 'maxint', 'family')

# What happens to a job, for the summary `upgrade` returns.
QUEUED_AGAIN = 'queued'
RECOVERED = 'recovered'
SCHEDULED = 'scheduled'
UNPLACED = 'unplaced'
FINISHED = 'finished'
WAITING = 'start later'
FAILED = 'failed'


def upgrade(service, now):
    """Rebuild ``service``, converted from the old layout, in the new one.

    ``now`` is the time of the tick that upgrades, in epoch seconds. Every
    job keeps its id (unless it does not fit the new id range), status,
    input, output and error; see ``docs/migration.rst`` for where each job
    goes. Returns a dict: what happened -> number of jobs.

    A service already in the current layout is left alone (the result is
    empty).
    """
    service._p_activate()
    state = vars(service)
    if state.get('_layout') == LAYOUT:
        return {}
    old = {name: state[name] for name in OLD_ATTRIBUTES if name in state}
    for name in old:
        delattr(service, name)
    indexes.create(service)
    queue = _Rebuild(service, now)

    oldJobs = old.get('jobs')
    queued = _queueItems(old.get('_queue'))
    unplaced = {_ident(job) for job in _queueItems(old.get('_scheduledQueue'))}
    due = {}
    scheduled = old.get('_scheduledJobs')
    for time, jobs in (scheduled.items() if scheduled is not None else ()):
        for job in jobs:
            due.setdefault(_ident(job), time)

    # A queued job that is in no queue was claimed by a worker that died
    # before it ran the job; it runs again, first, like a job that was
    # 'processing'.
    inQueue = {_ident(job) for job in queued}
    summary = {}
    migrated, recovered = set(), []
    for jobid, job in (oldJobs.items() if oldJobs is not None else ()):
        _convertJob(job)
        _placeId(queue, jobid, job)
        migrated.add(_ident(job))
        what = _place(queue, job, now, _ident(job), inQueue, unplaced, due,
                      recovered)
        summary[what] = summary.get(what, 0) + 1

    recovered.sort(key=lambda job: (job.started or job.created or 0, job.id))
    for job in recovered:
        queue.enqueue(job, now)
    for job in queued:
        # Jobs removed from ``jobs`` are dropped; enqueueing indexes a job,
        # so one that was in the old queue twice is queued once.
        if _ident(job) in migrated and job.status == interfaces.QUEUED \
                and getattr(job, '_index', None) is None:
            queue.enqueue(job, now)
    log.info('upgraded the task service %r from the z3c.taskqueue layout: %s',
             service.__name__,
             ', '.join('%d %s' % (n, what)
                       for what, n in sorted(summary.items())) or 'no jobs')
    return summary


def _ident(job):
    """What identifies a job across the old indexes."""
    return getattr(job, '_p_oid', None) or id(job)


def _state(obj):
    """The stored attributes of an object, broken (class missing) or not."""
    if isinstance(obj, persistent.Persistent):
        obj._p_activate()
    if isinstance(obj, Broken):
        return getattr(obj, '__Broken_state__', None) or {}
    return getattr(obj, '__dict__', {})


def _queueItems(queue):
    """The items of a zc.queue queue, in order, whatever class loaded it."""
    if queue is None:
        return []
    items = []
    for item in _state(queue).get('_data', ()):
        if isinstance(item, Job):
            items.append(item)
        else:                          # a sub-queue of a CompositeQueue
            items.extend(_queueItems(item))
    return items


def _seconds(value):
    """A stored time as epoch seconds; naive datetimes are local time."""
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return value


def _text(value):
    if isinstance(value, bytes):
        return value.decode('utf-8', 'replace')
    return value


def _message(error):
    """The text the new service keeps as a failed job's error."""
    if error is None or isinstance(error, str):
        return error
    if isinstance(error, bytes):
        return _text(error)
    if isinstance(error, TaskError):
        return str(error)
    if isinstance(error, BaseException):
        return '%s: %s' % (type(error).__name__, error)
    return repr(error)


def _convertJob(job):
    """Turn the old fields of a job into the new ones, in place."""
    job._p_activate()
    state = vars(job)
    for name in ('task', 'status'):
        if isinstance(state.get(name), bytes):
            setattr(job, name, _text(state[name]))
    for name in ('created', 'started', 'completed'):
        if isinstance(state.get(name), datetime.datetime):
            setattr(job, name, _seconds(state[name]))
    if 'created' not in state:
        job.created = None
    if not (state.get('error') is None or isinstance(state['error'], str)):
        job.error = _message(state['error'])
    if 'scheduledFor' in state:
        job.scheduledFor = None        # placed anew below
    if isinstance(job, CronJob):
        for name, default in _NO_SCHEDULE.items():
            if name not in state:
                setattr(job, name, default)
        for name in ('minute', 'hour', 'dayOfMonth', 'month', 'dayOfWeek'):
            value = getattr(job, name)
            setattr(job, name, tuple(value) if value else ())
        if not getattr(job, 'delay', None):   # the old package's 0 is None
            job.delay = None
        job._v_schedule = None


class _Rebuild(indexes.Indexes):
    """The indexes of a service being rebuilt at ``now``."""

    def __init__(self, service, now):
        super().__init__(service, Catalog(service, lambda: now))
        self.resultTTL = service.resultTTL

    def finish(self, job, status, now, ttl=None):
        super().finish(job, status, now,
                       lifecycle.time_to_live(job, self.resultTTL))


def _placeId(queue, jobid, job):
    """Store the job in the new mapping under its old id, if it fits."""
    job.id = jobid
    if not 0 <= jobid <= MAX_JOB_ID:
        job.id = indexes.new_job_id()
        log.warning('job %r got the new id %r: the new service keeps ids '
                    'between 0 and %d', jobid, job.id, MAX_JOB_ID)
    queue.store(job)


def _place(queue, job, now, ident, inQueue, unplaced, due, recovered):
    """Put a job where the new service looks for it; say what was done."""
    status = job.status
    if status in interfaces.FINISHED:
        if isinstance(job, CronJob):
            job.scheduledFor = None
        queue.finish(job, status, now)
        return FINISHED
    if status == interfaces.STARTLATER:
        return WAITING
    if isinstance(job, CronJob) and status in (
            interfaces.CRONJOB, interfaces.DELAYED, interfaces.PROCESSING,
            interfaces.QUEUED):
        return _placeCronJob(queue, job, now, ident, unplaced, due)
    if status in (interfaces.QUEUED, interfaces.PROCESSING,
                  interfaces.CRONJOB, interfaces.DELAYED):
        if status == interfaces.QUEUED and ident in inQueue:
            job.status = interfaces.QUEUED   # enqueued in the old order later
            return QUEUED_AGAIN
        job.status = interfaces.QUEUED
        recovered.append(job)
        return RECOVERED
    job.error = 'the job had the unknown status %r in the old database' % (
        status,)
    queue.finish(job, interfaces.ERROR, now)
    return FAILED


def _placeCronJob(queue, job, now, ident, unplaced, due):
    status = job.status
    job.status = (interfaces.CRONJOB if job.delay is None
                  else interfaces.DELAYED)
    try:
        if job.delay is None:
            job.schedule        # compile it: the old package checked nothing
    except (ValueError, TypeError) as error:
        job.error = 'its schedule cannot be used: %s' % (error,)
        queue.finish(job, interfaces.ERROR, now)
        return FAILED
    if ident in unplaced:
        # Not placed by the old service yet: the next tick places it.
        queue.unplace(job)
        return UNPLACED
    when = due.get(ident)
    if status == interfaces.PROCESSING or (
            when is None and status == interfaces.DELAYED):
        # Its run was lost with its worker (the old service took a delayed
        # job out of its schedule when it claimed it): due again at once.
        queue.schedule(job, now, NOW)
        return RECOVERED
    if when is None:
        queue.unplace(job)
        return UNPLACED
    if job.delay is None and when > now:
        # A repeating job follows its schedule as this version computes it.
        # One that came due while the old service was stopped keeps its old
        # time and runs at the first tick, as the old service would have
        # run it (its misfire policy applies).
        when = job.timeOfNextCall(now)
        if when is None:
            queue.finish(job, interfaces.COMPLETED, now)
            return FINISHED
    queue.schedule(job, when)
    return SCHEDULED


# -- layouts 1 to 3 (earlier versions of zodbtasks) ----------------------------

def upgrade_layout(service):
    """Bring the trees of a service of layout 1, 2 or 3 to this layout.

    Every step leaves what is done as it is, so that a service part-way
    through (some development versions of layout 1 had parts of layout 2)
    is upgraded all the same. The jobs are counted and listed afterwards in
    batches (`TaskService.buildCounts`, the ``zodbtasks upgrade`` command).
    """
    # Layout 1: one lease tree, and lanes without their placeholders.
    lease_index.LeaseIndex(service).split()
    queue = indexes.Indexes(service, Catalog(service, service.clock))
    for n, lane in enumerate(service._queue):
        first = n << queues.LANE_SHIFT
        jobid = lane.get(first)
        if jobid is not None and jobid != queues.PLACEHOLDER:
            del lane[first]
            queue.index(QUEUE, service.jobs[jobid], first + 1)
        lane[first] = queues.PLACEHOLDER
    # Layout 2: lease trees get their placeholder, and counting begins.
    # Layout 3: listing begins; the queue and the schedule become the
    # default queue, and limits come.
    lease_index.LeaseIndex(service).ensure_placeholders()
    queue.catalog.start()
    if service._queues is None:
        service._queues = OOBTree()
        service._queues[queues.DEFAULT] = queues.Queue(
            queues.DEFAULT, service._queue, service._scheduled)
    if service._limits is None:
        service._limits = OOBTree()
    service._layout = LAYOUT
