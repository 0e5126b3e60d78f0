"""What happens to a job between its runs: the policy of the queue.

Pure functions of a job, what happened and ``now``: they read the job and
return a decision, and change nothing. `zodbtasks.service` applies the
decisions to the indexes. Each is shown in ``docs/lifecycle.rst`` and unit
tested in ``tests/test_policy.py``.
"""
import collections

from zodbtasks import interfaces
from zodbtasks.job import CronJob
from zodbtasks.keys import NOW
from zodbtasks.keys import REGULAR
from zodbtasks.keys import RETRY

#: How many failures a job remembers.
KEEP_FAILURES = 10
#: How many runs before the latest one a job remembers (``history``).
KEEP_RUNS = 10

#: Marks a time not worked out yet.
UNKNOWN = object()


def repeats(job):
    """Whether ``job`` runs on a schedule (a cron or interval job)."""
    return isinstance(job, CronJob) and job.delay is None


def waiting_status(job):
    """The status of a repeating or delayed job waiting for its time."""
    return interfaces.CRONJOB if job.delay is None else interfaces.DELAYED


# -- missed times --------------------------------------------------------------

#: What to do with a repeating job that came due late. ``run``: run it now;
#: ``missed``: how many times were missed, told as ``action`` ('skipped',
#: 'coalesced', 'replaying' or None) and added to ``missedRuns`` if
#: ``counted``; ``skip_to``: with ``run`` false, place the job at its first
#: time after now, which is ``following`` if known (else `UNKNOWN`);
#: ``replay_from``: the due time the replay of missed runs goes on from.
Misfire = collections.namedtuple(
    'Misfire', 'run missed action counted following replay_from')

_ON_TIME = Misfire(True, 0, None, False, UNKNOWN, None)


def count_times(job, after, until):
    """How many times ``job`` is due in (after, until], counting up to
    ``catchUp + 1``, and its first time after ``until`` if counting got
    there (else `UNKNOWN`)."""
    count = 0
    t = job.timeOfNextCall(after)
    while t is not None and t <= until:
        if count > job.catchUp:
            return count, UNKNOWN
        count += 1
        t = job.timeOfNextCall(t)
    return count, t


def misfire(job, now):
    """The `Misfire` decision for ``job``, due at ``job.scheduledFor``,
    claimed at ``now``."""
    due = job.scheduledFor
    if not repeats(job) or job._why is not REGULAR or due >= now:  # pragma: no mutate
        return _ON_TIME
    missed, following = count_times(job, due, now)
    if job.misfire == 'skip' and now - due > job.misfireGrace:
        return Misfire(False, 1 + missed, 'skipped', True, following, None)
    if not missed:
        return Misfire(True, 0, None, False, following, None)
    if job.misfire == 'all' and missed <= job.catchUp:
        return Misfire(True, missed, 'replaying', False, UNKNOWN, due)
    return Misfire(True, missed, 'coalesced', True, following, None)


def overlap(job):
    """A repeating job came due while its last run goes on: 'skipped' (its
    time is missed; place it at its next one) or 'waiting' (it runs again
    as soon as the run ends)."""
    return 'skipped' if job.overlap == 'skip' else 'waiting'


# -- runs ------------------------------------------------------------------------

def run_record(job):
    """The `history` entry of the job's last run: (start, end, worker,
    status, error)."""
    return (job.started, job.completed, job.ranOn,
            interfaces.ERROR if job.error else interfaces.COMPLETED,
            job.error)


def remembered(entries, entry, keep):
    """``entries`` with ``entry`` added, the ``keep`` latest."""
    return (entries + (entry,))[-keep:]


def next_time_at_start(job, now, following=UNKNOWN):
    """Where a repeating job goes when a run starts at ``now``: its next
    time is placed then, so that the run's own transaction need not touch
    the schedule. Returns (the time to place it after, or None for no
    further run; the next time if known, else `UNKNOWN`)."""
    if job.maxRuns is not None and job.runs >= job.maxRuns:
        return None, UNKNOWN
    replay_from = getattr(job, '_replayFrom', None)  # pragma: no mutate
    if replay_from is not None:
        return replay_from, UNKNOWN
    return now, following


def retry_delay(job):
    """The delay before the next retry of a failed job, backing off."""
    return min(job.retryDelay * job.retryBackoff ** job.retried,
               job.retryMaxDelay)


def retry_due(job, now, delay=None):
    """When a run that failed at ``now`` is tried again (``delay``: what
    the task asked for), or None if it is not: no retries are left, or a
    repeating job's next regular run comes first (that run is the retry)."""
    if job.retried >= job.retries:
        return None
    due = now + (retry_delay(job) if delay is None else delay)
    if repeats(job) and job.scheduledFor is not None \
            and due >= job.scheduledFor:
        return None
    return due


#: After a run that is not retried: 'cancelled' (it was cancelled while
#: it ran and stays so), 'paused' (a repeating job paused during its run),
#: 'again' (a repeating job due again while it ran: it runs at once),
#: 'scheduled' (a repeating job waits for its next time), or 'finished'.
def after_run(job):
    if job.status == interfaces.CANCELLED:
        return 'cancelled'
    if repeats(job):
        if job.paused:
            return 'paused'
        if job.waitingRun:
            return 'again'
        if job.scheduledFor is not None:
            return 'scheduled'
    return 'finished'


# -- claims that end otherwise ------------------------------------------------

def lost_lease(job, lease):
    """What a run whose worker lost its lease comes to: (message, whether
    the job fails). A job that runs at most once fails; so does one whose
    runs lost their lease ``maxLostLeases`` times in a row."""
    worker = lease.worker or '(unnamed)'
    message = ('the worker %s lost its lease on this job at %s'
               % (worker, lease.expires))
    lost = job.lostLeases + 1
    most = job.maxLostLeases
    if not job.atMostOnce and most is not None and lost >= most:
        message += ('; runs of this job lost their lease %d times '
                    '(maxLostLeases is %d)' % (lost, most))
        return message, True
    return message, job.atMostOnce


#: Where a claim that never started puts its job back: ``status``; ``due``
#: (None: back to its place in the lanes) and ``why`` for the due tree.
GiveBack = collections.namedtuple('GiveBack', 'status due why')


def give_back(job, place, now, delay=None):
    """The `GiveBack` of ``job``, claimed from ``place`` (a
    `zodbtasks.indexes.place_of`), given back at ``now``, not to be due
    before ``now + delay``."""
    why, due = place[2], place[3]
    when = due if due is not None else now
    if delay is not None:
        when = max(when, now + delay)
    if job.paused:
        return GiveBack(interfaces.PAUSED,
                        when if isinstance(job, CronJob) else None, why)
    if isinstance(job, CronJob):
        return GiveBack(waiting_status(job), when, why)
    if why is RETRY:
        return GiveBack(interfaces.RETRYING, when, why)
    if delay is not None:
        return GiveBack(interfaces.QUEUED, when, NOW)
    return GiveBack(interfaces.QUEUED, None, why)  # pragma: no mutate


def time_to_live(job, default):
    """How long a finished job is kept: its own ``ttl`` (0 included),
    else the service's ``default`` (None: until it is cleaned)."""
    return job.ttl if job.ttl is not None else default


def paused_from(job):
    """The status a paused job resumes to."""
    return interfaces.CRONJOB if repeats(job) else interfaces.QUEUED


def missing_task_fails(job, now, timeout):
    """Whether a job whose task no worker has found since
    ``job.missingSince`` has waited ``timeout`` seconds for one."""
    since = job.missingSince if job.waitingForTask is not None else now
    return now - since >= timeout
