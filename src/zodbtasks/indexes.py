"""Where each job of a service waits: the persistent indexes and their
invariants.

Layout of the data, chosen so that every operation costs O(log n) and that
two connections adding jobs at once nearly never write or split the same
BTree (see `zodbtasks._trees` for why splits matter). The trees are
attributes of the `TaskService`, so that stored databases keep their shape;
this module, `zodbtasks.lease_index` and `zodbtasks.catalog` are the code
that changes them.

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
``_limits``
    OOBTree, limit name -> `zodbtasks.limits.Limit`, whose ``waiting`` tree
    holds the jobs it holds back.
``_leases``
    16 LLBTrees, expiry key -> job id: the claims of workers, so that a job
    whose worker died is found when its lease runs out (see
    `zodbtasks.lease_index`). Each lease says whether its run began
    (``Lease.started``) and where its job waited (``Lease.place``), so that
    a claim that never began is given back.
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
    (`zodbtasks.catalog.Catalog.build`, the ``zodbtasks upgrade``
    command); ``_countBuild`` and ``_listBuild`` say how far they got, and
    are None once every job is counted and listed.

Each job remembers which index holds it and under which key (``_index``,
``_indexKey``). An entry whose job says otherwise is stale: it is dropped
when found, never run.

A run's own transaction writes only the job, its listing and count shards
and, for a job with a time to live, the expiry index: a cron job's next time
is placed when its run starts, and a lease's index entry is left behind to
be dropped by a later claim. Workers that run tasks concurrently therefore
rarely conflict, and a conflict never forces a task to run twice for
bookkeeping.
"""
import heapq
import math
import random

from BTrees.LLBTree import LLBTree
from BTrees.OOBTree import OOBTree

from zodbtasks import counts as counting
from zodbtasks import interfaces
from zodbtasks import lease_index
from zodbtasks import limits
from zodbtasks import listing
from zodbtasks import queues
from zodbtasks._trees import ShardedMapping
from zodbtasks.job import MAX_NOW
from zodbtasks.keys import LIMITED
from zodbtasks.keys import LOW_BITS
from zodbtasks.keys import LOW_MASK
from zodbtasks.keys import NOW
from zodbtasks.keys import QUEUE
from zodbtasks.keys import REGULAR
from zodbtasks.keys import SCHEDULED
from zodbtasks.keys import UNPLACED
from zodbtasks.keys import random_key
from zodbtasks.keys import random_time_key
from zodbtasks.keys import time_bound

#: The current layout of a service's data.
LAYOUT = 4

#: Job ids are drawn from [1, MAX_JOB_ID]: random, and exact in JSON.
MAX_JOB_ID = 2 ** 53 - 1


def new_job_id():
    return random.getrandbits(53) or 1  # pragma: no mutate


def create(data):
    """Give a new service ``data`` the trees of the current layout."""
    data._layout = LAYOUT
    data._counts = tuple(counting.Counts() for _ in range(counting.SHARDS))
    data.jobs = ShardedMapping()
    data._queue = tuple(queues.new_lane(n) for n in range(queues.LANES))
    data._scheduled = LLBTree()
    data._queues = OOBTree()
    data._queues[queues.DEFAULT] = queues.Queue(
        queues.DEFAULT, data._queue, data._scheduled)
    data._unplaced = LLBTree()
    data._leases = lease_index.new_index()
    data._expiry = LLBTree()
    data._listing = listing.new_listing()
    data._limits = OOBTree()


def stale(job, index, key):
    """Whether an index entry is not where its job says it waits (the job
    is gone, or waits elsewhere)."""
    return job is None or job._index != index or job._indexKey != key


def place_of(job):
    """Where a job waits: what a claim that never starts gives back."""
    return (job._index, job._indexKey, job._why, job.scheduledFor)


class Indexes:
    """The indexes of ``data`` (a `TaskService`), kept together with its
    counts and listings (``catalog``, a `zodbtasks.catalog.Catalog`)."""

    def __init__(self, data, catalog):
        self.data = data
        self.catalog = catalog

    def set_status(self, job, status, now=None):
        job.status = status
        self.catalog.recount(job)
        self.catalog.relist(job, now)

    # -- filing a job --------------------------------------------------------

    def store(self, job, new_id=new_job_id):
        """Add ``job`` to the jobs; if its id is taken, it gets another
        from ``new_id()``."""
        while not self.data.jobs.insert(job.id, job):
            job.id = new_id()
        self.catalog.recount(job)
        self.catalog.relist(job, job.created or 0)  # pragma: no mutate

    def order_key(self, now):
        """An order key after every one this copy of the service made before.

        The clock orders jobs added by different processes, and random low
        bits keep two of them adding in the same millisecond from choosing
        the same key. Within one connection a volatile counter keeps jobs in
        the order they were added, even when the clock stands still.
        """
        data = self.data
        key = max(max(0, math.floor(now * 1000)) << queues.ORDER_SHIFT
                  | random.getrandbits(queues.ORDER_SHIFT),
                  getattr(data, '_v_lastOrderKey', -1) + 1  # pragma: no mutate
                  )
        if key > queues.ORDER_MASK:
            # Refused before the counter moves, or every later add would
            # fail too.
            raise ValueError('now must be a time from 0 to %d, not %r: its '
                             'order key does not fit the queue'
                             % (MAX_NOW, now))
        data._v_lastOrderKey = key
        return key

    def index(self, name, job, key):
        """File ``job`` in the index ``name`` under ``key`` (or a free key
        near it)."""
        tree = self.tree(job, name, key)
        tries = 0
        while not tree.insert(key, job.id):
            tries += 1
            if name == UNPLACED:
                key = random_key()
            elif name == SCHEDULED and tries < 8:
                # Many jobs due in the same millisecond: draw other low
                # bits rather than probe along a crowded run of keys.
                key = key & ~LOW_MASK | random.getrandbits(LOW_BITS)
            else:
                key += 1
        job._index = name
        job._indexKey = key
        self.catalog.relist(job)

    def tree(self, job, name, key):
        if name == QUEUE:
            return self.queue_of(job).lanes[key >> queues.LANE_SHIFT]
        if name == SCHEDULED:
            return self.queue_of(job).due
        if name == LIMITED:
            return self.data._limits[job.limit].waiting
        return getattr(self.data, name)

    def unindex(self, job):
        name = getattr(job, '_index', None)
        if name is not None:
            del self.tree(job, name, job._indexKey)[job._indexKey]
            job._index = job._indexKey = None
            self.catalog.relist(job)

    def queue_of(self, job):
        """The `Queue` of ``job``, made when a job first names it."""
        name = job.queue
        found = self.data._queues.get(name)
        if found is None:
            found = self.data._queues[name] = queues.Queue(name)
        return found

    def served(self, names=None):
        """The queues of ``names`` that exist (None: every queue)."""
        if names is None:
            return list(self.data._queues.values())
        return [self.data._queues[name] for name in names
                if name in self.data._queues]

    def enqueue(self, job, now, front=False):
        """Queue ``job`` to run as soon as possible: behind the jobs of its
        priority, or with ``front`` among the first of them."""
        self.set_status(job, interfaces.QUEUED)
        order = (random.getrandbits(queues.ORDER_SHIFT) if front
                 else self.order_key(now))
        if job.limit is not None:
            self.wait(job, now, order)
            return
        lane = random.getrandbits(queues.LANE_BITS)
        self.index(QUEUE, job, queues.lane_key(lane, job.priority, order))

    def schedule(self, job, due, why=REGULAR):
        """File ``job`` as due at ``due`` (for the reason ``why``)."""
        job.scheduledFor = due
        job._why = why
        self.index(SCHEDULED, job, random_time_key(due))

    def unplace(self, job):
        """File a delayed or cron job to be placed by the next tick."""
        self.index(UNPLACED, job, random_key())

    def take_unplaced(self):
        """Yield, and take out of their index, the jobs to place."""
        unplaced = self.data._unplaced
        while unplaced:
            job = self.data.jobs[unplaced.pop(unplaced.minKey())]
            job._index = job._indexKey = None
            yield job

    def put_back(self, job, place, now):
        """Queue ``job`` again where it waited (a `place_of`), or at the
        front if it did not wait in a lane."""
        name, key = place[0], place[1]
        self.set_status(job, interfaces.QUEUED)
        if name == QUEUE:
            self.index(QUEUE, job, key)
        else:
            self.enqueue(job, now, front=True)

    # -- limits (see `zodbtasks.limits`) ------------------------------------

    def limit_of(self, job):
        if job.limit is None or self.data._limits is None:  # pragma: no mutate
            return None
        return self.data._limits.get(job.limit)

    def wait(self, job, now, order):
        """Hold a job of a limit back, and let through what the limit
        allows: a queued job that may start at once goes to the queue's
        lanes, the others to its due tree, for their time."""
        limit = self.data._limits[job.limit]
        limit.leave(job.id)
        self.index(LIMITED, job, queues.lane_key(0, job.priority, order))
        self.admit(limit, now)

    def admit(self, limit, now):
        waiting = limit.waiting
        while waiting and limit.canAdmit():
            key = waiting.minKey()
            job = self.data.jobs.get(waiting[key])
            if stale(job, LIMITED, key):
                del waiting[key]
                continue
            self.unindex(job)
            at = limit.admit(job.id)
            if job.status == interfaces.QUEUED and at <= now:
                lane = random.getrandbits(queues.LANE_BITS)
                self.index(QUEUE, job, lane << queues.LANE_SHIFT | key)
            else:
                why = NOW if job.status == interfaces.QUEUED else job._why
                self.schedule(job, max(now, at), why)

    def leave_limit(self, job, now):
        """A job of a limit gives back what it holds there."""
        limit = self.limit_of(job)
        if limit is not None and limit.leave(job.id):
            self.admit(limit, now)

    def limit_lets_through(self, job, now):
        """Whether a due job may start under its limit; if not, it now
        waits there."""
        if job.status == interfaces.PROCESSING:
            return True
        limit = self.limit_of(job)
        if limit is None or limit.holds(job.id):
            return True
        self.unindex(job)  # pragma: no mutate
        self.wait(job, now, self.order_key(now))
        return False

    def limit_started(self, job, now):
        limit = self.limit_of(job)
        if limit is not None:
            limit.started(job.id, now)
            self.admit(limit, now)

    def configure_limit(self, name, concurrency, rate, now):
        found = self.data._limits.get(name)
        if found is None:
            found = self.data._limits[name] = limits.Limit(name)
        if found.configure(concurrency, rate):
            self.admit(found, now)

    # -- finding the next job ------------------------------------------------

    def queue_head(self, names=None):
        """The next job's lane and key in the queues ``names`` (default:
        all), or None."""
        heads = queues.heads(self.served(names))
        if not heads:
            return None
        lane, _, key = min(heads, key=lambda head: queues.rank_of(head[2]))
        return lane, key

    def lane_head(self, start=None, names=None):
        """The head of the first lane from ``start`` (default: a random
        lane) on whose head has the highest priority in the queues
        ``names``, as `queue_head`, or None."""
        heads = queues.heads(self.served(names))
        if not heads:
            return None
        if start is None:
            start = random.getrandbits(queues.LANE_BITS)
        best = max(queues.priority_of(key) for _, _, key in heads)
        lane, _, key = min(
            (head for head in heads if queues.priority_of(head[2]) == best),
            key=lambda head: (head[1] - start) % queues.LANES)
        return lane, key

    def next_queued(self, names, spread, lane):
        """The queued job to run next, left in its lane, or None. Stale
        entries found on the way are dropped."""
        while True:
            head = (self.lane_head(lane, names) if spread
                    else self.queue_head(names))
            if head is None:
                return None
            tree, key = head
            job = self.data.jobs.get(tree[key])
            if not stale(job, QUEUE, key):
                return job
            del tree[key]

    def next_due(self, served, now):
        """The job due soonest at ``now`` in the queues ``served``, left in
        its due tree, or None. Stale entries found on the way are dropped."""
        bound = time_bound(now)
        while True:
            due = earliest_due(served, bound)
            if due is None:
                return None
            key = due.minKey()
            job = self.data.jobs.get(due[key])
            if stale(job, SCHEDULED, key):
                del due[key]
                continue
            return job if job.scheduledFor <= now else None

    def due_items(self, min=None, max=None):
        """(key, job id) of the jobs due in every queue, soonest first."""
        return heapq.merge(*[queue.due.items(min=min, max=max)
                             for queue in self.data._queues.values()])

    def queued(self):
        """(key, job id) of the queued jobs, lane by lane."""
        for queue in self.data._queues.values():
            for n, lane in enumerate(queue.lanes):
                yield from queues.lane_items(lane, n)

    # -- finished jobs -------------------------------------------------------

    def finish(self, job, status, now, ttl):
        """End ``job`` with a finished ``status``; with a ``ttl``, it is
        removed ``ttl`` seconds after ``now`` (by `purge`)."""
        self.leave_limit(job, now)
        self.set_status(job, status, now)
        self.catalog.finished(job, status)
        if ttl is not None:
            job.expires = now + ttl
            while not self.data._expiry.insert(random_time_key(job.expires),
                                               job.id):
                pass

    def forget(self, job):
        """Remove a finished job from the service."""
        self.catalog.unfinished(job)
        self.catalog.recount(job, gone=True)
        self.catalog.unlist(job)
        del self.data.jobs[job.id]

    def purge(self, now, limit=None):
        """Remove up to ``limit`` finished jobs whose time to live ran out
        by ``now``; return how many."""
        expiry = self.data._expiry
        jobs = self.data.jobs
        bound = time_bound(now)
        removed = 0
        while expiry and (limit is None or removed < limit):
            key = expiry.minKey()
            if key > bound:
                break
            job = jobs.get(expiry[key])
            if job is not None and job.expires is not None \
                    and job.expires > now:
                break                 # within the same millisecond
            del expiry[key]
            if job is None or job.status not in interfaces.FINISHED:
                continue              # cleaned away already
            self.forget(job)
            removed += 1
        return removed

    def drop_status(self, name):
        """Remove every job of the finished status ``name``."""
        ids = self.catalog.finished_ids(name)
        self.catalog.forget_status(name, ids, self.data.jobs)
        for jobid in ids:
            del self.data.jobs[jobid]
        if self.data._finished is not None:
            self.data._finished[name].clear()

def earliest_due(served, bound):
    """The due tree of the queues ``served`` whose first key is the
    smallest, if it is at most ``bound``; else None."""
    best = best_key = None
    for queue in served:
        due = queue.due
        if due:
            key = due.minKey()
            if key <= bound and (best_key is None or key < best_key):
                best, best_key = due, key
    return best
