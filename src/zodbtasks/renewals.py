"""Lease renewals: the database side of a worker's heartbeats.

`zodbtasks.heartbeats.Heartbeats` decides when each claim is renewed and
knows nothing of databases; `Renewals` writes the renewals, each batch in a
transaction of its own, and the renewal a task asks for with
``heartbeat()``. A renewal that cannot be written this time (conflicts, an
error, the storage out of reach) leaves the claim with its lease until the
next one; only the service saying the lease is gone (`LeaseLost`) ends it.
"""
import logging
import time
import traceback

import transaction

from zodbtasks.interfaces import LeaseLost
from zodbtasks.transactor import GAVE_UP
from zodbtasks.transactor import Said
from zodbtasks.transactor import disconnected


class Renewals:
    """Extend the leases of one worker's claims.

    ``transactor`` runs the transactions, ``settings`` gives the lease's
    length (``lease``; None: the job's or the service's), and ``presence``
    (`zodbtasks.presence.Presence`) renews the worker's record along with
    the leases when asked to.
    """

    def __init__(self, transactor, settings, presence):
        self.transactor = transactor
        self.settings = settings
        self.presence = presence

    def renew(self, claims, seen=False):
        """Extend the leases of ``claims`` in one transaction of their own
        (the heartbeat thread calls this; see `Heartbeats`): a dict of job
        id to the new end or `LeaseLost`. With ``seen``, renew this
        worker's record in it too."""
        def renew(service):
            now = self.transactor.now()
            if seen:
                self.presence.seen(service, now)
            renewed = {}
            for claim in claims:
                try:
                    renewed[claim.jobid] = service.heartbeat(
                        claim.jobid, claim.token, now,
                        seconds=self.settings.lease,
                        started=claim.began is not None)
                except LeaseLost:
                    renewed[claim.jobid] = LeaseLost
            return renewed
        said = Said()
        try:
            renewed = self.transactor.transact(
                renew, 'heartbeat', transaction.TransactionManager())
        except Exception as error:
            if disconnected(error):
                self.transactor.unreached(error, said)
            else:
                said(logging.ERROR, 'renewing %d leases%s failed: %s',
                     len(claims), ' and the worker record' if seen else '',
                     traceback.format_exc())
            renewed = {}
        else:
            if renewed is GAVE_UP:
                renewed = {}
            else:
                self.transactor.reached(said)
        said.deliver()
        return renewed

    def extend(self, jobid, token, started=True):
        """Extend one lease; return its new end, or None if it could not be
        written this time (the next heartbeat tries again). Raises
        LeaseLost."""
        def beat(service):
            return service.heartbeat(jobid, token, self.transactor.now(),
                                     seconds=self.settings.lease,
                                     started=started)
        said = Said()
        try:
            expires = self.transactor.transact(
                beat, 'heartbeat', transaction.TransactionManager())
        except LeaseLost:
            raise
        except Exception as error:
            # Not written this time, for whatever reason: the claim keeps
            # its lease until the next heartbeat or the run's commit.
            if disconnected(error):
                self.transactor.unreached(error, said)
            else:
                said(logging.WARNING, 'could not extend the lease on job %s: '
                     '%s: %s', jobid, type(error).__name__, error)
            expires = None
        else:
            if expires is GAVE_UP:
                said(logging.WARNING, 'could not extend the lease on job %s '
                     'for conflicts', jobid)
                expires = None
            else:
                self.transactor.reached(said)
        finally:
            said.deliver()
        return expires

    def heartbeatFor(self, claim):
        """The function a running task calls to extend its lease."""
        def heartbeat():
            if claim.timedOut:
                raise LeaseLost('job %s timed out after %s s'
                                % (claim.jobid, claim.timeout))
            expires = self.extend(claim.jobid, claim.token)
            if expires is not None:
                claim.expires = expires
                claim.renewed = time.monotonic()
            return expires
        return heartbeat
