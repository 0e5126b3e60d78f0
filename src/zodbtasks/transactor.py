"""A worker's transactions: opening them, committing them, and what it says
once they ended.

Every part of a processor works on the database through one `Transactor`:
it opens a connection, finds the service by its path, calls a function and
commits, trying again on conflicts. It counts those conflicts and knows
whether the storage is in reach: when a transaction finds it out of reach
the worker says so once, and says when it is back.

Nothing that may block runs while a transaction is open: what a part has to
say (log lines, events) goes into a `Said` and is delivered after the
transaction ended.
"""
import collections
import logging
import random
import threading
import time

import transaction
import zope.event
from transaction.interfaces import TransientError

from zodbtasks.paths import findService

# Every part of a processor logs as the processor did, under one name.
log = logging.getLogger('zodbtasks.processor')

#: What `Transactor.transact` returns when every try conflicted.
GAVE_UP = object()


def disconnected(error):
    """Whether ``error`` says that the storage is out of reach (ZEO's
    ClientDisconnected, a database driver's lost connection)."""
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {'ClientDisconnected', 'DisconnectedError',
                         'OperationalError', 'InterfaceError'})


class Said:
    """Log lines and events kept while a transaction is open, to be
    delivered once it has ended."""

    def __init__(self):
        self.lines = []
        self.events = []

    def __call__(self, level, message, *args, logger=log):
        self.lines.append((logger, level, message, args))

    def deliver(self):
        for logger, level, message, args in self.lines:
            logger.log(level, message, *args)
        for event in self.events:
            try:
                zope.event.notify(event)
            except Exception:
                log.exception('an event subscriber failed on %r', event)
        self.lines, self.events = [], []


class Transactor:
    """The transactions of one worker on the service at ``servicePath``.

    ``settings`` is the worker's `zodbtasks.worksettings.WorkerSettings`:
    its clock, its tries per transaction and its transaction manager.
    """

    def __init__(self, db, servicePath, settings):
        self.db = db
        self.servicePath = servicePath
        self.settings = settings
        #: Conflicts met, by step: claim, run, heartbeat.
        self.conflicts = collections.Counter()
        #: How often the storage went out of reach and came back.
        self.outages = 0
        self.down = None           # since when the storage is out of reach
        self._lock = threading.Lock()

    @property
    def where(self):
        """The service's path, as log lines name it."""
        return '/'.join(self.servicePath)

    def now(self):
        return self.settings.clock()

    def open(self, tm=None):
        """A connection and its transaction manager, in a new transaction."""
        tm = tm or self.settings.transaction_manager
        conn = self.db.open(transaction_manager=tm)
        tm.begin()
        return conn, tm

    def service(self, conn):
        """The service, found by its path from ``conn``'s root (or from the
        application root below it; see `zodbtasks.paths.findService`)."""
        return findService(conn.root(), self.servicePath)

    def read(self, func):
        """``func(service, now)`` in a transaction that is aborted."""
        conn, tm = self.open()
        try:
            return func(self.service(conn), self.now())
        finally:
            tm.abort()
            conn.close()

    def transact(self, func, step=None, tm=None):
        """Call ``func(service)`` in a transaction and commit it.

        Conflicts are retried, up to ``attempts`` tries, and counted under
        ``step``; returns what ``func`` returned, or `GAVE_UP`. Other errors
        propagate, and so does a conflict that says the storage is gone.
        """
        for attempt in range(self.settings.attempts):
            conn, tm = self.open(tm)
            try:
                result = func(self.service(conn))
                tm.commit()
                return result
            except TransientError as error:
                tm.abort()
                if disconnected(error):
                    raise
                if step is not None:
                    self.count(step)
                self.backoff(attempt)
            except BaseException:
                tm.abort()
                raise
            finally:
                conn.close()
        return GAVE_UP

    def checkLease(self, jobid, token):
        """Raise LeaseLost unless the committed job is held under ``token``."""
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        try:
            tm.begin()
            self.service(conn).checkLease(jobid, token)
        finally:
            tm.abort()
            conn.close()

    def backoff(self, attempt):
        """Sleep a little before try ``attempt + 1``, longer each time."""
        time.sleep(random.uniform(0, min(0.05, 0.002 * 2 ** attempt)))

    def count(self, step):
        """A conflict was met in ``step``."""
        with self._lock:
            self.conflicts[step] += 1

    def counters(self):
        """The conflicts and outages met, as counters of the worker record."""
        with self._lock:
            counters = {'%s conflicts' % step: n
                        for step, n in self.conflicts.items()}
            if self.outages:
                counters['storage outages'] = self.outages
        return counters

    def reached(self, said):
        """The storage answered: say so if it was out of reach."""
        if self.down is not None:
            with self._lock:
                since, self.down = self.down, None
                if since is not None:
                    self.outages += 1
            if since is not None:
                said(logging.WARNING, 'storage of /%s reconnected after '
                     '%.1f s', self.where, time.monotonic() - since)

    def unreached(self, error, said):
        """The storage is out of reach: say so the first time."""
        with self._lock:
            first = self.down is None
            if first:
                self.down = time.monotonic()
        if first:
            said(logging.WARNING, 'storage of /%s disconnected (%s: %s); '
                 'waiting for it', self.where, type(error).__name__, error)
