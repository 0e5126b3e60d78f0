"""What people do to jobs: start, pause, resume, run now, retry, cancel,
reschedule.

Each operation checks that it applies to the job as it is, and refuses with
an error that says why, before it changes anything.
"""
from zodbtasks import events
from zodbtasks import interfaces
from zodbtasks.job import CronJob
from zodbtasks.keys import NOW
from zodbtasks.lifecycle import repeats
from zodbtasks.lifecycle import waiting_status


class Control:
    """The operations on single jobs of a service, through its
    ``transitions`` (a `zodbtasks.transitions.Transitions`)."""

    def __init__(self, transitions):
        self.transitions = transitions
        self.ix = transitions.ix

    def start_job(self, job, now):
        """Queue a job added with ``startLater``."""
        if isinstance(job, CronJob):
            self.ix.set_status(job, waiting_status(job))
            self.ix.unplace(job)
        else:
            self.ix.enqueue(job, now)
        self.transitions.notify(events.JobQueued, job, now)

    def reschedule(self, job):
        """Work out a cron job's next time again, at the next tick."""
        if not isinstance(job, CronJob):
            raise ValueError('job %r is not a cron job and has no schedule'
                             % (job.id,))
        if job.status in interfaces.FINISHED:
            raise ValueError('job %r is %r and will not run again'
                             % (job.id, job.status))
        if job.status in (interfaces.STARTLATER, interfaces.PAUSED) or (
                job.status == interfaces.PROCESSING and not repeats(job)):
            return  # placed when it starts, resumes, or never again
        self.ix.unindex(job)
        job.scheduledFor = None
        job.waitingRun = False
        self.ix.unplace(job)

    def cancel(self, job, now):
        if job.status in interfaces.FINISHED:
            return
        self.ix.unindex(job)
        job.scheduledFor = None
        job.paused = False
        # A worker running it loses its lease: what it records is refused.
        if job.lease is not None:
            job.lease.revoked = True
        job.lease = None
        self.transitions.finish(job, interfaces.CANCELLED, now)
        self.transitions.notify(events.JobCancelled, job, now)

    def pause(self, job, now, when):
        """Hold ``job`` (``now``: the time given, None; ``when``: the time
        to use)."""
        if job.status in interfaces.FINISHED:
            raise ValueError('job %r is %r; only unfinished jobs can be '
                             'paused' % (job.id, job.status))
        if job.status == interfaces.PROCESSING:
            if not repeats(job):
                raise ValueError('job %r is running and runs only once; it '
                                 'cannot be paused' % (job.id,))
        elif job.status != interfaces.PAUSED:
            job.pausedFrom = job.status
            self.ix.set_status(job, interfaces.PAUSED, now)
        self.ix.unindex(job)
        if job.status != interfaces.PROCESSING:
            self.ix.leave_limit(job, when)
        job.waitingRun = False
        job.paused = True

    def resume(self, job, now):
        if not job.paused:
            raise ValueError('job %r is %r, not paused'
                             % (job.id, job.status))
        job.paused = False
        transitions = self.transitions
        if job.status == interfaces.PROCESSING:
            transitions.place_after(job, now)
            return
        status, job.pausedFrom = job.pausedFrom, None
        self.ix.set_status(job, status)
        if status == interfaces.QUEUED:
            self.ix.enqueue(job, now)
        elif status == interfaces.CRONJOB:
            transitions.place_after(job, now)
            if job.scheduledFor is None:
                transitions.finish(job, interfaces.COMPLETED, now)
        elif status in (interfaces.DELAYED, interfaces.RETRYING):
            if job.scheduledFor is None:
                self.ix.unplace(job)
            else:
                self.ix.schedule(job, job.scheduledFor, job._why)

    def run_now(self, job, now):
        if job.status == interfaces.QUEUED:
            return
        if job.status not in (interfaces.DELAYED, interfaces.CRONJOB,
                              interfaces.RETRYING):
            raise ValueError('job %r is %r; only a queued, delayed, cron or '
                             'retrying job can be run now'
                             % (job.id, job.status))
        self.ix.unindex(job)
        self.ix.schedule(job, now, NOW)

    def retry(self, job, now):
        if job.status == interfaces.RETRYING:
            return self.run_now(job, now)
        if job.status not in (interfaces.ERROR, interfaces.CANCELLED):
            raise ValueError('job %r is %r; only a failed, cancelled or '
                             'retrying job can be retried'
                             % (job.id, job.status))
        self.ix.catalog.unfinished(job)
        job.expires = None
        job.retried = 0
        if isinstance(job, CronJob):
            self.ix.set_status(job, waiting_status(job))
            self.ix.schedule(job, now, NOW)
        else:
            self.ix.enqueue(job, now, front=True)
        self.transitions.notify(events.JobQueued, job, now)
