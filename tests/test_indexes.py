"""Where jobs wait (`zodbtasks.indexes`), on a service in memory.

Most of these go through the service's API; those that need an index in a
state the API reaches only by chance (a key on the edge of a millisecond, a
job in a chosen lane, a stale entry) file it with the index's own methods.
"""
import random
import shutil

import pytest
import transaction
import ZODB
import ZODB.FileStorage

import zodbtasks
from zodbtasks import interfaces
from zodbtasks import migration
from zodbtasks import queues
from zodbtasks.keys import LIMITED
from zodbtasks.keys import LOW_BITS
from zodbtasks.keys import NOW
from zodbtasks.keys import QUEUE
from zodbtasks.keys import RETRY
from zodbtasks.keys import SCHEDULED
from zodbtasks.keys import time_bound
from zodbtasks.keys import time_key
from zodbtasks.job import MAX_NOW
from zodbtasks.indexes import LAYOUT
from zodbtasks.service import TaskService

from test_counts import oldLayout
from test_migration import T0 as OLD_T0
from test_migration import localTime
from test_migration import oldJob
from test_migration import oldService
from test_stored_data import DATA as STORED
from test_stored_data import T0

pytestmark = pytest.mark.timeout(60)


def retrying(service, now=0, **options):
    """A job whose first run failed at ``now``: retrying, due 30 s later."""
    jobid = service.add('fail', 'x', now=now, retries=1, **options)
    assert service.processNext(now=now)
    assert service.getStatus(jobid) == interfaces.RETRYING
    return jobid


def claim(service, now, **options):
    """Claim the next job without starting its run: (id, lease token)."""
    jobid = service.claimNextJob(now=now, worker='w', **options)
    return jobid, service.jobs[jobid].lease.token


# -- giving a claim back -------------------------------------------------------

def test_a_claim_taken_from_the_due_tree_goes_back_first_in_its_queue(
        service):
    jobid = retrying(service)
    service.runNow(jobid, now=1)                  # due now, from the due tree
    older = [service.add('echo', n, now=1) for n in range(3)]
    assert claim(service, 2)[0] == jobid
    service.releaseClaim(jobid, service.jobs[jobid].lease.token, now=3)
    assert service.getStatus(jobid) == interfaces.QUEUED
    # Back at the front of the lanes, ahead of the jobs queued before it.
    assert [service.claimNextJob(now=4) for _ in range(4)] == [jobid] + older


def test_a_limited_claim_given_back_to_the_queue_is_let_through_again(
        service):
    service.setLimit('one', concurrency=1, now=0)
    jobid = retrying(service, limit='one')
    service.runNow(jobid, now=1)
    assert claim(service, 2)[0] == jobid
    older = service.add('echo', now=2)
    service.releaseClaim(jobid, service.jobs[jobid].lease.token, now=3)
    # It gave its slot back and took it again, at the front of the queue.
    assert service._limits['one'].holders == {jobid}
    assert [service.claimNextJob(now=4) for _ in range(2)] == [jobid, older]


# -- limits --------------------------------------------------------------------

def test_jobs_let_through_by_a_limit_use_every_lane(service):
    service.setLimit('many', concurrency=1000, now=0)
    ids = [service.add('echo', n, now=0, limit='many') for n in range(64)]
    lanes = {service.jobs[i]._indexKey >> queues.LANE_SHIFT for i in ids}
    assert all(service.jobs[i]._index == QUEUE for i in ids)
    # 64 random lanes of 16 all odd, or all even, by chance: 2 ** -63.
    assert {lane % 2 for lane in lanes} == {0, 1}


def test_a_job_let_through_by_a_limit_keeps_its_priority_and_age(service):
    service.setLimit('one', concurrency=1, now=0)
    first = service.add('echo', now=0, priority=9)
    low = service.add('echo', now=1, priority=1, limit='one')
    high = service.add('echo', now=2, priority=9)
    assert service.jobs[low]._index == QUEUE
    assert [service.claimNextJob(now=3) for _ in range(3)] == [
        first, high, low]


def test_a_job_that_may_start_now_waits_in_the_queue_not_for_a_time(
        service):
    service.setLimit('api', rate='1/s', now=0)
    a = service.add('echo', now=10, limit='api')
    assert service.claimNextJob(now=10) == a      # the next may start at 11
    b = service.add('echo', now=11, limit='api')
    job = service.jobs[b]
    assert (job._index, job.scheduledFor) == (QUEUE, None)
    assert service.claimNextJob(now=11) == b


def test_a_queued_job_let_through_for_a_later_start_is_due_for_now(service):
    service.setLimit('api', rate='1/s', now=0)
    a = service.add('echo', now=10, limit='api')
    b = service.add('echo', now=10, limit='api')
    assert service.claimNextJob(now=10) == a
    job = service.jobs[b]
    # Its start waits for the rate; it is due as a run asked for now, which
    # no misfire policy applies to.
    assert (job._index, job.scheduledFor, job._why) == (SCHEDULED, 11, NOW)
    assert service.getStatus(b) == interfaces.QUEUED
    assert service.claimNextJob(now=10.5) is None
    assert service.claimNextJob(now=11) == b


def test_a_retry_held_back_by_a_limit_is_still_a_retry(service):
    service.setLimit('api', rate='1/s', now=0)
    jobid = service.addCronJob('fail', 'x', interval=60, now=0, retries=1,
                               retryDelay=5, limit='api')
    assert service.processNext(now=1) is False           # placed at 61
    assert service.processNext(now=61)                   # fails
    job = service.jobs[jobid]
    assert (job.scheduledFor, job._why, job.runs) == (66, RETRY, 1)
    # At 66 the limit holds it back, then lets it through for 66: as the
    # retry it is, so that it does not count as a run of the schedule.
    assert service.claimNextJob(now=66) == jobid
    assert job.runs == 1 and job.attempts == 2
    assert (job.lease.place[0], job.lease.place[2]) == (SCHEDULED, RETRY)


def test_a_job_waiting_again_gives_up_the_slot_it_held(service):
    service.setLimit('one', concurrency=1, now=0)
    jobid = service.add('echo', now=0, limit='one')
    job = service.jobs[jobid]
    limit = service._limits['one']
    assert limit.holds(jobid)
    # Filed to wait again while it holds the slot, it must not keep the
    # slot from itself.
    ix = service._indexes
    ix.unindex(job)
    ix.enqueue(job, 1)
    assert job._index == QUEUE and limit.holders == {jobid}


def test_a_stale_entry_of_a_limit_is_dropped_and_the_next_goes_through(
        service):
    service.setLimit('one', concurrency=1, now=0)
    first = service.add('echo', now=0, limit='one')
    waiting = [service.add('echo', n, now=0, limit='one') for n in range(2)]
    limit = service._limits['one']
    assert [service.jobs[i]._index for i in waiting] == [LIMITED] * 2
    # An entry for a job that is gone, ahead of those waiting.
    gone = 2 ** 40
    limit.waiting.insert(queues.lane_key(0, 9, 0), gone)
    service.cancel(first, now=1)          # its slot lets the next through
    assert service.jobs[waiting[0]]._index == QUEUE
    assert queues.lane_key(0, 9, 0) not in limit.waiting
    assert service.claimNextJob(now=2) == waiting[0]


# -- finding the next job --------------------------------------------------------

def file_in_lane(service, lane, priority=5, order=1, queue=None):
    """A queued job filed in ``lane`` by hand."""
    jobid = service.add('echo', now=0, startLater=True,
                        **({'queue': queue} if queue else {}))
    job = service.jobs[jobid]
    ix = service._indexes
    ix.set_status(job, interfaces.QUEUED)
    ix.index(QUEUE, job, queues.lane_key(lane, priority, order))
    return jobid


def test_an_entry_left_in_a_lane_under_another_key_does_not_jump_the_queue(
        service):
    low = service.add('echo', now=0, priority=1)
    high = service.add('echo', now=1, priority=5)
    # An entry for ``low`` in the same index but under another key, at the
    # top priority: the job waits elsewhere, so the entry is stale.
    lane = service._queues[queues.DEFAULT].lanes[3]
    assert lane.insert(queues.lane_key(3, 9, 1), low)
    assert [service.claimNextJob(now=2) for _ in range(3)] == [
        high, low, None]
    assert queues.lane_key(3, 9, 1) not in lane


def test_a_new_service_has_the_current_layout_and_needs_no_upgrade(service):
    assert service._layout == LAYOUT
    assert service.upgrade(now=0) is False


def test_a_queue_knows_its_name(service):
    default = service._queues[queues.DEFAULT]
    assert default.name == 'default' and repr(default) == "<Queue 'default'>"
    # One made when a job first names it.
    service.add('echo', now=0, queue='fast')
    made = service._queues['fast']
    assert made.name == 'fast' and repr(made) == "<Queue 'fast'>"


def test_a_spread_claim_takes_the_first_lane_from_its_start(service):
    ix = service._indexes
    two, seven = file_in_lane(service, 2), file_in_lane(service, 7)
    heads = {start: ix.lane_head(start) for start in (0, 3, 5, 7, 8, 15)}
    lane_of = {start: head[0] for start, head in heads.items()}
    lanes = service._queues[queues.DEFAULT].lanes
    assert lane_of == {0: lanes[2], 3: lanes[7], 5: lanes[7], 7: lanes[7],
                       8: lanes[2], 15: lanes[2]}
    assert service.jobs[two]._index == service.jobs[seven]._index == QUEUE


def test_a_spread_claim_of_some_queues_leaves_the_others_alone(service):
    other = file_in_lane(service, 3, priority=9, queue='other')
    mine = file_in_lane(service, 3, priority=1, queue='mine')
    assert service.claimNextJob(now=1, spread=True, queues=['mine']) == mine
    assert service.claimNextJob(now=1, spread=True, queues=['mine']) is None
    assert service.getStatus(other) == interfaces.QUEUED


def test_due_items_are_those_between_their_bounds(service):
    ids = {service.addCronJob('echo', n, delay=10 * n, now=0) for n in (1, 2, 3)}
    service.claimNextJob(now=0)                          # places them
    items = list(service._indexes.due_items())
    assert {jobid for _, jobid in items} == ids
    keys = [key for key, _ in items]
    assert keys == sorted(keys)
    assert [service.jobs[i].scheduledFor for _, i in service._indexes
            .due_items(min=time_key(15), max=time_bound(30))] == [20, 30]
    assert [service.jobs[i].scheduledFor for _, i in service._indexes
            .due_items(max=time_bound(20))] == [10, 20]


def test_upcoming_jobs_are_found_behind_many_overdue_ones(service):
    for n in range(150):
        service.addCronJob('echo', n, delay=1, now=0)
    later = service.addCronJob('echo', delay=100, now=0)
    service.claimNextJob(now=0)                          # places them
    assert [job.id for job in service.upcomingJobs(
        now=50, limit=1, repeating=False)] == [later]


# -- finished jobs ---------------------------------------------------------------

def finished_at(service, now, ttl):
    jobid = service.add('echo', now=now, ttl=ttl)
    assert service.processNext(now=now)
    return jobid


def test_a_job_is_purged_within_the_millisecond_it_expires_not_before(
        service):
    a = finished_at(service, 100.0, ttl=0.0005)       # expires 100.0005
    b = finished_at(service, 100.0002, ttl=0.0013)      # expires 100.0015
    assert time_key(100.0012) == time_key(100.0016) > time_key(100.0005)
    # a goes; b, whose millisecond has come but not its time, stays.
    assert service.purgeExpired(now=100.0012) == 1
    assert a not in service.jobs and b in service.jobs
    assert service.purgeExpired(now=100.0016) == 1
    assert b not in service.jobs


def test_an_entry_on_the_last_key_of_now_s_millisecond_is_purged(service):
    jobid = finished_at(service, 100, ttl=None)
    job = service.jobs[jobid]
    job.expires = 100
    service._expiry[time_bound(100)] = jobid
    assert time_bound(100) & ((1 << LOW_BITS) - 1) == (1 << LOW_BITS) - 1
    assert service.purgeExpired(now=100) == 1
    assert jobid not in service.jobs and not service._expiry


def test_purging_passes_over_a_job_retried_since_it_finished(service):
    failed = service.add('fail', 'x', now=0, ttl=10)
    assert service.processNext(now=0)
    assert service.getStatus(failed) == interfaces.ERROR
    service.retry(failed, now=1)        # queued again: its expiry is stale
    done = service.add('echo', now=2, ttl=10)
    assert service.processNext(now=2, jobid=done)
    assert service.purgeExpired(now=20) == 1
    assert done not in service.jobs
    assert service.getStatus(failed) == interfaces.QUEUED
    assert not service._expiry


def test_removing_a_finished_job_of_an_older_layout_forgets_it_everywhere(
        service):
    done = service.add('echo', now=0)
    kept = service.add('echo', now=0)
    service.cancel(done, now=1)
    service.cancel(kept, now=1)
    oldLayout(service, layout=3)
    assert service.remove(done) is True
    assert list(service._finished[interfaces.CANCELLED]) == [kept]
    service.clean(interfaces.CANCELLED)
    assert done not in service.jobs and kept not in service.jobs



# -- the due trees, at their edges -------------------------------------------------

def test_a_job_held_back_by_its_limit_leaves_the_due_tree(service):
    service.setLimit('one', concurrency=1, now=0)
    running = service.add('echo', now=0, limit='one')
    assert service.claimNextJob(now=1) == running
    later = service.addCronJob('echo', delay=5, now=1, limit='one')
    service.claimNextJob(now=2)           # places it: due at 7
    assert service.claimNextJob(now=8) is None      # due, but held back
    job = service.jobs[later]
    assert job._index == LIMITED
    due = service._queues['default'].due
    assert later not in list(due.values())


def test_a_stale_entry_at_the_head_of_a_due_tree_does_not_hide_the_next(
        service):
    jobid = service.addCronJob('echo', delay=5, now=0)
    service.claimNextJob(now=0)           # places it: due at 5
    due = service._queues['default'].due
    due.insert(time_key(1), 2 ** 40)      # a job that is gone, due first
    assert service.claimNextJob(now=6) == jobid
    assert time_key(1) not in due


def test_a_job_due_later_in_the_same_millisecond_waits_for_its_time(service):
    jobid = service.addCronJob('echo', delay=0.0005, now=100.0001)
    service.claimNextJob(now=100.0001)    # places it: due at 100.0006
    job = service.jobs[jobid]
    assert time_key(job.scheduledFor) == time_key(100.0002)
    assert service.claimNextJob(now=100.0002) is None
    assert service.claimNextJob(now=100.0006) == jobid


def test_the_due_tree_whose_head_is_on_the_bound_is_due():
    from zodbtasks.indexes import earliest_due
    from BTrees.LLBTree import LLBTree

    class Queue:
        def __init__(self, *keys):
            self.due = LLBTree({key: 1 for key in keys})
    bound = time_bound(100)
    on_bound, after = Queue(bound), Queue(bound + 1)
    assert earliest_due([after, on_bound], bound) is on_bound.due
    assert earliest_due([after], bound) is None
    # Of two heads on the same key, the first queue's.
    first, second = Queue(bound - 5), Queue(bound - 5)
    assert earliest_due([first, second], bound) is first.due


# -- finished jobs, filed by the time they are given ----------------------------------

def test_finished_jobs_are_listed_by_the_time_of_their_end_not_the_clock(
        service):
    service.clock = lambda: 5000.0            # the clock says otherwise
    late = service.add('echo', 'late', now=0)
    early = service.add('echo', 'early', now=0)
    assert service.processNext(now=2000, jobid=late)
    assert service.processNext(now=1000, jobid=early)
    listed, _ = service.listJobs(interfaces.COMPLETED)
    assert [job.id for job in listed] == [late, early]


def test_a_job_with_a_time_to_live_has_one_entry_in_the_expiry_index(service):
    jobid = finished_at(service, 100.0, ttl=5)
    assert list(service._expiry.values()) == [jobid]


# -- order keys: the clock orders jobs queued by different copies ---------------

def open_copy(db):
    """A new connection with its own transactions, and its copy of the
    service: a copy that has queued nothing yet, as in another process."""
    manager = transaction.TransactionManager()
    conn = db.open(transaction_manager=manager)
    return conn, manager, conn.root()['tasks']


def test_jobs_queued_by_the_old_layout_and_now_are_ordered_by_their_time(
        tmp_path, tasks):
    # layout4.fs holds a job of the 'fast' queue at priority 0, queued at T0
    # by the code of that time. Jobs queued now by a worker whose clock is a
    # second behind, and one a second ahead, go before and after it: the
    # keys count the same milliseconds as they did.
    path = tmp_path / 'Data.fs'
    shutil.copy(STORED, path)
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(path)))
    conn, manager, service = open_copy(db)
    try:
        stored = conn.root()['ids']['urgent']
        early = service.add('echo', now=T0 - 1, queue='fast', priority=0)
        late = service.add('echo', now=T0 + 1, queue='fast', priority=0)
        assert [service.claimNextJob(now=T0 + 2, queues=['fast'])
                for _ in range(4)] == [early, stored, late, None]
    finally:
        manager.abort()
        conn.close()
        db.close()


def test_jobs_queued_in_one_millisecond_by_other_copies_go_before_the_next(
        db, tasks):
    with db.transaction() as conn:
        conn.root()['tasks'] = TaskService()
    copies = []

    def add_from_a_new_copy(now):
        conn, manager, service = open_copy(db)
        copies.append(conn)
        jobid = service.add('echo', now=now)
        manager.commit()
        return jobid

    # Jobs queued at 0.001 first, then jobs queued at 0 (the first
    # millisecond of the epoch) by copies whose clocks are behind: only the
    # clock orders them, and those of 0 run first. (Were the two
    # milliseconds one, the first eight claimed would be those of 0 by a
    # chance of 1 in 12,870.)
    second = {add_from_a_new_copy(0.001) for _ in range(8)}
    first = {add_from_a_new_copy(0) for _ in range(8)}
    conn, manager, service = open_copy(db)
    copies.append(conn)
    claimed = [service.claimNextJob(now=1) for _ in range(16)]
    assert set(claimed[:8]) == first and set(claimed[8:]) == second
    manager.abort()
    for copy in copies:
        copy.close()


def test_the_last_order_key_that_fits_is_given_and_the_next_refused(service):
    ix = service._indexes
    service._v_lastOrderKey = queues.ORDER_MASK - 1
    jobid = service.add('echo', now=T0)
    assert service.jobs[jobid]._indexKey & queues.ORDER_MASK \
        == queues.ORDER_MASK
    assert service.claimNextJob(now=T0) == jobid
    with pytest.raises(ValueError, match='order key does not fit'):
        ix.order_key(T0)
    assert service._v_lastOrderKey == queues.ORDER_MASK


def test_a_time_without_an_order_key_is_refused_with_what_is_accepted(
        service):
    with pytest.raises(ValueError) as refused:
        service._indexes.order_key(1e300)
    assert str(refused.value) == (
        'now must be a time from 0 to %d, not 1e+300: its order key does '
        'not fit the queue' % MAX_NOW)


# -- filing a job ----------------------------------------------------------------

def test_a_job_whose_id_is_taken_is_filed_under_another(service):
    first = service.jobs[service.add('echo', 'first', now=0)]
    job = zodbtasks.Job(first.id, 'echo', 'second')
    service._indexes.store(job, new_id=lambda: 12345)
    assert job.id == 12345
    assert service.jobs[first.id] is first and service.jobs[12345] is job


def test_jobs_of_the_old_packages_are_listed_by_when_they_were_made():
    made = {n: OLD_T0 - 100 * n for n in range(1, 9)}
    old = [oldJob(zodbtasks.Job, n, interfaces.STARTLATER) for n in made]
    for job in old:
        job.created = localTime(made[job.id])
    service = oldService(*old)
    migration.upgrade(service, OLD_T0)
    listed, _ = service.listJobs(interfaces.STARTLATER)
    # Newest first: by the time each was made, not that of the upgrade.
    assert [job.id for job in listed] == list(range(1, 9))
    assert [job.created for job in listed] == [made[n] for n in range(1, 9)]


def test_a_due_key_that_every_draw_finds_taken_is_probed_for(
        service, monkeypatch):
    a, b = (service.jobs[service.add('echo', n, now=0, startLater=True)]
            for n in range(2))
    draws = []

    def same_bits(bits):
        draws.append(bits)
        assert len(draws) < 100, 'the index keeps drawing'
        return 5
    # Every draw of low bits gives the same: after a few draws the index
    # takes the next free key instead.
    monkeypatch.setattr(random, 'getrandbits', same_bits)
    ix = service._indexes
    ix.schedule(a, 100)
    ix.schedule(b, 100)
    due = service._queues[queues.DEFAULT].due
    assert (a._indexKey, b._indexKey) == (time_key(100) | 5, time_key(100) | 6)
    assert draws == [LOW_BITS] * (1 + 8)    # a's key; b's, and seven more
    assert list(due.items()) == [(a._indexKey, a.id), (b._indexKey, b.id)]


def test_a_taken_due_key_is_drawn_again_eight_times_before_probing(
        service, monkeypatch):
    a, b = (service.jobs[service.add('echo', n, now=0, startLater=True)]
            for n in range(2))
    # a draws 5; b draws 5, and again 5 six times, then 9 on its eighth
    # draw: a key of its own, drawn, not probed for.
    bits = iter([5, 5] + [5] * 6 + [9])

    def drawn(n):
        assert n == LOW_BITS
        return next(bits)
    monkeypatch.setattr(random, 'getrandbits', drawn)
    ix = service._indexes
    ix.schedule(a, 100)
    ix.schedule(b, 100)
    assert (a._indexKey, b._indexKey) == (time_key(100) | 5, time_key(100) | 9)


def test_a_taken_key_of_the_unplaced_jobs_is_drawn_again(
        service, monkeypatch):
    a, b = (service.jobs[service.add('echo', n, now=0, startLater=True)]
            for n in range(2))
    bits = iter([7, 7, 8])

    def drawn(n):
        assert n == 63
        return next(bits)
    monkeypatch.setattr(random, 'getrandbits', drawn)
    service._indexes.unplace(a)
    service._indexes.unplace(b)
    assert (a._indexKey, b._indexKey) == (7, 8)
    assert list(service._unplaced.items()) == [(7, a.id), (8, b.id)]


def test_a_taken_lane_key_goes_to_the_next_keeping_its_place(service):
    first = file_in_lane(service, 4, order=1000)
    second = file_in_lane(service, 4, order=1000)
    key = queues.lane_key(4, 5, 1000)
    assert service.jobs[first]._indexKey == key
    assert service.jobs[second]._indexKey == key + 1
    assert [service.claimNextJob(now=1) for _ in range(3)] == [
        first, second, None]
