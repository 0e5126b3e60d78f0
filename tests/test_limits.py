"""Concurrency and rate limits, in one service.

Jobs of a limit that may not go yet wait in the limit, out of the queue's
lanes: a claim never reads them. A job let through holds its slot until its
run ends; under a rate, starts are at least one interval apart.
"""
import pytest
import zope.component
import zope.component.testing

import zodbtasks
from zodbtasks import limits
from zodbtasks.decorators import task


@pytest.fixture
def tasks():
    zope.component.testing.setUp()
    zope.component.provideUtility(zodbtasks.SimpleTask(lambda input: input),
                                  name='echo')

    def fail(input):
        raise zodbtasks.TaskError('no')
    zope.component.provideUtility(zodbtasks.SimpleTask(fail), name='fail')
    yield
    zope.component.testing.tearDown()


@pytest.fixture
def service(tasks):
    return zodbtasks.TaskService()


def claimAll(service, now):
    claimed = []
    for _ in range(1000):
        jobid = service.claimNextJob(now=now)
        if jobid is None:
            return claimed
        claimed.append(jobid)
    raise AssertionError('claims never ran dry')


def finish(service, jobid, now, failed=False):
    job = service.jobs[jobid]
    outcome = zodbtasks.service.Outcome(
        job, completed=now, output=None,
        failure=('no', None) if failed else None)
    service.recordOutcome(jobid, job.lease.token, outcome)


def test_at_most_concurrency_jobs_are_let_through(service):
    service.setLimit('reports', concurrency=2, now=0)
    ids = [service.add('echo', n, now=0, limit='reports') for n in range(6)]
    first = claimAll(service, now=1)
    assert first == ids[:2]
    # The others wait in the limit, not in the lanes: nothing to claim.
    assert not service.hasJobsWaiting(now=1)
    assert service.oldestQueued() is None
    assert [service.jobs[j].status for j in ids[2:]] == ['queued'] * 4
    assert 'held back by limit' in service.waitingFor(ids[2], now=1)
    finish(service, first[0], now=2)
    assert claimAll(service, now=2) == [ids[2]]
    finish(service, first[1], now=3, failed=True)
    finish(service, ids[2], now=3)
    assert claimAll(service, now=3) == ids[3:5]


def test_a_lease_that_runs_out_frees_its_slot(service):
    service.setLimit('one', concurrency=1, now=0)
    a = service.add('echo', 'a', now=0, limit='one', leaseSeconds=10)
    b = service.add('echo', 'b', now=0, limit='one', leaseSeconds=10)
    assert claimAll(service, now=1) == [a]
    assert claimAll(service, now=5) == []
    # a's worker died: at the end of its lease a goes back, and the slot
    # goes to the next in line, b.
    assert claimAll(service, now=12) == [b]
    assert service.jobs[a].status == 'queued'
    assert claimAll(service, now=13) == []
    finish(service, b, now=14)
    assert claimAll(service, now=14) == [a]


def test_starts_keep_to_the_rate(service):
    service.setLimit('api', rate='10/s', now=0)
    ids = [service.add('echo', n, now=0, limit='api') for n in range(5)]
    starts = []
    now = 0.0
    while len(starts) < 5:
        assert now < 2
        jobid = service.claimNextJob(now=now)
        if jobid is not None:
            starts.append((round(now, 3), jobid))
            finish(service, jobid, now)
        else:
            now = round(now + 0.01, 3)
    assert [jobid for _, jobid in starts] == ids
    assert [t for t, _ in starts] == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_the_next_job_under_a_rate_says_when(service):
    service.setLimit('api', rate='2/m', now=0)
    a = service.add('echo', now=0, limit='api')
    b = service.add('echo', now=0, limit='api')
    c = service.add('echo', now=0, limit='api')
    assert claimAll(service, now=0) == [a]
    assert service.waitingFor(b, now=1) == (
        "rate limited until 1970-01-01 00:00:30.000 UTC (limit 'api', at "
        "most 2/m)")
    assert service.jobs[b].scheduledFor == 30
    assert service.waitingFor(c, now=1).startswith("held back by limit 'api'")
    assert claimAll(service, now=29) == []
    assert claimAll(service, now=30) == [b]


def test_a_task_declares_its_limit(service):
    @task('render', concurrency=1)
    def render():
        pass

    @task('thumb', limit='render')
    def thumb():
        pass

    one = render.using(service, now=0)().jobid
    two = thumb.using(service, now=0)().jobid
    assert service.jobs[one].limit == service.jobs[two].limit == 'render'
    assert service.getLimits()['render'].concurrency == 1
    assert claimAll(service, now=1) == [one]
    finish(service, one, now=2)
    assert claimAll(service, now=2) == [two]


def test_retries_and_cron_runs_wait_for_their_limit(service):
    service.setLimit('one', concurrency=1, now=0)
    failing = service.add('fail', now=0, limit='one', retries=1,
                          retryDelay=0, leaseSeconds=1000)
    cron = service.addCronJob('echo', interval=60, now=0, limit='one')
    assert claimAll(service, now=1) == [failing]
    assert service.jobs[cron].scheduledFor == 61
    assert claimAll(service, now=62) == []        # the cron run waits
    assert 'held back' in service.waitingFor(cron, now=62)
    finish(service, failing, now=63, failed=True)
    # The slot goes to the cron run that waited; the retry waits behind it.
    assert claimAll(service, now=63) == [cron]
    assert service.jobs[failing].status == 'retrying'
    finish(service, cron, now=64)
    assert claimAll(service, now=64) == [failing]


def test_cancelling_or_pausing_gives_the_slot_back(service):
    service.setLimit('one', concurrency=1, now=0)
    a, b, c = (service.add('echo', n, now=0, limit='one') for n in 'abc')
    assert claimAll(service, now=1) == [a]
    service.cancel(b, now=1)                       # a waiting one: gone
    service.cancel(a, now=2)                       # the running one
    assert claimAll(service, now=2) == [c]
    service.releaseClaim(c, service.jobs[c].lease.token, now=3)
    service.pause(c, now=3)
    d = service.add('echo', 'd', now=3, limit='one')
    assert claimAll(service, now=4) == [d]
    service.resume(c, now=4)
    assert claimAll(service, now=5) == []
    finish(service, d, now=6)
    assert claimAll(service, now=6) == [c]


def test_raising_a_limit_lets_more_through_at_once(service):
    service.setLimit('grow', concurrency=1, now=0)
    ids = [service.add('echo', n, now=0, limit='grow') for n in range(4)]
    assert claimAll(service, now=1) == ids[:1]
    service.setLimit('grow', concurrency=3, now=2)
    assert claimAll(service, now=2) == ids[1:3]
    service.setLimit('grow', now=3)                # no bounds
    assert claimAll(service, now=3) == ids[3:]


@pytest.mark.parametrize('kw, error, text', [
    (dict(concurrency=0), ValueError, 'from 1 to'),
    (dict(concurrency=2.0), TypeError, 'whole number'),
    (dict(concurrency=True), TypeError, 'whole number'),
    (dict(rate='10 per second'), ValueError, "like '10/s'"),
    (dict(rate='0/s'), ValueError, 'from one job a day'),
    (dict(rate='5000/s'), ValueError, 'from one job a day'),
    (dict(rate='nan/s'), ValueError, "like '10/s'"),
    (dict(rate=10), TypeError, "a string like '10/s'"),
])
def test_bad_bounds_are_refused_and_leave_no_trace(service, kw, error, text):
    with pytest.raises(error, match=text):
        service.setLimit('x', now=0, **kw)
    assert service.getLimits() == {}


@pytest.mark.parametrize('limit, error, text', [
    ('nowhere', ValueError, "no limit is named 'nowhere'"),
    ('', ValueError, 'limit must be a name'),
    (' padded', ValueError, 'limit must be a name'),
    (7, TypeError, 'limit must be the name'),
])
def test_a_job_naming_a_bad_limit_is_refused(service, limit, error, text):
    with pytest.raises(error, match=text):
        service.add('echo', now=0, limit=limit)
    assert len(service.jobs) == 0 and service.getLimits() == {}


def test_a_task_declaring_a_bad_limit_is_refused_when_it_is_declared(tasks):
    with pytest.raises(ValueError, match='concurrency must be'):
        task('bad', concurrency=-1)(lambda: None)
    with pytest.raises(ValueError, match='rate must be'):
        task('bad', rate='fast')(lambda: None)


def test_rate_strings():
    assert limits.rate_interval('10/s') == 0.1
    assert limits.rate_interval('100/m') == 0.6
    assert limits.rate_interval('1000/h') == 3.6
    assert limits.rate_interval('2/day') == 43200
    assert limits.rate_interval(' 1.5 / min ') == 40


# -- random histories ------------------------------------------------------------

from hypothesis import HealthCheck  # noqa: E402
from hypothesis import settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine  # noqa: E402
from hypothesis.stateful import invariant  # noqa: E402
from hypothesis.stateful import rule  # noqa: E402

from zodbtasks import interfaces  # noqa: E402

LIMITS = {'two': dict(concurrency=2), 'rated': dict(rate='4/s'),
          'both': dict(concurrency=1, rate='2/s')}


class LimitedService(RuleBasedStateMachine):
    """Jobs of three limits through random claims, outcomes, lost leases,
    cancels, pauses and changes of bounds; the bounds must hold after
    every step, and no job may be stuck behind a limit that has room."""

    def __init__(self):
        super().__init__()
        zope.component.testing.setUp()
        zope.component.provideUtility(
            zodbtasks.SimpleTask(lambda input: input), name='echo')
        self.service = zodbtasks.TaskService()
        self.now = 0.0
        for name, bounds in LIMITS.items():
            self.service.setLimit(name, now=0, **bounds)
        self.starts = {name: [] for name in LIMITS}
        self.ids = []

    def teardown(self):
        zope.component.testing.tearDown()

    @rule(limit=st.sampled_from(sorted(LIMITS)), priority=st.integers(0, 9),
          cron=st.booleans())
    def add(self, limit, priority, cron):
        if cron:
            jobid = self.service.addCronJob('echo', interval=1, now=self.now,
                                            limit=limit, priority=priority,
                                            leaseSeconds=5)
        else:
            jobid = self.service.add('echo', now=self.now, limit=limit,
                                     priority=priority, leaseSeconds=5,
                                     retries=2, retryDelay=0.5)
        self.ids.append(jobid)

    @rule(seconds=st.sampled_from([0, 0.05, 0.1, 0.25, 0.5, 1, 6]))
    def wait(self, seconds):
        self.now = round(self.now + seconds, 3)

    @rule()
    def claim(self):
        jobid = self.service.claimNextJob(now=self.now)
        if jobid is not None:
            job = self.service.jobs[jobid]
            self.starts[job.limit].append(self.now)

    @rule(data=st.data(), failed=st.booleans())
    def end(self, data, failed):
        running = [j for j in self.ids
                   if self.service.jobs[j].status == 'processing']
        if running:
            jobid = data.draw(st.sampled_from(running))
            finish(self.service, jobid, self.now, failed)

    @rule(data=st.data(), pause=st.booleans())
    def cancelOrPause(self, data, pause):
        if not self.ids:
            return
        jobid = data.draw(st.sampled_from(self.ids))
        job = self.service.jobs[jobid]
        if job.status in interfaces.FINISHED:
            return
        if pause:
            if job.paused:
                self.service.resume(jobid, now=self.now)
            elif job.status != 'processing' or isinstance(
                    job, zodbtasks.job.CronJob):
                self.service.pause(jobid, now=self.now)
        else:
            self.service.cancel(jobid, now=self.now)

    @rule()
    def raiseTheBound(self):
        # Raised only: jobs let through under a higher bound keep their
        # slots when it is lowered, and the invariant would not hold.
        self.service.setLimit('two', concurrency=3, now=self.now)

    @invariant()
    def boundsHold(self):
        live = {name: 0 for name in LIMITS}
        for jobid in self.ids:
            job = self.service.jobs[jobid]
            if job.status == 'processing' and job.lease is not None \
                    and job.lease.expires > self.now:
                live[job.limit] += 1
        for name, limit in self.service.getLimits().items():
            if limit.concurrency is not None:
                assert live[name] <= limit.concurrency, (name, live)
            if limit.interval is not None:
                starts = self.starts[name]
                gaps = [b - a for a, b in zip(starts, starts[1:])]
                assert all(gap >= limit.interval - 1e-9 for gap in gaps), (
                    name, starts)

    @invariant()
    def nobodyWaitsBehindRoom(self):
        for limit in self.service.getLimits().values():
            if limit.waiting:
                assert not limit.canAdmit(), limit.name
            for jobid in limit.waiting.values():
                job = self.service.jobs[jobid]
                assert job._index == '_limited' and not job.paused
                assert job.status in ('queued', 'retrying', 'cronjob')

    @invariant()
    def holdersAreLetThroughJobs(self):
        for limit in self.service.getLimits().values():
            for jobid in limit.holders | ({limit.released} - {None}):
                job = self.service.jobs[jobid]
                assert job.status not in interfaces.FINISHED
                assert job._index != '_limited' and not job.paused or \
                    job.status == 'processing'


TestLimitedService = LimitedService.TestCase
TestLimitedService.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])


def test_show_says_what_a_job_waits_for(tmp_path, tasks, capsys):
    import ZODB
    import ZODB.FileStorage
    from zodbtasks.cli import main
    path = str(tmp_path / 'Data.fs')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    with db.transaction() as conn:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
        service.setLimit('api', rate='1/m', now=0)
        first = service.add('echo', now=0, limit='api')
        second = service.add('echo', now=0, limit='api')
        assert service.claimNextJob(now=0) == first
    db.close()
    code = main(['show', '--db', path, '--service', 'tasks', '--now', '1',
                 str(second)])
    out = capsys.readouterr().out
    assert code == 0
    assert ("waitingFor    rate limited until 1970-01-01 00:01:00.000 UTC "
            "(limit 'api', at most 1/m)") in out
    assert 'limit         api' in out


def test_limits_from_the_command_line(tmp_path, tasks, capsys):
    import json
    import ZODB
    import ZODB.FileStorage
    from zodbtasks.cli import main
    path = str(tmp_path / 'Data.fs')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    with db.transaction() as conn:
        conn.root()['tasks'] = zodbtasks.TaskService()
    db.close()
    on = ['--db', path, '--service', 'tasks', '--now', '5']
    assert main(['limit', 'api', '--rate', '10/s', '--concurrency', '2']
                + on) == 0
    assert capsys.readouterr().out == (
        'limit api: 0 of 2 slots in use, at most 10/s\n')
    for _ in range(3):
        assert main(['add', 'echo', '--limit', 'api'] + on) == 0
    assert main(['limit', 'api', '--rate', 'none'] + on) == 0
    capsys.readouterr()
    assert main(['limits', '--json'] + on) == 0
    assert json.loads(capsys.readouterr().out) == [
        {'name': 'api', 'concurrency': 2, 'inUse': 2, 'rate': None,
         'nextStart': None, 'waiting': 1}]
    assert main(['limit', 'api', '--rate', 'fast'] + on) == 1
    assert "rate must be a number of jobs per second" in \
        capsys.readouterr().err
    assert main(['add', 'echo', '--limit', 'other'] + on) == 1
    assert "no limit is named 'other'" in capsys.readouterr().err
