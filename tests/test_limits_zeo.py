"""Concurrency and rate limits with real worker processes on a real ZEO
server.

Every test starts its own ZEO server on 127.0.0.1 and its own ``zodbtasks
worker`` processes, and stops them all. The tasks (``limit_tasks.py``) note
in a ledger file when each run begins and ends.
"""
import collections
import os
import signal
import time

import pytest

import zodbtasks
from zodbtasks._testing import Workers
from zodbtasks._testing import waitFor
from zeo_helpers import closeClient
from zeo_helpers import openClient
from zeo_helpers import stopWorkers
from zeo_helpers import workerEnv
from zeo_helpers import zeo  # noqa: F401 (a fixture)

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def client(zeo):
    db, tm, conn = openClient(zeo)
    try:
        yield tm, conn
    finally:
        closeClient(db, tm, conn)


def workerArgs(zeo, *extra):
    return ['worker', '--db', zeo.uri, '--service', 'tasks', '--tasks',
            'limit_tasks', '--poll', '0.05'] + list(extra)


Event = collections.namedtuple('Event', 'kind ns jobid pid')


def readLedger(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [Event(kind, int(ns), int(jobid), int(pid)) for kind, ns,
                jobid, pid in (line.split() for line in f.read().splitlines())]


def mostAtOnce(events, ends=None):
    """The most runs going at one instant. ``ends`` gives the end of runs
    whose process died before it noted one (job id -> ns)."""
    points = [(e.ns, 1 if e.kind == 'S' else -1) for e in events]
    points += [(ns, -1) for ns in (ends or {}).values()]
    most = now = 0
    # At one instant, ends before starts: a slot given back and taken at
    # once is no overlap.
    for _, delta in sorted(points):
        now += delta
        most = max(most, now)
    return most


def addJobs(tm, conn, task, count, ledger, seconds, **options):
    with tm:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
    with tm:
        now = time.time()
        ids = [service.add(task, {'ledger': ledger, 'seconds': seconds},
                           now=now, **options) for _ in range(count)]
    return service, ids


def completed(tm, service, count):
    tm.begin()
    try:
        return service.countJobs('completed') >= count
    finally:
        tm.abort()


@pytest.mark.timeout(240)
def test_no_more_than_the_concurrency_run_at_once_across_workers(
        zeo, client, tmp_path):
    """4 workers x 2 threads, 40 jobs of a task with concurrency=2."""
    import limit_tasks
    limit_tasks.register()
    tm, conn = client
    ledger = str(tmp_path / 'ledger.txt')
    service, ids = addJobs(tm, conn, 'two_at_a_time', 40, ledger, 0.1)
    tm.begin()
    assert service.getLimits()['two_at_a_time'].concurrency == 2
    tm.abort()
    with Workers(str(tmp_path), env=workerEnv()) as workers:
        for _ in range(4):
            workers.start(*workerArgs(zeo, '--threads', '2'))
        waitFor(lambda: completed(tm, service, 40), 150,
                'the 40 jobs completing', interval=0.2)
        assert stopWorkers(workers) == [0] * 4
    events = readLedger(ledger)
    starts = collections.Counter(e.jobid for e in events if e.kind == 'S')
    assert starts == dict.fromkeys(ids, 1)
    assert mostAtOnce(events) == 2
    # (The worker that records an outcome claims in the same transaction,
    # so it often takes the slot it gave back: one worker may run them
    # all. The others asked all along and found the limit full.)


@pytest.mark.timeout(240)
def test_a_killed_workers_slot_comes_back_after_its_lease(
        zeo, client, tmp_path):
    import limit_tasks
    limit_tasks.register()
    tm, conn = client
    ledger = str(tmp_path / 'ledger.txt')
    service, ids = addJobs(tm, conn, 'two_at_a_time', 6, ledger, 1.5,
                           leaseSeconds=3)
    with Workers(str(tmp_path), env=workerEnv()) as workers:
        victim = workers.start(*workerArgs(zeo, '--threads', '2'))
        waitFor(lambda: sum(e.kind == 'S' for e in readLedger(ledger)) >= 2,
                60, 'two runs beginning on the first worker', interval=0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killedAt = time.time_ns()
        held = {e.jobid for e in readLedger(ledger) if e.kind == 'S'} - {
            e.jobid for e in readLedger(ledger) if e.kind == 'E'}
        assert len(held) == 2
        workers.start(*workerArgs(zeo, '--threads', '2'))
        waitFor(lambda: completed(tm, service, 6), 150,
                'the 6 jobs completing', interval=0.2)
        codes = stopWorkers(workers)
    assert codes[1] == 0 and codes[0] == -signal.SIGKILL
    events = readLedger(ledger)
    # The killed runs held their slots until their leases ran out: nothing
    # else began before then, and everything ran in the end, the two
    # killed jobs again.
    later = [e for e in events if e.kind == 'S' and e.ns > killedAt]
    assert later and min(e.ns for e in later) >= killedAt + 1e9
    assert mostAtOnce(events, dict.fromkeys(held, killedAt)) == 2
    assert {e.jobid for e in later} == set(ids) - (
        {e.jobid for e in events if e.kind == 'E' and e.ns <= killedAt})
    tm.begin()
    for jobid in held:
        job = service.jobs[jobid]
        assert job.status == 'completed' and job.attempts == 2
        assert [run[3] for run in job.history] == ['lost']
    tm.abort()


@pytest.mark.timeout(240)
def test_starts_keep_to_the_rate_across_workers(zeo, client, tmp_path):
    """50 jobs at 10/s over 4 workers take at least 4.9 s."""
    import limit_tasks
    limit_tasks.register()
    tm, conn = client
    ledger = str(tmp_path / 'ledger.txt')
    service, ids = addJobs(tm, conn, 'ten_a_second', 50, ledger, 0)
    with Workers(str(tmp_path), env=workerEnv()) as workers:
        for _ in range(4):
            workers.start(*workerArgs(zeo))
        waitFor(lambda: completed(tm, service, 50), 150,
                'the 50 jobs completing', interval=0.2)
        assert stopWorkers(workers) == [0] * 4
    tm.begin()
    # Each claim's ``now`` is the start the rate counts; the claims, made
    # by four processes, are 0.1 s apart at least.
    started = sorted(service.jobs[jobid].claimed for jobid in ids)
    tm.abort()
    gaps = [b - a for a, b in zip(started, started[1:])]
    assert min(gaps) >= 0.1 - 1e-6, gaps
    assert started[-1] - started[0] >= 4.9
    events = readLedger(ledger)
    assert collections.Counter(e.jobid for e in events if e.kind == 'S') \
        == dict.fromkeys(ids, 1)
    assert len({e.pid for e in events}) > 1
