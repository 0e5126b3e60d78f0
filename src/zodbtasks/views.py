"""Looking at a service's queue from its indexes, without reading every job:
what is next, what is late, what is coming, what is held, and pages of
jobs. Nothing here writes.
"""
import datetime
import itertools

from zodbtasks import indexes
from zodbtasks import interfaces
from zodbtasks.catalog import read_cursor
from zodbtasks.catalog import scan
from zodbtasks.keys import LIMITED
from zodbtasks.keys import QUEUE
from zodbtasks.keys import SCHEDULED
from zodbtasks.keys import time_bound
from zodbtasks.lease_index import LeaseIndex
from zodbtasks.lifecycle import repeats


class QueueView:
    """Questions about the jobs of ``data`` (a `TaskService`), answered from
    its indexes ``ix`` (an `zodbtasks.indexes.Indexes`)."""

    def __init__(self, data, ix):
        self.data = data
        self.ix = ix
        self.leases = LeaseIndex(data)

    def oldest_queued(self, queues):
        head = self.ix.queue_head(queues)
        if head is None:
            return None
        lane, key = head
        job = self.data.jobs.get(lane[key])
        return None if indexes.stale(job, QUEUE, key) else job

    def overdue(self, now, limit):
        found = []
        for key, jobid in self.ix.due_items(max=time_bound(now)):
            if len(found) >= limit:
                break
            job = self.data.jobs.get(jobid)
            if not indexes.stale(job, SCHEDULED, key) \
                    and job.scheduledFor <= now:
                found.append(job)
        return found

    def upcoming(self, now, limit, repeating):
        found = []
        entries = self.ix.due_items(min=time_bound(now))
        for key, jobid in itertools.islice(entries, 100 * limit):
            if len(found) >= limit:
                break
            job = self.data.jobs.get(jobid)
            if indexes.stale(job, SCHEDULED, key) or job.scheduledFor <= now:
                continue
            if not repeating or repeats(job):
                found.append(job)
        return found

    def expired_leases(self, now, limit):
        found = []
        for _, jobid in self.leases.live(max=time_bound(now)):
            if len(found) >= limit:
                break
            job = self.data.jobs[jobid]
            if job.lease.expires <= now:
                found.append(job)
        return found

    def has_jobs_waiting(self, now, queues):
        if self.data.paused:
            return False
        if self.ix.queue_head(queues) is not None:
            return True
        bound = time_bound(now)
        if indexes.earliest_due(self.ix.served(queues), bound) is not None:
            return True
        # An expired lease counts: its job is to be given back. (Entries of
        # leases that heartbeats extended wait to be moved on by a claim.)
        return any(self.data.jobs[jobid].lease.expires <= now
                   for _, jobid in self.leases.live(max=bound))

    def is_idle(self, now, queues):
        if self.has_jobs_waiting(now, queues):
            return False
        return not any(queues is None or self.data.jobs[jobid].queue in queues
                       for _, jobid in self.leases.live())

    def list_jobs(self, statuses, task, limit, cursor, queue):
        """A page of jobs of ``statuses`` (in the order of
        `interfaces.LISTING_ORDER`) and the cursor of the next page."""
        jobs = self.data.jobs
        if not self.ix.catalog.listing_complete():
            return scan(jobs, statuses, task, queue, limit, cursor)
        order = interfaces.LISTING_ORDER
        first, after = read_cursor(cursor, statuses)
        entries = itertools.chain.from_iterable(
            ((name, key, jobid) for key, jobid in self._listed(
                name, task, queue, after if name == first else None))
            for name in statuses[statuses.index(first):])
        found = []
        last = None
        for name, key, jobid in entries:
            if len(found) == limit:
                return found, '%d.%d' % (order.index(last[0]), last[1])
            job = jobs.get(jobid)
            if job is not None:
                found.append(job)
                last = name, key
        return found, None

    def _listed(self, status, task, queue, after):
        if status != interfaces.PROCESSING:
            return self.ix.catalog.listed(status, task, queue, after)
        jobs = self.data.jobs
        return ((key, jobid) for key, jobid in self.leases.live()
                if (after is None or key > after)
                and task in (None, jobs[jobid].task)
                and queue in (None, jobs[jobid].queue))

    def waiting_for(self, job, now):
        """What ``job`` waits for under its limit, in words, or None."""
        limit = self.ix.limit_of(job)
        if limit is None:
            return None
        if getattr(job, '_index', None) == LIMITED:
            return 'held back by limit %r (%s)' % (limit.name,
                                                   limit.describe())
        if limit.released == job.id and job.scheduledFor is not None \
                and job.scheduledFor > now:
            return 'rate limited until %s (limit %r, at most %s)' % (
                _shown_time(job.scheduledFor), limit.name, limit.rate)
        return None


def _shown_time(seconds):
    return datetime.datetime.fromtimestamp(
        seconds, datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S.%f')[
            :-3] + ' UTC'
