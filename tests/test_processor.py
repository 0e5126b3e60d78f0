"""Processors claim jobs in one transaction and run them in the next."""
import contextlib
import logging
import re
import random
import threading
import time

import persistent.mapping
import pytest
import transaction
import zope.component
from ZODB.POSException import ReadConflictError

import zodbtasks
from zodbtasks import processor as processing
from zodbtasks import writes
from zodbtasks._trees import ShardedSet
from zodbtasks._testing import waitFor
from zodbtasks.context import current
from zodbtasks.interfaces import ITask
from zodbtasks.interfaces import LeaseLost
from zodbtasks.processor import MultiProcessor
from zodbtasks.processor import SimpleProcessor

WAIT = 30   # seconds before a test gives up waiting for a thread


@contextlib.contextmanager
def opened(db, commit=False):
    """The service, in a connection and transaction of its own."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    tm.begin()
    try:
        yield conn.root()['app']['tasks']
        if commit:
            tm.commit()
    finally:
        tm.abort()
        conn.close()


@pytest.fixture
def stored(db):
    """A service stored at app/tasks in the database."""
    with db.transaction() as conn:
        conn.root()['app'] = persistent.mapping.PersistentMapping()
        conn.root()['app']['tasks'] = zodbtasks.TaskService()
    return db


def register(name, func):
    zope.component.provideUtility(func, ITask, name=name)


def add(db, task, *inputs, **options):
    with opened(db, commit=True) as service:
        return [service.add(task, i, **options) for i in inputs]


@pytest.fixture
def ran():
    """A log of (task, input) and a task 'note' that writes to it."""
    log = []
    register('note', lambda service, jobid, input: log.append(input) or input)
    return log


@pytest.fixture
def stopper():
    """Processor threads started by a test are stopped by it."""
    started = []
    yield started
    for thread, proc in started:
        proc.stop()
        thread.join(WAIT)
        assert not thread.is_alive()
    processing.stopAll(WAIT)


def start(stopper, proc):
    thread = threading.Thread(target=proc, daemon=True)
    stopper.append((thread, proc))
    thread.start()
    return thread


# -- the reference API -----------------------------------------------------

def test_simple_processor_runs_jobs_in_order_one_at_a_time(stored, ran):
    ids = add(stored, 'note', 'a', 'b', 'c')
    proc = SimpleProcessor(stored, 'app/tasks', waitTime=0.01)
    assert proc.hasJobsWaiting()
    assert proc.processNext()
    assert ran == ['a']
    proc.untilIdle = True
    proc()
    assert ran == ['a', 'b', 'c']
    assert not proc.hasJobsWaiting() and not proc.running
    with opened(stored) as service:
        assert [service.getStatus(i) for i in ids] == ['completed'] * 3
        assert [service.getResult(i) for i in ids] == ['a', 'b', 'c']
    assert proc.processNext() is False
    assert proc.stats == {'completed': 3}


def test_the_path_may_be_given_as_keys(stored, ran):
    add(stored, 'note', 1)
    assert SimpleProcessor(stored, ('app', 'tasks')).processNext()
    assert ran == [1]


@pytest.mark.parametrize('threads', [1, 3])
def test_one_at_a_time_means_never_two_at_once(stored, threads):
    """A processor runs at most one job per thread at once, and each job
    once. Every run waits for its peers, then lingers to let in a run that
    should not be there: a thread too many would show."""
    inside = set()
    ran = []
    most = [0]
    together = threading.Barrier(threads, timeout=WAIT)
    changed = threading.Condition()

    def task(service, jobid, input):
        with changed:
            assert jobid not in inside
            inside.add(jobid)
            ran.append(jobid)
            most[0] = max(most[0], len(inside))
            changed.notify_all()
        together.wait()
        with changed:
            changed.wait_for(lambda: len(inside) > threads, timeout=0.1)
            inside.remove(jobid)

    register('t', task)
    ids = add(stored, 't', *range(4 * threads))
    proc = MultiProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                          maxThreads=threads, clock=ticking(), batchBelow=60)
    proc()
    assert most == [threads]
    assert sorted(ran) == sorted(ids)
    assert proc.stats == {'completed': 4 * threads}


def test_a_claim_is_committed_before_the_job_runs(stored, ran):
    jobid, = add(stored, 'note', 'x')
    proc = SimpleProcessor(stored, 'app/tasks', clock=lambda: 1000.0,
                           lease=30, name='w')
    assert proc.claimNextJob() == jobid
    with opened(stored) as service:     # another connection sees the claim
        job = service.jobs[jobid]
        assert (job.status, job.attempts) == ('processing', 1)
        assert job.lease.expires == 1030.0
        assert job.lease.worker.startswith('w:')
    assert ran == []
    assert proc.processNext(jobid)
    assert ran == ['x']
    with opened(stored) as service:
        assert service.getStatus(jobid) == 'completed'
        assert service.jobs[jobid].lease is None


def test_process_next_runs_a_job_it_did_not_claim_in_one_transaction(
        stored, ran):
    first, second = add(stored, 'note', 'first', 'second')
    proc = SimpleProcessor(stored, 'app/tasks')
    assert proc.processNext(second)
    assert ran == ['second']
    with opened(stored) as service:
        assert service.getStatus(second) == 'completed'
        assert service.getStatus(first) == 'queued'


def test_multi_processor_runs_jobs_at_once(stored):
    barrier = threading.Barrier(3, timeout=WAIT)

    def together(service, jobid, input):
        # Returns only when three jobs wait here at the same time.
        return barrier.wait()

    register('together', together)
    ids = add(stored, 'together', *range(6))
    proc = MultiProcessor(stored, 'app/tasks', waitTime=0.01, maxThreads=3,
                          untilIdle=True)
    proc()
    with opened(stored) as service:
        assert [service.getStatus(i) for i in ids] == ['completed'] * 6
        assert sorted(service.getResult(i) for i in ids) == [0, 0, 1, 1, 2, 2]
    assert proc.stats == {'completed': 6}
    assert proc.threadsBusy == 0


def test_multi_processor_with_one_thread_cannot_meet_at_a_barrier(stored):
    barrier = threading.Barrier(2, timeout=0.2)
    register('together', lambda service, jobid, input: barrier.wait())
    ids = add(stored, 'together', 1, 2)
    MultiProcessor(stored, 'app/tasks', waitTime=0.01, maxThreads=1,
                   untilIdle=True)()
    with opened(stored) as service:
        assert [service.getStatus(i) for i in ids] == ['error'] * 2
        assert 'BrokenBarrierError' in service.getError(ids[0])


def test_bad_max_threads_is_refused(stored):
    with pytest.raises(ValueError, match='maxThreads'):
        MultiProcessor(stored, 'app/tasks', maxThreads=0)


def test_bad_paths_are_refused(stored):
    for bad in ('', '///', ()):
        with pytest.raises(ValueError, match='at least one key'):
            SimpleProcessor(stored, bad)
    with pytest.raises(TypeError, match='string like'):
        SimpleProcessor(stored, 42)
    proc = SimpleProcessor(stored, 'app/nothing')
    with pytest.raises(KeyError, match="'nothing' at /app"):
        proc.hasJobsWaiting()


def test_a_failing_task_fails_its_job_and_the_loop_goes_on(stored, ran):
    register('boom', lambda service, jobid, input: 1 / 0)
    bad, good = add(stored, 'boom', None)[0], add(stored, 'note', 'ok')[0]
    proc = SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True)
    proc()
    with opened(stored) as service:
        assert service.getStatus(bad) == 'error'
        assert service.getError(bad) == 'ZeroDivisionError: division by zero'
        assert 'Traceback' in service.jobs[bad].traceback
        assert service.getStatus(good) == 'completed'
    assert proc.stats == {'error': 1, 'completed': 1}


# -- tasks that end or doom their transaction ---------------------------------

def test_a_task_that_aborts_its_transaction_runs_once(stored):
    calls = []

    def aborts(service, jobid, input):
        calls.append(jobid)
        service.jobs[jobid].output = 'lost'
        transaction.abort()
        return 'done'

    register('aborts', aborts)
    jobid, = add(stored, 'aborts', None)
    SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True)()
    assert calls == [jobid]
    with opened(stored) as service:
        assert service.getStatus(jobid) == 'completed'
        assert service.getResult(jobid) == 'done'


def test_a_task_that_dooms_its_transaction_fails_once(stored):
    calls = []

    def dooms(service, jobid, input):
        calls.append(jobid)
        service.__parent__ = 'not committed'
        transaction.doom()

    register('dooms', dooms)
    jobid, = add(stored, 'dooms', None)
    SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True)()
    assert calls == [jobid]
    with opened(stored) as service:
        assert service.getStatus(jobid) == 'error'
        assert 'doomed' in service.getError(jobid)
        assert service.__parent__ is None


def test_a_task_that_commits_part_of_its_work_keeps_it(stored):
    def batches(service, jobid, input):
        root = service._p_jar.root()
        root['app']['done'] = 'first half'
        transaction.commit()
        root['app']['more'] = 'second half'
        return 'ok'

    register('batches', batches)
    jobid, = add(stored, 'batches', None)
    assert SimpleProcessor(stored, 'app/tasks').processNext()
    with opened(stored) as service:
        app = service._p_jar.root()['app']
        assert (app['done'], app['more']) == ('first half', 'second half')
        assert service.getStatus(jobid) == 'completed'


# -- conflicts ---------------------------------------------------------------

def touchJob(db, jobid, **changes):
    """Write the job from another connection, as a concurrent worker might.
    """
    with opened(db, commit=True) as service:
        job = service.jobs[jobid]
        for name, value in changes.items():
            setattr(job, name, value)


def test_a_conflict_does_not_run_a_task_again_that_wrote_nothing(stored):
    calls = []

    def outside(service, jobid, input):
        calls.append(jobid)
        # Someone writes the job meanwhile: the run's commit conflicts.
        touchJob(service._p_jar.db(), jobid, progress=(0.5, 'elsewhere'))
        current().log('told the job')
        return 'sent'

    register('outside', outside)
    jobid, = add(stored, 'outside', None)
    proc = SimpleProcessor(stored, 'app/tasks')
    assert proc.processNext()
    assert calls == [jobid]
    with opened(stored) as service:
        job = service.jobs[jobid]
        assert (job.status, job.output, job.attempts) == ('completed', 'sent',
                                                          1)
        assert job.log == ('told the job',)
        assert job.progress is None       # the run's own outcome won
    assert proc.stats == {'completed': 1}


def test_a_conflict_runs_a_task_again_that_changed_the_database(stored):
    calls = []

    def counts(service, jobid, input):
        calls.append(jobid)
        app = service._p_jar.root()['app']
        app['runs'] = app.get('runs', 0) + 1
        if len(calls) == 1:
            touchJob(service._p_jar.db(), jobid, progress=(0.1, None))
        return app['runs']

    register('counts', counts)
    jobid, = add(stored, 'counts', None)
    assert SimpleProcessor(stored, 'app/tasks').processNext()
    assert calls == [jobid, jobid]
    with opened(stored) as service:
        assert service._p_jar.root()['app']['runs'] == 1
        assert service.getResult(jobid) == 1


def test_a_task_that_saved_a_savepoint_counts_as_changing_the_database(
        stored):
    calls = []

    def saves(service, jobid, input):
        calls.append(jobid)
        service._p_jar.root()['app']['saved'] = len(calls)
        transaction.savepoint()
        if len(calls) == 1:
            touchJob(service._p_jar.db(), jobid, progress=(0.1, None))

    register('saves', saves)
    add(stored, 'saves', None)
    assert SimpleProcessor(stored, 'app/tasks').processNext()
    assert len(calls) == 2
    with opened(stored) as service:
        assert service._p_jar.root()['app']['saved'] == 2


def test_a_read_conflict_in_the_task_runs_it_again(stored):
    calls = []

    def unlucky(service, jobid, input):
        calls.append(jobid)
        if len(calls) == 1:
            raise ReadConflictError('while loading')
        return len(calls)

    register('unlucky', unlucky)
    jobid, = add(stored, 'unlucky', None)
    assert SimpleProcessor(stored, 'app/tasks').processNext()
    with opened(stored) as service:
        assert service.getResult(jobid) == 2


def test_conflicts_without_end_fail_the_job_after_the_attempts(stored):
    calls = []

    def hopeless(service, jobid, input):
        calls.append(jobid)
        service._p_jar.root()['app']['tries'] = len(calls)
        touchJob(service._p_jar.db(), jobid, progress=(len(calls), None))

    register('hopeless', hopeless)
    jobid, = add(stored, 'hopeless', None)
    proc = SimpleProcessor(stored, 'app/tasks', attempts=3)
    assert proc.processNext()
    assert len(calls) == 3
    with opened(stored) as service:
        assert service.getStatus(jobid) == 'error'
        assert service.getError(jobid).startswith(
            'gave up after 3 attempts that conflicted; last: database '
            'conflict error')
        assert 'tries' not in service._p_jar.root()['app']
    assert proc.stats == {'error': 1}


def test_a_run_whose_job_was_cancelled_meanwhile_is_dropped(stored):
    def cancelled(service, jobid, input):
        with opened(service._p_jar.db(), commit=True) as other:
            other.cancel(jobid)
        return 'too late'

    register('cancelled', cancelled)
    jobid, = add(stored, 'cancelled', None)
    proc = SimpleProcessor(stored, 'app/tasks')
    assert proc.processNext()
    with opened(stored) as service:
        assert service.getStatus(jobid) == 'cancelled'
        assert service.getResult(jobid) is None
    assert proc.stats == {'lost': 1}


def test_what_a_run_writes_is_the_job_and_its_finished_bucket(db):
    """The footprint the conflict policy relies on, through bucket splits."""
    with db.transaction() as conn:
        conn.root()['set'] = ShardedSet()
    rnd = random.Random(4)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    ids = conn.root()['set']
    shift = ids._shift
    splits = 0
    for n in range(1500):
        tm.begin()
        key = rnd.randrange(1 << shift)
        ids.insert(key)
        written = writes.written_oids(conn)
        path = {node._p_oid for node in ids.nodesWrittenBy(key)}
        assert written and written <= path, n
        splits += len(written) > 1
        tm.commit()
    tm.abort()
    conn.close()
    assert splits > 5         # splits happened, and were covered


# -- leases and heartbeats -------------------------------------------------

def test_a_task_extends_its_lease_in_a_transaction_of_its_own(stored):
    seen = []

    def beats(service, jobid, input):
        expires = current().heartbeat()
        with opened(service._p_jar.db()) as other:   # already committed
            seen.append((expires, other.jobs[jobid].lease.expires))
        raise zodbtasks.TaskError('failing does not undo the heartbeat')

    register('beats', beats)
    jobid, = add(stored, 'beats', None, leaseSeconds=10)
    now = [100.0]
    proc = SimpleProcessor(stored, 'app/tasks', clock=lambda: now[0])
    assert proc.claimNextJob() == jobid
    now[0] = 105.0
    proc.processNext(jobid)
    assert seen == [(115.0, 115.0)]
    with opened(stored) as service:
        assert service.getStatus(jobid) == 'error'


def test_a_heartbeat_after_the_lease_was_lost_raises(stored):
    raised = []

    def loses(service, jobid, input):
        with opened(service._p_jar.db(), commit=True) as other:
            other.cancel(jobid)
        try:
            current().heartbeat()
        except LeaseLost as error:
            raised.append(error)
            raise

    register('loses', loses)
    jobid, = add(stored, 'loses', None)
    proc = SimpleProcessor(stored, 'app/tasks')
    assert proc.processNext()
    assert len(raised) == 1 and "'cancelled'" in str(raised[0])
    with opened(stored) as service:
        assert service.getStatus(jobid) == 'cancelled'
    assert proc.stats == {'lost': 1}


def test_an_expired_lease_lets_another_worker_run_the_job(stored, ran):
    jobid, = add(stored, 'note', 'again')
    now = [0.0]
    dead = SimpleProcessor(stored, 'app/tasks', clock=lambda: now[0],
                           lease=5, name='dead')
    assert dead.claimNextJob() == jobid
    alive = SimpleProcessor(stored, 'app/tasks', clock=lambda: now[0],
                            name='alive')
    now[0] = 4.0
    assert alive.processNext() is False     # still held
    now[0] = 6.0
    assert alive.processNext()
    with opened(stored) as service:
        job = service.jobs[jobid]
        assert (job.status, job.attempts) == ('completed', 2)
    # The first worker's late run is refused, and the task does not run.
    assert dead.processNext(jobid)
    assert ran == ['again']
    assert dead.stats == {'lost': 1}


def test_automatic_heartbeats_keep_a_long_job_leased(stored):
    release = threading.Event()
    started = threading.Event()

    def long(service, jobid, input):
        started.set()
        release.wait(WAIT)

    register('long', long)
    jobid, = add(stored, 'long', None)
    proc = SimpleProcessor(stored, 'app/tasks', waitTime=0.01, lease=60,
                           heartbeatInterval=0.05)
    with opened(stored) as service:
        before = service.jobs[jobid].lease
    start_thread = threading.Thread(target=proc, daemon=True)
    start_thread.start()
    try:
        assert started.wait(WAIT)
        with opened(stored) as service:
            first = service.jobs[jobid].lease.expires

        def extended():
            with opened(stored) as service:
                return service.jobs[jobid].lease.expires > first
        waitFor(extended, WAIT, 'a heartbeat')
    finally:
        release.set()
        proc.stop()
        start_thread.join(WAIT)
    assert before is None
    with opened(stored) as service:
        assert service.getStatus(jobid) == 'completed'


# -- processor threads, as the service starts them ---------------------------

def statusOf(db, jobid):
    with opened(db) as service:
        return service.getStatus(jobid)


def test_start_and_stop_processing_from_the_service(stored, ran, stopper):
    jobid, = add(stored, 'note', 'threaded')
    with opened(stored) as service:
        service.processorArguments = {'waitTime': 0.01}  # this copy only
        assert not service.isProcessing()
        service.startProcessing()
        assert service.isProcessing()
        assert processing.running()[0][0] == (stored, ('app', 'tasks'))
        waitFor(lambda: statusOf(stored, jobid) == 'completed', WAIT,
                'the job completing')
        service.stopProcessing()
        assert not service.isProcessing()
        assert processing.running() == []
    assert ran == ['threaded']


def test_starting_twice_keeps_one_thread(stored, stopper):
    with opened(stored) as service:
        first = processing.startProcessing(service)
        assert processing.startProcessing(service) is first
        assert len(processing.running()) == 1
        assert processing.stopProcessing(service)


def test_the_service_chooses_its_processor(stored, stopper):
    with opened(stored, commit=True) as service:
        service.processorFactory = MultiProcessor
        service.processorArguments = {'waitTime': 0.01, 'maxThreads': 2}
    with opened(stored) as service:
        proc = processing.startProcessing(service, 'app/tasks')
        assert type(proc) is MultiProcessor and proc.maxThreads == 2
        assert processing.stopProcessing(service)


def test_stopping_lets_the_job_in_hand_finish(stored, stopper):
    release = threading.Event()
    started = threading.Event()

    def slow(service, jobid, input):
        started.set()
        assert release.wait(WAIT)
        return 'finished'

    register('slow', slow)
    jobid, = add(stored, 'slow', None)
    with opened(stored) as service:
        service.processorArguments = {'waitTime': 0.01}
        service.startProcessing()
        assert started.wait(WAIT)
        # The thread is asked to stop while its task runs ...
        assert processing.stopProcessing(service, timeout=0.05) is False
        assert not service.isProcessing()
        assert statusOf(stored, jobid) == 'processing'
        # ... and stops once it finished the job.
        release.set()
        assert processing.stopProcessing(service, timeout=WAIT)
    assert statusOf(stored, jobid) == 'completed'


SEVERAL = 3     # processors stopped together in the tests below


def several(db, task, factory=SimpleProcessor):
    """SEVERAL services (app/t0, app/t1, ...) with a job of ``task`` each,
    their processors started from a connection left open; returns the
    processors and the connection's transaction manager."""
    with opened(db, commit=True) as service:
        app = service._p_jar.root()['app']
        for n in range(SEVERAL):
            app['t%d' % n] = zodbtasks.TaskService()
            app['t%d' % n].add(task, n)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    tm.begin()
    procs = []
    for n in range(SEVERAL):
        service = conn.root()['app']['t%d' % n]
        service.processorFactory = factory       # this copy only
        service.processorArguments = {'waitTime': 0.01}
        procs.append(processing.startProcessing(service, 'app/t%d' % n))
    return procs, tm


def test_stopping_several_processors_asks_them_all_before_waiting(stored):
    """Each job ends only once every processor has been asked to stop: a
    stop that waited for one thread before asking the next could not end
    the first job, which would fail after WAIT."""
    asked = []
    everyone = threading.Event()
    started = threading.Semaphore(0)

    class Counted(SimpleProcessor):
        def stop(self):
            super().stop()
            asked.append(self)
            if len(set(asked)) == SEVERAL:
                everyone.set()

    def slow(service, jobid, input):
        started.release()
        assert everyone.wait(WAIT), 'not every processor was asked to stop'
        return 'finished %s' % input

    register('slow', slow)
    procs, tm = several(stored, 'slow', Counted)
    try:
        for _ in procs:
            assert started.acquire(timeout=WAIT)
        assert processing.stopAll(WAIT, db=stored)
        assert processing.running() == []
    finally:
        everyone.set()
        processing.stopAll(WAIT)
        tm.abort()
    with opened(stored) as service:
        app = service._p_jar.root()['app']
        assert sorted(job.output for n in range(SEVERAL)
                      for job in app['t%d' % n].jobs.values()) == [
            'finished %d' % n for n in range(SEVERAL)]


def test_several_processors_share_one_deadline_when_stopped(stored):
    """Jobs that outlast the timeout: stopAll gives up after about the
    timeout, not after the timeout once per processor.

    A wall-clock bound, as the point is how long a stop waits. It cannot
    fail by chance the wrong way: a wait per processor takes at least
    SEVERAL * TIMEOUT (a join that times out never returns early), and one
    shared deadline takes TIMEOUT plus the time to ask SEVERAL processors,
    so the bound half a TIMEOUT below the first leaves 1.5 s to spare for
    a slow machine."""
    TIMEOUT = 1.0
    release = threading.Event()
    started = threading.Semaphore(0)

    def stuck(service, jobid, input):
        started.release()
        assert release.wait(WAIT)
        return input

    register('stuck', stuck)
    procs, tm = several(stored, 'stuck')
    try:
        for _ in procs:
            assert started.acquire(timeout=WAIT)
        began = time.monotonic()
        assert processing.stopAll(TIMEOUT, db=stored) is False
        took = time.monotonic() - began
        assert TIMEOUT <= took < (SEVERAL - 0.5) * TIMEOUT, took
        assert all(proc._stopRequested for proc in procs)
    finally:
        release.set()
        assert processing.stopAll(WAIT)
        tm.abort()


def test_the_path_of_a_service_is_found_or_given(stored):
    with opened(stored) as service:
        assert processing.findServicePath(service) == ('app', 'tasks')
        # Names that do not lead to the root are not trusted.
        service.__name__ = 'tasks'
        assert processing.findServicePath(service) == ('app', 'tasks')
    with opened(stored, commit=True) as service:
        app = service._p_jar.root()['app']
        app['a'] = a = persistent.mapping.PersistentMapping()
        a['b'] = b = persistent.mapping.PersistentMapping()
        b['c'] = c = persistent.mapping.PersistentMapping()
        c['hidden'] = zodbtasks.TaskService()
    with opened(stored) as service:
        app = service._p_jar.root()['app']
        a = app['a']
        b, c = a['b'], a['b']['c']
        hidden = c['hidden']
        # Too deep to be found by searching ...
        with pytest.raises(ValueError, match='cannot find the service'):
            processing.findServicePath(hidden)
        # ... but its names lead to a container that is found.
        for obj, parent, name in [(hidden, c, 'hidden'), (c, b, 'c'),
                                  (b, a, 'b'), (a, app, 'a')]:
            obj.__parent__, obj.__name__ = parent, name
        assert processing.findServicePath(hidden) == (
            'app', 'a', 'b', 'c', 'hidden')
        # An explicit path needs no search.
        proc = processing.startProcessing(hidden, 'app/a/b/c/hidden')
        assert proc.servicePath == ('app', 'a', 'b', 'c', 'hidden')
        assert processing.stopProcessing(hidden, 'app/a/b/c/hidden',
                                         timeout=WAIT)


def test_a_service_outside_a_database_is_not_processed(caplog):
    service = zodbtasks.TaskService()
    # As in z3c.taskqueue, the service's methods do nothing (with a warning
    # for a start) ...
    with caplog.at_level(logging.WARNING, 'zodbtasks'):
        assert service.startProcessing() is None
    assert 'not stored in a database' in caplog.text
    assert not service.isProcessing()
    assert service.stopProcessing() is None
    assert processing.running() == []
    # ... and the module's function, asked for a thread, says why not.
    with pytest.raises(ValueError, match='not stored in a database'):
        processing.startProcessing(service)
    assert not processing.isProcessing(service)
    assert processing.stopProcessing(service)


def test_a_line_per_job_is_logged_only_when_asked(stored, ran, caplog):
    add(stored, 'note', 'quiet', 'loud')
    with caplog.at_level(logging.DEBUG, 'zodbtasks'):
        # By default, as the reference processors: nothing per job.
        assert SimpleProcessor(stored, 'app/tasks').processNext()
        assert not [r for r in caplog.records if r.name == 'zodbtasks.jobs']
        assert SimpleProcessor(stored, 'app/tasks', logJobs=True).processNext()
    assert ran == ['quiet', 'loud']
    lines = [r.getMessage() for r in caplog.records
             if r.name == 'zodbtasks.jobs']
    assert len(lines) == 1 and ' note completed in ' in lines[0], lines


def test_the_multi_processor_shows_its_threads(stored, stopper):
    proc = MultiProcessor(stored, 'app/tasks', waitTime=0.01, maxThreads=3)
    assert proc.threads == []
    thread = start(stopper, proc)
    waitFor(lambda: len(proc.threads) == 3, WAIT, 'the pool starting')
    assert all(t.is_alive() for t in proc.threads)
    proc.stop()
    thread.join(WAIT)
    assert proc.threads == []


def test_each_step_uses_the_thread_transaction_manager(stored, ran):
    add(stored, 'note', 'x')
    seen = []
    register('which', lambda service, jobid, input: seen.append(
        service._p_jar.transaction_manager is transaction.manager))
    add(stored, 'which', None)
    SimpleProcessor(stored, 'app/tasks', untilIdle=True, waitTime=0.01)()
    assert seen == [True]


# -- batches -----------------------------------------------------------------

def claimGroups(db, ids):
    """Sizes of the groups of jobs that were claimed in one transaction."""
    with opened(db) as service:
        claimed = [service.jobs[i].claimed for i in ids]
    return sorted((claimed.count(t) for t in set(claimed)), reverse=True)


def ticking():
    """A clock that moves on a little at every call."""
    now = [1000.0]

    def clock():
        now[0] += 0.001
        return now[0]
    return clock


def test_fast_jobs_are_claimed_in_batches(stored, ran):
    ids = add(stored, 'note', *range(40))
    proc = SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                           clock=ticking(), batch=8, batchBelow=60)
    proc()
    assert ran == list(range(40))          # still in order
    # 1, then 2, then 8 at a time: the batch doubles after each fast job.
    assert claimGroups(stored, ids) == [8, 8, 8, 8, 5, 2, 1]


def test_slow_jobs_are_claimed_one_at_a_time(stored, ran):
    ids = add(stored, 'note', *range(10))
    SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                    clock=ticking(), batch=8, batchBelow=0)()
    assert claimGroups(stored, ids) == [1] * 10


def test_multi_processor_claims_batches_too(stored, ran):
    ids = add(stored, 'note', *range(60))
    proc = MultiProcessor(stored, 'app/tasks', waitTime=0.01, maxThreads=2,
                          untilIdle=True, clock=ticking(), batchBelow=60)
    proc()
    assert sorted(ran) == list(range(60))
    assert max(claimGroups(stored, ids)) > 2
    assert proc.stats == {'completed': 60}


def test_a_batched_job_whose_lease_was_lost_is_not_run(stored, caplog):
    """When half of the lease of a job in a batch is gone by its turn, the
    worker renews it first: a lease found lost then is not run (nor begun),
    and one still held gets a full lease for its run."""
    now = [1000.0]
    calls = []
    leases = []
    second = []

    def first(service, jobid, input):
        calls.append(input)
        leases.append(service.jobs[jobid].lease.expires)
        if input == 'first':
            now[0] += 40                     # past half of the 60 s lease
            with opened(service._p_jar.db(), commit=True) as other:
                other.cancel(second[0])       # the next job of the batch

    register('t', first)
    ids = add(stored, 't', 'warm-up 1', 'warm-up 2', 'warm-up 3', 'first',
              'second', 'third')
    second.append(ids[4])
    proc = SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                           clock=lambda: now[0], batch=4, batchBelow=60,
                           heartbeatInterval=0)
    with caplog.at_level(logging.INFO, 'zodbtasks'):
        proc()
    assert calls == ['warm-up 1', 'warm-up 2', 'warm-up 3', 'first', 'third']
    # The third job's lease, renewed at 1040 before it ran.
    assert leases[-2:] == [1060.0, 1100.0]
    with opened(stored) as service:
        assert service.getStatus(ids[4]) == 'cancelled'
        assert service.getStatus(ids[5]) == 'completed'
    assert proc.stats == {'completed': 5, 'lost': 1}
    dropped = [r.getMessage() for r in caplog.records
               if r.getMessage().startswith('dropped ')]
    assert len(dropped) == 1, dropped
    assert dropped[0].startswith('dropped job %s before running it: job %r '
                                 'is no longer held' % (ids[4], ids[4]))


# -- outcomes recorded together -------------------------------------------------

def statusesSeen(db, ids):
    """The statuses of jobs as another connection sees them now."""
    with opened(db) as service:
        return [service.getStatus(i) for i in ids]


def test_clean_runs_are_recorded_with_the_next_claim(stored, ran):
    ids = add(stored, 'note', *range(40))
    before = stored.lastTransaction()
    proc = SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                           clock=ticking(), batch=8, batchBelow=60)
    proc()
    assert ran == list(range(40))
    commits = [t for t in stored.storage.iterator() if t.tid > before]
    # One commit per claim (of 1, 2, 8, 8, 8, 8 and 5 jobs) and one for the
    # last outcomes: not one per job.
    assert len(commits) == 8
    with opened(stored) as service:
        assert [service.getResult(i) for i in ids] == list(range(40))
        assert {service.getStatus(i) for i in ids} == {'completed'}
    assert proc.stats == {'completed': 40}


def test_without_grouping_each_run_commits_alone(stored, ran):
    add(stored, 'note', *range(10))
    before = stored.lastTransaction()
    SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                    clock=ticking(), batch=8, batchBelow=60,
                    groupOutcomes=False)()
    commits = [t for t in stored.storage.iterator() if t.tid > before]
    assert len(commits) == 10 + 3        # runs, and claims of 1, 2 and 7


def test_an_outcome_waits_until_the_next_claim_unless_settling_is_due(
        stored):
    seen = []
    ids = []

    def look(service, jobid, input):
        seen.append(statusesSeen(service._p_jar.db(), ids[:2]))

    register('look', look)
    ids.extend(add(stored, 'look', 1, 2))
    for settleWithin, expected in [(60, 'processing'), (0, 'completed')]:
        seen.clear()
        ids[:] = add(stored, 'look', 1, 2)
        # Two fast jobs before: the batch has grown to two.
        SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                        clock=ticking(), batchBelow=60,
                        settleWithin=settleWithin)()
        # While the second job runs, the first one's outcome is recorded
        # only if it has waited settleWithin seconds.
        assert seen[1][0] == expected, settleWithin
        assert statusesSeen(stored, ids) == ['completed', 'completed']


def test_outcomes_recorded_later_keep_log_progress_and_retry_delay(stored):
    now = [1000.0]

    def talks(service, jobid, input):
        ctx = current()
        ctx.log('working on %s' % input)
        ctx.progress(0.5, 'half way')
        if input == 'again':
            raise zodbtasks.Retry('not yet', delay=30)
        return input.upper()

    register('talks', talks)
    ok, again = add(stored, 'talks', 'ok', 'again', retries=1)
    SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                    clock=lambda: now[0], batchBelow=60)()
    with opened(stored) as service:
        job = service.jobs[ok]
        assert (job.status, job.output, job.log, job.progress) == (
            'completed', 'OK', ('working on ok',), (0.5, 'half way'))
        job = service.jobs[again]
        assert job.status == 'retrying'
        assert job.log[0] == 'working on again'
        assert 'Retry: not yet' in job.log[-1]
        assert job.scheduledFor == 1030.0     # the task's delay, not 60 s


def test_a_task_that_writes_commits_its_run_with_its_work(stored):
    def writes(service, jobid, input):
        service._p_jar.root()['app']['written'] = input

    register('writes', writes)
    register('quiet', lambda service, jobid, input: None)
    quiet, writer = add(stored, 'quiet', None) + add(stored, 'writes', 'x')
    SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                    clock=ticking(), batchBelow=60)()
    with opened(stored) as service:
        app = service._p_jar.root()['app']
        assert app['written'] == 'x'
        assert service.getStatus(writer) == 'completed'
        # The writer's outcome was committed in the transaction of its work.
        assert service.jobs[writer]._p_serial == app._p_serial
        assert service.getStatus(quiet) == 'completed'


class Recorder:
    """A data manager that notes whether it was committed or aborted."""

    def __init__(self, manager):
        self.transaction_manager = manager
        self.calls = []

    def abort(self, txn):
        self.calls.append('abort')

    def tpc_begin(self, txn):
        pass

    def commit(self, txn):
        self.calls.append('commit')

    def tpc_vote(self, txn):
        pass

    def tpc_finish(self, txn):
        self.calls.append('finish')

    def tpc_abort(self, txn):
        self.calls.append('tpc_abort')

    def sortKey(self):
        return 'zodbtasks-test-recorder'


def test_work_outside_the_database_is_committed_not_dropped(stored):
    """A task that joins another data manager (a mailer, an SQL session) or
    adds a commit hook has its transaction committed, not put off."""
    recorders = []
    hooks = []

    def mails(service, jobid, input):
        txn = transaction.get()
        recorder = Recorder(transaction.manager)
        recorders.append(recorder)
        txn.join(recorder)

    def hooked(service, jobid, input):
        transaction.get().addAfterCommitHook(
            lambda ok: hooks.append(('after', ok)))
        transaction.get().addBeforeCommitHook(
            lambda: hooks.append('before'))

    register('mails', mails)
    register('hooked', hooked)
    ids = add(stored, 'mails', 1) + add(stored, 'hooked', 2)
    SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                    clock=ticking(), batchBelow=60)()
    assert [r.calls for r in recorders] == [['commit', 'finish']]
    assert hooks == ['before', ('after', True)]
    assert statusesSeen(stored, ids) == ['completed', 'completed']


def test_at_most_once_jobs_are_recorded_at_once(stored):
    seen = []
    ids = []

    def look(service, jobid, input):
        if input == 'look':
            seen.append(statusesSeen(service._p_jar.db(), ids[:2]))

    register('look', look)
    # Three jobs first, in batches of one and two: then four at a time.
    add(stored, 'look', 'warm-up 1', 'warm-up 2', 'warm-up 3')
    ids.extend(add(stored, 'look', 'plain'))
    ids.extend(add(stored, 'look', 'once', atMostOnce=True))
    ids.extend(add(stored, 'look', 'look'))
    SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                    clock=ticking(), batchBelow=60)()
    # The plain job's outcome waits for the next claim; the at-most-once
    # job's is committed with its run, so that a worker lost now cannot
    # turn a finished run into "worker lost".
    assert seen == [['processing', 'completed']]
    assert statusesSeen(stored, ids) == ['completed'] * 3


def test_an_outcome_whose_lease_went_while_it_waited_is_dropped(stored):
    ids = []

    def cancelsFirst(service, jobid, input):
        if input == 'second':
            with opened(service._p_jar.db(), commit=True) as other:
                other.cancel(ids[1])
        return input

    register('t', cancelsFirst)
    ids.extend(add(stored, 't', 'warm-up', 'first', 'second'))
    proc = SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                           clock=ticking(), batchBelow=60)
    proc()
    with opened(stored) as service:
        assert service.getStatus(ids[1]) == 'cancelled'
        assert service.getResult(ids[1]) is None
        assert service.getResult(ids[2]) == 'second'
    assert proc.stats == {'completed': 2, 'lost': 1}


def test_stopping_records_the_outcomes_in_hand(stored):
    procs = []

    def last(service, jobid, input):
        if input == 'stop':
            procs[0].stop()
        return input

    register('last', last)
    ids = add(stored, 'last', 'a', 'b', 'stop', 'never')
    proc = SimpleProcessor(stored, 'app/tasks', waitTime=0.01,
                           clock=ticking(), batchBelow=60)
    procs.append(proc)
    proc()
    assert statusesSeen(stored, ids) == ['completed'] * 3 + ['queued']
    assert proc.stats == {'completed': 3}


def refuseToRecord(monkeypatch, failures_too=False):
    """Make recording the outcome of a job whose input is 'bad' raise."""
    record = zodbtasks.TaskService.recordOutcome

    def picky(service, jobid, token, outcome, release=False):
        if service.jobs[jobid].input == 'bad' and (
                failures_too or not outcome.failed):
            raise RuntimeError('the service refused it')
        return record(service, jobid, token, outcome, release)
    monkeypatch.setattr(zodbtasks.TaskService, 'recordOutcome', picky)


def test_an_outcome_that_cannot_be_recorded_fails_its_job(stored,
                                                          monkeypatch):
    """An outcome whose recording raises does not stop the loop or the
    other outcomes; its job fails with the error."""
    refuseToRecord(monkeypatch)
    register('t', lambda service, jobid, input: input)
    ids = add(stored, 't', 'good', 'bad', 'fine')
    proc = SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                           clock=ticking(), batchBelow=60)
    proc()
    with opened(stored) as service:
        assert [service.getStatus(i) for i in ids] == [
            'completed', 'error', 'completed']
        assert 'the service refused it' in service.getError(ids[1])


def test_events_of_a_worker_are_told_after_its_commit(stored, caplog):
    """Subscribers hear of a worker's changes once they are committed, so
    that no subscriber runs while leases are at stake; one that fails is
    logged and changes nothing."""
    from zodbtasks.interfaces import IJobCompleted
    seen = []

    def look(event):
        with opened(stored) as service:     # another connection
            seen.append(service.getStatus(event.job.id))
        if event.job.input == 'bad':
            raise RuntimeError('the subscriber fails')

    zope.component.provideHandler(look, (IJobCompleted,))
    register('t', lambda service, jobid, input: input)
    ids = add(stored, 't', 'good', 'bad', 'fine')
    proc = SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                           clock=ticking(), batchBelow=60)
    proc()
    assert seen == ['completed'] * 3
    assert statusesSeen(stored, ids) == ['completed'] * 3
    assert 'the subscriber fails' in caplog.text


def test_an_outcome_that_cannot_be_recorded_nor_failed_is_left_to_its_lease(
        stored, monkeypatch):
    """When even failing the job raises, the loop goes on: the job stays
    held until its lease expires, and the others are recorded."""
    refuseToRecord(monkeypatch, failures_too=True)
    register('t', lambda service, jobid, input: input)
    ids = add(stored, 't', 'good', 'bad', 'fine', 'after')
    proc = SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=False,
                           clock=ticking(), batchBelow=60)
    thread = threading.Thread(target=proc, daemon=True)
    thread.start()
    try:
        waitFor(lambda: statusesSeen(stored, [ids[0], ids[2], ids[3]]) ==
                ['completed'] * 3, WAIT, 'the other jobs recorded')
    finally:
        proc.stop()
        thread.join(WAIT)
    assert not thread.is_alive()
    assert statusesSeen(stored, ids[1:2]) == ['processing']
    assert proc.stats == {'completed': 3, 'lost': 1}


def test_outcomes_waiting_are_recorded_while_a_long_job_runs(stored):
    """A slow job after fast ones: the fast ones' outcomes do not wait for
    it (their leases could run out meanwhile)."""
    import time
    seen = []
    ids = []

    def task(service, jobid, input):
        if input == 'slow':
            deadline = time.monotonic() + WAIT
            while statusesSeen(service._p_jar.db(), ids[:3]) != \
                    ['completed'] * 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            seen.append(statusesSeen(service._p_jar.db(), ids[:3]))
        return input

    register('t', task)
    # Three warm-ups in batches of one and two: then one..slow in a batch.
    add(stored, 't', 'w1', 'w2', 'w3')
    ids.extend(add(stored, 't', 'one', 'two', 'three', 'slow'))
    SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                    clock=ticking(), batchBelow=60, settleWithin=0.05)()
    assert seen == [['completed'] * 3]


def test_an_output_that_refers_to_stored_objects_is_recorded_later(stored,
                                                                  caplog):
    """Only the connection that loaded an object may store a reference to
    it: an outcome recorded by another connection (with a claim) refers to
    that connection's copy of the same object."""
    def returnsStored(service, jobid, input):
        return {'n': input, 'shared': service._p_jar.root()['app']['shared']}

    with stored.transaction() as conn:
        conn.root()['app']['shared'] = persistent.mapping.PersistentMapping(
            name='shared')
    register('stored', returnsStored)
    ids = add(stored, 'stored', *range(60))
    before = stored.lastTransaction()
    proc = MultiProcessor(stored, 'app/tasks', waitTime=0.01, maxThreads=3,
                          untilIdle=True, clock=ticking(), batchBelow=60)
    proc()
    assert proc.stats == {'completed': 60}
    with opened(stored) as service:
        shared = service._p_jar.root()['app']['shared']
        assert [service.getResult(i)['n'] for i in ids] == list(range(60))
        assert all(service.getResult(i)['shared'] is shared for i in ids)
    commits = [t for t in stored.storage.iterator() if t.tid > before]
    assert len(commits) < 30          # recorded in groups, not one by one
    assert 'one by one' not in caplog.text   # no recording failed


def test_an_output_with_stored_objects_is_recorded_again_after_a_conflict(
        stored):
    calls = []

    def returnsStored(service, jobid, input):
        calls.append(jobid)
        touchJob(service._p_jar.db(), jobid, progress=(0.5, 'elsewhere'))
        return service._p_jar.root()['app']['shared']

    with stored.transaction() as conn:
        conn.root()['app']['shared'] = persistent.mapping.PersistentMapping()
    register('stored', returnsStored)
    jobid, = add(stored, 'stored', None)
    assert SimpleProcessor(stored, 'app/tasks').processNext()
    assert calls == [jobid]            # recorded again, not run again
    with opened(stored) as service:
        assert service.getStatus(jobid) == 'completed'
        assert service.getResult(jobid) is \
            service._p_jar.root()['app']['shared']


def test_what_a_task_changes_on_its_own_job_is_kept(stored):
    def retitles(service, jobid, input):
        job = service.jobs[jobid]
        if input['how'] == 'assign':
            job.input = dict(input, seen=True)
        else:                               # in place
            job.input['seen'] = True
            job._p_changed = True
        return input['how']

    register('retitles', retitles)
    ids = add(stored, 'retitles', *[{'how': how} for how in
                                    ('assign', 'in place', 'assign')])
    SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                    clock=ticking(), batchBelow=60)()
    with opened(stored) as service:
        assert [service.jobs[i].input.get('seen') for i in ids] == [
            True, True, True]
        assert [service.getResult(i) for i in ids] == [
            'assign', 'in place', 'assign']


def test_a_task_that_sets_its_own_attribute_or_swaps_a_stored_object_keeps_it(
        stored):
    """Attributes a job does not know of, and references to other stored
    objects, count as changes to the job as much as its own fields do."""
    with stored.transaction() as conn:
        app = conn.root()['app']
        app['first'] = persistent.mapping.PersistentMapping(name='first')
        app['second'] = persistent.mapping.PersistentMapping(name='second')

    def swaps(service, jobid, input):
        job = service.jobs[jobid]
        if input == 'note':
            job.note = 'noted'
        else:
            job.input = service._p_jar.root()['app']['second']
        return input

    register('swaps', swaps)
    with stored.transaction() as conn:
        service = conn.root()['app']['tasks']
        first = conn.root()['app']['first']
        ids = [service.add('swaps', 'note'), service.add('swaps', first),
               service.add('swaps', 'note')]
    SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                    clock=ticking(), batchBelow=60)()
    with opened(stored) as service:
        jobs = [service.jobs[i] for i in ids]
        assert [getattr(job, 'note', None) for job in jobs] == [
            'noted', None, 'noted']
        assert jobs[1].input['name'] == 'second'
        assert [service.getStatus(i) for i in ids] == ['completed'] * 3


def test_a_failing_task_whose_job_holds_odd_values_is_still_grouped(stored):
    """Values that never equal a copy of themselves (NaN here) do not make
    every failed run commit on its own."""
    def fails(service, jobid, input):
        current().log('trying')
        raise zodbtasks.TaskError('no luck')

    register('fails', fails)
    ids = add(stored, 'fails', *[{'x': float('nan')} for _ in range(12)])
    before = stored.lastTransaction()
    proc = SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                           clock=ticking(), batchBelow=60)
    proc()
    assert proc.stats == {'error': 12}
    commits = [t for t in stored.storage.iterator() if t.tid > before]
    assert len(commits) <= 6           # claims of 1, 2, 8 and 1, and the last
    with opened(stored) as service:
        assert {service.getError(i) for i in ids} == {'no luck'}


# -- idle polls ------------------------------------------------------------------

@pytest.fixture
def fileDB(tmp_path):
    """A FileStorage database with a service at app/tasks, whose loads are
    counted in ``db.loads``."""
    import ZODB
    import ZODB.FileStorage
    storage = ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs'))
    real = storage.loadBefore
    loads = []

    def counted(oid, tid):
        loads.append(oid)
        return real(oid, tid)
    storage.loadBefore = counted
    db = ZODB.DB(storage)
    db.loads = loads
    with db.transaction() as conn:
        conn.root()['app'] = persistent.mapping.PersistentMapping()
        conn.root()['app']['tasks'] = zodbtasks.TaskService()
    yield db
    db.close()


def test_an_idle_poll_reads_nothing_until_something_changes(fileDB, ran):
    db = fileDB
    now = [1000.0]
    proc = SimpleProcessor(db, 'app/tasks', clock=lambda: now[0])
    assert not proc.processNext()          # reads the service: nothing due
    del db.loads[:]
    for _ in range(5):
        assert not proc.processNext()
    assert db.loads == []
    # Another connection adds a job: the next poll sees it.
    add(db, 'note', 'added')
    assert proc.processNext()
    assert ran == ['added']
    assert not proc.processNext()
    # A delayed job: quiet until it is due, then run.
    with opened(db, commit=True) as service:
        service.addCronJob('note', 'later', delay=30, now=now[0])
    assert not proc.processNext()          # places it: due in 30 s
    del db.loads[:]
    now[0] += 29
    assert not proc.processNext()
    assert db.loads == []
    now[0] += 2
    assert proc.processNext()
    assert ran == ['added', 'later']


def test_an_idle_poll_sees_what_was_written_through_its_own_connection(
        fileDB, ran):
    """The application may get the worker's pooled connection in between
    and add a job through it: no invalidation then, but a new serial."""
    db = fileDB
    proc = SimpleProcessor(db, 'app/tasks', clock=lambda: 1000.0)
    assert not proc.processNext()
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)    # the same connection, reused
    tm.begin()
    conn.root()['app']['tasks'].add('note', 'via the same connection')
    tm.commit()
    conn.close()
    assert proc.processNext()
    assert ran == ['via the same connection']


def test_an_idle_poll_recovers_a_lease_when_it_runs_out(fileDB, ran):
    db = fileDB
    now = [1000.0]
    jobid, = add(db, 'note', 'orphan', leaseSeconds=5)
    dead = SimpleProcessor(db, 'app/tasks', clock=lambda: now[0])
    assert dead.claimNextJob() == jobid       # ... and then it dies
    proc = SimpleProcessor(db, 'app/tasks', clock=lambda: now[0])
    assert not proc.processNext()
    now[0] += 4
    assert not proc.processNext()
    now[0] += 2
    assert proc.processNext()
    assert ran == ['orphan']
    with opened(db) as service:
        assert service.jobs[jobid].attempts == 2


def test_a_paused_service_is_quiet_until_resumed(fileDB, ran):
    db = fileDB
    with opened(db, commit=True) as service:
        service.pause(now=0)
        service.add('note', 'waits', now=0)
    proc = SimpleProcessor(db, 'app/tasks', clock=lambda: 1000.0)
    assert not proc.processNext()
    del db.loads[:]
    assert not proc.processNext()
    assert db.loads == []
    with opened(db, commit=True) as service:
        service.resume(now=1000)
    assert proc.processNext()
    assert ran == ['waits']


def test_a_failed_run_says_how_long_it_took_and_whether_it_retries(
        stored, caplog):
    def boom(service, jobid, input):
        raise zodbtasks.TaskError('no luck')
    register('boom', boom)
    add(stored, 'boom', 1, retries=1, retryDelay=0)
    processor = SimpleProcessor(stored, 'app/tasks', logJobs=True)
    with caplog.at_level(logging.INFO, 'zodbtasks.jobs'):
        assert processor.processNext()
        assert processor.processNext()
    lines = [r.getMessage() for r in caplog.records
             if r.name == 'zodbtasks.jobs']
    assert len(lines) == 2, lines
    assert re.search(r' boom failed after \d+\.\d{3} s, retrying \(attempt '
                     r'1\): no luck$', lines[0]), lines
    assert re.search(r' boom failed after \d+\.\d{3} s \(attempt 2\): '
                     r'no luck$', lines[1]), lines
