"""The index of the workers' claims: which lease runs out when.

Sixteen LLBTrees of expiry key -> job id. The lowest bits of a key name the
tree that holds it, which the worker's name chooses: a worker's claims write
one tree, and workers claiming at once rarely write the same one. Each tree
keeps a placeholder first key (0), for the reason given in
`zodbtasks.queues.new_lane`: claims, renewals and releases all remove its
oldest entries.

The entry of a lease is written when the job is claimed and dropped by a
claim: a run that ends, or a heartbeat that extends the lease, leaves it
behind, so that neither writes a tree that other workers write. A later
claim drops or moves on what it finds stale (`LeaseIndex.expired`).
"""
import heapq
import random
import zlib

from BTrees.LLBTree import LLBTree

from zodbtasks import interfaces
from zodbtasks.keys import LOW_BITS
from zodbtasks.keys import same_millisecond
from zodbtasks.keys import time_bound
from zodbtasks.keys import time_key
from zodbtasks.queues import PLACEHOLDER

SHARD_BITS = 4
SHARDS = 1 << SHARD_BITS
SHARD_MASK = SHARDS - 1


def new_tree():
    """A tree of the lease index, with its placeholder. Trees stored
    without one work as well."""
    tree = LLBTree()
    tree[0] = PLACEHOLDER
    return tree


def new_index():
    return tuple(new_tree() for _ in range(SHARDS))


def first_key(tree):
    """The smallest key of a lease tree but its placeholder, or None."""
    try:
        return tree.minKey(1)
    except ValueError:
        return None


def shard_of(worker):
    """The tree for ``worker``'s leases: the same for all of a worker's
    claims, so that a claim that also releases the leases of the runs
    before it writes one tree; random for an unnamed worker."""
    if worker is None:
        return random.getrandbits(SHARD_BITS)
    return zlib.crc32(str(worker).encode('utf-8')) & SHARD_MASK  # pragma: no mutate


class LeaseIndex:
    """The lease trees of ``data`` (a `TaskService`: ``_leases``, and its
    ``jobs`` to tell live entries from stale ones)."""

    def __init__(self, data):
        self.data = data

    def add(self, lease, jobid, shard=None):
        """File ``lease`` of job ``jobid`` by its end; set its key."""
        if shard is None:
            shard = random.getrandbits(SHARD_BITS)
        tree = self.data._leases[shard]
        while True:
            key = (time_key(lease.expires) | shard
                   | random.getrandbits(LOW_BITS) & ~SHARD_MASK)
            if tree.insert(key, jobid):
                break
        lease.key = key

    def drop(self, lease):
        """Drop the entry of ``lease``, if it is still there."""
        self.data._leases[lease.key & SHARD_MASK].pop(lease.key, None)

    def live(self, max=None):
        """(key, job id) of the leases still held, up to the key ``max``,
        soonest to end first; stale entries are skipped."""
        jobs = self.data.jobs
        for key, jobid in heapq.merge(*[tree.items(min=1, max=max)  # pragma: no mutate
                                        for tree in self.data._leases]):
            job = jobs.get(jobid)
            if job is not None and job.status == interfaces.PROCESSING \
                    and job.lease is not None and job.lease.key == key:
                yield key, jobid

    def expired(self, now):
        """Yield the jobs whose lease ran out by ``now``, each once, after
        taking its entry out and revoking the lease.

        On the way, entries of runs that ended are dropped, and those of
        leases extended since they were filed are filed again by their new
        end.
        """
        bound = time_bound(now)
        jobs = self.data.jobs
        for leases in self.data._leases:
            while True:
                key = first_key(leases)
                if key is None or key > bound:
                    break
                job = jobs.get(leases[key])
                lease = None if job is None else job.lease
                if lease is None or lease.key != key:
                    del leases[key]       # the run ended, or was extended
                    continue
                if lease.expires > now:
                    if same_millisecond(lease.expires, now):
                        break             # it ends within this millisecond
                    del leases[key]
                    self.add(lease, job.id, key & SHARD_MASK)
                    continue
                del leases[key]
                lease.revoked = True
                yield job

    def ensure_placeholders(self):
        for tree in self.data._leases:
            if 0 not in tree:
                tree[0] = PLACEHOLDER

    def split(self):
        """Layout 1 kept one lease tree: spread its entries over the
        sixteen."""
        old = self.data._leases
        if not isinstance(old, tuple):
            self.data._leases = new_index()
            for key, jobid in old.items():
                self.data._leases[key & SHARD_MASK][key] = jobid
