"""The contracts of zodbtasks: tasks, jobs and the service that runs them.

A *task* is a named utility that does the work. A *job* is one request to run
a task with an input, stored in the database with its status and outcome. The
*service* is a persistent object that owns the jobs and decides which one is
due next; it is advanced by calls that take the current time as an argument.
"""
from zope.interface import Attribute
from zope.interface import Interface
from zope.location.interfaces import IContained

# Job statuses.  They are plain strings: compare them with ``==``.
QUEUED = 'queued'
PROCESSING = 'processing'
CANCELLED = 'cancelled'
ERROR = 'error'
COMPLETED = 'completed'
DELAYED = 'delayed'
CRONJOB = 'cronjob'
STARTLATER = 'start later'

#: Every status a job can have.
STATUSES: tuple[str, ...] = (QUEUED, PROCESSING, CANCELLED, ERROR, COMPLETED, DELAYED,
            CRONJOB, STARTLATER)

#: Statuses after which a job never runs again; ``clean()`` removes them.
FINISHED = (CANCELLED, ERROR, COMPLETED)


class ITask(Interface):
    """A unit of work, registered as a named utility.

    The service looks tasks up by name when a job runs, not when the task
    object is stored, so a task is code, never data in the database.
    """

    def __call__(service, jobid, input):
        """Do the work for one job and return its result.

        The result is stored on the job, so it must be picklable. Raising
        ``TaskError`` (or any other exception) puts the job in ``error``.
        """


class IJob(Interface):
    """One request to run a task, stored in the database."""

    id = Attribute("The job's id: an int, unique within its service.")
    task = Attribute("The name under which the task utility is registered.")
    input = Attribute("The input given to the task.")
    output = Attribute("What the task returned, or None.")
    error = Attribute("A readable message if the last run failed, or None.")
    traceback = Attribute("The full traceback of the last failure, or None.")
    status = Attribute("One of the status strings in this module.")
    created = Attribute("When the job was added (seconds since the epoch).")
    claimed = Attribute("When a worker last claimed it, or None.")
    started = Attribute("When the last run began, or None.")
    completed = Attribute("When the last run ended, or None.")
    lostLeases = Attribute("How many runs in a row lost their lease.")
    waitingForTask = Attribute("The task that the workers which claimed it "
                               "could not find, or None.")
    attempts = Attribute("How many runs were started, retries included.")
    retried = Attribute("How many failed runs in a row were retried.")
    failures = Attribute("The latest failures, as (time, message) pairs.")
    log = Attribute("The lines the task logged (its last 64 KiB), a tuple.")
    progress = Attribute("(fraction, message) the task reported, or None.")
    data = Attribute("A persistent mapping that the runs of the job keep "
                     "between them (context.data), or None until a run "
                     "uses it.")
    lease = Attribute("The worker's claim while it runs the job, or None.")
    scheduledFor = Attribute("When the job is due next, if it waits for a "
                             "time.")
    runDue = Attribute("When the latest run was due, if it had a time.")
    expires = Attribute("When a finished job is removed, if it has a ttl.")
    # Two of the job's options (all of them: zodbtasks.job.JOB_OPTIONS).
    timeout = Attribute(
        "The most seconds a run may take (more than 0, at most 100 years), "
        "or None, the default, for no limit.")
    maxLostLeases = Attribute(
        "How many times the job's worker may lose its lease (a whole number "
        "of at least 1, 3 by default) before the job fails instead of "
        "running again.")


class ICronJob(IJob):
    """A job that runs on a schedule, or once after a delay.

    The schedule fields are tuples of ints, as in the reference package:
    ``minute`` 0-59, ``hour`` 0-23, ``dayOfMonth`` 1-31, ``month`` 1-12 and
    ``dayOfWeek`` 0-6 with 0 for Monday. An empty tuple means "not given".
    """

    minute = Attribute("Minutes of the hour at which the job runs.")
    hour = Attribute("Hours of the day at which the job runs.")
    dayOfMonth = Attribute("Days of the month on which the job runs.")
    month = Attribute("Months in which the job runs.")
    dayOfWeek = Attribute("Days of the week on which the job runs, 0 = Monday.")
    delay = Attribute("Seconds to wait before a one-off run, or None.")
    runs = Attribute("How many scheduled runs were started.")
    missedRuns = Attribute("How many scheduled times passed without a run.")
    lastMissed = Attribute("(time, count, action) of the latest miss.")

    def update(minute=(), hour=(), dayOfMonth=(), month=(), dayOfWeek=(),
               delay=None):
        """Replace the schedule; the new one is validated first.

        The service must be told with ``reschedule(jobid)`` afterwards.
        """

    def timeOfNextCall(now):
        """The first time strictly after ``now`` at which the job is due.

        For a delayed job this is ``now + delay``. Returns None when the
        schedule will never fire again.
        """


class ITaskService(IContained):
    """A persistent queue and scheduler of jobs.

    Every method that depends on time takes ``now`` in seconds since the
    epoch. When ``now`` is None the service asks its ``clock``; when it is
    given, nothing reads the wall clock.

    A service is `IContained` (it has ``__parent__`` and ``__name__``), so
    a zope.container folder stores the service itself, not a proxy around
    it, and code written for z3c.taskqueue finds it where it put it.
    """

    jobs = Attribute("A BTree mapping job ids to jobs.")
    taskInterface = Attribute("The interface under which tasks are looked up.")
    processorFactory = Attribute(
        "The processor class that `startProcessing` runs; by default "
        "`zodbtasks.processor.SimpleProcessor`.")
    processorArguments = Attribute(
        "The keyword arguments the processor gets, a dict.")

    def getAvailableTasks():
        """A dict of the registered tasks by name."""

    def add(task, input=None, startLater=False):
        """Add a job that runs ``task`` with ``input`` as soon as possible.

        Returns the new job's id. With ``startLater`` the job waits in
        ``start later`` until ``startJob`` is called. Raises ValueError for
        a task name that is not registered and TypeError for an input that
        cannot be pickled; nothing is written in either case.
        """

    def addCronJob(task, input=None, minute=(), hour=(), dayOfMonth=(),
                   month=(), dayOfWeek=(), delay=None):
        """Add a job that runs on a schedule, or once after ``delay`` seconds.

        The job's first due time is fixed at the service's first tick after
        the job was added (the next ``processNext``, ``claimNextJob`` or
        ``process`` call), from the ``now`` of that tick.
        """

    def startJob(jobid):
        """Queue a job that was added with ``startLater``; return True.

        A job that is not waiting to start (queued already, running,
        finished...) is left as it is and the answer is False, as in the
        reference package. Raises KeyError for an unknown id.
        """

    def reschedule(jobid):
        """Place a cron job again after its schedule was changed.

        The new due time is fixed at the next tick, as for a new job.
        """

    def cancel(jobid):
        """Cancel a job that has not finished; it will not run again.

        Cancelling a finished job changes nothing. A job that is running
        now finishes its run but is not run again.
        """

    def clean(status=FINISHED):
        """Remove the jobs whose status is in ``status``."""

    def getStatus(jobid):
        """The status of the job."""

    def getResult(jobid):
        """The output of the job's last successful run, or None."""

    def getError(jobid):
        """The error message of the job's last failed run, or None."""

    def hasJobsWaiting(now=None):
        """Whether a job is due at ``now``. Never writes to the database."""

    def claimNextJob(now=None):
        """Take the next due job off the queue and return its id, or None.

        The job is marked ``processing``; run it with
        ``processNext(now, jobid)``.
        """

    def processNext(now=None, jobid=None):
        """Run one job: the given one, or the next due one.

        Returns True if a job was run and False if nothing was due. A
        failing task never raises here: the job records the error.
        """

    def process(now=None):
        """Run every job that is due at ``now``; returns None.

        (As in the reference package. `processNext` says, job by job,
        whether one ran.)
        """

    def startProcessing():
        """Start a processor thread in this process for the service.

        The thread runs ``processorFactory`` (a processor class) with the
        database, the service's path and ``processorArguments``. Nothing
        happens for a service that is not stored in a database yet.
        """

    def stopProcessing():
        """Stop the service's processor thread, after the job in hand.

        Does nothing when no thread processes the service.
        """

    def isProcessing():
        """Whether a processor thread of this process runs for the service.

        False for a service that is not stored in a database.
        """


class IScheduledTaskService(ITaskService):
    """What zodbtasks adds to the reference API.

    Every method here that changes a job validates first and raises an
    error naming the bad value; nothing is written then.
    """

    leaseSeconds = Attribute("Default length of a worker's claim, seconds.")
    resultTTL = Attribute(
        "Default time to live of finished jobs in seconds, or None.")
    paused = Attribute("Whether the whole service is paused.")

    def claimNextJob(now=None, worker=None, lease=None):
        """Claim the next due job for ``worker`` under a lease; see
        `ITaskService.claimNextJob`. The job's ``lease.token`` is what the
        worker gives `processNext` and `heartbeat`."""

    def claimJobs(now=None, count=1, worker=None, lease=None, spread=False):
        """Claim up to ``count`` due jobs, as many calls of `claimNextJob`;
        return their ids. All their leases go to one tree of the lease
        index, and with ``spread`` the queued jobs come from one random lane
        of the queue while it lasts: workers claiming batches at the same
        moment then rarely write the same bucket. Raises ValueError for a
        ``count`` that is not an int of 0 or more."""

    def prefetch(jobids):
        """Ask the storage to load the jobs ``jobids`` and the trees that
        hold them, in one round trip per level (ZEO, RelStorage; a no-op
        elsewhere). Changes nothing."""

    def processNext(now=None, jobid=None, token=None, heartbeat=None):
        """Run one job, as `ITaskService.processNext`.

        With ``token``, the job must still be held under that lease, else
        `LeaseLost` is raised and nothing runs. ``heartbeat`` is what the
        task's `zodbtasks.context.JobContext.heartbeat` calls.
        """

    def heartbeat(jobid, token, now=None, seconds=None):
        """Extend a held lease and return its new end; raise `LeaseLost`
        if the lease is no longer the job's."""

    def checkLease(jobid, token):
        """Return the job's lease if it is ``token``, else raise
        `LeaseLost`."""

    def runClaimed(jobid, token, now=None, heartbeat=None):
        """Run the task of a job held under ``token`` and return its
        `IOutcome`, recording nothing on the job but what the task told its
        context (log, progress) and a failure's traceback.

        What the task changed stays in the transaction; a failed task's
        changes are rolled back. Raises `LeaseLost`, running nothing, if the
        job is no longer held under ``token``. `processNext` with a token is
        this followed by `recordOutcome`.
        """

    def recordOutcome(jobid, token, outcome, release=False):
        """Record ``outcome`` (an `IOutcome`) on a job still held under
        ``token``, ending the run as `processNext` would have: completed,
        error, retrying, or waiting for its next time. With ``release`` the
        lease's entry leaves the lease index too (a write to a tree the
        worker's claims write: for a claim's transaction).

        Raises `LeaseLost`, having written nothing, if the lease is gone. A
        worker uses it to record a run in a later transaction than the one
        the task ran in: after a conflict, or several runs in one commit.
        """

    def outcomeFootprint(jobid):
        """The oids that recording the job's outcome writes."""

    def watchedOids():
        """The oids of which every commit that changes the status of a job
        (an add included) writes one, or None if there are none yet. An
        idle worker of another process wakes when the storage tells it
        that one changed (see `zodbtasks.doorbell`)."""

    def isIdle(now=None):
        """Whether nothing is due at ``now`` and no worker holds a job."""

    def pause(jobid=None, now=None):
        """Pause a job, or with no id the whole service."""

    def resume(jobid=None, now=None):
        """Resume a paused job, or with no id the whole service. A
        repeating job goes on from its first time after ``now``."""

    def isPaused(jobid=None):
        """Whether the job, or with no id the service, is paused."""

    def runNow(jobid, now=None):
        """Make a waiting job due at ``now`` once; its schedule stays."""

    def retry(jobid, now=None):
        """Give a failed or cancelled job another run, due at ``now``."""

    def remove(jobid):
        """Remove one finished job; True if it was there. ValueError for a
        job that is not finished."""

    def purgeExpired(now=None, limit=None):
        """Remove finished jobs past their time to live; return how many."""

    def upgrade(now=None):
        """Bring data of an older layout up to date; True if it did."""

    def jobCounts():
        """The number of jobs by (status, task), as a dict. It costs the
        same at any number of jobs, once the counts are complete."""

    def countJobs(status=None, task=None):
        """How many jobs have ``status`` and ``task`` (None: any)."""

    def listJobs(status=None, task=None, limit=100, cursor=None,
                 queue=None):
        """A page of jobs and the cursor of the next page: ``(jobs,
        cursor)``, the cursor None after the last page.

        ``status``, ``task`` and ``queue`` filter by exact value (None:
        any). Within a status the order is the one that matters for it:
        queued jobs in the order claims take them (priority, then age),
        waiting jobs (delayed, cron, retrying) soonest due first, running
        jobs soonest lease end first, and the
        others (finished, paused, start later) the latest change first.
        Without ``status``, the statuses come in the order of
        `LISTING_ORDER`. A page costs O(limit) at any number of jobs. A
        cursor is an opaque string; give it back unchanged.
        """

    def countsComplete():
        """Whether every job is counted. A service stored by an older
        layout counts its jobs one by one until `buildCounts` is done."""

    def buildCounts(limit=1000):
        """Count up to ``limit`` jobs that an older layout did not count;
        return how many it went through (0 once all are counted). Call it
        in transactions of its own while workers run."""


class IOutcome(Interface):
    """The outcome of one run of a job, kept apart from the job.

    Plain data: it may be kept across transactions and recorded later.
    """

    jobid = Attribute("The id of the job that ran.")
    completed = Attribute("When the run ended (seconds since the epoch).")
    failed = Attribute("Whether the task raised.")
    output = Attribute("What the task returned; None if it failed.")
    error = Attribute("The error message of a failed run, else None.")
    traceback = Attribute("The traceback of a failed run, else None.")
    retryDelay = Attribute(
        "Seconds before a retry, as the task's `Retry` asked; else None.")
    log = Attribute("The job's log as the run left it (a tuple of lines).")
    progress = Attribute("The job's progress as the run left it.")


class TaskMissing(LookupError):
    """A worker cannot find the task of the job it claimed.

    Another worker may have it, so the job is given back rather than failed.
    """


class LeaseLost(Exception):
    """The worker no longer holds the job it is working on.

    Its lease expired and the job was given back to the queue (or failed, if
    it runs at most once), or the job was cancelled or claimed again. The
    work in hand should stop; its result would be discarded.
    """


# Statuses added beyond the reference package.
RETRYING = 'retrying'
PAUSED = 'paused'
STATUSES += (RETRYING, PAUSED)

#: The order of the statuses in a listing of all jobs: running, waiting,
#: then done.
LISTING_ORDER = (PROCESSING, QUEUED, RETRYING, DELAYED, CRONJOB, PAUSED,
                 STARTLATER, ERROR, CANCELLED, COMPLETED)


class IJobEvent(Interface):
    """Something happened to a job; sent with `zope.event.notify`.

    Subscribers run in the transaction that made the change, so what they
    write is committed (or aborted) with it.
    """

    service = Attribute("The service that holds the job.")
    job = Attribute("The job.")
    now = Attribute("The time of the change, as given to the service.")


class IJobQueued(IJobEvent):
    """A job was added, or started after waiting to start."""


class IJobStarted(IJobEvent):
    """A run of the job begins."""


class IJobCompleted(IJobEvent):
    """A run of the job succeeded."""


class IJobFailed(IJobEvent):
    """A run of the job failed and will not be retried."""

    error = Attribute("The error message.")


class IJobRetried(IJobEvent):
    """A run of the job failed and the job will be tried again."""

    error = Attribute("The error message.")
    due = Attribute("When the next attempt is due.")


class IJobCancelled(IJobEvent):
    """The job was cancelled."""


class IJobMissed(IJobEvent):
    """Scheduled times of the job passed without their runs.

    ``count`` is how many (counting stops at the job's ``catchUp`` limit
    plus one); ``action`` says what was done: 'coalesced' into one run,
    'skipped', 'waiting' for the run in progress, or 'replaying' them.
    """

    count = Attribute("How many scheduled times were missed.")
    action = Attribute("What was done about them.")


class ITaskStub(ITask):
    """A task for tests, looked up by `zodbtasks.testing.TaskServiceStub`.

    A test registers stand-ins for the real tasks under this interface; a
    stub service then runs them and never the real ones. (Since it extends
    `ITask`, an ordinary service sees them too.)
    """


class IWorkerRecord(Interface):
    """What a worker said of itself when it last renewed its record.

    Only its worker writes it. Its state is worked out from the times it
    holds, so a worker that died is seen as dead without anyone writing.
    """

    name = Attribute("The worker's name, unique in its service.")
    host = Attribute("The host it runs on.")
    pid = Attribute("Its process id.")
    started = Attribute("When it registered.")
    lastSeen = Attribute("When it last renewed the record.")
    every = Attribute("Seconds between its renewals, at most.")
    stopped = Attribute("When it stopped gracefully, or None.")
    jobsDone = Attribute("How many runs it recorded (the lost ones aside).")
    jobs = Attribute("The ids of the jobs in its hands, a tuple.")
    tasks = Attribute("The names of the tasks it knows, sorted.")
    counters = Attribute("Its counters (outcomes, conflicts), a dict.")

    def state(now):
        """'stopped' if it said so; else 'dead' once ``now`` is more than
        `zodbtasks.registry.DEAD_AFTER` (3) intervals past ``lastSeen``;
        else 'live'."""

    def describe(now):
        """The record as a dict of plain values, its state at ``now``
        included (for JSON)."""


class IWorkerRegistry(Interface):
    """The workers of a service, each in a record that only it writes.

    A worker registers when its loop begins, renews its record at least
    every ``every`` seconds while it runs (with its heartbeats; an idle
    worker in a transaction of its own) and marks it stopped when it ends
    gracefully. Registering writes the service's small mapping of records
    (created by the first registration; a service stored before it has
    none, and shows no workers); renewing writes the record only.
    """

    workerDropAfter = Attribute(
        "Seconds after which the record of a dead or stopped worker is "
        "dropped by `dropDeadWorkers` (default 3600).")

    def registerWorker(name, now, host, pid, every, tasks=()):
        """Create or reset the record of worker ``name`` and return it.

        ``every`` is the most seconds between its renewals; ``tasks`` the
        names of the tasks it knows. A record of that name already there
        (a worker restarted with the name) is reset in place. Raises
        TypeError or ValueError for bad arguments, writing nothing.
        """

    def workerSeen(name, now, jobs=None, jobsDone=None, counters=None):
        """Renew the record of ``name`` at ``now``, with what changed;
        return it, or None if there is no such record (it was dropped, or
        never registered: the worker registers again). Writes the record
        only."""

    def workerStopped(name, now, jobsDone=None, counters=None):
        """Mark the record of ``name`` stopped at ``now``; return it, or
        None if there is none."""

    def workers(now):
        """Every record, sorted by name; their ``state(now)`` tells the live
        from the dead and the stopped."""

    def liveWorkers(now):
        """The records whose state at ``now`` is 'live', sorted by name."""

    def dropDeadWorkers(now, limit=100):
        """Drop up to ``limit`` records of workers dead or stopped for more
        than `workerDropAfter` seconds at ``now``; return their names.
        Writes nothing when there is none."""

    def unservedTasks(now):
        """{task name: queued jobs} for the queued jobs whose task no live
        worker knows, from the counts (the cost does not grow with the
        jobs). A worker may still run a task it can import by its dotted
        name without knowing it beforehand."""


class IRunMiddleware(Interface):
    """Code that wraps every run of a task (see `zodbtasks.middleware`).

    Registered as a named utility, it wraps the runs of every service in
    the process; middlewares run in the order of their names.
    """

    def __call__(run, call_next):
        """Do the middleware's work around ``call_next()``, which runs the
        rest of the chain and the task and returns the task's output;
        return that output (or another one). ``run`` has ``service``,
        ``job``, ``jobid``, ``input``, ``now`` and ``task``; a middleware
        may replace ``service`` and ``input`` before calling ``call_next``.
        """
