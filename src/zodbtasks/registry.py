"""The records of the workers of a service: who runs its jobs, right now.

Each worker keeps one `WorkerRecord` in its service's ``_workers`` (an
OOBTree, worker name -> record, created by the first registration). The
worker writes the tree once, when it registers; after that it writes only
its own record, so workers renewing at once never conflict with each other.

A record tells its state by itself, from the time it was last renewed and
the interval its worker promised (``every``): a worker that missed
`DEAD_AFTER` renewals in a row is dead. Nothing needs to write the record
for that; dead records are dropped later (`TaskService.dropDeadWorkers`).
"""
import persistent
from zope.interface import implementer

from zodbtasks import interfaces
from zodbtasks.job import checkDuration
from zodbtasks.queues import check_names

#: A worker is dead once it has not renewed its record for this many of
#: its intervals.
DEAD_AFTER = 3

LIVE, DEAD, STOPPED = 'live', 'dead', 'stopped'


@implementer(interfaces.IWorkerRecord)
class WorkerRecord(persistent.Persistent):
    """What a worker said of itself when it last renewed its record."""

    stopped = None
    #: The names of the queues it claims from; None: every queue.
    queues = None

    def __init__(self, name, host, pid, started, every, tasks=(),
                 queues=None):
        self.name = name
        self.host = host
        self.pid = pid
        self.started = started
        self.every = every
        self.tasks = tuple(sorted(tasks))
        self.queues = None if queues is None else tuple(sorted(queues))
        self.lastSeen = started
        self.jobs = ()
        self.jobsDone = 0
        self.counters = {}

    def __repr__(self):
        return '<WorkerRecord %s>' % self.name

    def renew(self, now, jobs=None, jobsDone=None, counters=None):
        self.lastSeen = now
        if jobs is not None:
            self.jobs = tuple(jobs)
        if jobsDone is not None:
            self.jobsDone = jobsDone
        if counters is not None:
            self.counters = dict(counters)

    def state(self, now):
        if self.stopped is not None:
            return STOPPED
        if now - self.lastSeen > DEAD_AFTER * self.every:
            return DEAD
        return LIVE

    def deadSince(self, now):
        """When it stopped or was last seen alive, or None while it lives."""
        if self.stopped is not None:
            return self.stopped
        if self.state(now) == DEAD:
            return self.lastSeen
        return None

    def describe(self, now):
        """The record as a dict of plain values, with its state at ``now``."""
        return {
            'name': self.name, 'host': self.host, 'pid': self.pid,
            'state': self.state(now), 'started': self.started,
            'lastSeen': self.lastSeen, 'every': self.every,
            'stopped': self.stopped, 'jobsDone': self.jobsDone,
            'jobs': list(self.jobs), 'tasks': list(self.tasks),
            'queues': None if self.queues is None else list(self.queues),
            'counters': dict(self.counters)}


def check_registration(name, host, pid, every, tasks, queues):
    """Refuse a bad registration; return its tasks and queues as tuples."""
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
    return tasks, check_names(queues)


def register(records, name, now, host, pid, every, tasks=(), queues=None):
    """The record of worker ``name`` in ``records`` (an OOBTree), made or,
    for a name that came back (a worker restarted with it), reset in place
    so that the tree is not written."""
    record = records.get(name)
    if record is None:
        record = records[name] = WorkerRecord(
            name, host, pid, now, every, tasks, queues)
    else:
        record.__init__(name, host, pid, now, every, tasks, queues)
        record.stopped = None
    return record


def long_dead(records, now, after, limit):
    """The names of up to ``limit`` workers dead or stopped for more than
    ``after`` seconds."""
    gone = []
    for name, record in records.items():
        if len(gone) >= limit:
            break
        since = record.deadSince(now)
        if since is not None and now - since > after:
            gone.append(name)
    return gone


def unserved_tasks(live, counts):
    """{task: number of queued jobs} of the tasks that none of the ``live``
    workers knows; ``counts`` is `TaskService.jobCounts`."""
    known = set()
    for record in live:
        known.update(record.tasks)
    unserved = {}
    for (status, task), n in counts.items():
        if status == interfaces.QUEUED and n > 0 and task not in known:
            unserved[task] = unserved.get(task, 0) + n
    return unserved


def unserved_queues(live, counts):
    """{queue: number of queued jobs} of the queues that none of the
    ``live`` workers claims from; ``counts`` is `TaskService.queueCounts`."""
    served = set()
    for record in live:
        if record.queues is None:
            return {}
        served.update(record.queues)
    return {queue: n for (queue, status), n in counts.items()
            if status == interfaces.QUEUED and n > 0 and queue not in served}
