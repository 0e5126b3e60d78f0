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
