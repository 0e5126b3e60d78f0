"""Workers' claims: taking due jobs under leases, renewing and giving back.

A claim is short: it places the jobs added since the last one, recovers the
jobs whose lease ran out, takes due jobs (the due trees first, then the
lanes) and leases them to the worker. The worker commits it at once and runs
the jobs in transactions of their own (see `zodbtasks.processor`).
"""
import random

from zodbtasks import interfaces
from zodbtasks import lifecycle
from zodbtasks import prefetch
from zodbtasks.indexes import place_of
from zodbtasks.interfaces import LeaseLost
from zodbtasks.job import MAX_DURATION
from zodbtasks.job import MAX_NOW
from zodbtasks.job import Lease
from zodbtasks.job import checkDuration
from zodbtasks.lease_index import LeaseIndex
from zodbtasks.lease_index import shard_of
from zodbtasks.queues import LANE_BITS

#: How many expired jobs one claim removes at most, to keep claims short.
PURGE_PER_CLAIM = 100


def check_lease_seconds(lease, name='lease'):
    """``lease`` (seconds) if it is None or a duration of more than 0."""
    if lease is not None:
        checkDuration(lease, name, positive=True)
    return lease


def check_lease(job, token):
    """The lease ``token`` of ``job``; `LeaseLost` if it no longer holds."""
    lease = job.lease
    if (job.status != interfaces.PROCESSING or lease is None
            or lease.token != token or lease.revoked):
        raise LeaseLost('job %r is no longer held under lease %r (it is '
                        '%r)' % (job.id, token, job.status))
    return lease


class Claims:
    """The claims on the jobs of ``service``, whose jobs change state
    through ``transitions`` (a `zodbtasks.transitions.Transitions`)."""

    def __init__(self, service, transitions):
        self.service = service
        self.transitions = transitions
        self.ix = transitions.ix
        self.leases = LeaseIndex(service)

    def claim_jobs(self, now, count, worker, lease, spread, start, queues):
        """Lease up to ``count`` due jobs to ``worker``; their ids."""
        lane = random.getrandbits(LANE_BITS) if spread else None
        shard = shard_of(worker)
        if count > 1:
            prefetch.queued(self.service, self.ix.served(queues), count, lane)
        if start is None:
            start = count
        claimed = []
        for n in range(count):
            jobid = self.claim_next(now, worker, lease, spread, lane, shard,
                                    start=n < start, queues=queues)
            if jobid is None:
                break
            claimed.append(jobid)
        return claimed

    def claim_next(self, now, worker, lease, spread, lane=None, shard=None,
                   start=True, queues=None):
        """Lease the next due job to ``worker``; its id, or None."""
        if shard is None:
            shard = shard_of(worker)
        while True:
            claimed = self.claim(now, spread, lane, queues)
            if claimed is None:
                return None
            job, place = claimed
            seconds = lease or job.leaseSeconds or self.service.leaseSeconds
            job.lease = Lease(random.getrandbits(63), worker, now + seconds,
                              claimed=now, started=now if start else None,
                              place=place)
            try:
                self.leases.add(job.lease, job.id, shard)
            except Exception as error:
                self.transitions.poisoned(job, now, error)
                continue
            return job.id

    def claim(self, now, spread=False, lane=None, queues=None):
        """Take the next job due at ``now`` and start its run: (job, where
        it waited), or None."""
        if self.service.paused:
            return None
        self.tick(now)
        ix, transitions = self.ix, self.transitions
        served = ix.served(queues)
        while True:
            job = ix.next_due(served, now)
            if job is None:
                break
            if not ix.limit_lets_through(job, now):
                continue
            place = place_of(job)
            ix.unindex(job)
            try:
                if job.status == interfaces.PROCESSING:
                    transitions.overlap(job, now)
                    continue
                if transitions.due(job, now):
                    return job, place
            except Exception as error:
                transitions.poisoned(job, now, error)
        job = ix.next_queued(queues, spread, lane)
        if job is None:
            return None
        place = place_of(job)
        ix.unindex(job)
        transitions.start_run(job, now)
        ix.limit_started(job, now)
        return job, place

    def tick(self, now):
        """What every claim does first: place the jobs added since the last
        one, recover the claims whose lease ran out, purge a few expired
        jobs."""
        if self.service._unplaced:
            self.transitions.place_new_jobs(now)
        for job in list(self.leases.expired(now)):
            self.transitions.lease_lost(job, job.lease, now)
        if self.service._expiry:
            self.ix.purge(now, PURGE_PER_CLAIM)

    def heartbeat(self, job, token, now, seconds, started):
        """Extend a lease; its new end (see `TaskService.heartbeat`)."""
        lease = check_lease(job, token)
        seconds = seconds or job.leaseSeconds or self.service.leaseSeconds
        expires = max(lease.expires, now + seconds)
        if expires > MAX_NOW + MAX_DURATION:
            raise ValueError('a lease cannot end after %r, but now + seconds '
                             'is %r' % (MAX_NOW + MAX_DURATION, expires))
        if started and lease.started is None:
            lease.started = now
        lease.expires = expires
        return expires

    def release(self, job, token, now, delay=None):
        """Give back a claim whose run has not started."""
        lease = check_lease(job, token)
        self.leases.drop(lease)
        self.transitions.give_back(job, lease, now, delay)

    def task_missing(self, job, token, reason, now):
        """A worker cannot find the task of ``job``: give the claim back
        for a while, or fail the job once no worker found it for long."""
        lease = check_lease(job, token)
        service = self.service
        fails = lifecycle.missing_task_fails(job, now,
                                             service.missingTaskTimeout)
        if job.waitingForTask is None:
            job.missingSince = now
        job.waitingForTask = job.task
        if not fails:
            self.release(job, token, now, service.missingTaskDelay)
            return
        self.leases.drop(lease)
        self.transitions.fail_run(
            job, now, 'no worker could run task %r for %s s: %s' % (
                job.task, _number(now - job.missingSince), reason))


def _number(seconds):
    return '%d' % seconds if seconds == int(seconds) else '%.1f' % seconds
