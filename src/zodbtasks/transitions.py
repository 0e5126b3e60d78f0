"""Moving a job from one state to the next.

`Transitions` applies the decisions of `zodbtasks.lifecycle` to the
indexes (`zodbtasks.indexes`): a run starts, ends, is retried, misses its
time, loses its lease or is given back. Every change that subscribers hear
of is announced from here (`zodbtasks.events`), or kept for the worker to
announce after its commit (`TaskService.keepEvents`).
"""
import zope.event

from zodbtasks import events
from zodbtasks import interfaces
from zodbtasks import lifecycle
from zodbtasks.context import appendLog
from zodbtasks.job import CronJob
from zodbtasks.keys import NOW
from zodbtasks.keys import REGULAR
from zodbtasks.keys import RETRY
from zodbtasks.lifecycle import KEEP_FAILURES
from zodbtasks.lifecycle import KEEP_RUNS
from zodbtasks.lifecycle import UNKNOWN
from zodbtasks.lifecycle import remembered
from zodbtasks.lifecycle import repeats
from zodbtasks.lifecycle import waiting_status


class Transitions:
    """The changes of state of the jobs of ``service``, on its indexes
    ``ix`` (an `zodbtasks.indexes.Indexes`)."""

    def __init__(self, service, ix):
        self.service = service
        self.ix = ix

    def notify(self, event, job, now, **details):
        if zope.event.subscribers:
            made = event(self.service, job, now, **details)
            kept = getattr(self.service, '_v_keptEvents', None)
            if kept is None:
                zope.event.notify(made)
            else:
                kept.append(made)

    # -- waiting for a time --------------------------------------------------

    def place_after(self, job, now, due=UNKNOWN):
        """Place a repeating job at its first time after ``now``, if any.

        ``due`` is that time when the caller has worked it out already.
        """
        if due is UNKNOWN:
            due = job.timeOfNextCall(now)
        if due is None:
            job.scheduledFor = None
        else:
            self.ix.schedule(job, due)

    def place_new_jobs(self, now):
        """Fix the first due time of the jobs added since the last tick."""
        for job in self.ix.take_unplaced():
            try:
                self.place_after(job, now)
            except Exception as error:
                self.poisoned(job, now, error)
                continue
            if job.scheduledFor is None:
                self.finish(job, interfaces.COMPLETED, now)

    def overlap(self, job, now):
        """A repeating job came due while its last run is still going."""
        action = lifecycle.overlap(job)
        if action == 'skipped':
            self.place_after(job, now)
            self.missed(job, now, 1, action)
        else:
            job.waitingRun = True
            self.missed(job, now, 1, action, count=False)

    def due(self, job, now):
        """A job taken from its due tree at ``now``: start its run, or apply
        its misfire policy. Returns whether it runs."""
        decision = lifecycle.misfire(job, now)
        if not decision.run:
            self.place_after(job, now, decision.following)
        if decision.replay_from is not None:
            job._replayFrom = decision.replay_from
        if decision.action is not None:
            self.missed(job, now, decision.missed, decision.action,
                        count=decision.counted)
        if not decision.run:
            return False
        self.start_run(job, now, job.scheduledFor, decision.following)
        self.ix.limit_started(job, now)
        return True

    def missed(self, job, now, n, action, count=True):
        if count:
            job.missedRuns += n
        job.lastMissed = (now, n, action)
        self.notify(events.JobMissed, job, now, count=n, action=action)

    # -- runs ----------------------------------------------------------------

    def start_run(self, job, now, due=None, following=UNKNOWN):
        if job.completed is not None and job.started is not None:
            # The run before this one goes to the history, and the job
            # tells of the run in hand: it has not ended.
            job.history = remembered(job.history, lifecycle.run_record(job),
                                     KEEP_RUNS)
            job.completed = None
        job.runDue = due
        self.ix.set_status(job, interfaces.PROCESSING)
        job.claimed = job.started = now
        job.attempts += 1
        job.progress = None
        if repeats(job):
            if job._why is not RETRY:
                job.runs += 1
            after, following = lifecycle.next_time_at_start(job, now,
                                                            following)
            job._replayFrom = None
            if after is None:
                job.scheduledFor = None
            else:
                self.place_after(job, after, following)
        self.notify(events.JobStarted, job, now)

    def conclude(self, job, outcome):
        """End a run with its `zodbtasks.runner.Outcome`."""
        if outcome.started is not None:
            job.started = outcome.started
        job.completed = outcome.completed
        job.waitingForTask = job.missingSince = None
        if not outcome.failed:
            job.output = outcome.output   # a failed run keeps the last one
        job.error, job.traceback = outcome.error, outcome.traceback
        self.end_run(job, outcome.completed, outcome.failed,
                     retry_delay=outcome.retryDelay)

    def fail_run(self, job, now, message):
        """End a run that could not record an outcome of its own: it failed
        with ``message``, and is not retried."""
        job.error, job.traceback = message, None
        job.completed = now
        appendLog(job, message)
        self.end_run(job, now, failed=True, retry=False)

    def end_run(self, job, now, failed, retry=True, retry_delay=None):
        ix = self.ix
        ix.leave_limit(job, now)
        if job.lease is not None:
            job.ranOn = job.lease.worker
        job.lease = None   # its index entry is dropped when it comes due
        job.lostLeases = 0
        if job.status == interfaces.CANCELLED:
            return  # cancelled while running: it stays cancelled
        if failed:
            job.failures = remembered(job.failures, (now, job.error),
                                      KEEP_FAILURES)
            due = lifecycle.retry_due(job, now, retry_delay) if retry \
                else None
            if due is not None:
                self.retry(job, now, due)
                return
            job.retried = 0
            self.notify(events.JobFailed, job, now, error=job.error)
        else:
            job.retried = 0
            self.notify(events.JobCompleted, job, now)
        after = lifecycle.after_run(job)
        if after == 'paused':
            ix.unindex(job)
            ix.set_status(job, interfaces.PAUSED, now)
            job.pausedFrom = interfaces.CRONJOB
            return
        if after == 'again':
            job.waitingRun = False
            ix.unindex(job)
            ix.schedule(job, now)
        if after in ('again', 'scheduled'):
            ix.set_status(job, interfaces.CRONJOB)
            return
        if isinstance(job, CronJob):
            job.scheduledFor = None
        self.finish(job, interfaces.ERROR if failed else interfaces.COMPLETED,
                    now)

    def retry(self, job, now, due):
        """Schedule another attempt of a failed run at ``due``."""
        ix = self.ix
        if repeats(job):
            ix.unindex(job)
            ix.schedule(job, due, RETRY)
            ix.set_status(job, interfaces.CRONJOB)
        else:
            ix.set_status(job, interfaces.RETRYING)
            ix.schedule(job, due, RETRY)
        job.retried += 1
        self.notify(events.JobRetried, job, now, error=job.error, due=due)

    def finish(self, job, status, now):
        self.ix.finish(job, status, now,
                       lifecycle.time_to_live(job, self.service.resultTTL))

    def poisoned(self, job, now, error):
        """End a job that the queue cannot handle, so that claims go on."""
        self.ix.unindex(job)
        job.scheduledFor = None
        job.lease = None
        job.error = ('could not be scheduled or claimed: %s: %s'
                     % (type(error).__name__, error))
        job.traceback = None
        job.completed = now
        appendLog(job, job.error)
        self.finish(job, interfaces.ERROR, now)
        self.notify(events.JobFailed, job, now, error=job.error)

    # -- claims that end otherwise -------------------------------------------

    def give_back(self, job, lease, now, delay=None):
        """Undo a claim that never started."""
        ix = self.ix
        ix.leave_limit(job, now)
        job.lease = None
        job.attempts = max(0, job.attempts - 1)
        place = lease.place or (None, None, REGULAR, None)
        if repeats(job) and place[2] is not RETRY:
            job.runs = max(0, job.runs - 1)
        if isinstance(job, CronJob):
            ix.unindex(job)       # the next time its claim placed
        back = lifecycle.give_back(job, place, now, delay)
        if back.status == interfaces.PAUSED:
            ix.set_status(job, back.status, now)
            job.pausedFrom = lifecycle.paused_from(job)
            job.scheduledFor = back.due
        elif back.due is not None:
            ix.set_status(job, back.status)
            ix.schedule(job, back.due, back.why)
        else:
            ix.put_back(job, place, now)

    def lease_lost(self, job, lease, now):
        """The worker of ``job`` let its lease run out."""
        if lease.started is None:
            appendLog(job, 'the worker %s let its claim on this job expire '
                      'at %s before it started; given back'
                      % (lease.worker or '(unnamed)', lease.expires))
            self.give_back(job, lease, now)
            return
        message, fails = lifecycle.lost_lease(job, lease)
        job.lostLeases += 1
        if fails:
            self.fail_run(job, now, message)
            return
        job.lease = None
        self.ix.leave_limit(job, now)
        job.history = remembered(
            job.history, (job.started, lease.expires, lease.worker, 'lost',
                          message), KEEP_RUNS)
        appendLog(job, message + '; it runs again')
        self.run_again(job, now)

    def run_again(self, job, now):
        """A run that was lost is due again at once: first in its queue, or
        (a repeating job's schedule goes on from there) at ``now``."""
        ix = self.ix
        if job.paused:
            ix.set_status(job, interfaces.PAUSED, now)
            job.pausedFrom = lifecycle.paused_from(job)
        elif isinstance(job, CronJob):
            ix.unindex(job)
            ix.set_status(job, waiting_status(job))
            ix.schedule(job, now, NOW)
        else:
            ix.enqueue(job, now, front=True)
