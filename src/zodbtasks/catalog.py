"""What a service knows of its jobs without reading them: counts and
listings.

The counts (`zodbtasks.counts`) answer "how many jobs of this status, task
and queue" in O(1); the listings (`zodbtasks.listing`) give a page of jobs
for what it shows. Both are kept by `Catalog` as jobs change, and both are
built in batches for a service of an older layout (`Catalog.build`).
"""
import collections
import itertools
import math
import random
import weakref

from zodbtasks import counts as counting
from zodbtasks import interfaces
from zodbtasks import listing
from zodbtasks import queues
from zodbtasks._trees import pathTo
from zodbtasks.keys import LIMITED
from zodbtasks.keys import LOW_BITS
from zodbtasks.keys import MAX_KEY
from zodbtasks.keys import QUEUE
from zodbtasks.keys import UNPLACED
from zodbtasks.keys import random_time_key

#: The statuses listed by where the job waits (the others by the time of
#: the change that gave them).
LISTED_BY_INDEX = frozenset((interfaces.QUEUED, interfaces.DELAYED,
                             interfaces.CRONJOB, interfaces.RETRYING))

#: The counts shard of each connection (see `Catalog.shard`); processes
#: start at a random shard.
_SHARD_OF: 'weakref.WeakKeyDictionary[object, int]' = \
    weakref.WeakKeyDictionary()
_NEXT_SHARD = itertools.count(random.randrange(1 << 16))


def count_key(job):
    """What a job is counted as: (status, task), and its queue if it is
    not the default one (so that counts kept before queues stay right)."""
    queue = job.queue
    if queue == queues.DEFAULT:
        return (job.status, job.task)
    return (job.status, job.task, queue)


class Catalog:
    """The counts and listings of the jobs of ``data`` (a `TaskService`,
    which stores them as ``_counts``, ``_countBuild``, ``_listing``,
    ``_listBuild`` and ``_finished``; see `zodbtasks.indexes`).

    ``clock`` gives the time when a change is listed without one.
    """

    def __init__(self, data, clock):
        self.data = data
        self.clock = clock

    # -- counts ------------------------------------------------------------

    def recount(self, job, gone=False):
        """Count ``job`` as what it is now (or, ``gone``, no more).

        A job is counted once it says what it is counted as (``_counted``).
        Jobs stored by an older layout are counted by `build`; a change to
        one before that counts it here. Either way the job is written, so
        that a batch and a change of the same job conflict rather than both
        count it.
        """
        data = self.data
        shards = data._counts
        if shards is None:
            return      # an old layout, until its upgrade
        now = None if gone else count_key(job)
        was = job._counted
        if gone and (data._countBuild is not None
                     or data._listBuild is not None):
            job._p_changed = True
        if was == now:
            return
        shard = shards[self.shard()]
        if was is not None:
            shard.add(was, -1)
        if now is not None:
            shard.add(now, 1)
        job._counted = now

    def shard(self):
        """The counts and listing shard that this connection writes.

        Connections of one process write different shards, in turn, so that
        an application's commits and its processor threads' never meet in
        one: not every storage adds up concurrent changes (MappingStorage
        does not).
        """
        data = self.data
        shard = getattr(data, '_v_countShard', None)
        if shard is not None:
            return shard
        jar = data._p_jar
        if jar is None:
            return 0
        shard = _SHARD_OF.get(jar)
        if shard is None:
            shard = _SHARD_OF[jar] = next(_NEXT_SHARD) % counting.SHARDS
        return shard

    def counts_complete(self):
        return self.data._counts is not None and self.data._countBuild is None

    def listing_complete(self):
        return self.data._listing is not None and self.data._listBuild is None

    def all_counts(self, jobs):
        """{count key: n}, kept, or counted from ``jobs`` until the counts
        of an older layout are built."""
        if self.counts_complete():
            return counting.total(self.data._counts)
        return dict(collections.Counter(map(count_key, jobs.values())))

    def start(self):
        """Give a service of an older layout counts and listings, to be
        built by `build`."""
        data = self.data
        if data._counts is None:
            data._counts = tuple(counting.Counts()
                                 for _ in range(counting.SHARDS))
            data._countBuild = counting.CountBuild()
        if data._listing is None:
            data._listing = listing.new_listing()
            data._listBuild = counting.CountBuild()

    def build(self, jobs, limit):
        """Count and list up to ``limit`` jobs not counted or listed yet;
        return how many it went through (0: all are)."""
        data = self.data
        builds = [b for b in (data._countBuild, data._listBuild)
                  if b is not None]
        if not builds:
            return 0
        start = min(build.next for build in builds)
        shard = self.shard()
        n = 0
        last = None
        for jobid, job in jobs.items(min=start):
            if n == limit:
                break
            if data._countBuild is not None and job._counted is None:
                key = count_key(job)
                data._counts[shard].add(key, 1)
                job._counted = key
            if data._listBuild is not None and job._listed is None:
                self.relist(job, job.completed or job.created or 0)
            n += 1
            last = jobid
        for build in builds:
            if n < limit:
                build.next = None
            else:
                build.next = max(build.next, last + 1)
                build.counted += n
        if data._countBuild is not None and data._countBuild.next is None:
            data._countBuild = None       # every job is counted
        if data._listBuild is not None and data._listBuild.next is None:
            data._listBuild = None        # and listed
            data._finished = None         # the listings replace it
        return n

    def forget_status(self, name, ids, jobs):
        """Take the jobs ``ids``, all of status ``name``, off the counts and
        listings, before they are removed from ``jobs``."""
        data = self.data
        if data._countBuild is not None:
            for jobid in ids:
                self.recount(jobs[jobid], gone=True)
        elif data._counts is not None:
            # All jobs of the status go: take off what every shard counts
            # of it, in this connection's shard alone (so that this meets
            # no other writer; what others change meanwhile still adds up).
            shard = data._counts[self.shard()]
            for key, n in counting.total(data._counts).items():
                if key[0] == name:
                    shard.add(key, -n)
        if data._listBuild is not None:
            for jobid in ids:
                # A batch listing it at once must conflict with this.
                jobs[jobid]._p_changed = True
        if data._listing is not None:
            listing.drop(data._listing, name)

    # -- listings ----------------------------------------------------------

    def unlist(self, job):
        if job._listed is not None:
            listing.remove(self.data._listing, job._listed, job._listShard,
                           job._listKey)
            job._listed = job._listKey = job._listShard = None

    def relist(self, job, now=None):
        """List ``job`` as what it is now, or not at all while it runs or
        moves between indexes."""
        if self.data._listing is None:
            return              # an old layout, until its upgrade
        listed, sort, spare = _listed_as(job)
        was = job._listed
        if was is not None:
            if was == listed and (sort is None or job._listKey >> spare
                                  == sort >> spare):
                return          # listed so already
            self.unlist(job)
        if listed is None:
            return
        if sort is None:
            sort = random_time_key(now if now is not None else self.clock())
        shard = self.shard()
        job._listKey = listing.add(self.data._listing, listed, sort, job.id,
                                   shard, spare)
        job._listed, job._listShard = listed, shard

    def listed(self, status, task, queue, after):
        """(key, job id) of the jobs of ``status`` (and ``task``, ``queue``)
        in the order of their listing, after the key ``after``."""
        trees = listing.trees(self.data._listing, status, task, queue)
        if status in LISTED_BY_INDEX:
            return listing.ascending(trees, after)
        return listing.descending(trees, after)

    def finished_ids(self, status):
        """The ids of the jobs of a finished ``status``."""
        finished = self.data._finished
        if finished is not None:
            return list(finished[status])
        return listing.job_ids(listing.trees(self.data._listing, status))

    def finished(self, job, status):
        """``job`` finished with ``status``."""
        if self.data._finished is not None:
            self.data._finished[status].insert(job.id)

    def unfinished(self, job):
        """Take a finished job off what only finished jobs are in."""
        if self.data._finished is not None:
            self.data._finished[job.status].remove(job.id)

    def footprint(self, job):
        """The objects that listing ``job`` as finished writes."""
        nodes = []
        finished = self.data._finished
        if finished is not None and job.status in finished:
            nodes.extend(finished[job.status].nodesWrittenBy(job.id))
        if job._listed is not None:
            tree = self.data._listing[job._listShard][job._listed]
            nodes.extend(pathTo(tree, job._listKey))
        return nodes


def _listed_as(job):
    """(listing key, sort key or None, spare bits) of ``job`` as it is."""
    status = job.status
    spare = LOW_BITS        # the random bits of time and due keys
    if status == interfaces.PROCESSING:
        return None, None, spare
    if status not in LISTED_BY_INDEX:
        return count_key(job), None, spare
    index = getattr(job, '_index', None)
    if index is None:
        return None, None, spare    # between two indexes, or done waiting
    sort = job._indexKey
    if index in (QUEUE, LIMITED):
        # Ranks have 59 bits: room for 4 spare bits below.
        spare = 4
        sort = queues.rank_of(sort) << spare
    elif index == UNPLACED:
        spare = 62
    return count_key(job), sort, spare


def read_cursor(cursor, statuses):
    """(status, key) where the page of ``cursor`` begins."""
    if cursor is None:
        return statuses[0], None
    order = interfaces.LISTING_ORDER
    try:
        if not isinstance(cursor, str) or not cursor.isascii():
            raise ValueError
        n, key = cursor.split('.')
        status, key = order[int(n)], int(key)
        if status not in statuses or not 0 <= key <= MAX_KEY:
            raise ValueError
    except (ValueError, IndexError):
        raise ValueError('cursor must be one that listJobs gave for these '
                         'filters, not %r' % (cursor,)) from None
    return status, key


def scan(jobs, statuses, task, queue, limit, cursor):
    """A page of jobs as `TaskService.listJobs` gives, by reading every
    job: for a service whose listings are not built yet."""
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
        (job for job in jobs.values()
         if job.status in rank and task in (None, job.task)
         and queue in (None, job.queue)),
        key=lambda job: (rank[job.status], _listing_order(job)))
    page = found[start:start + limit]
    more = start + limit < len(found)
    return page, ('scan.%d' % (start + limit) if more else None)


def _listing_order(job):
    if job.status == interfaces.QUEUED:
        return queues.rank_of(job._indexKey or 0)
    if job.status == interfaces.PROCESSING:
        return job.claimed or 0
    if job.status in (interfaces.RETRYING, interfaces.DELAYED,
                      interfaces.CRONJOB):
        return job.scheduledFor if job.scheduledFor is not None else math.inf
    return -(job.completed or job.created or 0)
