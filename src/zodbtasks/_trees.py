"""BTrees split into independent shards, to keep concurrent writers apart.

A BTree reads its inner nodes "current" when it changes (so that a commit
cannot build on a node that another transaction just split), which means
that any bucket split commits a change that conflicts with every concurrent
writer of the same tree, whatever keys they touched. Splitting one big tree
into many small ones, chosen by the top bits of a random key, keeps two
writers in different trees nearly always, and their splits apart with them.
"""
import bisect

import persistent
from BTrees.LLBTree import LLTreeSet
from BTrees.LOBTree import LOBTree
from BTrees.Length import Length

#: Keys are ints in [0, 2**KEY_BITS); the top bits choose the shard.
KEY_BITS = 53


class ShardedMapping(persistent.Persistent):
    """A mapping of int keys in [0, 2**53) to objects, over 2**bits LOBTrees.

    Iteration is in key order, as for one BTree. ``len`` is O(1).
    """

    def __init__(self, bits=8):
        self._shift = KEY_BITS - bits
        self._shards = tuple(LOBTree() for _ in range(1 << bits))
        self._length = Length()

    def _shard(self, key):
        return self._shards[key >> self._shift]

    def __getitem__(self, key):
        return self._shards[key >> self._shift][key]

    def get(self, key, default=None):
        try:
            return self[key]
        except (KeyError, IndexError, TypeError):
            return default

    def __contains__(self, key):
        return self.get(key, self) is not self

    def insert(self, key, value):
        """Add ``key`` if it is not there yet; return whether it was added."""
        added = self._shards[key >> self._shift].insert(key, value)
        if added:
            self._length.change(1)
        return bool(added)

    def __setitem__(self, key, value):
        if not self.insert(key, value):
            self._shards[key >> self._shift][key] = value

    def __delitem__(self, key):
        del self._shards[key >> self._shift][key]
        self._length.change(-1)

    def __len__(self):
        return self._length()

    def __bool__(self):
        return self._length() > 0

    def keys(self):
        for shard in self._shards:
            yield from shard.keys()

    __iter__ = keys

    def values(self):
        for shard in self._shards:
            yield from shard.values()

    def items(self, min=None):
        """(key, value) in key order, from ``min`` on if it is given."""
        if min is None:
            for shard in self._shards:
                yield from shard.items()
            return
        first = min >> self._shift
        if first >= len(self._shards):
            return
        yield from self._shards[first].items(min=min)
        for shard in self._shards[first + 1:]:
            yield from shard.items()

    def __repr__(self):
        return '<%s with %d items>' % (type(self).__name__, len(self))


class ShardedSet(persistent.Persistent):
    """A set of ints in [0, 2**53) over 2**bits LLTreeSets."""

    def __init__(self, bits=4):
        self._shift = KEY_BITS - bits
        self._shards = tuple(LLTreeSet() for _ in range(1 << bits))

    def insert(self, key):
        return self._shards[key >> self._shift].insert(key)

    def remove(self, key):
        self._shards[key >> self._shift].remove(key)

    def __contains__(self, key):
        return key in self._shards[key >> self._shift]

    def nodesWrittenBy(self, key):
        """The persistent nodes that inserting ``key`` may have written."""
        return pathTo(self._shards[key >> self._shift], key)

    def __iter__(self):
        for shard in self._shards:
            yield from shard

    def __len__(self):
        return sum(len(shard) for shard in self._shards)

    def clear(self):
        for shard in self._shards:
            if shard:
                shard.clear()


def pathTo(tree, key):
    """The nodes of a BTree that an insert of ``key`` may write.

    These are the nodes on the way from the root to the bucket of ``key``,
    with their neighbours: when a node splits, the half that did not get the
    key was written too.
    """
    nodes = [tree]
    node = tree
    while True:
        node._p_activate()
        state = node.__getstate__()
        if not state or len(state) < 2:
            return nodes          # empty, or one bucket kept inside the tree
        data = state[0]
        children, keys = data[0::2], data[1::2]
        i = bisect.bisect_right(keys, key)
        nodes.extend(children[max(i - 1, 0):i + 2])
        child = children[i]
        if type(child) is not type(tree):
            return nodes          # a bucket: the bottom
        node = child
