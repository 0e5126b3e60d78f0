"""The run of one claimed job, in a transaction of its own.

A run runs the job's task (`TaskService.runClaimed`). If the task changed
the database, the outcome is recorded (`TaskService.recordOutcome`) and
committed with its work. If it left nothing to commit, the transaction is
aborted and the outcome waits in memory for the next step
(`zodbtasks.recorder`): a batch of fast jobs costs one commit.

Conflicts
=========

When the run transaction fails to commit with a conflict, running the task
again would repeat whatever it did outside the database (mail sent, lines
written to a file). So the runner looks at what the transaction wrote
(`zodbtasks.writes`): if the task wrote nothing but its outcome, the
outcome is recorded again in a fresh transaction **without running the
task**; if it changed persistent objects of its own, those changes are lost
with the failed commit and the task is **run again** -- the ordinary ZODB
rule. In both cases the fresh transaction first checks that the job is
still held under this worker's lease. A ``ClientDisconnected`` at commit
leaves the commit's fate unknown: a task that wrote may then run again.
After ``attempts`` tries the job is failed with a message that says so.

A run past its job's ``timeout`` is failed by the heartbeats and its late
outcome discarded; a job whose task this worker does not know is given back
(`TaskService.taskMissing`), for a worker that knows it.
"""
import logging
import time
import traceback

from transaction.interfaces import DoomedTransaction
from transaction.interfaces import TransientError

from zodbtasks import writes
from zodbtasks.interfaces import LeaseLost
from zodbtasks.interfaces import TaskMissing
from zodbtasks.outcomes import Run
from zodbtasks.transactor import GAVE_UP
from zodbtasks.transactor import Said

# The processor's logger: its parts log under one name.
log = logging.getLogger('zodbtasks.processor')

#: What a run given back returns: its task is not known here.
MISSING = object()


class _Tries:
    """Where the tries of one run stand."""

    def __init__(self):
        self.rerun = True       # whether the next try runs the task
        self.run = None         # the `Run`, once the task ran
        self.last = None        # the last conflict


class ClaimRunner:
    """Run the jobs one worker claimed.

    Its parts: ``transactor`` (the transactions), ``beats`` (the claims in
    hand), ``renewals`` (a lease renewed before a late run, and the
    task's ``heartbeat()``), ``writer`` (failing and reporting runs),
    ``unrecorded`` and ``settler`` (outcomes that wait), ``settings``
    (``middlewares``). ``timed(seconds)`` is told how long each run took and
    ``changed()`` that an outcome now waits.
    """

    def __init__(self, transactor, beats, renewals, writer, unrecorded,
                 settler, settings, timed, changed):
        self.transactor = transactor
        self.beats = beats
        self.renewals = renewals
        self.writer = writer
        self.unrecorded = unrecorded
        self.settler = settler
        self.settings = settings
        self.timed = timed
        self.changed = changed

    def run(self, claim, group=False, flush=True):
        """Run a claimed job; return its `Run` or None.

        A job whose turn came when half of its lease was gone is heartbeat
        first. With ``group``, an outcome with nothing else to commit waits
        to be recorded by a later step (``run.status`` is None until then);
        with ``flush``, such a step follows at once when the limit of
        outcomes wait.
        """
        if not self._stillHeld(claim):
            return None
        if group:
            self.settler.recordToLimit()
        self.beats.hold(claim)
        self.beats.begin(claim)
        began = time.monotonic()
        try:
            run = self._tries(claim, group)
        except Exception:
            # The database is gone or broken: the lease will expire and the
            # job will be given back.
            log.exception('could not run job %s', claim.jobid)
            run = None
        seconds = time.monotonic() - began
        self.timed(seconds)
        if run is None or run is MISSING:
            self.beats.drop(claim)
            if run is None:
                self.writer.count('lost')
            return None
        run.seconds = seconds
        if run.status is None:
            if self.unrecorded.add(run) and flush:
                self.settler.recordToLimit()
            self.changed()
        else:
            self.beats.drop(claim)
            said = Said()
            self.writer.report(run, said)
            said.deliver()
        return run

    def _stillHeld(self, claim):
        """Whether the claim may run: its lease is not lost and, renewed
        if half of it is gone, not over."""
        if claim.lost:
            return self._lostBeforeRun(claim, 'its lease is gone')
        now = self.transactor.now()
        if now < claim.expires - claim.length / 2:
            return True
        try:
            expires = self.renewals.extend(claim.jobid, claim.token)
        except LeaseLost as error:
            self.beats.lose(claim)
            return self._lostBeforeRun(claim, error)
        if expires is not None:
            claim.expires = expires
        elif self.transactor.now() >= claim.expires:
            # Not renewed, and over by our clock: another worker may hold
            # the job by now.
            self.beats.lose(claim)
            return self._lostBeforeRun(claim, 'its lease ran out and could '
                                       'not be renewed')
        return True

    def _lostBeforeRun(self, claim, why):
        log.info('dropped job %s before running it: %s', claim.jobid, why)
        self.writer.count('lost')
        return False

    def _tries(self, claim, group):
        """Try the run up to ``attempts`` times; its `Run`, None or
        `MISSING`."""
        jobid = claim.jobid
        tries = _Tries()
        attempts = self.transactor.settings.attempts
        for attempt in range(attempts):
            conn, tm = self.transactor.open()
            try:
                return self._try(conn, tm, claim, group, tries)
            except TaskMissing as error:
                tm.abort()
                return self.taskMissing(claim, str(error))
            except LeaseLost as error:
                tm.abort()
                if claim.timedOut:
                    log.warning('discarded the late outcome of job %s: it '
                                'timed out after %s s', jobid, claim.timeout)
                else:
                    log.info('dropped the run of job %s: %s', jobid, error)
                return None
            except TransientError as error:
                # From the task (rerun is still True) or from the commit.
                tm.abort()
                tries.last = error
                self.transactor.count('run')
                log.debug('run of job %s conflicted (attempt %d, %s): %s',
                          jobid, attempt + 1,
                          'running the task again' if tries.rerun
                          else 'recording the outcome again', error)
                self.transactor.backoff(attempt)
            except DoomedTransaction:
                tm.abort()
                return self.writer.fail(claim, 'the task doomed its '
                                        'transaction; nothing it did was '
                                        'committed')
            except Exception as error:
                tm.abort()
                log.exception('committing the run of job %s failed', jobid)
                return self.writer.fail(
                    claim, '%s while committing the run: %s'
                    % (type(error).__name__, error), traceback.format_exc())
            except BaseException:
                tm.abort()
                raise
            finally:
                conn.close()
        return self.writer.fail(
            claim, 'gave up after %d attempts that conflicted; last: %s'
            % (attempts, tries.last))

    def _try(self, conn, tm, claim, group, tries):
        """One try: run the task unless only its outcome is to be recorded
        again, and commit; or, with ``group``, leave an outcome that wrote
        nothing for a later step."""
        jobid, token = claim.jobid, claim.token
        txn = tm.get()
        service = self.transactor.service(conn)
        if tries.rerun:
            job = service.jobs[jobid]
            before = writes.job_state(job)
            heartbeat = self.renewals.heartbeatFor(claim)
            started = self.transactor.now()
            outcome = service.runClaimed(
                jobid, token, started, heartbeat, missing=True,
                middlewares=self.settings.middlewares)
            outcome.completed = self.transactor.now()
            tries.run = Run(claim, job.task, job.attempts, outcome)
            replaced = tm.get() is not txn
            # What the task did that only this transaction can commit:
            # objects written (its job's log and progress aside), or an
            # outcome that refers to stored objects.
            tries.rerun = (replaced or writes.left_work(conn, txn, job._p_oid)
                           or writes.job_state(job) != before)
            if group and not tries.rerun and not job.atMostOnce \
                    and not txn.isDoomed():
                tm.abort()
                return tries.run      # to be recorded by a later step
            if replaced:
                # The task committed or aborted: the lease was checked in a
                # transaction that is gone.
                self.transactor.checkLease(jobid, token)
                tries.rerun = writes.left_work(conn, tm.get(), job._p_oid)
        if claim.timedOut:
            raise LeaseLost('the run timed out')
        run = tries.run
        service.recordOutcome(jobid, token,
                              writes.rebound(run.outcome, conn))
        status = service.jobs[jobid].status
        tm.commit()
        run.status = status
        return run

    def taskMissing(self, claim, reason):
        """Give back a job whose task this worker cannot find."""
        status = self.transactor.transact(lambda service: service.taskMissing(
            claim.jobid, claim.token, reason, self.transactor.now()))
        self.beats.drop(claim)
        self.writer.count('missing task')
        log.warning('gave back job %s (%s): %s', claim.jobid,
                    status if status is not GAVE_UP else 'not recorded',
                    reason)
        return MISSING

    def unleased(self, jobid):
        """Run a job by id in one transaction, as the service itself does."""
        ran = self.transactor.transact(
            lambda service: service.processNext(self.transactor.now(), jobid))
        if ran is GAVE_UP:
            log.error('gave up running job %s after %d conflicts', jobid,
                      self.transactor.settings.attempts)
            return False
        return ran
