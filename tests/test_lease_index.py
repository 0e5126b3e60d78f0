"""The index of the workers' claims (`zodbtasks.lease_index`), on a service
in memory."""
import pytest
from BTrees.LLBTree import LLBTree

from zodbtasks import interfaces
from zodbtasks.job import Lease
from zodbtasks.keys import time_bound
from zodbtasks.lease_index import SHARD_MASK
from zodbtasks.lease_index import LeaseIndex
from zodbtasks.lease_index import first_key
from zodbtasks.lease_index import new_tree
from zodbtasks.queues import PLACEHOLDER

pytestmark = pytest.mark.timeout(60)


def claimed(service, now, worker='w', seconds=10):
    """A job claimed at ``now`` with a lease of ``seconds``: its id."""
    jobid = service.add('echo', now=now)
    assert service.claimNextJob(now=now, worker=worker,
                                lease=seconds) == jobid
    return jobid


def test_live_leases_are_those_that_end_by_the_bound_soonest_first(service):
    ids = [claimed(service, now, seconds=10) for now in (3, 1, 2)]
    leases = LeaseIndex(service)
    assert [jobid for _, jobid in leases.live()] == [ids[1], ids[2], ids[0]]
    assert [jobid for _, jobid in leases.live(max=time_bound(12))] == [
        ids[1], ids[2]]
    assert list(leases.live(max=time_bound(10))) == []


def test_an_entry_left_by_an_earlier_claim_of_a_running_job_is_not_live(
        service):
    jobid = claimed(service, 1)
    job = service.jobs[jobid]
    leases = LeaseIndex(service)
    old = job.lease
    # A later claim of the same job, whose earlier entry is still filed.
    job.lease = Lease(2, 'w', 50, claimed=40, started=40)
    leases.add(job.lease, jobid)
    assert job.status == interfaces.PROCESSING and old.key != job.lease.key
    assert list(leases.live()) == [(job.lease.key, jobid)]


def test_dropping_an_entry_that_is_gone_is_no_error(service):
    jobid = claimed(service, 1)
    lease = service.jobs[jobid].lease
    leases = LeaseIndex(service)
    leases.drop(lease)
    assert lease.key not in service._leases[lease.key & SHARD_MASK]
    leases.drop(lease)
    assert list(leases.live()) == []


def test_every_tree_gets_its_placeholder_whatever_it_holds(service):
    trees = [LLBTree() for _ in service._leases]
    trees[1][1] = 7                   # an entry on the key after 0
    trees[2][5] = 8
    service._leases = tuple(trees)
    LeaseIndex(service).ensure_placeholders()
    assert all(tree[0] == PLACEHOLDER for tree in trees)
    assert (trees[1][1], trees[2][5]) == (7, 8)


def test_the_first_key_is_the_smallest_but_the_placeholder():
    tree = new_tree()
    assert first_key(tree) is None
    tree[5], tree[1] = 8, 7
    assert first_key(tree) == 1


def test_a_lease_filed_on_the_last_key_of_now_s_millisecond_runs_out(
        service):
    jobid = claimed(service, 1, worker='w', seconds=9)      # ends at 10
    job = service.jobs[jobid]
    leases = LeaseIndex(service)
    leases.drop(job.lease)
    # The largest key of the millisecond of 10, in the shard it names.
    key = time_bound(10)
    service._leases[key & SHARD_MASK][key] = jobid
    job.lease.key = key
    assert list(leases.expired(10)) == [job]
    assert job.lease.revoked and key not in service._leases[key & SHARD_MASK]


def test_the_entry_of_a_job_removed_since_is_dropped(service):
    jobid = claimed(service, 1, seconds=9)
    lease = service.jobs[jobid].lease
    del service.jobs[jobid]                     # gone, its entry left
    assert list(LeaseIndex(service).expired(1000)) == []
    assert lease.key not in service._leases[lease.key & SHARD_MASK]
    assert not lease.revoked


def filed(service, shard, expires):
    """A claimed job whose lease ends at ``expires``, filed in ``shard``."""
    jobid = claimed(service, 0, seconds=1)
    lease = service.jobs[jobid].lease
    leases = LeaseIndex(service)
    leases.drop(lease)
    lease.expires = expires
    leases.add(lease, jobid, shard)
    return service.jobs[jobid]


def test_expired_leases_behind_entries_passed_over_are_found(service):
    ended = filed(service, 3, 5)
    extended = filed(service, 3, 6)
    lost = filed(service, 3, 7)
    ended.lease = None                       # its run ended: entry stale
    extended.lease.expires = 50              # a heartbeat extended it
    assert list(LeaseIndex(service).expired(10)) == [lost]
    # The extended lease is filed again by its new end.
    assert list(LeaseIndex(service).live()) == [
        (extended.lease.key, extended.id)]
    assert extended.lease.key & SHARD_MASK == 3


def test_a_lease_ending_later_in_now_s_millisecond_holds_up_its_tree_only(
        service):
    later = filed(service, 0, 10.0008)
    lost = filed(service, 5, 9)
    assert list(LeaseIndex(service).expired(10.0002)) == [lost]
    assert not later.lease.revoked
    assert list(LeaseIndex(service).expired(10.0008)) == [later]


def test_a_lease_runs_out_at_its_end(service):
    job = filed(service, 2, 10)
    assert list(LeaseIndex(service).expired(9.9)) == []
    assert list(LeaseIndex(service).expired(10)) == [job]
