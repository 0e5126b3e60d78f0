"""Claims are leases: a worker that stops renewing one loses its job."""
import pytest
import zope.component

from zodbtasks import interfaces
from zodbtasks.interfaces import LeaseLost


def claim(service, now, **kw):
    jobid = service.claimNextJob(now, **kw)
    return jobid, (service.jobs[jobid].lease if jobid else None)


def test_a_claim_holds_the_job_under_a_lease(service):
    jobid = service.add('echo', 'x')
    got, lease = claim(service, 100, worker='w1')
    assert got == jobid
    job = service.jobs[jobid]
    assert (job.status, job.started, job.attempts) == ('processing', 100, 1)
    assert (lease.worker, lease.expires) == ('w1', 160)
    assert not service.hasJobsWaiting(now=159)
    assert not service.isIdle(now=159)
    assert service.processNext(now=120, jobid=jobid, token=lease.token)
    assert service.getStatus(jobid) == 'completed'
    assert job.lease is None
    assert service.isIdle(now=10 ** 6)


def test_an_expired_lease_gives_the_job_back_and_counts_the_attempt(service,
                                                                    tasks):
    first = service.add('echo', 'first')
    later = service.add('echo', 'later')
    jobid, lease = claim(service, 0, worker='dead')
    assert jobid == first
    assert service.hasJobsWaiting(now=61)
    # The next claim after the lease ran out finds the job again, ahead of
    # the job that was added after it.
    again, lease2 = claim(service, 61, worker='alive')
    assert again == first
    assert service.jobs[first].attempts == 2
    assert service.processNext(now=62, jobid=first, token=lease2.token)
    assert service.getStatus(first) == 'completed'
    # The first worker's late result is refused.
    with pytest.raises(LeaseLost, match='no longer held'):
        service.processNext(now=63, jobid=first, token=lease.token)
    assert tasks == [('echo', 'first')]
    assert service.getStatus(later) == 'queued'


def test_an_at_most_once_job_fails_when_its_worker_is_lost(service, tasks):
    jobid = service.add('echo', 'once', atMostOnce=True, leaseSeconds=5)
    claim(service, 0, worker='w9')
    assert service.claimNextJob(now=5.5) is None
    assert service.getStatus(jobid) == 'error'
    assert service.getError(jobid) == (
        'the worker w9 lost its lease on this job at 5')
    assert tasks == []


def test_a_heartbeat_extends_the_lease(service):
    jobid = service.add('echo', leaseSeconds=10)
    _, lease = claim(service, 0)
    assert lease.expires == 10
    assert service.heartbeat(jobid, lease.token, now=8) == 18
    assert service.claimNextJob(now=15) is None      # still held
    assert service.getStatus(jobid) == 'processing'
    assert service.heartbeat(jobid, lease.token, now=17, seconds=100) == 117
    assert not service.hasJobsWaiting(now=116)


def test_a_heartbeat_after_the_lease_was_lost_raises(service):
    jobid = service.add('echo')
    _, lease = claim(service, 0)
    service.claimNextJob(now=100)       # recovers and claims it again
    with pytest.raises(LeaseLost, match=str(jobid)):
        service.heartbeat(jobid, lease.token, now=101)
    token = service.jobs[jobid].lease.token
    service.cancel(jobid)
    assert service.jobs[jobid].lease is None
    with pytest.raises(LeaseLost, match="'cancelled'"):
        service.heartbeat(jobid, token, now=102)


def test_a_cron_job_whose_worker_died_runs_again_at_once(service, tasks):
    jobid = service.addCronJob('echo', 'c', minute=(0,))
    service.processNext(now=0)                       # placed at 01:00
    claimed, lease = claim(service, 3600)
    assert claimed == jobid
    assert service.jobs[jobid].scheduledFor == 7200  # next run already placed
    got, lease2 = claim(service, 3600 + 61)
    assert got == jobid and service.jobs[jobid].attempts == 2
    assert service.processNext(now=3662, jobid=jobid, token=lease2.token)
    assert service.getStatus(jobid) == 'cronjob'
    assert service.jobs[jobid].scheduledFor == 7200
    assert tasks == [('echo', 'c')]


def test_a_cron_run_still_going_is_not_started_twice(service):
    jobid = service.addCronJob('echo', minute=tuple(range(60)),
                               leaseSeconds=600)
    service.processNext(now=0)
    assert service.claimNextJob(now=60) == jobid
    token = service.jobs[jobid].lease.token
    # Due again a minute later while the first run holds it: not claimed.
    # By default the next run waits for this one, and the job says so.
    assert service.claimNextJob(now=120) is None
    job = service.jobs[jobid]
    assert (job.status, job.waitingRun) == ('processing', True)
    assert job.lastMissed == (120, 1, 'waiting')
    assert service.processNext(now=130, jobid=jobid, token=token)
    assert (job.status, job.scheduledFor, job.waitingRun) == (
        'cronjob', 130, False)
    assert service.processNext(now=130)
    assert job.scheduledFor == 180


def test_overlap_skip_drops_the_run_that_came_due_during_another(service):
    jobid = service.addCronJob('echo', minute=tuple(range(60)),
                               leaseSeconds=600, overlap='skip')
    service.processNext(now=0)
    assert service.claimNextJob(now=60) == jobid
    assert service.claimNextJob(now=120) is None
    job = service.jobs[jobid]
    assert (job.scheduledFor, job.missedRuns, job.lastMissed) == (
        180, 1, (120, 1, 'skipped'))


def test_bad_lease_options_are_refused(service):
    with pytest.raises(ValueError, match='leaseSeconds.*0'):
        service.add('echo', leaseSeconds=0)
    with pytest.raises(TypeError, match="atMostOnce.*'yes'"):
        service.add('echo', atMostOnce='yes')
    with pytest.raises(TypeError, match='unknown job option.*misfire'):
        service.add('echo', misfire='skip')
    with pytest.raises(ValueError, match='lease.*-1'):
        service.claimNextJob(now=0, lease=-1)
    assert len(service.jobs) == 0


def test_a_task_can_cancel_and_a_worker_learns_it(service):
    def selfcancel(svc, jobid, input):
        svc.cancel(jobid)

    zope.component.provideUtility(selfcancel, interfaces.ITask, name='sc')
    jobid = service.add('sc')
    _, lease = claim(service, 0)
    assert service.processNext(now=1, jobid=jobid, token=lease.token)
    assert service.getStatus(jobid) == 'cancelled'
    assert service.isIdle(now=1000)


def test_spread_claims_take_lane_heads_and_still_take_every_job(service,
                                                               tasks):
    import random
    from zodbtasks.queues import LANE_SHIFT as _LANE_SHIFT
    random.seed(5)
    ids = [service.add('echo', n, now=0) for n in range(200)]
    lane = {i: service.jobs[i]._indexKey >> _LANE_SHIFT for i in ids}
    claimed = []
    while True:
        jobid = service.claimNextJob(now=1, spread=True)
        if jobid is None:
            break
        claimed.append(jobid)
    assert sorted(claimed) == sorted(ids)
    assert claimed != ids       # not strictly oldest first
    # Within each lane, the oldest job still went first.
    for n in set(lane.values()):
        assert [i for i in claimed if lane[i] == n] == [
            i for i in ids if lane[i] == n]


# -- claiming a batch ------------------------------------------------------

def test_claim_jobs_takes_a_batch_oldest_first(service, tasks):
    ids = [service.add('echo', n, now=0) for n in range(5)]
    got = service.claimJobs(now=1, count=3, worker='w')
    assert got == ids[:3]
    assert service.claimJobs(now=1, count=10, worker='w') == ids[3:]
    assert service.claimJobs(now=1, count=10, worker='w') == []
    assert {service.jobs[i].status for i in ids} == {'processing'}


def test_a_spread_batch_comes_from_one_lane_while_it_lasts(service, tasks):
    import random
    from zodbtasks.queues import LANE_SHIFT as _LANE_SHIFT
    from zodbtasks.queues import lane_first as _laneFirst
    random.seed(11)
    ids = [service.add('echo', n, now=0) for n in range(300)]
    lane = {i: service.jobs[i]._indexKey >> _LANE_SHIFT for i in ids}
    claimed = []
    while True:
        batch = service.claimJobs(now=1, count=8, spread=True)
        if not batch:
            break
        lanes = [lane[i] for i in batch]
        # Each lane's jobs in one run, and a lane is left only when empty.
        changes = sum(a != b for a, b in zip(lanes, lanes[1:]))
        assert changes == len(set(lanes)) - 1
        assert all(_laneFirst(service._queue[n], n) is None
                   for n in lanes[:-1] if n != lanes[-1])
        claimed.extend(batch)
    assert sorted(claimed) == sorted(ids)
    for n in set(lane.values()):
        assert [i for i in claimed if lane[i] == n] == [
            i for i in ids if lane[i] == n]


def test_the_leases_of_a_batch_share_one_tree(service, tasks):
    from zodbtasks.lease_index import SHARD_MASK as _LEASE_SHARD_MASK
    for n in range(50):
        service.add('echo', n, now=0)
    for _ in range(5):
        batch = service.claimJobs(now=1, count=10)
        shards = {service.jobs[i].lease.key & _LEASE_SHARD_MASK
                  for i in batch}
        assert len(shards) == 1
        tree = service._leases[shards.pop()]
        assert all(tree[service.jobs[i].lease.key] == i for i in batch)


def test_a_worker_keeps_to_the_lease_tree_its_name_chooses(service, tasks):
    from zodbtasks.lease_index import SHARD_MASK as _LEASE_SHARD_MASK
    for n in range(40):
        service.add('echo', n, now=0)
    trees = {}
    for round in range(4):
        for worker in ('host:1:a', 'host:2:b', 'host:3:c', 'host:4:d'):
            for jobid in service.claimJobs(now=1, count=2, worker=worker):
                key = service.jobs[jobid].lease.key
                trees.setdefault(worker, set()).add(key & _LEASE_SHARD_MASK)
    assert all(len(shards) == 1 for shards in trees.values())
    assert len(set.union(*trees.values())) > 1   # not all in one tree


def test_recording_with_release_drops_the_lease_from_the_index(service,
                                                               tasks):
    from zodbtasks.lease_index import SHARD_MASK as _LEASE_SHARD_MASK
    kept, released = (service.add('echo', n, now=0) for n in 'ab')
    for jobid, release in ((kept, False), (released, True)):
        [got] = service.claimJobs(now=1, count=1, worker='w')
        lease = service.jobs[got].lease
        tree = service._leases[lease.key & _LEASE_SHARD_MASK]
        outcome = service.runClaimed(got, lease.token, now=2)
        service.recordOutcome(got, lease.token, outcome, release=release)
        assert service.getStatus(got) == 'completed'
        assert (lease.key in tree) is not release


def test_a_heartbeat_writes_the_lease_alone_and_expiry_still_works(
        service, tasks):
    """A heartbeat leaves the lease index as it is, so that renewals never
    conflict over its trees; the claim that passes the old end moves the
    entry on, in the same tree."""
    from zodbtasks.lease_index import SHARD_MASK as _LEASE_SHARD_MASK
    jobid = service.add('echo', 'x', now=0)
    [got] = service.claimJobs(now=0, count=1, worker='w')
    lease = service.jobs[jobid].lease
    shard, oldKey = lease.key & _LEASE_SHARD_MASK, lease.key
    assert service.heartbeat(jobid, lease.token, now=50) == 110
    assert lease.key == oldKey and oldKey in service._leases[shard]
    assert not service.hasJobsWaiting(now=61)
    assert service.claimNextJob(now=61, worker='v') is None
    assert lease.key != oldKey and lease.key & _LEASE_SHARD_MASK == shard
    assert oldKey not in service._leases[shard]
    assert not service.hasJobsWaiting(now=109)
    assert service.hasJobsWaiting(now=111)
    assert service.claimNextJob(now=111, worker='v') == jobid
    assert service.jobs[jobid].attempts == 2


def test_a_heartbeat_never_shortens_a_lease(service, tasks):
    jobid = service.add('echo', 'x', now=0, leaseSeconds=100)
    [got] = service.claimJobs(now=0, count=1, worker='w')
    lease = service.jobs[jobid].lease
    assert service.heartbeat(jobid, lease.token, now=10, seconds=5) == 100


def test_a_heartbeat_and_a_start_mark_at_once_both_hold(tmp_path, tasks):
    """Two connections write the same lease, one renewing it and one saying
    that its run began: the lease resolves the conflict and keeps both.
    (FileStorage resolves conflicts; MappingStorage does not.)"""
    import transaction
    import ZODB
    import ZODB.FileStorage
    import zodbtasks
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    with db.transaction() as conn:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
        jobid = service.add('echo', 'x', now=0)
        [got] = service.claimJobs(now=0, count=1, worker='w', start=0)
        token = service.jobs[jobid].lease.token
    tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
    one, two = db.open(transaction_manager=tm1), db.open(transaction_manager=tm2)
    try:
        tm1.begin()
        tm2.begin()
        one.root()['tasks'].heartbeat(jobid, token, now=30, started=False)
        two.root()['tasks'].markStarted(jobid, token, now=20)
        tm1.commit()
        tm2.commit()
        tm1.begin()
        lease = one.root()['tasks'].jobs[jobid].lease
        assert (lease.expires, lease.started) == (90, 20)
    finally:
        tm1.abort()
        tm2.abort()
        one.close()
        two.close()
        db.close()


@pytest.mark.parametrize('count', [-1, 1.5, '3', None, True])
def test_claim_jobs_refuses_a_bad_count(service, count):
    service.add('echo', 'x', now=0)
    with pytest.raises(ValueError, match='count must be an int of 0 or '
                       'more, not %s' % repr(count).replace('.', r'\.')):
        service.claimJobs(now=1, count=count)
    assert service.getStatus(list(service.jobs)[0]) == 'queued'


def test_a_service_of_layout_1_is_upgraded_by_the_next_claim(service, tasks):
    """Development versions kept one lease tree and lanes without their
    placeholder: the next claim brings them up to date, and nothing held
    or queued is lost."""
    from BTrees.LLBTree import LLBTree
    from zodbtasks.queues import LANE_SHIFT as _LANE_SHIFT
    from zodbtasks.queues import PLACEHOLDER as _PLACEHOLDER
    from zodbtasks.queues import lane_first as _laneFirst
    from zodbtasks.service import LAYOUT
    held = service.add('echo', 'held', now=0)
    first, second = (service.add('echo', n, now=1) for n in 'ab')
    assert service.claimNextJob(now=0, worker='w') == held
    # Back to layout 1: one lease tree, no placeholders, and a job sitting
    # on the key where its lane's placeholder goes.
    leases = LLBTree()
    for tree in service._leases:
        leases.update(tree)
    service._leases = leases
    for n, lane in enumerate(service._queue):
        del lane[n << _LANE_SHIFT]
    job = service.jobs[first]
    n = job._indexKey >> _LANE_SHIFT
    del service._queue[n][job._indexKey]
    service._queue[n][n << _LANE_SHIFT] = first
    job._indexKey = n << _LANE_SHIFT
    service._layout = 1

    assert service.hasJobsWaiting(now=1)
    assert service.claimNextJob(now=1, worker='w') == first
    assert service._layout == LAYOUT
    assert all(lane[n << _LANE_SHIFT] == _PLACEHOLDER
               for n, lane in enumerate(service._queue))
    assert len(service._leases) == 16
    assert service.claimNextJob(now=2, worker='w') == second
    assert all(_laneFirst(lane, n) is None
               for n, lane in enumerate(service._queue))
    # The lease taken before the upgrade still expires and is recovered.
    assert service.claimNextJob(now=60.5, worker='v') == held
    assert service.jobs[held].attempts == 2


def test_a_layout_1_service_with_the_new_trees_already_is_upgraded_too(
        service, tasks):
    from zodbtasks.service import LAYOUT
    held = service.add('echo', 'held', now=0)
    queued = service.add('echo', 'queued', now=0)
    assert service.claimNextJob(now=0, worker='w') == held
    service._layout = 1
    assert service.claimNextJob(now=1, worker='w') == queued
    assert service._layout == LAYOUT
    assert service.claimNextJob(now=60.5, worker='v') == held


def test_a_lease_extended_to_the_same_millisecond_does_not_stall_claims(
        service, tasks):
    """An entry whose lease was extended to a time within the claim's own
    millisecond stays where it is: moving it would find it again."""
    jobid = service.add('echo', 'x', now=0)
    other = service.add('echo', 'y', now=0)
    [got] = service.claimJobs(now=0, count=1, worker='w')
    lease = service.jobs[jobid].lease
    lease.expires = 60.0004          # as a heartbeat could leave it
    assert service.claimNextJob(now=60.0001, worker='v') == other
    assert service.getStatus(jobid) == 'processing'
    assert service.claimNextJob(now=60.001, worker='v') == jobid
