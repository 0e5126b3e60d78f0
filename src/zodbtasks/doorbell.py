"""Waking idle workers when a job may have become due.

An idle worker sleeps for its ``waitTime`` between looks at the queue. So
that a new job does not wait that long, the commits that make jobs due
ring a bell that the workers of the same database listen to:

* in the process that commits, the service rings after the commit (an
  after-commit hook of its transaction: `ring_after_commit`);
* in other processes, the storage's invalidations ring it: with ZEO, the
  server sends each client the oids that every commit changed
  (`listen`), and a worker wakes when they include an object it watches
  (`TaskService.watchedOids`: what every change of a job's status writes).

A bell only wakes: the worker then looks at the queue as it would after its
sleep. A storage that sends no invalidations (RelStorage polls) leaves the
workers of other processes to their ``waitTime``.
"""
import threading
import weakref

_lock = threading.Lock()
_ASKED = object()       # the transaction's note that it will ring
_bells: 'weakref.WeakKeyDictionary[object, Bell]' = \
    weakref.WeakKeyDictionary()


class Bell:
    """The listeners of one database: events to set, each with the oids it
    watches (None: any change)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._listeners = {}      # event -> frozenset of oids, or None

    def subscribe(self, event, oids=None):
        with self._lock:
            self._listeners[event] = (None if oids is None
                                      else frozenset(oids))

    def unsubscribe(self, event):
        with self._lock:
            self._listeners.pop(event, None)

    def ring(self, oids=None):
        """Wake the listeners; with ``oids``, those watching one of them."""
        with self._lock:
            listeners = list(self._listeners.items())
        for event, watched in listeners:
            if oids is None or watched is None or not watched.isdisjoint(oids):
                event.set()


def bell(db):
    """The bell of ``db``, made on first use."""
    with _lock:
        found = _bells.get(db)
        if found is None:
            found = _bells[db] = Bell()
        return found


def ring(db):
    found = _bells.get(db)
    if found is not None:
        found.ring()


def ring_after_commit(txn, db):
    """Ring the bell of ``db`` once ``txn`` commits (once per transaction,
    however many times it is asked); nothing if no worker of this process
    listens to it."""
    if db not in _bells:
        return
    try:
        txn.data(_ASKED)
        return
    except KeyError:
        pass
    txn.set_data(_ASKED, True)
    txn.addAfterCommitHook(_ring_if_committed, (db,))


def _ring_if_committed(committed, db):
    if committed:
        ring(db)


class _Forwarding:
    """Stands for a database where a storage sends invalidations: passes
    them on, and rings the bell with their oids."""

    def __init__(self, inner, bell):
        self._inner = inner
        self._bell = bell

    def invalidate(self, tid, oids):
        self._inner.invalidate(tid, oids)
        self._bell.ring(oids)

    def invalidateCache(self):
        self._inner.invalidateCache()
        self._bell.ring()

    def __getattr__(self, name):
        return getattr(self._inner, name)


def listen(db):
    """Ring the bell of ``db`` with the invalidations its storage receives
    from other processes; return whether the storage sends them.

    ZEO's client storage hands invalidations to the database it was
    registered with (its ``_db``); the bell is put between the two.
    """
    storage = getattr(db, 'storage', None)
    inner = getattr(storage, '_db', None)
    if inner is None or not callable(getattr(inner, 'invalidate', None)):
        return False
    ringing = bell(db)
    with _lock:
        if not isinstance(storage._db, _Forwarding):
            storage._db = _Forwarding(storage._db, ringing)
    return True
