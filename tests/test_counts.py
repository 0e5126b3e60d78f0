"""Counts by status and task: kept as jobs change, equal to a full count.

A service keeps the number of its jobs by (status, task), so that
``status``, the dashboard and ``/api/counts`` need not read every job. The
tests drive services through random histories, alone and from two
connections that commit at once, and compare the counts kept with a count
of every job; they count the objects a count loads; and they upgrade a
service of the layout before, counting its jobs in batches while claims go
on.
"""
import collections
import random

import persistent.mapping
import pytest
import transaction
import ZODB
import ZODB.FileStorage
import ZODB.POSException
import zope.component
import zope.component.testing
from BTrees.OOBTree import OOBTree
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine
from hypothesis.stateful import invariant
from hypothesis.stateful import rule

import zodbtasks
from zodbtasks import counts
from zodbtasks import interfaces
from zodbtasks._trees import ShardedSet


def fullCount(service):
    found = collections.Counter()
    for job in service.jobs.values():
        found[(job.status, job.task)] += 1
    return dict(found)


def keptCount(service):
    assert service.countsComplete()
    return counts.total(service._counts)


def registerTasks():
    zope.component.provideUtility(zodbtasks.SimpleTask(lambda input: input),
                                  name='ok')

    def fail(input):
        raise zodbtasks.TaskError('fails on purpose')
    zope.component.provideUtility(zodbtasks.SimpleTask(fail), name='fail')


# -- the counts of one service, through random histories -----------------------

class CountedService(RuleBasedStateMachine):
    """Every operation of the service, valid or not, in random order; the
    counts kept must equal a full count after each."""

    def __init__(self):
        super().__init__()
        zope.component.testing.setUp()
        registerTasks()
        self.service = zodbtasks.TaskService()
        self.now = 0.0

    def teardown(self):
        zope.component.testing.tearDown()

    def _any(self, data):
        ids = sorted(self.service.jobs.keys())
        return data.draw(st.sampled_from(ids)) if ids else None

    def _try(self, call, *args, **kw):
        try:
            call(*args, **kw)
        except (ValueError, KeyError, interfaces.LeaseLost):
            pass        # refused: it must leave the counts as they were

    @rule(task=st.sampled_from(['ok', 'fail']), later=st.booleans(),
          retries=st.integers(0, 2), ttl=st.sampled_from([None, 0, 50]))
    def add(self, task, later, retries, ttl):
        self.service.add(task, 1, startLater=later, now=self.now,
                         retries=retries, retryDelay=5, ttl=ttl)

    @rule(kind=st.sampled_from(['interval', 'delay', 'cron']),
          later=st.booleans(), maxRuns=st.sampled_from([None, 1, 2]))
    def addRepeating(self, kind, later, maxRuns):
        if kind == 'delay':
            self.service.addCronJob('ok', delay=30, startLater=later,
                                    now=self.now)
        else:
            self.service.addCronJob(
                'fail' if kind == 'cron' else 'ok', startLater=later,
                now=self.now, maxRuns=maxRuns,
                **({'interval': 40} if kind == 'interval' else
                   {'cron': '*/2 * * * *'}))

    @rule(name=st.sampled_from(['startJob', 'cancel', 'pause', 'resume',
                                'runNow', 'retry']),
          data=st.data())
    def manage(self, name, data):
        jobid = self._any(data)
        if jobid is not None:
            self._try(getattr(self.service, name), jobid, now=self.now)

    @rule(data=st.data())
    def reschedule(self, data):
        jobid = self._any(data)
        if jobid is not None:
            self._try(self.service.reschedule, jobid)

    @rule(seconds=st.sampled_from([1, 10, 70, 400]))
    def wait(self, seconds):
        self.now += seconds

    @rule()
    def processNext(self):
        self.service.processNext(now=self.now)

    @rule(count=st.integers(1, 3), start=st.integers(0, 3))
    def claim(self, count, start):
        # Claims that are never run: their leases run out (lost runs and
        # claims given back) as the clock moves on.
        self.service.claimJobs(self.now, count, 'w', lease=60,
                               start=min(start, count))

    @rule(data=st.data(), fails=st.booleans())
    def recordOrRelease(self, data, fails):
        held = [job for job in self.service.jobs.values()
                if job.status == interfaces.PROCESSING and job.lease]
        if not held:
            return
        job = data.draw(st.sampled_from(held))
        if data.draw(st.booleans()):
            self._try(self.service.releaseClaim, job.id, job.lease.token,
                      now=self.now)
        else:
            self._try(self.service.runClaimed, job.id, job.lease.token,
                      now=self.now)

    @rule(status=st.sampled_from(interfaces.FINISHED))
    def clean(self, status):
        self.service.clean(status)

    @rule()
    def purge(self):
        self.service.purgeExpired(now=self.now)

    @invariant()
    def countsEqualAFullCount(self):
        assert keptCount(self.service) == fullCount(self.service)

    @invariant()
    def listingsEqualAFullScan(self):
        assert keptListing(self.service) == fullListing(self.service)

    @invariant()
    def aCountIsASum(self):
        kept = keptCount(self.service)
        assert self.service.countJobs() == len(self.service.jobs)
        for status in interfaces.STATUSES:
            assert self.service.countJobs(status) == sum(
                n for (s, t), n in kept.items() if s == status)
        assert self.service.countJobs(task='ok') == sum(
            n for (s, t), n in kept.items() if t == 'ok')


TestCountedService = CountedService.TestCase
TestCountedService.settings = settings(
    max_examples=120, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])


# -- two connections committing at once --------------------------------------

class TwoConnections(RuleBasedStateMachine):
    """Two connections to one FileStorage, each with a transaction open,
    change jobs and commit in random order; a commit that conflicts is
    aborted. What is committed must always count right."""

    def __init__(self):
        super().__init__()
        import tempfile
        zope.component.testing.setUp()
        registerTasks()
        self.dir = tempfile.TemporaryDirectory()
        self.db = ZODB.DB(ZODB.FileStorage.FileStorage(
            self.dir.name + '/Data.fs'))
        with self.db.transaction() as conn:
            conn.root()['tasks'] = zodbtasks.TaskService()
        self.sides = []
        for _ in range(2):
            tm = transaction.TransactionManager()
            conn = self.db.open(transaction_manager=tm)
            tm.begin()
            self.sides.append((conn, tm))
        self.now = 0.0
        self.conflicts = 0

    def teardown(self):
        for conn, tm in self.sides:
            tm.abort()
            conn.close()
        self.db.close()
        self.dir.cleanup()
        zope.component.testing.tearDown()

    def _service(self, side):
        return self.sides[side][0].root()['tasks']

    @rule(side=st.integers(0, 1), n=st.integers(1, 3),
          task=st.sampled_from(['ok', 'fail']))
    def add(self, side, n, task):
        for _ in range(n):
            self._service(side).add(task, now=self.now)

    @rule(side=st.integers(0, 1), count=st.integers(1, 2))
    def claim(self, side, count):
        self._service(side).claimJobs(self.now, count, 'w%d' % side,
                                      lease=30, start=count)

    @rule(side=st.integers(0, 1))
    def runHeld(self, side):
        service = self._service(side)
        for job in list(service.jobs.values()):
            if job.status == interfaces.PROCESSING and job.lease:
                try:
                    service.runClaimed(job.id, job.lease.token, now=self.now)
                except interfaces.LeaseLost:
                    pass
                return

    @rule(side=st.integers(0, 1), data=st.data())
    def cancel(self, side, data):
        service = self._service(side)
        ids = sorted(service.jobs.keys())
        if ids:
            service.cancel(data.draw(st.sampled_from(ids)), now=self.now)

    @rule(side=st.integers(0, 1), status=st.sampled_from(interfaces.FINISHED))
    def clean(self, side, status):
        self._service(side).clean(status)

    @rule(seconds=st.sampled_from([5, 40]))
    def wait(self, seconds):
        self.now += seconds

    @rule(side=st.integers(0, 1))
    def commit(self, side):
        conn, tm = self.sides[side]
        try:
            tm.commit()
        except ZODB.POSException.ConflictError:
            tm.abort()
            self.conflicts += 1
        tm.begin()

    @invariant()
    def committedCountsEqualAFullCount(self):
        with self.db.transaction() as conn:
            service = conn.root()['tasks']
            assert keptCount(service) == fullCount(service)
            assert keptListing(service) == fullListing(service)


TestTwoConnections = TwoConnections.TestCase
TestTwoConnections.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])


def test_concurrent_changes_to_one_shard_add_up(tmp_path, tasks):
    """Two workers that count in the same shard commit at once: neither
    conflicts, and both changes count."""
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    with db.transaction() as conn:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
        ids = [service.add('echo', n, now=0) for n in range(5)]
        # Each shard lists a (status, task) in a tree of its own, made by
        # the pair's first job: make it here, as the two sides would
        # conflict on making one (once per pair and shard).
        service._v_countShard = 3
        service.cancel(ids[-1], now=0)
        service.remove(ids[-1])
        del service._v_countShard
    sides = []
    for _ in range(2):
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        tm.begin()
        service = conn.root()['tasks']
        service._v_countShard = 3
        sides.append((service, tm))
    sides[0][0].cancel(ids[0], now=1)
    sides[1][0].cancel(ids[1], now=1)
    sides[1][0].add('fail', now=1)
    for service, tm in sides:
        tm.commit()
    with db.transaction() as conn:
        service = conn.root()['tasks']
        assert keptCount(service) == fullCount(service) == {
            ('queued', 'echo'): 2, ('cancelled', 'echo'): 2,
            ('queued', 'fail'): 1}
        listed, _ = service.listJobs('cancelled')
        assert sorted(job.id for job in listed) == sorted(ids[:2])
    db.close()


# -- what a count costs --------------------------------------------------------

@pytest.fixture(scope='module')
def sizes(tmp_path_factory):
    """FileStorages with 10,000 and 100,000 jobs of mixed statuses."""
    zope.component.testing.setUp()
    paths = {}
    try:
        registerTasks()
        for size in (10000, 100000):
            path = str(tmp_path_factory.mktemp('c%d' % size) / 'Data.fs')
            db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
            with db.transaction() as conn:
                conn.root()['tasks'] = zodbtasks.TaskService()
            for start in range(0, size, 10000):
                with db.transaction() as conn:
                    service = conn.root()['tasks']
                    ids = [service.add(random.choice(['ok', 'fail']), now=0)
                           for _ in range(10000)]
                    for jobid in ids[:3000]:
                        service.cancel(jobid, now=1)
            db.close()
            paths[size] = path
    finally:
        zope.component.testing.tearDown()
    return paths


def loadsFor(path, call):
    """How many objects ``call(service)`` loads from a cold cache."""
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path, read_only=True))
    try:
        loads = []
        storage = db.storage
        original = storage.loadBefore

        def counting(oid, tid):
            loads.append(oid)
            return original(oid, tid)
        storage.loadBefore = counting
        conn = db.open()
        try:
            service = conn.root()['tasks']
            service._p_activate()
            before = len(loads)
            result = call(service)
            return len(loads) - before, result
        finally:
            conn.close()
    finally:
        db.close()


def test_a_count_loads_the_same_few_objects_at_any_size(sizes):
    small, big = (loadsFor(sizes[n], lambda s: s.jobCounts())
                  for n in (10000, 100000))
    assert big[1][('cancelled', 'ok')] + big[1][('cancelled', 'fail')] \
        == 30000
    assert sum(big[1].values()) == 100000
    # The 16 shards, whatever the number of jobs...
    assert 0 < small[0] == big[0] <= counts.SHARDS
    # ... where reading every job loads them all (the loads are counted).
    assert loadsFor(sizes[10000], fullCount)[0] > 10000


def test_a_page_of_jobs_loads_what_it_shows_at_any_size(sizes):
    def page(status, task=None):
        return lambda service: [job.id for job in service.listJobs(
            status, task, limit=100)[0]]

    for status, task in [('cancelled', None), ('queued', 'fail'),
                         (None, None)]:
        small, big = (loadsFor(sizes[n], page(status, task))
                      for n in (10000, 100000))
        assert len(small[1]) == len(big[1]) == 100
        # The jobs shown, the trees that hold them and the listing's heads:
        # a few objects per job, growing with the depth of the trees only.
        assert big[0] < 8 * 100 and big[0] < 2 * small[0], (status, task)


# -- a service of the layout before, counted in batches ----------------------

def oldLayout(service, layout=2):
    """Make ``service`` look as layout 2 (before counts) or 3 (before
    queues and listings) stored it."""
    service._layout = layout
    if layout < 3:
        del service._counts
        for tree in service._leases:
            del tree[0]
    del service._queues, service._listing
    service._finished = OOBTree()
    for status in interfaces.FINISHED:
        service._finished[status] = ShardedSet()
    for job in service.jobs.values():
        if layout < 3:
            job.__dict__.pop('_counted', None)
        for name in ('_listed', '_listKey', '_listShard'):
            job.__dict__.pop(name, None)
        if job.status in interfaces.FINISHED:
            service._finished[job.status].insert(job.id)
        job._p_changed = True


def fullListing(service):
    """Every job but the running ones by what it is counted as, from a
    full scan."""
    found = collections.defaultdict(set)
    for job in service.jobs.values():
        if job.status != interfaces.PROCESSING:
            found[(job.status, job.task)].add(job.id)
    return dict(found)


def keptListing(service):
    assert service.listingComplete()
    found = collections.defaultdict(set)
    for shard in service._listing:
        for key, tree in shard.items():
            ids = set(tree.values(min=0))
            if ids:
                found[key] |= ids
    return dict(found)


@pytest.mark.parametrize('layout', [2, 3])
def test_an_older_service_is_counted_in_batches_while_claims_go_on(
        tmp_path, tasks, layout):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    with db.transaction() as conn:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
        ids = [service.add('echo', n, now=0) for n in range(300)]
        for jobid in ids[::3]:
            service.cancel(jobid, now=0)
        oldLayout(service, layout)
    # The first claim upgrades the layout in O(1): counting and listing
    # only begin.
    with db.transaction() as conn:
        service = conn.root()['tasks']
        service.claimNextJob(now=1)
        assert service._layout == zodbtasks.service.LAYOUT
        assert service.countsComplete() == (layout == 3)
        assert not service.listingComplete()
        assert all(0 in tree for tree in service._leases)
    builder = transaction.TransactionManager()
    bconn = db.open(transaction_manager=builder)
    worker = transaction.TransactionManager()
    wconn = db.open(transaction_manager=worker)
    batches = conflicts = 0
    while True:
        # A batch and a worker's claims and runs, from two connections
        # with transactions open at once.
        builder.begin()
        worker.begin()
        counted = bconn.root()['tasks'].buildCounts(limit=50)
        wservice = wconn.root()['tasks']
        for _ in range(3):
            wservice.processNext(now=2)
        wservice.add('fail', now=2)
        order = [builder, worker]
        random.shuffle(order)
        if batches == 2:
            # Jobs that the batch counts go meanwhile, uncounted: the batch
            # must not count them.
            wservice.clean('cancelled')
            order = [worker, builder]
        for tm in order:
            try:
                tm.commit()
            except ZODB.POSException.ConflictError:
                tm.abort()
                conflicts += 1
        batches += 1
        assert batches < 100
        if counted == 0:
            builder.begin()
            if bconn.root()['tasks'].listingComplete():
                builder.abort()
                break
            builder.abort()
    bconn.close()
    wconn.close()
    with db.transaction() as conn:
        service = conn.root()['tasks']
        assert service.countsComplete()
        assert keptCount(service) == fullCount(service)
        assert fullCount(service)[('completed', 'echo')] > 0
        assert keptListing(service) == fullListing(service)
        assert service._finished is None     # the listings replace it
        page, _ = service.listJobs('completed', limit=1000)
        assert {job.id for job in page} == fullListing(service)[
            ('completed', 'echo')]
    db.close()


def test_counting_before_the_build_ends_reads_every_job(service):
    for n in range(5):
        service.add('echo', n, now=0)
    oldLayout(service)
    service.upgrade(now=0)
    assert not service.countsComplete()
    assert service.jobCounts() == {('queued', 'echo'): 5}
    assert service.countJobs('queued', 'echo') == 5
    assert service.buildCounts(limit=2) == 2
    assert service.buildCounts(limit=2) == 2
    assert service.buildCounts(limit=2) == 1
    assert service.countsComplete()
    assert keptCount(service) == {('queued', 'echo'): 5}
    assert service.buildCounts() == 0


@pytest.mark.parametrize('limit', [0, -1, 1.5, True, None, 'ten'])
def test_a_bad_batch_size_is_refused(service, limit):
    with pytest.raises(ValueError, match='limit must be'):
        service.buildCounts(limit=limit)


def test_a_bad_status_is_refused_and_named(service):
    with pytest.raises(ValueError, match="not 'done'"):
        service.countJobs('done')


def test_the_status_report_loads_as_much_at_100k_jobs_as_at_10k(sizes):
    from zodbtasks.admin import _survey
    small, big = (loadsFor(sizes[n], lambda s: _survey(s, 10, 10))
                  for n in (10000, 100000))
    assert big[1][1]['cancelled'] == 30000
    assert big[1][0]['oldestQueued'] is not None
    # Counts, the queue's head, the heads of the due and lease indexes:
    # the same few dozen objects, whatever the number of jobs.
    assert 0 < big[0] <= small[0] + 5 and big[0] < 100, (small[0], big[0])


# -- looking at the queue through its indexes --------------------------------

def test_the_indexes_answer_what_status_shows(service):
    first = service.add('echo', 1, now=0)
    service.add('echo', 2, now=1)
    late = service.addCronJob('echo', delay=10, now=0)
    later = service.addCronJob('echo', delay=20, now=0)
    cron = service.addCronJob('echo', interval=60, now=0)
    service.processNext(now=0)               # places the new cron jobs
    assert service.oldestQueued().id != first   # the first one ran
    held = service.claimNextJob(now=5, worker='w', lease=3)
    assert service.oldestQueued() is None
    assert [j.id for j in service.overdueJobs(now=25)] == [late, later]
    assert [j.id for j in service.overdueJobs(now=25, limit=1)] == [late]
    assert [j.id for j in service.overdueJobs(now=15)] == [late]
    assert [j.id for j in service.upcomingJobs(now=15)] == [cron]
    assert [j.id for j in service.upcomingJobs(now=15, repeating=False)] \
        == [later, cron]
    assert service.expiredLeases(now=7) == []
    assert [j.id for j in service.expiredLeases(now=9)] == [held]
    with pytest.raises(ValueError, match='limit must be'):
        service.overdueJobs(now=1, limit=-1)


def test_remove_takes_away_one_finished_job_and_its_count(service):
    done = service.add('echo', 1, now=0)
    waiting = service.add('echo', 2, now=0)
    service.cancel(done, now=1)
    with pytest.raises(ValueError, match="is 'queued'; only finished"):
        service.remove(waiting)
    assert service.remove(done) is True
    assert service.remove(done) is False
    assert done not in service.jobs
    assert keptCount(service) == fullCount(service) == {('queued', 'echo'): 1}


def test_clean_writes_one_shard_so_a_storage_that_merges_nothing_is_fine(
        tasks):
    """MappingStorage adds up no concurrent changes: a clean and a run in
    two connections of one process must not write the same shard."""
    import ZODB.MappingStorage
    db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
    with db.transaction() as conn:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
        service.cancel(service.add('echo', 0, now=0), now=0)
        service.add('echo', 1, now=0)
    sides = []
    for _ in range(2):
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        tm.begin()
        sides.append((conn.root()['tasks'], tm))
    sides[0][0].clean('cancelled')
    assert sides[1][0].processNext(now=1)
    for service, tm in sides:
        tm.commit()
    with db.transaction() as conn:
        service = conn.root()['tasks']
        assert keptCount(service) == fullCount(service) == {
            ('completed', 'echo'): 1}
    db.close()
