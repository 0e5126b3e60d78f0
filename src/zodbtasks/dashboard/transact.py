"""The service in a connection and transaction of each request's own.

Pages read and abort; actions commit if they succeed; a conflict is tried
again a few times before the request gives up with 503.
"""
import logging

import transaction
from transaction.interfaces import TransientError

from zodbtasks import interfaces
from zodbtasks.dashboard.web import HTTPError
from zodbtasks.paths import traverse

log = logging.getLogger('zodbtasks.dashboard')


def find_service(root, keys):
    """The service at ``keys``; LookupError says what is wrong."""
    try:
        obj = traverse(root, keys)
    except KeyError:
        raise LookupError('nothing at /%s in the database'
                          % '/'.join(keys)) from None
    if not interfaces.ITaskService.providedBy(obj):
        raise LookupError('/%s is a %s, not a task service'
                          % ('/'.join(keys), type(obj).__name__))
    return obj


class Transactions:
    """Run work on the service at ``keys`` of ``db``, ``attempts`` tries."""

    def __init__(self, db, keys, attempts=3):
        self.db = db
        self.keys = keys
        self.attempts = attempts

    def __call__(self, work, write=False):
        """Run ``work(service)`` in a connection and transaction of its own.

        Writes are committed only if ``work`` returns; a conflict is tried
        again, up to ``attempts`` times in all.
        """
        tm = transaction.TransactionManager(explicit=True)
        conn = self.db.open(transaction_manager=tm)
        try:
            for attempt in range(1, self.attempts + 1):
                tm.begin()
                try:
                    try:
                        service = find_service(conn.root(), self.keys)
                    except LookupError as error:
                        raise HTTPError(500, 'No task service: %s.' % error)
                    result = work(service)
                    if write:
                        tm.commit()
                    else:
                        tm.abort()
                    return result
                except TransientError:
                    tm.abort()
                    if attempt == self.attempts:
                        raise HTTPError(503, 'The database was too busy '
                                        '(conflicts); try again.')
                    log.debug('conflict, attempt %d', attempt)
                except BaseException:
                    tm.abort()
                    raise
        finally:
            conn.close()
