"""Middlewares wrap every run of a task, in order, and in reverse on the way
out; they come from the processor and from registered utilities."""
import persistent.mapping
import pytest
import transaction
import ZODB
import ZODB.FileStorage
import zope.component
from ZODB.POSException import ConflictError

import zodbtasks
from zodbtasks.interfaces import IRunMiddleware
from zodbtasks.middleware import MiddlewareError
from zodbtasks.middleware import check_middlewares
from zodbtasks.processor import SimpleProcessor


def tracing(name, trace):
    def middleware(run, call_next):
        trace.append(('enter', name, run.jobid))
        try:
            return call_next()
        finally:
            trace.append(('leave', name))
    middleware.__name__ = name
    return middleware


@pytest.fixture
def trace(tasks):
    trace = []

    def recorded(input):
        trace.append(('task', input))
        return input

    zope.component.provideUtility(zodbtasks.SimpleTask(recorded),
                                  name='recorded')
    return trace


@pytest.fixture
def stored(db):
    with db.transaction() as conn:
        conn.root()['app'] = persistent.mapping.PersistentMapping()
        conn.root()['app']['tasks'] = zodbtasks.TaskService()
    return db


def run_all(db, **options):
    processor = SimpleProcessor(db, 'app/tasks', untilIdle=True,
                                waitTime=0.01, **options)
    processor()
    return processor


def jobs(db):
    with db.transaction() as conn:
        service = conn.root()['app']['tasks']
        return {job.id: (job.status, job.output, job.error)
                for job in service.jobs.values()}


def test_registered_middlewares_wrap_each_run_in_the_order_of_their_names(
        service, trace):
    for name in ('b-second', 'a-first'):
        zope.component.provideUtility(tracing(name, trace), IRunMiddleware,
                                      name=name)
    jobid = service.add('recorded', 'x', now=0)
    assert service.processNext(now=0)
    assert service.getResult(jobid) == 'x'
    assert trace == [('enter', 'a-first', jobid), ('enter', 'b-second', jobid),
                     ('task', 'x'), ('leave', 'b-second'),
                     ('leave', 'a-first')]


def test_processor_middlewares_come_first_then_the_registered_ones(
        stored, trace):
    zope.component.provideUtility(tracing('registered', trace),
                                  IRunMiddleware, name='registered')
    with stored.transaction() as conn:
        jobid = conn.root()['app']['tasks'].add('recorded', 1)
    run_all(stored, middlewares=[tracing('outer', trace),
                                 tracing('inner', trace)])
    assert [step[:2] for step in trace] == [
        ('enter', 'outer'), ('enter', 'inner'), ('enter', 'registered'),
        ('task', 1), ('leave', 'registered'), ('leave', 'inner'),
        ('leave', 'outer')]
    assert jobs(stored)[jobid] == ('completed', 1, None)


def test_a_middleware_may_hand_the_task_another_service_and_input(
        service, tasks):
    seen = []

    def task(service, jobid, input):
        seen.append((service, input))
        return input * 2

    zope.component.provideUtility(task, zodbtasks.ITask, name='double')
    stand_in = object()

    def swap(run, call_next):
        run.service, run.input = stand_in, run.input + 1
        return call_next()

    zope.component.provideUtility(swap, IRunMiddleware, name='swap')
    jobid = service.add('double', 20, now=0)
    service.processNext(now=0)
    assert seen == [(stand_in, 21)]
    assert service.getResult(jobid) == 42
    assert service.jobs[jobid].input == 20     # the job keeps its input


def test_a_failing_middleware_fails_the_run_with_its_own_message(
        service, trace):
    def refuse(run, call_next):
        raise LookupError('no user called %r' % 'bob')

    zope.component.provideUtility(tracing('a-outer', trace), IRunMiddleware,
                                  name='a-outer')
    zope.component.provideUtility(refuse, IRunMiddleware, name='b-refuse')
    jobid = service.add('recorded', 'x', now=0)
    service.processNext(now=0)
    assert service.getStatus(jobid) == 'error'
    assert service.getError(jobid) == (
        "middleware b-refuse failed: LookupError: no user called 'bob'")
    # The task did not run; the outer middleware still left.
    assert trace == [('enter', 'a-outer', jobid), ('leave', 'a-outer')]


def test_a_middleware_failing_on_the_way_out_fails_the_run(service, trace):
    def teardown_fails(run, call_next):
        call_next()
        raise RuntimeError('could not close the session')

    zope.component.provideUtility(teardown_fails, IRunMiddleware,
                                  name='session')
    jobid = service.add('recorded', 'x', now=0)
    service.processNext(now=0)
    assert trace == [('task', 'x')]
    assert service.getError(jobid) == ('middleware session failed: '
                                       'RuntimeError: could not close the '
                                       'session')


def test_the_task_error_stays_the_task_error_through_middlewares(
        service, tasks, trace):
    zope.component.provideUtility(tracing('watch', trace), IRunMiddleware,
                                  name='watch')
    jobid = service.add('fail', 'x', now=0)
    service.processNext(now=0)
    assert service.getError(jobid) == 'it failed: x'
    assert trace[-1] == ('leave', 'watch')


def test_conflicts_and_retries_pass_through_middlewares(service, tasks):
    def conflicting(run, call_next):
        raise ConflictError('busy')

    zope.component.provideUtility(conflicting, IRunMiddleware, name='c')
    service.add('echo', 'x', now=0)
    with pytest.raises(ConflictError):
        service.processNext(now=0)
    transaction.abort()

    def retrying(run, call_next):
        raise zodbtasks.Retry('later', delay=30)

    zope.component.provideUtility(retrying, IRunMiddleware, name='c')
    jobid = service.add('echo', 'y', now=0, retries=1)
    service.processNext(now=0)
    assert not isinstance(service.jobs[jobid].error, MiddlewareError)
    assert service.getStatus(jobid) == 'retrying'
    assert service.jobs[jobid].scheduledFor == 30


def test_a_read_only_middleware_keeps_outcomes_grouped(tmp_path, trace):
    # Runs that write nothing are recorded together by a later step: a
    # middleware that only reads must not change that.
    stored = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    with stored.transaction() as conn:
        conn.root()['app'] = persistent.mapping.PersistentMapping()
        conn.root()['app']['tasks'] = zodbtasks.TaskService()

    def commits():
        return len(list(stored.storage.iterator()))

    def reads(run, call_next):
        len(run.service.jobs)
        return call_next()

    with stored.transaction() as conn:
        service = conn.root()['app']['tasks']
        ids = [service.add('recorded', n) for n in range(6)]
    before = commits()
    run_all(stored, middlewares=[reads])
    grouped = commits() - before
    assert all(jobs(stored)[i][0] == 'completed' for i in ids)

    def writes(run, call_next):
        run.service._p_jar.root()['app']['touched'] = run.jobid
        return call_next()

    with stored.transaction() as conn:
        service = conn.root()['app']['tasks']
        ids = [service.add('recorded', n) for n in range(6)]
    before = commits()
    run_all(stored, middlewares=[writes])
    assert all(jobs(stored)[i][0] == 'completed' for i in ids)
    # Each run that wrote committed on its own: at least one per job.
    assert commits() - before >= 6 > grouped
    stored.close()


def test_processor_middlewares_must_be_callables():
    with pytest.raises(TypeError, match="not 'timed'"):
        check_middlewares('timed')
    with pytest.raises(TypeError, match='not 3'):
        check_middlewares([print, 3])
    assert check_middlewares(None) == ()
    with pytest.raises(TypeError, match='middleware'):
        SimpleProcessor(None, 'app/tasks', middlewares=[42])
