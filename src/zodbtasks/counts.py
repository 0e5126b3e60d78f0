"""Counts of jobs by status and task, kept up to date as jobs change.

A service keeps its counts in shards. Each connection adds what its
transactions change to one shard, chosen at random, so that workers rarely
write the same one; when two commits did change one shard at once, their
changes are added up (as `BTrees.Length` does), so that counting never
makes a claim or a run conflict. A count is the sum over the shards: O(1)
in the number of jobs.
"""
import collections

import persistent

#: How many shards a service keeps.
SHARDS = 16

#: The queue of the count keys that name none (see `queue_of`).
DEFAULT_QUEUE = 'default'


class Counts(persistent.Persistent):
    """One shard: how many jobs this shard counts, by (status, task).

    Numbers in one shard may be negative: a job counted by one shard when
    it was added may be taken off by another when it changes.
    """

    def __init__(self):
        self.counts = {}

    def add(self, key, delta):
        counts = self.counts
        n = counts.get(key, 0) + delta
        if n:
            counts[key] = n
        else:
            counts.pop(key, None)
        self._p_changed = True

    def _p_resolveConflict(self, old, committed, new):
        # Both commits changed counts: apply each one's changes to the
        # other's. Setting a count to zero is a change like any other (it
        # takes off what that transaction saw), so it merges too.
        before = old.get('counts', {})
        mine = new.get('counts', {})
        merged = dict(committed.get('counts', {}))
        for key in set(before) | set(mine):
            delta = mine.get(key, 0) - before.get(key, 0)
            if delta:
                n = merged.get(key, 0) + delta
                if n:
                    merged[key] = n
                else:
                    merged.pop(key, None)
        return dict(committed, counts=merged)


class CountBuild(persistent.Persistent):
    """The counting of the jobs of a service that had no counts yet.

    Jobs are counted in order of their ids: those below ``next`` are
    counted, and their changes are counted as they happen; the others are
    counted when the build reaches them.
    """

    def __init__(self):
        self.next = 0
        self.counted = 0


def total(shards):
    """The counts of all ``shards`` added up: {(status, task): n}."""
    counts = collections.Counter()
    for shard in shards:
        counts.update(shard.counts)
    return {key: n for key, n in counts.items() if n}


def queue_of(key):
    """The queue of a count key: (status, task), or (status, task, queue)
    for a queue other than the default one."""
    return key[2] if len(key) > 2 else DEFAULT_QUEUE


def by_status_and_task(counts):
    """{count key: n} summed by (status, task)."""
    result = collections.Counter()
    for key, n in counts.items():
        result[key[:2]] += n
    return {key: n for key, n in result.items() if n}


def by_queue(counts):
    """{count key: n} summed by (queue, status)."""
    result = collections.Counter()
    for key, n in counts.items():
        result[(queue_of(key), key[0])] += n
    return {key: n for key, n in result.items() if n}


def by_status(counts):
    """{count key: n} summed by status."""
    result = collections.Counter()
    for key, n in counts.items():
        result[key[0]] += n
    return dict(result)


def by_task(counts):
    """{count key: n} summed by task."""
    result = collections.Counter()
    for key, n in counts.items():
        result[key[1]] += n
    return dict(result)
