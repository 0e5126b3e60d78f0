"""The service's contract: queueing, running, statuses, errors and bad input."""
import logging
import pickle
import random
import threading

import pytest
import transaction
import zope.component
import ZODB
import ZODB.FileStorage
from zope.interface.verify import verifyObject

import zodbtasks
from zodbtasks import interfaces
from zodbtasks._testing import waitFor
from zodbtasks.service import MAX_JOB_ID


def test_service_and_jobs_provide_their_interfaces(service):
    assert verifyObject(interfaces.ITaskService, service)
    assert verifyObject(interfaces.IScheduledTaskService, service)
    jobid = service.add('echo', 1)
    assert verifyObject(interfaces.IJob, service.jobs[jobid])
    cronid = service.addCronJob('echo', minute=(5,))
    assert verifyObject(interfaces.ICronJob, service.jobs[cronid])


def test_jobs_run_in_the_order_they_were_added(service, tasks):
    service.clock = lambda: 1000.0   # a clock that stands still
    ids = [service.add('echo', n) for n in range(20)]
    assert service.process(now=1000) is None      # as in z3c.taskqueue
    assert [input for _, input in tasks] == list(range(20))
    assert [service.getResult(i) for i in ids] == list(range(20))


def test_ids_are_random_ints_that_fit_json(service):
    ids = {service.add('echo') for _ in range(200)}
    assert len(ids) == 200
    assert all(isinstance(i, int) and 1 <= i <= MAX_JOB_ID for i in ids)
    # spread over the whole range, not a counter
    assert max(ids) - min(ids) > MAX_JOB_ID // 2


def test_a_job_is_processing_while_its_task_runs(service):
    seen = {}

    def look(svc, jobid, input):
        job = svc.jobs[jobid]
        seen.update(status=job.status, started=job.started)
        return 'done'

    zope.component.provideUtility(look, interfaces.ITask, name='look')
    jobid = service.add('look')
    assert service.processNext(now=42)
    assert seen == {'status': 'processing', 'started': 42}
    job = service.jobs[jobid]
    assert (job.status, job.completed, job.output) == ('completed', 42, 'done')


def test_a_task_error_fails_the_job_with_its_message(service):
    jobid = service.add('fail', 'x')
    assert service.processNext(now=1)
    assert service.getStatus(jobid) == 'error'
    assert service.getError(jobid) == 'it failed: x'
    assert 'TaskError: it failed: x' in service.jobs[jobid].traceback


def test_any_exception_fails_the_job_without_reaching_the_caller(service):
    jobid = service.add('crash')
    assert service.processNext(now=1)
    assert service.getStatus(jobid) == 'error'
    assert service.getError(jobid) == 'ZeroDivisionError: division by zero'
    job = service.jobs[jobid]
    assert job.traceback.startswith('Traceback (most recent call last)')
    assert 'return 1 / 0' in job.traceback


def test_a_result_that_cannot_be_stored_fails_the_job(service):
    zope.component.provideUtility(
        zodbtasks.SimpleTask(lambda input: threading.Lock()), name='lock')
    jobid = service.add('lock')
    service.processNext(now=1)
    assert service.getStatus(jobid) == 'error'
    assert 'lock' in service.getError(jobid)
    assert service.getResult(jobid) is None


def test_a_task_missing_when_the_job_runs_fails_the_job_by_name(service):
    jobid = service.add('echo')
    zope.component.getSiteManager().unregisterUtility(
        provided=interfaces.ITask, name='echo')
    assert service.processNext(now=1)
    assert service.getStatus(jobid) == 'error'
    assert "'echo'" in service.getError(jobid)
    assert 'no task is registered' in service.getError(jobid)


def test_transient_errors_reach_the_caller_so_the_transaction_is_retried(
        service):
    from ZODB.POSException import ConflictError

    def conflict(input):
        raise ConflictError()

    zope.component.provideUtility(zodbtasks.SimpleTask(conflict),
                                  name='conflict')
    service.add('conflict')
    with pytest.raises(ConflictError):
        service.processNext(now=1)


def test_a_failed_task_leaves_no_partial_changes(db, tasks):
    def halfway(svc, jobid, input):
        svc._p_jar.root()['touched'] = True
        raise zodbtasks.TaskError('stopped halfway')

    zope.component.provideUtility(halfway, interfaces.ITask, name='halfway')
    with db.transaction() as conn:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
        jobid = service.add('halfway')
    with db.transaction() as conn:
        assert conn.root()['tasks'].processNext(now=5)
    with db.transaction() as conn:
        assert 'touched' not in conn.root()
        assert conn.root()['tasks'].getError(jobid) == 'stopped halfway'


# -- bad input is refused before anything is written ---------------------------

def test_adding_an_unknown_task_lists_the_registered_ones(service):
    with pytest.raises(ValueError, match=r"'nope'.*'crash', 'echo', 'fail'"):
        service.add('nope')
    with pytest.raises(ValueError, match="'nope'"):
        service.addCronJob('nope', minute=(1,))
    assert len(service.jobs) == 0


def test_an_input_that_cannot_be_pickled_is_refused_at_add(service):
    with pytest.raises(TypeError, match='picklable'):
        service.add('echo', {'lock': threading.Lock()})
    with pytest.raises(TypeError, match='picklable'):
        service.addCronJob('echo', lambda: None, hour=(1,))
    assert len(service.jobs) == 0


@pytest.mark.parametrize('kw, error, message', [
    (dict(minute=(60,)), ValueError, 'minute.*60'),
    (dict(hour=(-1,)), ValueError, 'hour.*-1'),
    (dict(dayOfMonth=(0,)), ValueError, 'day.*0'),
    (dict(month=(13,)), ValueError, 'month.*13'),
    (dict(dayOfWeek=(7,)), ValueError, 'day.*7'),
    (dict(minute=('5',)), TypeError, "minute.*'5'"),
    (dict(minute=5), TypeError, 'minute.*5'),
    (dict(hour=(1.5,)), TypeError, 'hour.*1.5'),
    (dict(dayOfMonth=(31,), month=(2,)), ValueError, 'never'),
    (dict(delay=-1), ValueError, 'delay.*-1'),
    (dict(delay='10'), TypeError, "delay.*'10'"),
    (dict(delay=10, minute=(1,)), ValueError, 'minute'),
])
def test_bad_schedules_are_refused_with_the_bad_value(service, kw, error,
                                                      message):
    with pytest.raises(error, match=message):
        service.addCronJob('echo', **kw)
    assert len(service.jobs) == 0
    assert not service._unplaced


def test_a_bad_update_leaves_the_job_as_it_was(service):
    jobid = service.addCronJob('echo', minute=(5,))
    job = service.jobs[jobid]
    with pytest.raises(ValueError, match='minute'):
        job.update(minute=(99,))
    assert job.minute == (5,)
    assert job.timeOfNextCall(0) == 300


def test_unknown_job_ids_raise_key_error_naming_them(service):
    for method in (service.getStatus, service.getResult, service.getError,
                   service.cancel, service.startJob, service.reschedule):
        with pytest.raises(KeyError, match='12345'):
            method(12345)


def test_a_bad_now_is_refused(service):
    service.add('echo')
    with pytest.raises(TypeError, match="now.*'soon'"):
        service.processNext('soon')
    with pytest.raises(TypeError, match='now.*True'):
        service.hasJobsWaiting(True)
    assert service.hasJobsWaiting(0)


# -- start later, cancel, reschedule, clean ------------------------------------

def test_start_later(service):
    jobid = service.add('echo', 'x', startLater=True)
    assert service.getStatus(jobid) == 'start later'
    assert not service.processNext(now=0)
    assert service.startJob(jobid) is True
    assert service.getStatus(jobid) == 'queued'
    # As in z3c.taskqueue: a job not waiting to start is left alone.
    assert service.startJob(jobid) is False
    assert service.getStatus(jobid) == 'queued'
    assert service.processNext(now=0)
    assert service.getStatus(jobid) == 'completed'
    assert service.startJob(jobid) is False
    assert service.getStatus(jobid) == 'completed'
    assert not service.processNext(now=0)


def test_start_later_for_a_cron_job(service):
    jobid = service.addCronJob('echo', minute=(1,), startLater=True)
    assert service.getStatus(jobid) == 'start later'
    assert not service.processNext(now=0)
    assert service.processNext(now=60) is False
    service.startJob(jobid)
    assert service.getStatus(jobid) == 'cronjob'
    assert not service.processNext(now=100)   # placed: due at 1:01
    assert service.processNext(now=3660)


def test_cancel_removes_a_waiting_job_and_ignores_a_finished_one(service):
    cron = service.addCronJob('echo', minute=(1,))
    assert not service.processNext(now=0)   # places the cron job
    done = service.add('echo')
    assert service.processNext(now=1)
    assert service.getStatus(done) == 'completed'
    queued = service.add('echo')
    for jobid in (queued, cron, done):
        service.cancel(jobid)
    assert service.getStatus(queued) == 'cancelled'
    assert service.getStatus(cron) == 'cancelled'
    assert service.getStatus(done) == 'completed'
    assert not service.hasJobsWaiting(now=10 ** 9)
    assert not service.processNext(now=10 ** 9)


def test_a_job_cancelled_while_it_runs_finishes_but_does_not_run_again(
        service):
    def selfcancel(svc, jobid, input):
        svc.cancel(jobid)
        return 'ran'

    zope.component.provideUtility(selfcancel, interfaces.ITask, name='self')
    jobid = service.addCronJob('self', minute=(0,))
    service.processNext(now=0)
    assert service.processNext(now=3600)
    assert service.getStatus(jobid) == 'cancelled'
    assert service.getResult(jobid) == 'ran'
    assert not service.processNext(now=7200)


def test_reschedule_refuses_plain_and_finished_jobs(service):
    plain = service.add('echo')
    with pytest.raises(ValueError, match='not a cron job'):
        service.reschedule(plain)
    cron = service.addCronJob('echo', minute=(1,))
    service.cancel(cron)
    with pytest.raises(ValueError, match="'cancelled'"):
        service.reschedule(cron)


def test_clean_removes_only_the_statuses_asked_for(service):
    ok = service.add('echo')
    service.add('fail')
    gone = service.add('echo')
    waiting = service.add('echo', startLater=True)
    service.cancel(gone)
    service.process(now=1)
    service.clean(status=['error'])
    assert set(service.jobs) == {ok, gone, waiting}
    service.clean()
    assert set(service.jobs) == {waiting}
    with pytest.raises(ValueError, match="'queued'"):
        service.clean(status=['queued'])


# -- cron and delayed jobs -----------------------------------------------------

def test_the_first_time_is_fixed_at_the_first_tick(service):
    jobid = service.addCronJob('echo', delay=10)
    assert service.jobs[jobid].scheduledFor is None
    assert not service.processNext(now=100)
    assert service.jobs[jobid].scheduledFor == 110
    assert not service.processNext(now=109)
    assert service.processNext(now=110)
    assert service.getStatus(jobid) == 'completed'


def test_a_failing_cron_job_keeps_its_schedule(service, tasks):
    jobid = service.addCronJob('fail', 'c', minute=(0,))
    service.processNext(now=0)
    assert service.processNext(now=3600)
    assert service.getStatus(jobid) == 'cronjob'
    assert service.getError(jobid) == 'it failed: c'
    assert service.jobs[jobid].scheduledFor == 7200
    assert service.processNext(now=7200)
    assert len(tasks) == 2


def test_a_late_tick_runs_a_cron_job_once_and_schedules_after_now(service,
                                                                  tasks):
    service.addCronJob('echo', minute=(0, 30))
    service.processNext(now=0)
    service.process(now=10 * 3600 + 5)
    assert len(tasks) == 1
    assert not service.hasJobsWaiting(now=10 * 3600 + 1799)
    assert service.hasJobsWaiting(now=10 * 3600 + 1800)


def test_has_jobs_waiting_never_writes(db, tasks):
    with db.transaction() as conn:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
        service.addCronJob('echo', delay=5)
        service.add('echo', startLater=True)
    conn = db.open()
    service = conn.root()['tasks']
    assert not service.hasJobsWaiting(now=100)
    assert not conn._registered_objects
    assert service.processNext(now=100) is False
    assert conn._registered_objects
    transaction.abort()
    conn.close()


# -- persistence and concurrency -----------------------------------------------

def test_jobs_and_schedules_survive_a_round_trip_through_the_database(db):
    def echo(input):
        return input
    zope.component.provideUtility(zodbtasks.SimpleTask(echo), name='echo')
    with db.transaction() as conn:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
        cron = service.addCronJob('echo', 'c', hour=(2,))
        plain = service.add('echo', 'p')
    db.cacheMinimize()
    with db.transaction() as conn:
        service = conn.root()['tasks']
        assert service.processNext(now=0)          # the plain job
        assert service.getResult(plain) == 'p'
    db.cacheMinimize()
    with db.transaction() as conn:
        service = conn.root()['tasks']
        assert service.jobs[cron].scheduledFor == 7200
        assert service.processNext(now=7200)
        assert service.getResult(cron) == 'c'
        assert pickle.loads(pickle.dumps(service.jobs[cron].input)) == 'c'


def test_claiming_the_head_of_a_short_lane_and_adding_to_it_do_not_conflict(
        tmp_path, tasks):
    """A worker taking the only job of a lane while the application adds
    another to the same lane: both commit (BTrees would refuse to merge the
    two if the claim removed the first key of the lane's bucket)."""
    from zodbtasks.queues import LANE_SHIFT as _LANE_SHIFT
    random.seed(1)                    # lanes are random; repeatable runs
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    with db.transaction() as conn:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
        service.leaseSeconds = 3600   # no lease runs out in this test
    tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
    c1, c2 = db.open(tm1), db.open(tm2)
    sameLane = 0
    for n in range(100):
        tm1.begin()
        jobid = c1.root()['tasks'].add('echo', n, now=n)
        tm1.commit()
        tm1.begin()
        tm2.begin()
        s1, s2 = c1.root()['tasks'], c2.root()['tasks']
        lane = s1.jobs[jobid]._indexKey >> _LANE_SHIFT
        assert s1.claimNextJob(now=n, worker='w') == jobid
        added = s2.add('echo', -n, now=n)
        sameLane += s2.jobs[added]._indexKey >> _LANE_SHIFT == lane
        tm1.commit()
        tm2.commit()                  # would raise ConflictError
        tm1.begin()
        assert c1.root()['tasks'].claimNextJob(now=n, worker='w') == added
        tm1.commit()
    c1.close()
    c2.close()
    assert sameLane >= 3              # the case in point happened
    with db.transaction() as conn:
        service = conn.root()['tasks']
        assert len(service.jobs) == 200
        assert {service.getStatus(i) for i in service.jobs} == {'processing'}
        assert service.claimNextJob(now=100) is None
    db.close()


def test_two_connections_adding_jobs_at_once_do_not_conflict(tmp_path, tasks):
    # FileStorage, unlike MappingStorage, resolves conflicts in BTree buckets
    # as a production storage does.
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    # Ids and lanes are random. A bucket that splits still conflicts (about
    # one add in a hundred); a fixed seed makes the run repeatable.
    random.seed(2)
    with db.transaction() as conn:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
        for n in range(500):          # enough jobs for several buckets
            service.add('echo', n)
    tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
    c1, c2 = db.open(tm1), db.open(tm2)
    s1, s2 = c1.root()['tasks'], c2.root()['tasks']
    for n in range(50):
        ids = (s1.add('echo', 'one'), s2.add('echo', 'two'),
               s1.addCronJob('echo', hour=(1,)), s2.addCronJob('echo', hour=(1,)))
        tm1.commit()
        tm2.commit()                  # would raise ConflictError
    c1.close()
    c2.close()
    with db.transaction() as conn:
        service = conn.root()['tasks']
        assert len(service.jobs) == 700
        assert [service.getStatus(i) for i in ids] == [
            'queued', 'queued', 'cronjob', 'cronjob']
        service.process(now=0)
        assert sorted(job.status for job in service.jobs.values()).count(
            'completed') == 600
    db.close()


def test_an_index_entry_that_its_job_disowns_is_dropped_not_run(service):
    """Should a queue or schedule entry ever point at a job that waits
    elsewhere (or is gone), a claim drops it and goes on; it never claims
    the job a second time."""
    from zodbtasks.keys import QUEUE as _QUEUE, SCHEDULED as _SCHEDULED
    first = service.add('echo', 'first', now=0)
    second = service.add('echo', 'second', now=0)
    job = service.jobs[first]
    # A second queue entry for `first`, older than its own.
    n = job._indexKey >> 59
    lane = service._queue[n]
    lane[(n << 59) + 1] = first
    service._scheduled[5] = second          # and a stray schedule entry
    assert service.claimJobs(now=1, count=3) == [first, second]
    assert service.jobs[first].attempts == 1
    assert (n << 59) + 1 not in lane
    assert 5 not in service._scheduled


# -- as the reference packages had it ------------------------------------------

def test_a_zope_container_stores_the_service_itself(db, service):
    from zope.container.sample import SampleContainer
    from zope.location.interfaces import IContained
    from zope.proxy import isProxy
    assert interfaces.ITaskService.extends(IContained)
    folder = SampleContainer()
    folder['tasks'] = service
    # No ContainedProxy: the folder holds the service, which knows its place.
    assert folder['tasks'] is service and not isProxy(folder['tasks'])
    assert (service.__parent__, service.__name__) == (folder, 'tasks')


def test_a_contained_service_starts_and_stops_its_thread(db, tasks, caplog):
    from zope.container.btree import BTreeContainer
    from zodbtasks import threads
    with db.transaction() as conn:
        conn.root()['Application'] = app = BTreeContainer()
        app['site'] = BTreeContainer()
        app['site']['tasks'] = zodbtasks.TaskService()
        jobid = app['site']['tasks'].add('echo', 'in a thread')
    conn = db.open()
    try:
        service = conn.root()['Application']['site']['tasks']
        service.processorArguments = {'waitTime': 0.01}   # this copy only
        assert not service.isProcessing()
        with caplog.at_level(logging.INFO, 'zodbtasks'):
            assert service.startProcessing() is None
            assert service.isProcessing()
            # The thread is named as the reference packages named it.
            assert [t.name for t in threading.enumerate()
                    if t.name.startswith('remotetasks.')] == [
                        'remotetasks.site.tasks']
            waitFor(lambda: tasks == [('echo', 'in a thread')], 30,
                    'the job running')
            service.stopProcessing()
        assert not service.isProcessing()
        assert threads.running() == []
        assert [(r.name, r.getMessage()) for r in caplog.records
                if r.name == 'zodbtasks'] == [
                    ('zodbtasks', 'starting service site.tasks'),
                    ('zodbtasks', 'stopping service site.tasks')]
        # Stopping again does nothing, and says nothing.
        caplog.clear()
        assert service.stopProcessing() is None
        assert not caplog.records
    finally:
        threads.stopAll(30)
        transaction.abort()
        conn.close()
    with db.transaction() as conn:
        assert conn.root()['Application']['site']['tasks'].getStatus(
            jobid) == 'completed'


def test_the_processor_factory_defaults_to_the_simple_processor(db):
    from zodbtasks.processor import MultiProcessor
    from zodbtasks.processor import SimpleProcessor
    service = zodbtasks.TaskService()
    assert service.processorFactory is SimpleProcessor
    assert zodbtasks.TaskService.processorFactory is SimpleProcessor
    with db.transaction() as conn:
        conn.root()['tasks'] = service
        service.processorFactory = MultiProcessor
    with db.transaction() as conn:
        stored = conn.root()['tasks']
        assert stored.processorFactory is MultiProcessor
        with pytest.raises(TypeError, match="processorFactory.*'Multi'"):
            stored.processorFactory = 'Multi'
        assert stored.processorFactory is MultiProcessor
        stored.processorFactory = None          # back to the default
    with db.transaction() as conn:
        assert conn.root()['tasks'].processorFactory is SimpleProcessor
        assert 'processorFactory' not in conn.root()['tasks'].__dict__


def test_the_service_module_does_not_import_the_processor():
    import subprocess
    import sys
    code = ('import sys, zodbtasks, zodbtasks.service\n'
            'print(sorted(m for m in sys.modules if m in ('
            '"zodbtasks.processor", "zodbtasks.threads")))\n'
            'zodbtasks.TaskService().processorFactory\n'
            'print(sorted(m for m in sys.modules if m in ('
            '"zodbtasks.processor", "zodbtasks.threads")))\n')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split('\n')[:2] == [
        '[]', "['zodbtasks.processor', 'zodbtasks.threads']"]


def test_start_job_on_a_job_not_waiting_writes_nothing(service):
    queued = service.add('echo', now=0)
    later = service.add('echo', startLater=True, now=0)
    service._layout = 1             # data of an older layout ...
    assert service.startJob(queued, now=0) is False
    assert service._layout == 1     # ... not even upgraded by the question
    assert service.startJob(later, now=0) is True
    assert service._layout != 1
    with pytest.raises(KeyError, match='12345'):
        service.startJob(12345)
    with pytest.raises(ValueError, match='now'):
        service.startJob(queued, now=-1)


# -- zodbtasks.testing ---------------------------------------------------------

def test_the_stub_service_runs_only_stub_tasks_with_ids_in_sequence(tasks):
    from zodbtasks import testing
    stub = testing.TaskServiceStub()
    assert verifyObject(interfaces.ITaskService, stub)
    assert stub.getAvailableTasks() == {}        # the real tasks are unseen
    with pytest.raises(ValueError, match='^Task does not exist$'):
        stub.add('echo')
    zope.component.provideUtility(zodbtasks.SimpleTask(lambda input: input),
                                  testing.ITaskStub, name='echo')
    zope.component.provideUtility(testing.ExceptionTask('no luck'),
                                  testing.ITaskStub, name='boom')
    assert sorted(stub.getAvailableTasks()) == ['boom', 'echo']
    first, second = stub.add('echo', 'a', now=0), stub.add('boom', now=0)
    assert (first, second) == (1, 2)
    stub.cancel(404)                             # unknown: nothing happens
    stub.process(now=0)
    assert stub.getResult(first) == 'a'
    assert stub.getStatus(second) == 'error'
    assert stub.getError(second) == 'Exception: no luck'
    assert tasks == []                           # the real echo never ran
    assert stub.add('echo', now=0) == 3


def test_the_exception_task_raises_what_it_was_given():
    from zodbtasks import testing
    with pytest.raises(Exception, match='^An error occurred.$'):
        testing.ExceptionTask()(None, 1, None)
    with pytest.raises(KeyError, match='gone'):
        testing.ExceptionTask('gone', KeyError)(None, 1, None)
    with pytest.raises(TypeError, match='Exception subclass.*42'):
        testing.ExceptionTask('x', 42)
    with pytest.raises(TypeError, match='message.*str.*None'):
        testing.ExceptionTask(None)
