"""The outcomes of a worker's runs: writing them to the service, failing a
job, and reporting each run once it is recorded.

A run's outcome is written with its run when the task wrote something, or
later with others by a step (`zodbtasks.steps`), or on its own when that
fails. `OutcomeWriter` holds what those ways share: writing a batch of
outcomes in a transaction the caller opened, writing one alone, failing a
job in a fresh transaction, and counting and logging a run once its fate is
known. What it says is said after its transaction ended.
"""
import collections
import logging
import threading
import time
import traceback

from zodbtasks import interfaces
from zodbtasks import writes
from zodbtasks.context import appendLog
from zodbtasks.interfaces import LeaseLost
from zodbtasks.transactor import GAVE_UP
from zodbtasks.transactor import Said

# The processor's logger: its parts log under one name.
log = logging.getLogger('zodbtasks.processor')
#: One line per finished job goes to this logger, at INFO level, when the
#: processor's ``logJobs`` is true.
jobLog = logging.getLogger('zodbtasks.jobs')


class Run:
    """A run in a worker's hands: its claim, job and outcome."""

    def __init__(self, claim, task, attempts, outcome):
        self.claim = claim
        self.jobid = claim.jobid
        self.token = claim.token
        self.task = task
        self.attempts = attempts
        self.outcome = outcome
        self.seconds = None
        self.status = None      # once recorded
        self.ended = time.monotonic()


class OutcomeWriter:
    """Write and report the outcomes of a worker's runs.

    ``transactor`` runs the transactions, ``beats`` (`Heartbeats`) lets go
    of a claim once its outcome is recorded, ``settings`` says whether to
    log each job (``logJobs``). ``outcome`` is the class of outcomes, as
    ``outcome(job, completed, failure=(message, traceback))``; the
    processor gives it, so that this module does not import the service.
    """

    def __init__(self, transactor, beats, settings, outcome):
        self.transactor = transactor
        self.beats = beats
        self.settings = settings
        self.outcome = outcome
        #: Runs by what came of them (a job status, 'lost', 'missing task').
        self.stats = collections.Counter()
        self._lock = threading.Lock()

    def count(self, what):
        with self._lock:
            self.stats[what] += 1

    def counters(self):
        """(the stats, how many jobs were done), copied under the lock."""
        with self._lock:
            counters = dict(self.stats)
            done = sum(n for key, n in self.stats.items()
                       if key not in ('lost', 'missing task'))
        return counters, done

    def recordAll(self, service, runs):
        """Record the outcomes of ``runs`` in ``service``'s transaction;
        return those whose lease is gone (nothing is written for them)."""
        dropped = []
        for run in runs:
            try:
                service.recordOutcome(
                    run.jobid, run.token,
                    writes.rebound(run.outcome, service._p_jar), release=True)
            except LeaseLost:
                dropped.append(run)
            else:
                run.status = service.jobs[run.jobid].status
        return dropped

    def settled(self, runs, dropped, said):
        """``runs`` were committed (but ``dropped``): report them."""
        lost = set(map(id, dropped))
        for run in runs:
            self.beats.drop(run.claim)
            if id(run) in lost:
                run.status = None
                self.dropped(run, said)
            self.report(run, said)

    def dropped(self, run, said):
        if run.claim.timedOut:
            said(logging.WARNING, 'discarded the late outcome of job %s: '
                 'it timed out after %s s', run.jobid, run.claim.timeout)
        else:
            said(logging.INFO, 'dropped the outcome of job %s: its lease is '
                 'gone', run.jobid)

    def recordAlone(self, run, tm=None):
        """Record one outcome in a transaction of its own; if that fails,
        fail the job; if that fails too, leave it to its lease."""
        said = Said()
        try:
            dropped = self.transactor.transact(
                lambda service: self.recordAll(service, [run]), tm=tm)
        except Exception as error:
            said(logging.ERROR, 'recording the outcome of job %s failed: %s',
                 run.jobid, traceback.format_exc())
            run.status = self._failInstead(run, error, tm, said)
        else:
            if dropped is GAVE_UP:
                said(logging.ERROR, 'could not record the outcome of job %s '
                     'for conflicts; its lease will expire and it will run '
                     'again', run.jobid)
                run.status = None
            elif dropped:
                self.dropped(run, said)
                run.status = None
        self.beats.drop(run.claim)
        self.report(run, said)
        said.deliver()

    def _failInstead(self, run, error, tm, said):
        """The status of ``run``'s job once failed for ``error``, or None."""
        try:
            failed = self.fail(
                run.claim, '%s while recording the outcome: %s'
                % (type(error).__name__, error), traceback.format_exc(),
                tm=tm)
        except Exception:
            said(logging.ERROR, 'could not record job %s at all; its '
                 'lease will expire and it will run again: %s',
                 run.jobid, traceback.format_exc())
            return None
        return None if failed is None else failed.status

    def fail(self, claim, message, tb=None, tm=None):
        """Fail the job in a fresh transaction; return its `Run` or None."""
        def record(service):
            job = service.jobs[claim.jobid]
            service.checkLease(claim.jobid, claim.token)
            appendLog(job, tb or message)
            outcome = self.outcome(job, self.transactor.now(),
                                   failure=(message, tb))
            service.recordOutcome(claim.jobid, claim.token, outcome)
            run = Run(claim, job.task, job.attempts, outcome)
            run.status = job.status
            return run
        try:
            run = self.transactor.transact(record, tm=tm)
        except LeaseLost as error:
            log.info('dropped the run of job %s: %s', claim.jobid, error)
            return None
        if run is GAVE_UP:
            log.error('could not record the failure of job %s (%s); its '
                      'lease will expire and the service will recover it',
                      claim.jobid, message)
            return None
        return run

    def timedOut(self, claim):
        """A run went past its job's timeout: fail it (the heartbeat thread
        calls this). The task goes on in its thread; its outcome will be
        discarded."""
        run = self.fail(claim, 'timed out after %s s' % claim.timeout)
        if run is not None:
            said = Said()
            self.report(run, said)
            said.deliver()

    def report(self, run, said):
        """Count a recorded run and say its line (or its loss)."""
        self.count(run.status or 'lost')
        if run.status is None or not self.settings.logJobs:
            return
        outcome = run.outcome
        seconds = run.seconds or 0.0
        if not outcome.failed:
            said(logging.INFO, 'job %s %s completed in %.3f s (attempt %d)',
                 run.jobid, run.task, seconds, run.attempts, logger=jobLog)
        else:
            said(logging.INFO, 'job %s %s failed after %.3f s%s (attempt %d): '
                 '%s', run.jobid, run.task, seconds,
                 ', retrying' if run.status == interfaces.RETRYING else '',
                 run.attempts, outcome.error, logger=jobLog)
