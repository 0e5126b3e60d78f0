"""Claims and runs told apart: what a worker that dies or lags costs a job.

A claim the database does not know to have started goes back to where it
waited, uncounted; a run that loses its lease counts against the job's
``maxLostLeases``. Workers renew their claims, fail runs past their
``timeout``, give back jobs whose task they lack, and take a run's times
from the run itself.
"""
import logging
import threading
import time

import pytest
import zope.component

import zodbtasks
from zodbtasks import interfaces
from zodbtasks.interfaces import ITask
from zodbtasks.interfaces import LeaseLost
from zodbtasks.processor import MultiProcessor
from zodbtasks.processor import SimpleProcessor

from test_processor import add
from test_processor import opened
from test_processor import register
from test_processor import stored  # noqa: F401 (a fixture)

WAIT = 30


def claimed(service, now, count=1, start=None, worker='w'):
    ids = service.claimJobs(now, count, worker, start=start)
    return [(jobid, service.jobs[jobid].lease) for jobid in ids]


# -- the service: claims that never started ---------------------------------

def test_a_claim_that_never_started_goes_back_to_its_place(service):
    ids = [service.add('echo', n, now=n) for n in range(3)]
    (first, lease), = claimed(service, 10, start=0)
    assert first == ids[0] and lease.started is None
    assert service.jobs[first].attempts == 1
    # The lease runs out: the claim is given back, first in the queue still,
    # and it does not count as a run or as a lost lease.
    assert service.claimNextJob(now=71, worker='other') == first
    job = service.jobs[first]
    assert (job.attempts, job.lostLeases) == (1, 0)
    assert 'before it started; given back' in job.log[-1]


def test_a_given_back_claim_is_not_put_ahead_of_older_jobs(service):
    ids = [service.add('echo', n, now=n) for n in range(3)]
    [(a, _), (b, lease)] = claimed(service, 10, count=2, start=1)
    service.releaseClaim(b, lease.token, now=11)
    assert service.getStatus(b) == 'queued'
    assert service.jobs[b].attempts == 0
    # b waited before ids[2], and still does.
    assert [service.claimNextJob(now=12) for _ in range(2)] == [b, ids[2]]


def test_a_started_run_that_loses_its_lease_counts(service):
    jobid = service.add('echo', 'x', leaseSeconds=10)
    (got, lease), = claimed(service, 0, start=1)
    assert lease.started == 0
    assert service.claimNextJob(now=11) == jobid
    job = service.jobs[jobid]
    assert (job.attempts, job.lostLeases) == (2, 1)
    assert 'lost its lease' in job.log[-1]


def test_a_heartbeat_tells_that_the_run_started(service):
    jobid = service.add('echo', 'x', leaseSeconds=10)
    (got, lease), = claimed(service, 0, start=0)
    service.heartbeat(jobid, lease.token, now=5, started=False)
    assert lease.started is None
    service.heartbeat(jobid, lease.token, now=6)
    assert lease.started == 6
    service.markStarted(jobid, lease.token, now=7)
    assert lease.started == 6


def test_after_max_lost_leases_the_job_ends_in_error(service):
    jobid = service.add('echo', 'x', leaseSeconds=10, maxLostLeases=2)
    (got, lease), = claimed(service, 0)
    assert service.claimNextJob(now=11) == jobid      # lost once, runs again
    assert service.claimNextJob(now=22) is None       # lost twice: error
    job = service.jobs[jobid]
    assert job.status == 'error'
    assert job.error.endswith('runs of this job lost their lease 2 times '
                              '(maxLostLeases is 2)')


def test_a_recorded_run_starts_the_count_of_lost_leases_afresh(service):
    jobid = service.addCronJob('echo', 'x', interval=100, leaseSeconds=10,
                               maxLostLeases=2, now=0)
    assert service.claimNextJob(now=1) is None     # places it
    due = service.jobs[jobid].scheduledFor
    assert service.claimNextJob(now=due) == jobid
    assert service.claimNextJob(now=due + 11) == jobid     # lost once
    assert service.jobs[jobid].lostLeases == 1
    lease = service.jobs[jobid].lease
    assert service.processNext(now=due + 12, jobid=jobid, token=lease.token)
    job = service.jobs[jobid]
    assert (job.status, job.lostLeases) == ('cronjob', 0)


def test_a_cron_claim_given_back_keeps_its_due_time_and_run_count(service):
    jobid = service.addCronJob('echo', 'x', interval=60, now=0)
    assert service.claimNextJob(now=1) is None   # places it at its first time
    job = service.jobs[jobid]
    due = job.scheduledFor
    (got, lease), = claimed(service, due, start=0)
    assert (got, job.runs, job.scheduledFor) == (jobid, 1, due + 60)
    service.releaseClaim(jobid, lease.token, now=due + 1)
    assert (job.status, job.runs, job.attempts, job.scheduledFor) == (
        'cronjob', 0, 0, due)
    assert service.claimNextJob(now=due + 2) == jobid
    assert job.runDue == due


def test_a_claim_given_back_with_a_delay_waits(service):
    jobid = service.add('echo', 'x')
    (got, lease), = claimed(service, 0)
    service.releaseClaim(jobid, lease.token, now=1, delay=10)
    assert service.claimNextJob(now=10) is None
    assert service.claimNextJob(now=11) == jobid


def test_releasing_a_claim_that_is_gone_raises(service):
    jobid = service.add('echo', 'x')
    (got, lease), = claimed(service, 0)
    service.cancel(jobid, now=1)
    with pytest.raises(LeaseLost):
        service.releaseClaim(jobid, lease.token, now=2)


def test_a_job_whose_task_no_worker_has_fails_after_the_timeout(service):
    service.missingTaskTimeout = 100
    jobid = service.add('echo', 'x')
    (got, lease), = claimed(service, 0)
    assert service.taskMissing(jobid, lease.token, 'not here', now=0) \
        == 'queued'
    job = service.jobs[jobid]
    assert (job.waitingForTask, job.attempts) == ('echo', 0)
    assert service.claimNextJob(now=9) is None        # given back for 10 s
    for now in (10, 50):
        assert service.claimNextJob(now=now) == jobid
        service.taskMissing(jobid, job.lease.token, 'not here', now=now)
    assert service.claimNextJob(now=100) == jobid
    assert service.taskMissing(jobid, job.lease.token, 'not here',
                               now=100) == 'error'
    assert job.error == "no worker could run task 'echo' for 100 s: not here"


def test_a_job_that_cannot_be_placed_fails_and_the_queue_goes_on(
        service, monkeypatch):
    bad = service.addCronJob('echo', 'bad', interval=10, now=0)
    good = service.add('echo', 'good', now=0)
    original = zodbtasks.CronJob.timeOfNextCall

    def broken(job, now):
        if job.input == 'bad':
            raise OverflowError('cannot convert float infinity to integer')
        return original(job, now)
    monkeypatch.setattr(zodbtasks.CronJob, 'timeOfNextCall', broken)
    assert service.claimNextJob(now=1) == good
    job = service.jobs[bad]
    assert job.status == 'error'
    assert job.error == ('could not be scheduled or claimed: OverflowError: '
                         'cannot convert float infinity to integer')


def test_times_of_a_run_come_from_the_run(service, tasks):
    clock = [100.0]
    service.clock = lambda: clock[0]

    def slow(input):
        clock[0] += 8
        raise zodbtasks.TaskError('too slow')
    zope.component.provideUtility(zodbtasks.SimpleTask(slow), name='slow')
    jobid = service.add('slow', None, retries=1, retryDelay=2)
    assert service.processNext()
    job = service.jobs[jobid]
    assert (job.started, job.completed, job.scheduledFor) == (100, 108, 110)
    # An explicit now is the time used throughout.
    assert service.processNext(now=200)
    assert (job.started, job.completed) == (200, 200)


# -- workers ----------------------------------------------------------------

def test_a_worker_renews_the_lease_of_a_long_run(stored):
    """No heartbeat call in the task: the worker's own heartbeats keep
    its lease, so that a second worker never takes the job."""
    runs = []

    def long(service, jobid, input):
        runs.append(jobid)
        time.sleep(1.5)
        return 'done'
    register('long', long)
    jobid, = add(stored, 'long', None, leaseSeconds=0.6)
    first = SimpleProcessor(stored, 'app/tasks', waitTime=0.05)
    second = SimpleProcessor(stored, 'app/tasks', waitTime=0.05,
                             untilIdle=True)
    thread = threading.Thread(target=first, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while not runs and time.monotonic() < deadline:
            time.sleep(0.01)
        second()                    # polls until the job is done
    finally:
        first.stop()
        thread.join(WAIT)
    with opened(stored) as service:
        job = service.jobs[jobid]
        assert (job.status, job.attempts, runs) == ('completed', 1, [jobid])
        assert job.completed - job.started >= 1.5


def test_without_heartbeats_a_long_run_loses_its_lease(stored):
    """The same run with heartbeats off: the second worker takes it over,
    which is what the default prevents."""
    runs = []

    def long(service, jobid, input):
        runs.append(jobid)
        time.sleep(1.5)
    register('long', long)
    jobid, = add(stored, 'long', None, leaseSeconds=0.6, maxLostLeases=1)
    first = SimpleProcessor(stored, 'app/tasks', waitTime=0.05,
                            heartbeatInterval=None)
    second = SimpleProcessor(stored, 'app/tasks', waitTime=0.05,
                             untilIdle=True, heartbeatInterval=None)
    thread = threading.Thread(target=first, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while not runs and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.7)
        second()
    finally:
        first.stop()
        thread.join(WAIT)
    with opened(stored) as service:
        job = service.jobs[jobid]
        assert job.status == 'error'
        assert 'lost their lease 1 times' in job.error


def test_a_run_past_its_timeout_fails_and_its_late_outcome_is_discarded(
        stored, caplog):
    register('sleepy', lambda service, jobid, input: time.sleep(1.0) or 'ok')
    jobid, = add(stored, 'sleepy', None, timeout=0.3)
    with caplog.at_level(logging.INFO):
        SimpleProcessor(stored, 'app/tasks', waitTime=0.05,
                        untilIdle=True)()
    with opened(stored) as service:
        job = service.jobs[jobid]
        assert (job.status, job.error, job.output) == (
            'error', 'timed out after 0.3 s', None)
    assert ('discarded the late outcome of job %s: it timed out after 0.3 s'
            % jobid) in caplog.text


def test_a_worker_gives_back_a_job_whose_task_it_does_not_know(
        stored, caplog):
    with opened(stored, commit=True) as service:
        register('elsewhere', lambda service, jobid, input: 'ran')
        jobid = service.add('elsewhere', None)
    zope.component.getGlobalSiteManager().unregisterUtility(
        provided=ITask, name='elsewhere')
    proc = SimpleProcessor(stored, 'app/tasks', waitTime=0.05)
    with caplog.at_level(logging.WARNING):
        proc.processNext()
    with opened(stored) as service:
        job = service.jobs[jobid]
        assert (job.status, job.waitingForTask, job.attempts) == (
            'queued', 'elsewhere', 0)
        assert job.scheduledFor is not None
    assert 'gave back job %s' % jobid in caplog.text
    assert proc.stats == {'missing task': 1}


def test_stopping_gives_back_the_claims_not_begun_at_once(stored):
    started = threading.Event()

    def first(service, jobid, input):
        if input == 0:
            started.set()
            time.sleep(0.3)
        return input
    register('t', first)
    ids = add(stored, 't', *range(6))
    proc = SimpleProcessor(stored, 'app/tasks', waitTime=0.05, batch=8,
                           batchBelow=60)
    proc._batch = 6
    thread = threading.Thread(target=proc, daemon=True)
    thread.start()
    assert started.wait(WAIT)
    proc.stop()
    thread.join(WAIT)
    assert not thread.is_alive()
    with opened(stored) as service:
        assert [service.getStatus(i) for i in ids] == (
            ['completed'] + ['queued'] * 5)
        assert [service.jobs[i].attempts for i in ids] == [1] + [0] * 5
        # Given back in their order.
        assert [service.claimNextJob(now=time.time()) for _ in ids[1:]] \
            == ids[1:]


@pytest.mark.parametrize('limit', [0, 1, 3])
def test_no_more_outcomes_wait_unrecorded_than_allowed(stored, limit):
    seen = []
    procs = []

    def look(service, jobid, input):
        seen.append(len(procs[0]._unrecorded))
    register('look', look)
    add(stored, 'look', *range(40))
    proc = SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                           batchBelow=60, maxUnrecorded=limit,
                           settleWithin=60)
    procs.append(proc)
    proc()
    assert len(seen) == 40
    assert max(seen) == limit           # waiting while a run goes on
    assert proc.stats == {'completed': 40}


def test_a_multi_processor_keeps_to_the_limit_too(stored):
    seen = []
    procs = []
    lock = threading.Lock()

    def look(service, jobid, input):
        with lock:
            seen.append(len(procs[0]._unrecorded))   # waiting or in a commit
    register('look', look)
    add(stored, 'look', *range(60))
    proc = MultiProcessor(stored, 'app/tasks', waitTime=0.01, maxThreads=3,
                          untilIdle=True, batchBelow=60, maxUnrecorded=4,
                          settleWithin=60)
    procs.append(proc)
    proc()
    assert len(seen) == 60
    # No run begins while more than 4 are unrecorded; a run that began may
    # see the outcomes that the other threads added since, one each.
    assert max(seen) <= 4 + 3 - 1
    assert proc.stats == {'completed': 60}


# -- values that would poison the indexes, given to the service itself -----

@pytest.mark.parametrize('name, value', [
    ('leaseSeconds', float('inf')), ('leaseSeconds', 0),
    ('resultTTL', float('nan')), ('missingTaskDelay', -1),
    ('missingTaskTimeout', 1e300)])
def test_a_bad_setting_of_the_service_is_refused(service, name, value):
    before = getattr(service, name)
    with pytest.raises((TypeError, ValueError), match=name):
        setattr(service, name, value)
    assert getattr(service, name) == before
    assert name not in service.__dict__


def test_settings_of_the_service_are_stored(db):
    import transaction
    with db.transaction() as conn:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
        service.leaseSeconds = 5
        service.resultTTL = 7
    with db.transaction() as conn:
        service = conn.root()['tasks']
        assert (service.leaseSeconds, service.resultTTL) == (5, 7)
        service.resultTTL = None
    with db.transaction() as conn:
        assert conn.root()['tasks'].resultTTL is None
    transaction.abort()


def test_a_heartbeat_refuses_a_bad_length(service):
    jobid = service.add('echo', 'x')
    (got, lease), = claimed(service, 0)
    expires = lease.expires
    with pytest.raises(ValueError, match='lease'):
        service.heartbeat(jobid, lease.token, now=1, seconds=float('inf'))
    assert lease.expires == expires
    assert service.heartbeat(jobid, lease.token, now=1) == 61


def test_a_retry_with_a_bad_delay_follows_the_job_policy(service):
    def task(input):
        raise zodbtasks.Retry('again', delay=float('inf'))
    zope.component.provideUtility(zodbtasks.SimpleTask(task), name='again')
    jobid = service.add('again', None, retries=2, retryDelay=5)
    assert service.processNext(now=100)
    job = service.jobs[jobid]
    assert (job.status, job.scheduledFor) == ('retrying', 105)
    assert 'its Retry delay was refused' in job.error
    assert service.claimNextJob(now=106) == jobid


# -- a worker whose view of the database lags ---------------------------------

@pytest.fixture
def lagging(tmp_path, tasks):
    """Two connections to one FileStorage, with the job ``jobid`` claimed by
    worker 'a' (lease of 3 s, from 0) through the first."""
    import ZODB
    import ZODB.FileStorage
    import transaction
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    with db.transaction() as conn:
        conn.root()['tasks'] = zodbtasks.TaskService()
        conn.root()['tasks'].add('echo', 1, now=0)
    pair = []
    for _ in range(2):
        tm = transaction.TransactionManager()
        pair.append((db.open(transaction_manager=tm), tm))
    yield db, pair
    for conn, tm in pair:
        tm.abort()
        conn.close()
    db.close()


def _service(conn, tm):
    tm.begin()
    return conn.root()['tasks']


@pytest.mark.parametrize('action', ['markStarted', 'heartbeat'])
def test_a_lagging_worker_cannot_start_or_renew_a_claim_taken_from_it(
        lagging, action):
    import ZODB.POSException
    db, [(a, tmA), (b, tmB)] = lagging
    service = _service(a, tmA)
    [jobid] = service.claimJobs(0, 1, 'a', lease=3, start=0)
    token = service.jobs[jobid].lease.token
    tmA.commit()
    # Worker a's next transaction starts before worker b takes the expired
    # claim: a still sees its lease.
    stale = _service(a, tmA)
    assert stale.jobs[jobid].lease.token == token
    fresh = _service(b, tmB)
    assert fresh.claimNextJob(now=10, worker='b', lease=3) == jobid
    tmB.commit()
    getattr(stale, action)(jobid, token, now=10)
    with pytest.raises(ZODB.POSException.ConflictError):
        tmA.commit()
    tmA.abort()
    with pytest.raises(LeaseLost):
        getattr(_service(a, tmA), action)(jobid, token, now=10)
    tmA.abort()
    assert _service(b, tmB).jobs[jobid].lease.worker == 'b'


def test_a_lagging_worker_cannot_take_a_lease_renewed_meanwhile(lagging):
    import ZODB.POSException
    db, [(a, tmA), (b, tmB)] = lagging
    service = _service(a, tmA)
    [jobid] = service.claimJobs(0, 1, 'a', lease=3, start=1)
    tmA.commit()
    token = _service(a, tmA).jobs[jobid].lease.token
    tmA.abort()
    # b looks before a renews, and claims after the old end.
    stale = _service(b, tmB)
    stale.jobs[jobid].lease.expires
    _service(a, tmA).heartbeat(jobid, token, now=2, seconds=3)
    tmA.commit()
    assert stale.claimNextJob(now=4, worker='b') == jobid
    with pytest.raises(ZODB.POSException.ConflictError):
        tmB.commit()
    tmB.abort()
    # Seen afresh, the lease lasts until 5: nothing to claim, and a keeps it.
    assert _service(b, tmB).claimNextJob(now=4, worker='b') is None
    tmB.abort()
    service = _service(a, tmA)
    assert service.checkLease(jobid, token).expires == 5
    assert service.jobs[jobid].lostLeases == 0


def test_a_cancelled_run_cannot_be_renewed_from_a_lagging_view(lagging):
    import ZODB.POSException
    db, [(a, tmA), (b, tmB)] = lagging
    service = _service(a, tmA)
    [jobid] = service.claimJobs(0, 1, 'a', lease=3, start=1)
    tmA.commit()
    stale = _service(a, tmA)
    token = stale.jobs[jobid].lease.token
    _service(b, tmB).cancel(jobid, now=1)
    tmB.commit()
    stale.heartbeat(jobid, token, now=1)
    with pytest.raises(ZODB.POSException.ConflictError):
        tmA.commit()


def test_a_worker_never_runs_a_claim_whose_lease_it_lost(stored):
    from zodbtasks.heartbeats import Claim
    ran = []
    register('note', lambda service, jobid, input: ran.append(input))
    [jobid] = add(stored, 'note', 1)
    with opened(stored, commit=True) as service:
        [jobid] = service.claimJobs(0, 1, 'w', lease=60, start=1)
        token = service.jobs[jobid].lease.token
    processor = SimpleProcessor(stored, ['app', 'tasks'], clock=lambda: 1)
    claim = Claim(jobid, token, 60, 60)
    processor._beats.lose(claim)
    assert processor._runJob(claim) is None
    assert ran == []
    with opened(stored) as service:
        assert service.getStatus(jobid) == 'processing'


@pytest.mark.parametrize('most', [None, 3])
def test_one_claim_recovers_every_expired_lease(service, most):
    ids = [service.add('echo', n, now=0, maxLostLeases=most)
           for n in range(3)]
    assert sorted(service.claimJobs(0, 3, 'a', lease=3, start=3)) \
        == sorted(ids)
    first = service.claimNextJob(now=10, worker='b')
    assert first in ids
    # The other two lost leases were taken back by the same claim.
    for jobid in set(ids) - {first}:
        job = service.jobs[jobid]
        assert (job.status, job.lostLeases, job.lease) == ('queued', 1, None)
