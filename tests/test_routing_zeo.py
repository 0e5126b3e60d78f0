"""Queues and priorities with real worker processes on a real ZEO server.

Every test starts its own ZEO server on 127.0.0.1 and its own ``zodbtasks
worker`` processes, and stops them all. The task ``note_start``
(``routing_tasks.py``) appends one line per run to a ledger file as the run
begins, with one ``O_APPEND`` write: the order of the ledger's lines is the
order in which runs began, across the processes.
"""
import collections
import os
import random
import re
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
    """(db, transaction manager, connection) of a client of ``zeo``."""
    db, tm, conn = openClient(zeo)
    try:
        yield db, tm, conn
    finally:
        closeClient(db, tm, conn)


def workerArgs(zeo, *extra):
    return ['worker', '--db', zeo.uri, '--service', 'tasks', '--tasks',
            'routing_tasks', '--poll', '0.05'] + list(extra)


Run = collections.namedtuple('Run', 'ns jobid queue priority pid')


def readLedger(path):
    """The ledger's runs, in the order they began."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [Run(int(ns), int(jobid), queue, int(priority), int(pid))
                for ns, jobid, queue, priority, pid in
                (line.split() for line in f.read().splitlines())]


def newService(tm, conn):
    with tm:
        conn.root()['tasks'] = zodbtasks.TaskService()
    tm.begin()
    return conn.root()['tasks']


def countCompleted(tm, service, wanted):
    tm.begin()
    try:
        return service.countJobs('completed') >= wanted
    finally:
        tm.abort()


def ranOnPid(job):
    """The pid in the worker name of the job's latest run
    (``host:pid:thread``)."""
    found = re.search(r':(\d+):[^:]*\Z', job.ranOn or '')
    assert found, job.ranOn
    return int(found.group(1))


def completedBy(log):
    """How many jobs a worker says it completed, from its summary line."""
    summary = re.search(r'worker stopped after .*', log)
    assert summary, log[-2000:]
    found = re.search(r'completed: (\d+)', summary.group(0))
    return int(found.group(1)) if found else 0


@pytest.mark.timeout(240)
def test_each_worker_runs_only_the_jobs_of_the_queues_it_serves(
        zeo, client, tmp_path):
    import routing_tasks
    routing_tasks.register()
    db, tm, conn = client
    ledger = str(tmp_path / 'ledger.txt')
    rng = random.Random(15)
    queueOf = {}
    service = newService(tm, conn)
    with tm:
        now = time.time()
        for n in range(600):
            queue = rng.choice(['mail', 'default'])
            jobid = service.add('note_start', {'ledger': ledger}, now=now,
                                queue=queue, priority=rng.randint(0, 9))
            queueOf[jobid] = queue
        # A queue that no worker serves: its job waits.
        reports = service.add('note_start', {'ledger': ledger}, now=now,
                              queue='reports', priority=9)
    counts = collections.Counter(queueOf.values())
    assert min(counts.values()) > 250, counts
    with Workers(str(tmp_path), env=workerEnv()) as workers:
        mail = workers.start(*workerArgs(zeo, '--queue', 'mail'))
        plain = workers.start(*workerArgs(zeo))     # 'default' only
        waitFor(lambda: countCompleted(tm, service, len(queueOf)), 150,
                'all %d jobs completing' % len(queueOf), interval=0.2)
        # While both live, their records tell which queues are served.
        tm.begin()
        live = {record.pid: record.queues
                for record in service.liveWorkers(time.time())}
        unserved = service.unservedQueues(time.time())
        tm.abort()
        codes = stopWorkers(workers)
        logs = {process.pid: workers.log(process)
                for process in workers.processes}
    assert codes == [0, 0], logs
    assert live == {mail.pid: ('mail',), plain.pid: ('default',)}, live
    assert unserved == {'reports': 1}
    pidOf = {'mail': mail.pid, 'default': plain.pid}
    runs = readLedger(ledger)
    assert collections.Counter(run.jobid for run in runs) == \
        dict.fromkeys(queueOf, 1), 'each job should run once'
    for run in runs:
        assert run.queue == queueOf[run.jobid], run
        assert run.pid == pidOf[run.queue], (run, pidOf)
    tm.begin()
    for jobid, queue in queueOf.items():
        job = service.jobs[jobid]
        assert (job.status, job.attempts, job.queue) == (
            'completed', 1, queue)
        assert ranOnPid(job) == job.output == pidOf[queue], (
            job.ranOn, job.output, queue)
    job = service.jobs[reports]
    assert (job.status, job.attempts, job.ranOn) == ('queued', 0, None)
    assert service.countJobs('queued', queue='reports') == 1
    tm.abort()
    # The workers agree.
    assert completedBy(logs[mail.pid]) == counts['mail']
    assert completedBy(logs[plain.pid]) == counts['default']


@pytest.mark.timeout(240)
def test_one_worker_takes_a_backlog_by_priority_then_age(
        zeo, client, tmp_path):
    """One worker, one thread: the runs begin exactly in the order of
    claims, which is priority, then age, batches included.

    The jobs are fast (a line appended), so the worker claims them in
    batches that grow up to 64 (the processor's ``batch``). A batch is
    claimed in order and run in order; the next batch begins where it
    ended. So the tolerance is none: the ledger must be the expected
    order exactly; the jobs' claim times show that a batch of 8 or more
    did happen (in our runs, batches of 1, 2, 5, 8 and then 64).
    """
    import routing_tasks
    routing_tasks.register()
    db, tm, conn = client
    ledger = str(tmp_path / 'ledger.txt')
    rng = random.Random(9)
    service = newService(tm, conn)
    added = []                      # (priority, job id), oldest first
    start = time.time()
    for chunk in range(4):          # four transactions, four ages
        with tm:
            for n in range(100):
                priority = rng.randint(0, 9)
                jobid = service.add('note_start', {'ledger': ledger},
                                    now=start + chunk, priority=priority)
                added.append((priority, jobid))
    expected = [jobid for _, jobid in sorted(
        added, key=lambda item: -item[0])]      # a stable sort: age kept
    assert len({p for p, _ in added}) == 10
    with Workers(str(tmp_path), env=workerEnv()) as workers:
        process = workers.start(*workerArgs(zeo, '--threads', '1',
                                            '--until-idle'))
        assert workers.wait(timeout=150) == [0], workers.log(process)
    runs = readLedger(ledger)
    assert [run.jobid for run in runs] == expected
    assert {run.pid for run in runs} == {process.pid}
    priorities = [run.priority for run in runs]
    assert priorities == sorted(priorities, reverse=True)
    tm.begin()
    jobs = [service.jobs[jobid] for jobid in expected]
    assert {job.status for job in jobs} == {'completed'}
    # Jobs claimed together share their claim time.
    batches = collections.Counter(job.claimed for job in jobs)
    tm.abort()
    assert max(batches.values()) >= 8, sorted(batches.values())


@pytest.mark.timeout(240)
@pytest.mark.parametrize('processes, threads, spread', [
    (4, 1, False), (4, 1, True), (2, 2, False)])
def test_many_workers_start_no_low_priority_job_before_the_high_ones(
        zeo, client, tmp_path, processes, threads, spread):
    """Jobs of priority 9 and 1, queued in one transaction, interleaved,
    while the workers wait for them.

    Every claim takes the highest priority among the queue's lane heads,
    and claims of the same job conflict, so in the order in which claims
    commit every priority 9 job comes before every priority 1 job. What a
    ledger of *starts* can see differ is only this: a worker that claimed a
    priority 9 job and has not yet begun it while another worker, having
    claimed after it, begins a priority 1 job. A worker holds at most
    ``threads + batch - 1`` claims not finished (the processor's room), and
    runs its claims in the order it made them, so when the first priority
    1 job begins at most (all the room of all workers) - 1 priority 9 jobs
    have not begun. Each job sleeps 0.02 s, longer than the processor's
    ``batchBelow`` (0.01 s), so its batch never grows past 1: the tolerance
    is ``processes * threads - 1`` late priority 9 jobs, 3 here. (With fast
    jobs a batch grows to 64 and the bound would be hundreds.) The test
    checks that premise too: no worker claimed more than ``threads`` jobs
    at once.
    """
    import routing_tasks
    routing_tasks.register()
    db, tm, conn = client
    ledger = str(tmp_path / 'ledger.txt')
    service = newService(tm, conn)
    tolerance = processes * threads - 1
    extra = ['--threads', str(threads)] + (['--spread'] if spread else [])
    with Workers(str(tmp_path), env=workerEnv()) as workers:
        for _ in range(processes):
            workers.start(*workerArgs(zeo, *extra))
        pids = {process.pid for process in workers.processes}

        def allLive():
            tm.begin()
            try:
                return {record.pid for record in
                        service.liveWorkers(time.time())} == pids
            finally:
                tm.abort()

        waitFor(allLive, 60, 'the %d workers registering' % processes,
                interval=0.1)
        priorityOf = {}
        with tm:
            now = time.time()
            for n in range(300):
                priority = 9 if n % 2 else 1
                jobid = service.add('note_start',
                                    {'ledger': ledger, 'seconds': 0.02},
                                    now=now, priority=priority)
                priorityOf[jobid] = priority
        waitFor(lambda: countCompleted(tm, service, len(priorityOf)), 100,
                'all %d jobs completing' % len(priorityOf), interval=0.2)
        codes = stopWorkers(workers)
        logs = [workers.log(process) for process in workers.processes]
    assert codes == [0] * processes, logs
    runs = readLedger(ledger)
    assert sorted(run.jobid for run in runs) == sorted(priorityOf)
    assert all(run.priority == priorityOf[run.jobid] for run in runs)
    firstLow = [run.priority for run in runs].index(1)
    late = [run for run in runs[firstLow:] if run.priority == 9]
    assert len(late) <= tolerance, (
        '%d priority 9 jobs began after the first priority 1 job (at %d), '
        'more than %d: %s' % (len(late), firstLow, tolerance, late))
    # The workers shared the work of both priorities.
    high = {run.pid for run in runs if run.priority == 9}
    assert len(high) >= 2 and high <= pids, (high, pids)
    tm.begin()
    jobs = [service.jobs[jobid] for jobid in priorityOf]
    assert {job.status for job in jobs} == {'completed'}
    assert {ranOnPid(job) for job in jobs} <= pids
    # The premise of the tolerance: claims of at most `threads` jobs.
    together = collections.Counter((ranOnPid(job), job.claimed)
                                   for job in jobs)
    tm.abort()
    assert max(together.values()) <= threads, together.most_common(3)


@pytest.mark.timeout(120)
def test_until_idle_ends_when_the_queues_served_are_idle(
        zeo, client, tmp_path):
    """``zodbtasks worker --queue mail --until-idle`` exits once nothing of
    'mail' is due and no worker holds a job, whatever waits elsewhere."""
    import routing_tasks
    routing_tasks.register()
    db, tm, conn = client
    ledger = str(tmp_path / 'ledger.txt')
    service = newService(tm, conn)
    with tm:
        now = time.time()
        mail = [service.add('note_start', {'ledger': ledger}, now=now,
                            queue='mail') for _ in range(5)]
        reports = service.add('note_start', {'ledger': ledger}, now=now,
                              queue='reports')
    with Workers(str(tmp_path), env=workerEnv()) as workers:
        process = workers.start(*workerArgs(zeo, '--queue', 'mail',
                                            '--until-idle'))
        # It runs the mail jobs all the same...
        waitFor(lambda: len(readLedger(ledger)) == len(mail), 60,
                'the mail jobs running', interval=0.1)
        # ... and then has nothing left to do: ample time to notice.
        codes = workers.wait(timeout=10)
    assert codes == [0], workers.log(process)
    assert sorted(run.jobid for run in readLedger(ledger)) == sorted(mail)
    tm.begin()
    assert service.jobs[reports].status == 'queued'
    tm.abort()
