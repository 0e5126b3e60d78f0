"""What a task's run left in its transaction, and outcomes that outlive it.

A worker records the outcome of a task that wrote nothing later, together
with other outcomes, instead of committing the run on its own. These
functions tell whether a run wrote something, and carry an outcome that
refers to stored objects over to the connection that records it.
"""
import copy
import io
import pickle

import persistent

from zodbtasks.records import NUMBER


def written_oids(conn):
    """The oids that the connection's transaction would write, so far."""
    oids = {obj._p_oid for obj in conn._registered_objects}
    saved = conn._savepoint_storage
    if saved is not None:
        oids.update(oid for oid in saved.index if oid not in saved.creating)
    oids.discard(None)
    return oids


def left_work(conn, txn, job_oid):
    """Whether a task left work in ``txn`` beyond what it told its job:
    objects written, another data manager joined, or commit hooks."""
    if written_oids(conn) - {job_oid}:
        return True
    if any(resource is not conn for resource in txn._resources):
        return True
    return bool(list(txn.getBeforeCommitHooks())
                or list(txn.getAfterCommitHooks()))


class _Sink:
    """A file that keeps nothing: for pickling only to look."""

    def write(self, data):
        return len(data)


class _ByOid(pickle.Pickler):
    """Pickles stored persistent objects as their oids."""

    def persistent_id(self, obj):
        if isinstance(obj, persistent.Persistent) and obj._p_oid is not None:
            return obj._p_oid
        return None


class _FromConnection(pickle.Unpickler):
    """Unpickles oids as the objects of a connection. (A method, not an
    attribute of the instance: Python 3.13 refuses to set that.)"""

    def __init__(self, file, conn):
        super().__init__(file)
        self.conn = conn

    def persistent_load(self, oid):
        return self.conn.get(oid)


class _Found(Exception):
    pass


class _PersistentFinder(pickle.Pickler):
    # reducer_override is not called for plain ints, strings, lists and the
    # like, so a look at a large plain output costs what pickling it does.
    def reducer_override(self, obj):
        if isinstance(obj, persistent.Persistent):
            raise _Found
        return NotImplemented


def job_state(job):
    """A job's state but for what a task tells it (log and progress), as
    bytes: a change to an attribute, in place or not, changes them."""
    # The state as it would be stored (empty attributes left out, so that a
    # job reloaded meanwhile has the same state), in the order of its keys:
    # the numbers of `zodbtasks.records.FIELDS`, then any names.
    state = job.__getstate__()
    numbered = sorted((key, value) for key, value in state.items()
                      if type(key) is int and key not in _TOLD)
    named = sorted((key, value) for key, value in state.items()
                   if type(key) is not int and key not in _TOLD)
    out = io.BytesIO()
    _StateByOid(out, 3).dump((numbered, named))
    return out.getvalue()


def _oid(oid):
    return oid


class _StateByOid(pickle.Pickler):
    """Pickles stored persistent objects as their oids. The pickler asks
    ``reducer_override`` only about objects that are not plain values (not
    about ints, strings, tuples, lists and dicts), which keeps a job's state
    quick to pickle."""

    def reducer_override(self, obj):
        if isinstance(obj, persistent.Persistent) and obj._p_oid is not None:
            return _oid, (obj._p_oid,)
        return NotImplemented


#: What a task tells its job, under the numbers or names a job stores them
#: by (see `zodbtasks.records`).
_TOLD = frozenset(['log', 'progress', NUMBER['log'], NUMBER['progress']])


def rebound(outcome, conn):
    """``outcome``, with the stored objects its output and progress refer
    to taken from ``conn``: only the connection that loaded an object may
    store a reference to it, and the outcome is recorded by another."""
    try:
        _PersistentFinder(_Sink(), 3).dump((outcome.output, outcome.progress))
        return outcome
    except _Found:
        pass
    out = io.BytesIO()
    _ByOid(out, 3).dump((outcome.output, outcome.progress))
    copied = copy.copy(outcome)
    copied.output, copied.progress = _FromConnection(
        io.BytesIO(out.getvalue()), conn).load()
    return copied
