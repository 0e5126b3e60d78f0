"""A worker's own record in its service, while its loop runs.

The worker registers when its loop starts, renews its record with its
heartbeats (what it holds, how many jobs it did, its counters), and marks
it stopped when the loop ends; see `zodbtasks.registry` for the records
and how a record tells that its worker died. A record that cannot be
written is left to the next renewal: the worker's jobs never wait for it.
"""
import logging
import os
import threading
import time

import transaction

from zodbtasks.transactor import GAVE_UP
from zodbtasks.worksettings import HOST

# The processor's logger: its parts log under one name.
log = logging.getLogger('zodbtasks.processor')

#: A worker renews its record at least this often (more often when its
#: heartbeats are more frequent); see `zodbtasks.registry`.
WORKER_EVERY = 5.0
#: Each worker drops up to DROP_AT_ONCE records of workers long dead when it
#: registers, and then every DROP_EVERY seconds, with a renewal.
DROP_AT_ONCE = 10
DROP_EVERY = 60.0


class Presence:
    """Keep the record of one worker.

    ``transactor`` runs the transactions, ``settings`` names the worker
    (``name``) and its queues, ``every`` is the longest time between two
    renewals it promises, and ``snapshot()`` returns what the record says
    of the worker's work: (job ids in hand, jobs done, counters).
    """

    def __init__(self, transactor, settings, every, snapshot):
        self.transactor = transactor
        self.settings = settings
        self.every = every
        self.snapshot = snapshot
        self.name = None           # the name of the record, once made
        self.lastDrop = 0.0        # time.monotonic() of the last drop pass

    def recordName(self):
        """The worker's name, with its loop's thread unless that is the
        main thread."""
        base = self.settings.name or '%s:%d' % (HOST, os.getpid())
        loop = threading.current_thread()
        return base if loop is threading.main_thread() \
            else '%s:%s' % (base, loop.name)

    def register(self, service=None, now=None):
        """Register this worker, in a transaction of its own unless given
        the ``service`` of one. A failure is logged: the record is made by
        a later renewal."""
        self.name = self.name or self.recordName()
        if service is not None:
            return self._register(service, now)
        try:
            if self.transactor.transact(
                    self._register,
                    tm=transaction.TransactionManager()) is GAVE_UP:
                log.warning('could not register worker %s for conflicts; '
                            'its next renewal will', self.name)
        except Exception as error:
            log.warning('could not register worker %s (%s: %s); its next '
                        'renewal will', self.name, type(error).__name__,
                        error)

    def _register(self, service, now=None):
        now = self.transactor.now() if now is None else now
        service.registerWorker(self.name, now, HOST, os.getpid(), self.every,
                               sorted(service.getAvailableTasks()),
                               self.settings.queues)
        self.lastDrop = time.monotonic()
        service.dropDeadWorkers(now, DROP_AT_ONCE)

    def seen(self, service, now):
        """Renew this worker's record (in the heartbeat's transaction); now
        and then, drop a few records of workers long dead."""
        jobs, done, counters = self.snapshot()
        if service.workerSeen(self.name, now, jobs, done, counters) is None:
            self.register(service, now)
            service.workerSeen(self.name, now, jobs, done, counters)
        elif time.monotonic() - self.lastDrop >= DROP_EVERY:
            self.lastDrop = time.monotonic()
            service.dropDeadWorkers(now, DROP_AT_ONCE)

    def stopped(self):
        """The loop ended: mark this worker's record stopped."""
        def stopped(service):
            jobs, done, counters = self.snapshot()
            service.workerStopped(self.name, self.transactor.now(), done,
                                  counters)
        try:
            self.transactor.transact(stopped,
                                     tm=transaction.TransactionManager())
        except Exception as error:
            log.warning('could not mark worker %s stopped (%s: %s)',
                        self.name, type(error).__name__, error)
