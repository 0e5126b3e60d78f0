"""The step: a worker's short transaction between runs.

A step records the outcomes waiting (`zodbtasks.recorder.Unrecorded`), marks
claims as begun, gives back the claims the worker will not run, and claims
due jobs under leases (`TaskService.claimJobs`). It commits at once, so that
no worker holds the service's busy objects while a task runs.

A ``ConflictError`` at its commit is ordinary contention between workers:
the step is tried again, a few times, and then the loop goes round. When a
step that records outcomes fails otherwise, each outcome is recorded on its
own and the step is taken again without them. Its events are dispatched,
and its lines logged, once it has ended.
"""
import logging
import os
import threading
import traceback

from transaction.interfaces import TransientError

from zodbtasks.heartbeats import Claim
from zodbtasks.interfaces import LeaseLost
from zodbtasks.transactor import Said
from zodbtasks.transactor import disconnected
from zodbtasks.worksettings import HOST

class Steps:
    """Take the steps of one worker.

    ``transactor`` runs them, ``unrecorded`` holds the outcomes waiting,
    ``writer`` (`zodbtasks.outcomes.OutcomeWriter`) records and reports
    them, ``beats`` (`Heartbeats`) holds the claims made, and ``settings``
    says how to claim (``name``, ``lease``, ``spread``, ``queues``).
    """

    def __init__(self, transactor, unrecorded, writer, beats, settings):
        self.transactor = transactor
        self.unrecorded = unrecorded
        self.writer = writer
        self.beats = beats
        self.settings = settings

    def step(self, count=0, start=0, mark=(), release=(), tm=None):
        """One step: record the outcomes waiting, mark the claims ``mark``
        as begun, give back ``release``, and claim up to ``count`` jobs of
        which the first ``start`` begin at once.

        Returns the new `Claim` objects, or None if the step failed. What it
        has to say is said after its transaction ended.
        """
        said = Said()
        runs = self.unrecorded.take()
        dealt = []
        try:
            result = self._once(runs, count, start, mark, release, tm, said,
                                dealt)
        finally:
            if dealt:
                self.unrecorded.recorded(runs)
            else:
                self.unrecorded.putBack(runs)
            said.deliver()
        return result

    def giveBack(self, claims):
        """Give back claims that will not run, at once."""
        if claims:
            for claim in claims:
                self.beats.drop(claim)
            self.step(release=claims)

    def _once(self, runs, count, start, mark, release, tm, said, dealt):
        """The transaction of `step`; ``dealt`` gets an item once the
        outcomes ``runs`` were recorded, or failed, or dropped."""
        last = None
        for attempt in range(self.transactor.settings.attempts):
            try:
                conn, tm = self.transactor.open(tm)
            except Exception as error:
                self._failed(error, said)
                return None
            service = None
            try:
                service = self.transactor.service(conn)
                claims, dropped, events = self._write(
                    service, runs, count, start, mark, release)
                tm.commit()
            except TransientError as error:
                tm.abort()
                if disconnected(error):
                    self.transactor.unreached(error, said)
                    return None
                last = error
                self.transactor.count('claim')
                self.transactor.backoff(attempt)
                continue
            except Exception as error:
                tm.abort()
                if runs and not disconnected(error):
                    self._recordOneByOne(runs, error, tm, said, dealt)
                    return self._once([], count, start, mark, release, tm,
                                      said, [])
                self._failed(error, said)
                return None
            except BaseException:
                tm.abort()
                raise
            finally:
                if service is not None:
                    service.takeEvents()
                conn.close()
            dealt.append(True)
            self._committed(claims, runs, dropped, events, said)
            return claims
        said(logging.DEBUG, 'claiming from /%s gave up after %d conflicts: '
             '%s', self.transactor.where, self.transactor.settings.attempts,
             last)
        return []

    def _write(self, service, runs, count, start, mark, release):
        """What a step writes: (claims, outcomes dropped, events)."""
        service.keepEvents()
        service.prefetch(run.jobid for run in runs)
        dropped = self.writer.recordAll(service, runs)
        now = self.transactor.now()
        for claim in mark:
            self._tryLease(service.markStarted, claim, now)
            claim.started = True
        for claim in release:
            self._tryLease(service.releaseClaim, claim, now)
        claims = self._claimJobs(service, now, count, start)
        return claims, dropped, service.takeEvents()

    def _committed(self, claims, runs, dropped, events, said):
        said.events.extend(events)
        self.transactor.reached(said)
        self.writer.settled(runs, dropped, said)
        for claim in claims:
            self.beats.hold(claim)

    def _recordOneByOne(self, runs, error, tm, said, dealt):
        # Maybe an outcome that cannot be recorded: record each on its own.
        said(logging.WARNING, 'recording %d outcomes with a claim failed '
             '(%s: %s); recording them one by one', len(runs),
             type(error).__name__, error)
        said.deliver()
        for run in runs:
            self.writer.recordAlone(run, tm)
        dealt.append(True)

    def _failed(self, error, said):
        if disconnected(error):
            self.transactor.unreached(error, said)
        else:
            said(logging.ERROR, 'claiming jobs from /%s failed: %s',
                 self.transactor.where, traceback.format_exc())

    def _tryLease(self, method, claim, now):
        try:
            method(claim.jobid, claim.token, now)
        except LeaseLost:
            self.beats.lose(claim)

    def _claimJobs(self, service, now, count, start):
        if not count:
            return []
        settings = self.settings
        claims = []
        ids = service.claimJobs(now, count, self.workerName(), settings.lease,
                                settings.spread, start=start,
                                queues=settings.queues)
        for n, jobid in enumerate(ids):
            job = service.jobs[jobid]
            lease = job.lease
            claims.append(Claim(jobid, lease.token, lease.expires,
                                lease.expires - now, job.timeout,
                                started=n < start))
        return claims

    def workerName(self, slot=None):
        """The name on this thread's leases."""
        base = self.settings.name or '%s:%d' % (HOST, os.getpid())
        return '%s:%s' % (base, slot if slot is not None
                          else threading.current_thread().name)
