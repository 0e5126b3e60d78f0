"""Named queues and priorities, in one service.

Jobs wait in the queue they name (``default`` unless they or their task say
otherwise), and a claim looks only at the queues it is given. Within the
queues a claim looks at, the highest priority goes first, and the oldest
within a priority. The listings show the same order.
"""
import random
import re

import pytest
import zope.component
import zope.component.testing

import zodbtasks
from zodbtasks import interfaces
from zodbtasks import queues
from zodbtasks.decorators import FunctionTask


@pytest.fixture
def service(tasks):
    return zodbtasks.TaskService()


@pytest.fixture
def tasks():
    zope.component.testing.setUp()
    ran = []
    zope.component.provideUtility(
        zodbtasks.SimpleTask(lambda input: ran.append(input)), name='echo')
    mail = FunctionTask(lambda: None, {'queue': 'mail', 'priority': 7})
    zope.component.provideUtility(mail, interfaces.ITask, name='mail')
    yield ran
    zope.component.testing.tearDown()


def claimAll(service, now=10, **kw):
    claimed = []
    for _ in range(1000):
        jobid = service.claimNextJob(now=now, **kw)
        if jobid is None:
            return claimed
        claimed.append(jobid)
    raise AssertionError('the queue never ran dry')


def test_a_claim_looks_only_at_the_queues_it_is_given(service):
    plain = service.add('echo', 1, now=0)
    urgent = service.add('echo', 2, now=0, queue='urgent')
    mail = service.add('mail', now=0)
    assert service.jobs[plain].queue == 'default'
    assert service.jobs[mail].queue == 'mail'        # the task's default
    assert claimAll(service, queues=['mail']) == [mail]
    assert claimAll(service, queues=['nothing-here']) == []
    assert not service.hasJobsWaiting(now=10, queues=['mail'])
    assert service.hasJobsWaiting(now=10, queues=['urgent'])
    assert claimAll(service, queues='urgent') == [urgent]
    assert claimAll(service) == [plain]               # None: every queue


def test_jobs_due_later_wait_in_their_queue(service):
    delayed = service.addCronJob('echo', delay=5, now=0, queue='mail')
    cron = service.addCronJob('echo', minute=(1,), now=0, queue='reports')
    service.claimNextJob(now=1, queues=['default'])   # places them
    assert service.jobs[delayed].scheduledFor == 6
    assert claimAll(service, now=100, queues=['default']) == []
    assert claimAll(service, now=100, queues=['mail']) == [delayed]
    assert claimAll(service, now=100, queues=['reports']) == [cron]


def test_higher_priorities_first_then_the_oldest(service):
    rnd = random.Random(3)
    added = []
    for n in range(200):
        priority = rnd.randrange(10)
        added.append((priority, n, service.add(
            'echo', n, now=n // 7, priority=priority)))
    expected = [jobid for _, _, jobid in sorted(
        added, key=lambda item: (-item[0], item[1]))]
    page, cursor = service.listJobs('queued', limit=200)
    assert [job.id for job in page] == expected and cursor is None
    assert claimAll(service, now=1000) == expected


def test_spread_claims_keep_to_the_highest_priority(service):
    low = [service.add('echo', now=0, priority=1) for _ in range(40)]
    high = [service.add('echo', now=1, priority=9) for _ in range(40)]
    claimed = claimAll(service, spread=True)
    assert set(claimed[:40]) == set(high) and set(claimed[40:]) == set(low)
    more = [service.add('echo', now=2, priority=p) for p in (0, 9, 5, 5)]
    batch = service.claimJobs(now=3, count=4, spread=True)
    assert [service.jobs[j].priority for j in batch] == [9, 5, 5, 0]
    assert set(batch) == set(more)


def test_a_retry_keeps_its_queue_and_priority(service):
    def fail(input):
        raise zodbtasks.TaskError('no')
    zope.component.provideUtility(zodbtasks.SimpleTask(fail), name='fail')
    jobid = service.add('fail', now=0, queue='mail', priority=8, retries=1,
                        retryDelay=0)
    assert service.processNext(now=1)
    job = service.jobs[jobid]
    assert job.status == 'retrying'
    other = service.add('echo', now=2, queue='mail', priority=7)
    assert claimAll(service, now=3, queues=['mail']) == [jobid, other]
    assert job.priority == 8 and job.queue == 'mail'


def test_a_given_back_claim_returns_to_its_place(service):
    first = service.add('echo', now=0, priority=3)
    second = service.add('echo', now=1, priority=3)
    jobid, = service.claimJobs(now=2, count=1, start=0)
    assert jobid == first
    service.releaseClaim(first, service.jobs[first].lease.token, now=3)
    assert claimAll(service, now=4) == [first, second]


@pytest.mark.parametrize('value, error', [
    ('', ValueError), ('with space', ValueError), ('x' * 65, ValueError),
    ('-lead', ValueError), ('caf\xe9', ValueError), (b'mail', TypeError),
    (None, None), (7, TypeError)])
def test_a_bad_queue_is_refused_and_leaves_no_trace(service, value, error):
    before = len(service._queues)
    if error is None:
        service.add('echo', now=0, queue=value)   # None: the default
        assert list(service._queues) == ['default']
        return
    with pytest.raises(error, match='queue'):
        service.add('echo', now=0, queue=value)
    with pytest.raises(error, match='queue'):
        service.claimNextJob(now=0, queues=[value])
    assert len(service.jobs) == 0 and len(service._queues) == before


@pytest.mark.parametrize('value, error', [
    (-1, ValueError), (10, ValueError), (5.0, TypeError), (True, TypeError),
    ('9', TypeError)])
def test_a_bad_priority_is_refused(service, value, error):
    with pytest.raises(error, match=r'priority must be a whole number from '
                       r'0 (\(lowest\) )?to 9'):
        service.add('echo', now=0, priority=value)
    assert len(service.jobs) == 0


def test_counts_and_listings_by_queue(service):
    for queue in ('default', 'mail', 'mail', 'reports'):
        service.add('echo', now=0, queue=queue)
    done = service.add('echo', now=0, queue='mail', priority=9)
    assert service.processNext(now=1)           # the priority 9 one
    assert service.jobs[done].status == 'completed'
    assert service.queueCounts() == {
        ('default', 'queued'): 1, ('mail', 'queued'): 2,
        ('mail', 'completed'): 1, ('reports', 'queued'): 1}
    assert service.jobCounts() == {('queued', 'echo'): 4,
                                   ('completed', 'echo'): 1}
    assert service.countJobs('queued', queue='mail') == 2
    page, _ = service.listJobs(queue='mail')
    assert [job.status for job in page] == ['queued', 'queued', 'completed']
    assert {job.queue for job in page} == {'mail'}
    assert service.listJobs('queued', queue='nowhere') == ([], None)


def test_queues_a_worker_serves_are_in_its_record(service):
    service.add('echo', now=0, queue='mail')
    service.add('echo', now=0)
    service.registerWorker('w1', 0, 'host', 1, 10, ['echo'],
                           queues=['default'])
    assert service.unservedQueues(now=1) == {'mail': 1}
    assert service.workers(now=1)[0].describe(1)['queues'] == ['default']
    service.registerWorker('w2', 0, 'host', 2, 10, ['echo'])   # every queue
    assert service.unservedQueues(now=1) == {}


def test_starvation_is_the_documented_choice(service):
    """Priority 0 waits while higher priorities keep coming: strict
    priorities, as docs/queue.rst says."""
    low = service.add('echo', now=0, priority=0)
    for step in range(1, 50):
        service.add('echo', now=step, priority=9)
        claimed = service.claimNextJob(now=step)
        assert claimed != low
    assert service.claimNextJob(now=50) == low


def test_keys_of_older_layouts_read_as_priority_nine():
    key = queues.lane_key(3, 9, 12345)
    assert key == 3 << queues.LANE_SHIFT | 12345     # rank 0, as before
    assert queues.priority_of(key) == 9
    assert queues.priority_of(queues.lane_key(0, 0, 1)) == 0


def test_runs_before_the_latest_are_kept_in_the_history(service):
    calls = []

    def flaky(input):
        calls.append(input)
        if len(calls) < 3:
            raise zodbtasks.TaskError('attempt %d failed' % len(calls))
    zope.component.provideUtility(zodbtasks.SimpleTask(flaky), name='flaky')
    jobid = service.add('flaky', now=0, retries=5, retryDelay=1)
    job = service.jobs[jobid]
    for now in (10, 20, 30):
        assert service.processNext(now=now)
    assert job.status == 'completed'
    assert [(start, end, status, error) for start, end, _, status, error
            in job.history] == [
        (10, 10, 'error', 'attempt 1 failed'),
        (20, 20, 'error', 'attempt 2 failed')]
    assert (job.started, job.completed) == (30, 30)


def test_status_shows_queues_and_those_no_worker_serves(tmp_path, tasks,
                                                        capsys):
    import json
    import ZODB
    import ZODB.FileStorage
    from zodbtasks.cli import main
    path = str(tmp_path / 'Data.fs')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    with db.transaction() as conn:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
        service.add('echo', now=0, queue='mail')
        service.add('echo', now=0, queue='mail')
        service.add('echo', now=0)
        service.registerWorker('w', 0, 'h', 1, 10, ['echo'],
                               queues=['default'])
    db.close()
    args = ['status', '--db', path, '--service', 'tasks', '--now', '1']
    assert main(args + ['--json']) == 0
    report = json.loads(capsys.readouterr().out)
    assert report['queues'] == {'default': {'queued': 1},
                                'mail': {'queued': 2}}
    assert report['unservedQueues'] == {'mail': 2}
    assert main(args) == 0
    out = capsys.readouterr().out
    assert 'queued jobs in queues no live worker serves' in out
    assert re.search(r'^mail +2$', out, re.M)
