"""Worker processes sharing a database through ZEO run each job exactly once.
"""
import collections
import os
import re

import pytest
import transaction
import ZEO

import zodbtasks
from zodbtasks._testing import Workers
from zodbtasks._testing import waitFor
from zodbtasks._testing import ZEOServer

HERE = os.path.dirname(os.path.abspath(__file__))
JOBS = 2000
PROCESSES = 4
THREADS = 2


@pytest.fixture
def zeo(tmp_path):
    with ZEOServer(str(tmp_path / 'Data.fs')) as server:
        yield server


def workerEnv():
    path = os.environ.get('PYTHONPATH')
    return {'PYTHONPATH': HERE + (os.pathsep + path if path else '')}


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().split()


def completedBy(log):
    """How many jobs a worker says it completed, from its summary line."""
    summary = re.search(r'worker stopped after .*', log)
    assert summary, log[-2000:]
    found = re.search(r'completed: (\d+)', summary.group(0))
    return int(found.group(1)) if found else 0


def check_exactly_once(db, uri, tmp_path, jobs=JOBS, processes=PROCESSES,
                       threads=THREADS):
    """Queue ``jobs`` jobs, run them with worker processes, check the ledger.
    """
    import worker_tasks
    worker_tasks.register()
    ledger = str(tmp_path / 'ledger.txt')
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    with tm:
        conn.root()['app'] = app = conn.root().__class__()
        app['tasks'] = service = zodbtasks.TaskService()
        ids = [service.add('append_id', ledger) for _ in range(jobs)]
    with Workers(str(tmp_path), env=workerEnv()) as workers:
        for _ in range(processes):
            workers.start('worker', '--db', uri, '--service', 'app/tasks',
                          '--tasks', 'worker_tasks', '--threads', str(threads),
                          '--poll', '0.05', '--until-idle')
        codes = workers.wait(timeout=240)
        logs = [workers.log(p) for p in workers.processes]
    assert codes == [0] * processes, logs
    with open(ledger) as f:
        lines = f.read().splitlines()
    counts = collections.Counter(int(line) for line in lines)
    assert set(counts) == set(ids)
    assert [jobid for jobid, n in counts.items() if n != 1] == []
    assert len(lines) == jobs
    tm.begin()
    service = conn.root()['app']['tasks']
    statuses = collections.Counter(service.getStatus(i) for i in ids)
    assert statuses == {'completed': jobs}
    assert {service.jobs[i].attempts for i in ids} == {1}
    assert {service.getResult(i) == i for i in ids} == {True}
    assert service.isIdle()
    tm.abort()
    conn.close()
    # The workers agree: every job was completed once, by more than one
    # process.
    done = [completedBy(log) for log in logs]
    assert sum(done) == jobs, done
    assert len([n for n in done if n]) > 1, done
    return done


def test_worker_processes_on_zeo_run_every_job_exactly_once(zeo, tmp_path):
    db = ZEO.DB(zeo.address)
    try:
        check_exactly_once(db, zeo.uri, tmp_path)
    finally:
        db.close()


def test_a_job_whose_worker_was_killed_runs_again_elsewhere(zeo, tmp_path):
    import worker_tasks
    worker_tasks.register()
    started, done = str(tmp_path / 'started'), str(tmp_path / 'done')
    hang = {'started': started, 'done': done}
    db = ZEO.DB(zeo.address)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        with tm:
            conn.root()['tasks'] = service = zodbtasks.TaskService()
            again = service.add('hang_first', hang, leaseSeconds=2)
            once = service.add('hang_first', hang, leaseSeconds=2,
                               atMostOnce=True)
        args = ['worker', '--db', zeo.uri, '--service', 'tasks', '--tasks',
                'worker_tasks', '--poll', '0.05']
        with Workers(str(tmp_path), env=workerEnv()) as workers:
            first = workers.start(*args, '--threads', '2')
            waitFor(lambda: len(lines(started)) == 2, 60,
                    'both jobs starting')
            first.kill()                  # SIGKILL, in the middle of both
            assert first.wait(30) == -9
            tm.begin()
            assert service.getStatus(again) == 'processing'
            assert service.getStatus(once) == 'processing'
            tm.abort()
            second = workers.start(*args, '--until-idle')
            assert workers.wait(timeout=60)[1] == 0, workers.log(second)
        tm.begin()
        job = service.jobs[again]
        assert (job.status, job.attempts, job.output) == (
            'completed', 2, 'attempt 2')
        job = service.jobs[once]
        assert (job.status, job.attempts) == ('error', 1)
        assert re.fullmatch(r'the worker \S+:%d:\S+ lost its lease on this '
                            r'job at [\d.]+' % first.pid, job.error), job.error
        with open(done) as f:
            assert f.read().split() == [str(again)]
        assert service.isIdle()
        tm.abort()
    finally:
        tm.abort()
        conn.close()
        db.close()
