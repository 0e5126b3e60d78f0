"""An idle worker wakes when a job is added, instead of at its next poll.

Each test gives the worker a poll (``waitTime``) far longer than its time
limit: a job that starts in time was announced by the doorbell, in process
by the commit that added it, across processes by the storage's
invalidations (ZEO).
"""
import threading
import time

import pytest
import transaction
import ZODB
import ZODB.FileStorage
import zope.component

import zodbtasks
from zodbtasks import doorbell
from zodbtasks._testing import Workers
from zodbtasks._testing import waitFor
from zodbtasks.processor import MultiProcessor
from zodbtasks.processor import SimpleProcessor

from zeo_helpers import closeClient
from zeo_helpers import openClient
from zeo_helpers import stopWorkers
from zeo_helpers import workerEnv
from zeo_helpers import zeo  # noqa: F401 (a fixture)

pytestmark = pytest.mark.timeout(60)

#: The poll of the workers here: no job may wait for it.
POLL = 300


# -- the bell ----------------------------------------------------------------------

class FakeDB:
    """Any object can stand for a database."""


def test_a_bell_wakes_those_who_watch_what_changed():
    bell = doorbell.Bell()
    anything, counts = threading.Event(), threading.Event()
    bell.subscribe(anything)
    bell.subscribe(counts, {b'\0\0\0\0\0\0\0\x07'})
    bell.ring({b'\0\0\0\0\0\0\0\x01'})
    assert anything.is_set() and not counts.is_set()
    anything.clear()
    bell.ring({b'\0\0\0\0\0\0\0\x01', b'\0\0\0\0\0\0\0\x07'})
    assert anything.is_set() and counts.is_set()
    bell.unsubscribe(counts)
    counts.clear()
    bell.ring()
    assert not counts.is_set()


def test_a_commit_rings_once_and_an_abort_not_at_all():
    db = FakeDB()
    event = threading.Event()
    doorbell.bell(db).subscribe(event)
    tm = transaction.TransactionManager()
    txn = tm.begin()
    doorbell.ring_after_commit(txn, db)
    doorbell.ring_after_commit(txn, db)
    assert len(list(txn.getAfterCommitHooks())) == 1
    tm.abort()
    assert not event.is_set()
    txn = tm.begin()
    doorbell.ring_after_commit(txn, db)
    tm.commit()
    assert event.is_set()


def test_nothing_is_hooked_where_no_worker_listens():
    tm = transaction.TransactionManager()
    txn = tm.begin()
    doorbell.ring_after_commit(txn, FakeDB())
    assert list(txn.getAfterCommitHooks()) == []
    tm.abort()


# -- in one process ------------------------------------------------------------------

@pytest.fixture
def db(tmp_path):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    yield db
    db.close()


@pytest.fixture
def ran():
    started = []

    def note(input):
        started.append(input)
    task = zodbtasks.SimpleTask(note)
    zope.component.provideUtility(task, name='note')
    yield started
    zope.component.getGlobalSiteManager().unregisterUtility(
        task, zodbtasks.ITask, name='note')


@pytest.mark.parametrize('factory, options', [
    (SimpleProcessor, {}), (MultiProcessor, {'maxThreads': 2})])
def test_an_idle_worker_wakes_for_a_job_added_in_its_process(
        db, ran, factory, options):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    with tm:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
        service.add('note', 'first')
    worker = factory(db, 'tasks', waitTime=POLL, **options)
    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        waitFor(lambda: ran == ['first'], 20, 'the first job')
        # The worker finds the queue empty and sleeps for POLL seconds.
        time.sleep(0.5)
        for n in range(3):
            with tm:
                service.add('note', n)
            waitFor(lambda: ran[-1:] == [n], 10, 'job %d' % n)
    finally:
        worker.stop()
        thread.join(30)
        tm.abort()
        conn.close()
    assert not thread.is_alive()


def test_a_job_added_for_later_does_not_ring(db, ran):
    event = threading.Event()
    doorbell.bell(db).subscribe(event)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    with tm:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
        service.add('note', 'later', startLater=True)
    assert not event.is_set()
    with tm:
        service.add('note', 'now')
    assert event.is_set()
    tm.abort()
    conn.close()


# -- across processes: ZEO -------------------------------------------------------------

def test_a_worker_process_wakes_for_a_job_added_by_another_client(
        zeo, tmp_path):  # noqa: F811
    import worker_tasks
    worker_tasks.register()
    ledger = tmp_path / 'ledger.txt'
    db, tm, conn = openClient(zeo)
    try:
        with tm:
            conn.root()['tasks'] = service = zodbtasks.TaskService()
            first = service.add('append_id', str(ledger))
        with Workers(str(tmp_path), env=workerEnv()) as workers:
            workers.start('worker', '--db', zeo.uri, '--service', 'tasks',
                          '--tasks', 'worker_tasks', '--poll', str(POLL))

            def done():
                return ledger.exists() and ledger.read_text().split()
            waitFor(lambda: done() == [str(first)], 30, 'the first job')
            ids = [first]
            for _ in range(3):
                with tm:
                    ids.append(service.add('append_id', str(ledger)))
                waitFor(lambda: done() == [str(i) for i in ids], 15,
                        'job %d' % ids[-1])
            assert stopWorkers(workers) == [0]
    finally:
        closeClient(db, tm, conn)


def test_a_ring_that_finds_nothing_keeps_the_time_of_the_next_poll(
        db, monkeypatch):
    # Workers woken by one commit must not poll in step afterwards: the
    # first of them would take every job that comes due by time alone.
    from zodbtasks import processor as module
    worker = SimpleProcessor(db, 'tasks', waitTime=10)
    waits = []

    class Bell:
        def wait(self, timeout):
            waits.append(timeout)
    worker._bell = Bell()
    clock = iter([100.0, 103.0, 109.5, 111.0])
    monkeypatch.setattr(module.time, 'monotonic', lambda: next(clock))
    for _ in range(4):
        worker._idle()
    assert waits == [10, 7, 0.5, 10]
