"""Listings: the jobs of each (status, task), in the order that matters.

A service lists every job but the running ones (those are listed by their
leases) under what it is counted as: (status, task), or (status, task,
queue) for a queue other than the default one. The listing has 16 shards: a connection
writes its changes to one (the same shard as its counts), so that workers
recording outcomes at once neither split the same tree (see
`zodbtasks._trees`) nor add the same (status, task) to one mapping. A shard
is an OOBTree of (status, task) -> LLBTree of key -> job id; each job
remembers its shard and key.

What a key sorts by depends on the status: queued jobs by their rank in the
queue (priority, then age), waiting jobs by their due time, and the others
(finished, paused, start later) by the time they got their status. A page
is a merge of the trees of the pairs asked for: O(pairs + page size) trees
visited, whatever the number of jobs.
"""
import heapq
import random

from BTrees.LLBTree import LLBTree
from BTrees.OOBTree import OOBTree

from zodbtasks.counts import queue_of

SHARD_BITS = 4
SHARDS = 1 << SHARD_BITS
SHARD_MASK = SHARDS - 1
_MAX_KEY = 2 ** 63 - 1
PLACEHOLDER = -1


def new_listing():
    return tuple(OOBTree() for _ in range(SHARDS))


def new_tree():
    """A tree of a listing, with a placeholder as its first key (-1): as in
    a lane of a queue, claims take its smallest keys, and BTrees cannot
    merge the removal of a bucket's first key with another change."""
    tree = LLBTree()
    tree[PLACEHOLDER] = PLACEHOLDER
    return tree


def add(listing, listed, sort_key, jobid, shard, spare=SHARD_BITS):
    """List ``jobid`` under ``listed`` in ``shard`` at ``sort_key``, whose
    lowest ``spare`` bits may be drawn anew if the key is taken; return the
    key."""
    trees = listing[shard]
    tree = trees.get(listed)
    if tree is None:
        tree = trees[listed] = new_tree()
    key = sort_key
    tries = 0
    while not tree.insert(key, jobid):
        tries += 1
        if tries < 8:
            key = sort_key & ~((1 << spare) - 1) | random.getrandbits(spare)
        else:
            key = key + 1 if key < _MAX_KEY else 0
    return key


def remove(listing, listed, shard, key):
    """Take the entry ``key`` off the listing of ``listed`` in ``shard``."""
    del listing[shard][listed][key]


def trees(listing, status, task=None, queue=None):
    """The trees that list jobs of ``status`` (and ``task``, ``queue``)."""
    start = (status,) if task is None else (status, task)
    found = []
    for shard in listing:
        for listed, tree in shard.items(min=start):
            if listed[:len(start)] != start:
                break
            if queue is None or queue_of(listed) == queue:
                found.append(tree)
    return found


def drop(listing, status):
    """Take every entry of ``status`` off the listing. The trees stay (with
    their placeholders), so that the shards' mappings are not written."""
    for tree in trees(listing, status):
        if _max_key(tree, _MAX_KEY) is not None:
            tree.clear()
            tree[PLACEHOLDER] = PLACEHOLDER


def ascending(trees, after=None):
    """(key, job id) of the entries of ``trees``, smallest key first,
    after the key ``after``."""
    low = -1 if after is None else after
    return heapq.merge(*[tree.items(min=low, excludemin=True)
                         for tree in trees])


def descending(trees, before=None):
    """(key, job id) of the entries of ``trees``, largest key first, before
    the key ``before``."""
    high = _MAX_KEY if before is None else before - 1
    heap = []
    for n, tree in enumerate(trees):
        key = _max_key(tree, high)
        if key is not None:
            heap.append((-key, n))
    heapq.heapify(heap)
    while heap:
        key, n = heapq.heappop(heap)
        key = -key
        tree = trees[n]
        yield key, tree[key]
        following = _max_key(tree, key - 1)
        if following is not None:
            heapq.heappush(heap, (-following, n))


def _max_key(tree, high):
    if high < 0:
        return None
    try:
        key = tree.maxKey(high)
    except ValueError:
        return None
    return None if key == PLACEHOLDER else key


def job_ids(trees):
    """The ids of every job listed in ``trees``."""
    return [jobid for tree in trees for jobid in tree.values(min=0)]
