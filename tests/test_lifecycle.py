"""Retries, misfires, pausing, expiry, events and declared tasks: edge cases."""
import persistent
import pytest
import transaction
import zope.component
import zope.event
import ZODB
import ZODB.FileStorage
from ZODB.POSException import ConflictError

import zodbtasks
from zodbtasks import decorators
from zodbtasks import events


@pytest.fixture
def seen():
    found = []
    zope.event.subscribers.append(found.append)
    yield found
    zope.event.subscribers.remove(found.append)


@pytest.mark.parametrize('options, error, message', [
    (dict(retries=-1), ValueError, 'retries.*-1'),
    (dict(retries=1.5), TypeError, 'retries.*1.5'),
    (dict(retryDelay=-5), ValueError, 'retryDelay.*-5'),
    (dict(retryBackoff=0.5), ValueError, 'retryBackoff.*0.5'),
    (dict(ttl='1d'), TypeError, "ttl.*'1d'"),
    (dict(misfire='skip'), TypeError, 'unknown job option.*misfire'),
])
def test_bad_options_of_a_plain_job(service, options, error, message):
    with pytest.raises(error, match=message):
        service.add('echo', **options)
    assert len(service.jobs) == 0


@pytest.mark.parametrize('options, error, message', [
    (dict(misfire='sometimes'), ValueError,
     "misfire must be one of 'coalesce', 'all', 'skip', not 'sometimes'"),
    (dict(overlap='queue'), ValueError, "overlap.*'queue'"),
    (dict(catchUp=0), ValueError, 'catchUp.*0'),
    (dict(maxRuns=0), ValueError, 'maxRuns.*0'),
])
def test_bad_options_of_a_repeating_job(service, options, error, message):
    with pytest.raises(error, match=message):
        service.addCronJob('echo', minute=(0,), **options)
    assert len(service.jobs) == 0


def test_a_delayed_job_takes_no_repeating_options(service):
    with pytest.raises(TypeError, match='misfire'):
        service.addCronJob('echo', delay=5, misfire='skip')


def test_retry_delays_grow_and_stop_at_the_bound(service):
    jobid = service.add('fail', retries=4, retryDelay=10, retryBackoff=3,
                        retryMaxDelay=100, now=0)
    dues = []
    now = 0
    for _ in range(4):
        assert service.processNext(now=now)
        now = service.jobs[jobid].scheduledFor
        dues.append(now)
    assert dues == [10, 10 + 30, 40 + 90, 130 + 100]
    assert service.processNext(now=now)
    job = service.jobs[jobid]
    assert (job.status, job.attempts, len(job.failures)) == ('error', 5, 5)


def test_a_retry_is_skipped_when_the_next_regular_run_comes_first(service):
    jobid = service.addCronJob('fail', minute=(0, 1), retries=3,
                               retryDelay=5000, now=0)
    service.processNext(now=0)
    assert service.processNext(now=60)
    job = service.jobs[jobid]
    # The retry would be due at 5060, after the regular run at 3600.
    assert (job.status, job.scheduledFor, job.retried) == ('cronjob', 3600, 0)


def test_pausing_a_running_cron_job_holds_it_after_the_run(service):
    jobid = service.addCronJob('echo', minute=(0,), now=0)
    service.processNext(now=0)
    assert service.claimNextJob(now=3600) == jobid
    token = service.jobs[jobid].lease.token
    service.pause(jobid)
    assert service.getStatus(jobid) == 'processing'
    assert service.processNext(now=3610, jobid=jobid, token=token)
    job = service.jobs[jobid]
    assert (job.status, job.pausedFrom) == ('paused', 'cronjob')
    assert not service.processNext(now=10 ** 6)
    service.resume(jobid, now=10 ** 6)
    assert job.status == 'cronjob' and job.scheduledFor > 10 ** 6


def test_resuming_a_running_job_before_its_run_ends(service):
    jobid = service.addCronJob('echo', minute=(0,), now=0)
    service.processNext(now=0)
    service.claimNextJob(now=3600)
    service.pause(jobid)
    service.resume(jobid, now=3601)
    assert service.jobs[jobid].scheduledFor == 7200
    token = service.jobs[jobid].lease.token
    service.processNext(now=3602, jobid=jobid, token=token)
    assert service.getStatus(jobid) == 'cronjob'


def test_pause_refuses_finished_and_running_one_off_jobs(service):
    done = service.add('echo')
    service.processNext(now=0)
    with pytest.raises(ValueError, match="'completed'"):
        service.pause(done)
    running = service.add('echo')
    service.claimNextJob(now=1)
    with pytest.raises(ValueError, match='runs only once'):
        service.pause(running)


def test_run_now_refuses_jobs_that_cannot_run(service):
    later = service.add('echo', startLater=True)
    with pytest.raises(ValueError, match="'start later'"):
        service.runNow(later)
    paused = service.addCronJob('echo', minute=(0,))
    service.pause(paused)
    with pytest.raises(ValueError, match="'paused'"):
        service.runNow(paused)


def test_a_lost_at_most_once_cron_run_fails_but_the_schedule_goes_on(
        service, tasks):
    jobid = service.addCronJob('echo', minute=(0,), atMostOnce=True,
                               leaseSeconds=30, now=0)
    service.processNext(now=0)
    service.claimNextJob(now=3600, worker='w')
    assert service.claimNextJob(now=3700) is None
    job = service.jobs[jobid]
    assert job.status == 'cronjob' and job.scheduledFor == 7200
    assert job.error == 'the worker w lost its lease on this job at 3630'
    assert job.log[-1] == job.error


def test_claims_remove_expired_jobs_a_batch_at_a_time(service):
    from zodbtasks import claims as module
    service.resultTTL = 10
    for n in range(module.PURGE_PER_CLAIM + 20):
        service.add('echo', now=0)
    service.process(now=0)
    assert service.claimNextJob(now=100) is None
    assert len(service.jobs) == 20
    assert service.purgeExpired(now=100) == 20
    assert len(service.jobs) == 0


def test_clean_and_expiry_do_not_trip_over_each_other(service):
    jobid = service.add('echo', ttl=5, now=0)
    service.processNext(now=0)
    service.clean()
    assert service.purgeExpired(now=100) == 0
    assert jobid not in service.jobs


def test_events_carry_what_happened(service, seen):
    failing = service.add('fail', 'x', now=0)
    service.processNext(now=0)
    cancelled = service.add('echo', now=1)
    service.cancel(cancelled, now=2)
    hourly = service.addCronJob('echo', minute=(0,), misfire='skip', now=0)
    service.processNext(now=3)
    service.processNext(now=3 * 3600 + 500)
    by_type = {}
    for event in seen:
        by_type.setdefault(type(event), []).append(event)
    failed, = by_type[events.JobFailed]
    assert (failed.job.id, failed.error, failed.now) == (
        failing, 'it failed: x', 0)
    assert [e.job.id for e in by_type[events.JobCancelled]] == [cancelled]
    missed, = by_type[events.JobMissed]
    assert (missed.job.id, missed.count, missed.action) == (hourly, 3,
                                                             'skipped')
    assert [e.job.id for e in by_type[events.JobQueued]] == [
        failing, cancelled, hourly]


def test_a_dotted_name_that_cannot_be_imported_is_refused(service):
    service.trustedModules = ['no', 'os']
    with pytest.raises(ValueError, match="'no.such.module'.*imported"):
        service.add('no.such.module')
    with pytest.raises(ValueError, match="'os.path.sep'"):
        service.add('os.path.sep')   # not callable


class Box(persistent.Persistent):

    def double(self, n):
        return 2 * n


def test_a_persistent_method_task_survives_the_database(tmp_path):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    with db.transaction() as conn:
        root = conn.root()
        root['box'] = box = Box()
        root['tasks'] = service = zodbtasks.TaskService()
        service.trustedModules = [Box.__module__]
        jobid = service.add(box.double, 21, now=0)
    db.cacheMinimize()
    with db.transaction() as conn:
        service = conn.root()['tasks']
        assert service.jobs[jobid].target is conn.root()['box']
        assert service.processNext(now=1)
        assert service.getResult(jobid) == 42
    db.close()


def test_a_method_that_is_gone_fails_its_job(service):
    service.trustedModules = [Box.__module__]
    box = Box()
    jobid = service.add(box.double, 1)
    service.jobs[jobid].task = 'triple'
    service.processNext(now=0)
    assert 'has no method' in service.getError(jobid)


@pytest.fixture
def declared():
    saved = dict(decorators.declarations)
    decorators.declarations.clear()
    yield decorators.declarations
    decorators.declarations.clear()
    decorators.declarations.update(saved)


def test_syncing_from_two_processes_at_once_makes_one_job(tmp_path, declared):
    @decorators.periodic_task(seconds=60, name='beat')
    def beat():
        return 'beat'

    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    with db.transaction() as conn:
        conn.root()['tasks'] = zodbtasks.TaskService()
    tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
    c1, c2 = db.open(tm1), db.open(tm2)
    decorators.sync(c1.root()['tasks'], now=0)
    decorators.sync(c2.root()['tasks'], now=0)
    tm1.commit()
    with pytest.raises(ConflictError):
        tm2.commit()
    tm2.abort()
    # The loser retries, as every ZODB application does, and finds it done.
    for attempt in tm2.attempts():
        with attempt:
            assert decorators.sync(c2.root()['tasks'], now=0) == ([], [], [])
    c1.close()
    c2.close()
    with db.transaction() as conn:
        service = conn.root()['tasks']
        assert [job.task for job in service.jobs.values()] == ['beat']
    db.close()


def test_start_now_runs_a_periodic_task_at_the_first_tick(service, declared):
    ran = []

    @decorators.periodic_task(seconds=100, start_now=True, name='early')
    def early():
        ran.append(1)

    decorators.sync(service, now=50)
    assert service.processNext(now=50)
    jobid = service.declaredJobs['early']
    assert ran == [1] and service.jobs[jobid].scheduledFor == 150


def test_retry_gives_a_failed_or_cancelled_job_another_run(service, tasks):
    failed = service.add('fail', 'f', now=0)
    service.processNext(now=0)
    cancelled_cron = service.addCronJob('echo', minute=(0,), now=0)
    service.cancel(cancelled_cron)
    service.retry(failed, now=10)
    service.retry(cancelled_cron, now=10)
    assert service.getStatus(failed) == 'queued'
    assert service.getStatus(cancelled_cron) == 'cronjob'
    service.process(now=10)
    assert service.getStatus(failed) == 'error'
    assert service.jobs[failed].attempts == 2
    assert service.jobs[cancelled_cron].scheduledFor == 3600
    service.clean()
    assert cancelled_cron in service.jobs and failed not in service.jobs
    done = service.add('echo')
    service.processNext(now=11)
    with pytest.raises(ValueError, match="'completed'"):
        service.retry(done)


def test_a_job_log_keeps_its_last_64_kib_and_says_what_it_dropped(service):
    from zodbtasks.context import LOG_LIMIT
    from zodbtasks.context import current

    def chatty(input):
        for n in range(input):
            current().log('line %05d %s' % (n, 'x' * 90))

    zope.component.provideUtility(zodbtasks.SimpleTask(chatty), name='chatty')
    jobid = service.add('chatty', 2000, now=0)
    service.processNext(now=0)
    log = service.jobs[jobid].log
    assert sum(len(line) + 1 for line in log[1:]) <= LOG_LIMIT
    dropped = int(log[0].split()[0][1:])
    assert log[0] == '[%d earlier lines dropped]' % dropped
    assert dropped + len(log) - 1 == 2000
    assert log[-1].startswith('line 01999 ')
    assert log[1] == 'line %05d %s' % (dropped, 'x' * 90)
    # Another job has a log of its own.
    again = service.add('chatty', 10, now=2)
    service.processNext(now=2)
    assert len(service.jobs[again].log) == 10


def test_a_single_huge_log_line_is_cut_to_the_limit(service):
    from zodbtasks.context import LOG_LIMIT
    from zodbtasks.context import current

    def shout(input):
        current().log('y' * (3 * LOG_LIMIT))

    zope.component.provideUtility(zodbtasks.SimpleTask(shout), name='huge')
    jobid = service.add('huge', now=0)
    service.processNext(now=0)
    log = service.jobs[jobid].log
    assert len(log) == 1 and len(log[0]) == LOG_LIMIT - 1
