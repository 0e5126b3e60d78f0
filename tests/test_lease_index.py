"""The index of the workers' claims (`zodbtasks.lease_index`), on a service
in memory."""
import pytest
from BTrees.LLBTree import LLBTree

from zodbtasks import interfaces
from zodbtasks.job import Lease
from zodbtasks.keys import time_bound
from zodbtasks.lease_index import SHARD_MASK
from zodbtasks.lease_index import LeaseIndex
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
