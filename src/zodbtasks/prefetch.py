"""Loading ahead what a claim or a batch of outcomes will read.

With a storage that loads over the network (ZEO, RelStorage), asking for
many objects at once turns one round trip per object into one per level of
the trees. Elsewhere these functions do nothing. Nothing is changed.
"""
import heapq
import itertools

from zodbtasks import queues


def _loadsAhead(jar):
    """Whether the storage of ``jar`` (a connection) loads many objects in
    one round trip; asking one that does not costs the lookups alone."""
    return jar is not None and hasattr(jar, 'prefetch') and hasattr(
        jar.db().storage, 'prefetch')


def jobs(data, jobids):
    """Load the jobs ``jobids`` of ``data`` (a `TaskService`) and the trees
    that hold them."""
    jar = data._p_jar
    if not _loadsAhead(jar):
        return
    ids = list(jobids)
    if not ids:
        return
    mapping = data.jobs
    shards, shift = mapping._shards, mapping._shift
    _load(jar, {id(shard): shard for shard in
                (shards[jobid >> shift] for jobid in ids)}.values())
    _load(jar, [job for job in map(mapping.get, ids) if job is not None])


def queued(data, served, count, lane=None):
    """Load what claiming ``count`` queued jobs from the queues ``served``
    will read: the next ones, or with ``lane`` those from that lane on."""
    jar = data._p_jar
    if count < 1 or not _loadsAhead(jar):
        return
    lanes = [(n, tree) for queue in served
             for n, tree in enumerate(queue.lanes)]
    _load(jar, (data._unplaced, data._expiry) + data._leases
          + tuple(queue.due for queue in served)
          + tuple(tree for _, tree in lanes))
    if lane is None:
        _load(jar, [_first_bucket(tree) for _, tree in lanes])
        heads = heapq.nsmallest(count, itertools.chain.from_iterable(
            itertools.islice(queues.lane_items(tree, n), count)
            for n, tree in lanes),
            key=lambda item: queues.rank_of(item[0]))
    else:
        heads = []
        lanes.sort(key=lambda item: (item[0] - lane) % queues.LANES)
        for n, tree in lanes:
            heads.extend(itertools.islice(queues.lane_items(tree, n),
                                          count - len(heads)))
            if len(heads) >= count:
                break
    jobs(data, (jobid for _, jobid in heads))


def _load(jar, objects):
    ghosts = [ob for ob in objects
              if ob is not None and ob._p_changed is None and ob._p_oid]
    if ghosts:
        jar.prefetch(ghosts)


def _first_bucket(tree):
    """The first bucket of a BTree of more than one bucket, else None."""
    tree._p_activate()
    state = tree.__getstate__()
    if state and len(state) == 2:
        return state[1]
    return None
