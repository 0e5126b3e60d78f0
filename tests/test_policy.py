"""The queue's policy, decided without a database (`zodbtasks.lifecycle`).

Each decision is a pure function of a job, what happened and the time: these
tests build jobs in memory, ask, and check that the job was left alone.
"""
import pickle

import pytest

from zodbtasks import interfaces
from zodbtasks import lifecycle
from zodbtasks.job import CronJob
from zodbtasks.job import Job
from zodbtasks.job import Lease
from zodbtasks.keys import NOW
from zodbtasks.keys import QUEUE
from zodbtasks.keys import RETRY
from zodbtasks.keys import SCHEDULED
from zodbtasks.lifecycle import UNKNOWN

pytestmark = pytest.mark.timeout(30)


def every(seconds, **options):
    """An interval job last due at 0, with ``options``."""
    job = CronJob(1, 'echo', None, interval=seconds)
    job.scheduledFor = 0
    job._why = None
    for name, value in options.items():
        setattr(job, name, value)
    return job


def unchanged(job):
    """A snapshot to show that a decision wrote nothing."""
    return pickle.dumps(job.__getstate__())


# -- missed times ----------------------------------------------------------------

def test_a_run_on_time_just_runs():
    job = every(60)
    before = unchanged(job)
    decision = lifecycle.misfire(job, 0)
    assert decision.run and decision.missed == 0 and decision.action is None
    assert unchanged(job) == before


def test_counting_times_stops_after_catch_up_plus_one():
    job = every(60, catchUp=3)
    assert lifecycle.count_times(job, 0, 150) == (2, 180)
    count, following = lifecycle.count_times(job, 0, 6000)
    assert count == 4 and following is UNKNOWN


def test_late_runs_are_coalesced_into_one_by_default():
    job = every(60)
    decision = lifecycle.misfire(job, 130)     # 60 and 120 were missed
    assert decision.run
    assert (decision.missed, decision.action, decision.counted) == (
        2, 'coalesced', True)
    assert decision.following == 180 and decision.replay_from is None


@pytest.mark.parametrize('missed', [1, 5])
def test_with_misfire_all_up_to_catch_up_missed_runs_are_replayed(missed):
    job = every(60, misfire='all', catchUp=5)
    decision = lifecycle.misfire(job, 60 * missed + 1)
    assert decision.run and decision.action == 'replaying'
    assert decision.missed == missed and not decision.counted
    assert decision.replay_from == 0


def test_one_more_than_catch_up_missed_runs_are_coalesced_instead():
    job = every(60, misfire='all', catchUp=5)
    decision = lifecycle.misfire(job, 60 * 6 + 1)
    assert decision.action == 'coalesced' and decision.replay_from is None


def test_with_misfire_skip_a_run_later_than_the_grace_is_skipped():
    job = every(60, misfire='skip', misfireGrace=30)
    late = lifecycle.misfire(job, 31)
    assert not late.run and late.action == 'skipped' and late.missed == 1
    assert late.following == 60
    in_grace = lifecycle.misfire(job, 30)
    assert in_grace.run and in_grace.action is None


# The decisions in full: each field is what the docstring of `Misfire`
# says, so that a caller may read any of them.

def test_a_late_run_that_missed_no_time_runs_and_counts_nothing():
    job = every(60)
    assert lifecycle.misfire(job, 30) == lifecycle.Misfire(
        run=True, missed=0, action=None, counted=False, following=60,
        replay_from=None)


def test_a_skipped_run_is_told_not_to_run_and_is_counted():
    job = every(60, misfire='skip', misfireGrace=10)
    assert lifecycle.misfire(job, 130) == lifecycle.Misfire(
        run=False, missed=3, action='skipped', counted=True, following=180,
        replay_from=None)


def test_a_replay_leaves_its_next_time_to_be_worked_out():
    job = every(60, misfire='all', catchUp=5)
    assert lifecycle.misfire(job, 130) == lifecycle.Misfire(
        run=True, missed=2, action='replaying', counted=False,
        following=UNKNOWN, replay_from=0)


def test_retries_and_runs_asked_for_now_never_misfire():
    for why in (RETRY, NOW):
        job = every(60, misfire='skip', misfireGrace=0)
        job._why = why
        assert lifecycle.misfire(job, 500).run


def test_an_overlapping_run_waits_or_is_skipped():
    assert lifecycle.overlap(every(60)) == 'waiting'
    assert lifecycle.overlap(every(60, overlap='skip')) == 'skipped'


# -- runs -------------------------------------------------------------------------

def test_the_next_time_is_placed_from_the_start_of_a_run():
    job = every(60)
    assert lifecycle.next_time_at_start(job, 100) == (100, UNKNOWN)
    assert lifecycle.next_time_at_start(job, 100, 120) == (100, 120)
    job._replayFrom = 60
    assert lifecycle.next_time_at_start(job, 100, 120) == (60, UNKNOWN)


def test_the_last_of_max_runs_places_nothing():
    job = every(60, maxRuns=3)
    job.runs = 2
    assert lifecycle.next_time_at_start(job, 100)[0] == 100
    job.runs = 3
    assert lifecycle.next_time_at_start(job, 100)[0] is None


def test_retries_back_off_up_to_their_ceiling():
    job = Job(1, 'echo', None)
    job.retries, job.retryDelay, job.retryBackoff = 5, 10, 3
    job.retryMaxDelay = 100
    delays = []
    for job.retried in range(4):
        delays.append(lifecycle.retry_delay(job))
    assert delays == [10, 30, 90, 100]


def test_a_failed_run_is_retried_while_retries_are_left():
    job = Job(1, 'echo', None)
    job.retries, job.retryDelay = 2, 10
    assert lifecycle.retry_due(job, 100) == 110
    assert lifecycle.retry_due(job, 100, delay=5) == 105
    assert lifecycle.retry_due(job, 100, delay=0) == 100
    job.retried = 2
    assert lifecycle.retry_due(job, 100) is None


def test_no_retry_of_a_repeating_job_when_its_next_run_comes_first():
    job = every(60, retries=3, retryDelay=30)
    job.scheduledFor = 160
    assert lifecycle.retry_due(job, 100) == 130
    assert lifecycle.retry_due(job, 100, delay=60) is None
    assert lifecycle.retry_due(job, 100, delay=59) == 159


def test_what_follows_a_run():
    once = Job(1, 'echo', None)
    assert lifecycle.after_run(once) == 'finished'
    once.status = interfaces.CANCELLED
    assert lifecycle.after_run(once) == 'cancelled'
    job = every(60)
    job.scheduledFor = 60
    assert lifecycle.after_run(job) == 'scheduled'
    job.waitingRun = True
    assert lifecycle.after_run(job) == 'again'
    job.paused = True
    assert lifecycle.after_run(job) == 'paused'
    job.paused = job.waitingRun = False
    job.scheduledFor = None          # the end of its schedule
    assert lifecycle.after_run(job) == 'finished'


def test_the_history_keeps_the_latest_runs():
    entries = ()
    for n in range(lifecycle.KEEP_RUNS + 3):
        entries = lifecycle.remembered(entries, n, lifecycle.KEEP_RUNS)
    assert entries == tuple(range(3, lifecycle.KEEP_RUNS + 3))


def test_a_run_record_says_how_the_run_ended():
    job = Job(1, 'echo', None)
    job.started, job.completed, job.ranOn = 1, 2, 'w'
    assert lifecycle.run_record(job) == (1, 2, 'w', interfaces.COMPLETED,
                                         None)
    job.error = 'boom'
    assert lifecycle.run_record(job)[3:] == (interfaces.ERROR, 'boom')


@pytest.mark.parametrize('ttl, default, kept', [
    (None, None, None), (None, 60, 60), (0, 60, 0), (5, None, 5)])
def test_a_job_s_own_time_to_live_wins_even_when_it_is_zero(ttl, default,
                                                            kept):
    job = Job(1, 'echo', None)
    job.ttl = ttl
    assert lifecycle.time_to_live(job, default) == kept


# -- claims that end otherwise ------------------------------------------------------

def lease(worker='w', expires=100):
    return Lease(1, worker, expires, claimed=0, started=0)


def test_a_lost_lease_means_another_run_until_max_lost_leases():
    job = Job(1, 'echo', None)
    job.maxLostLeases = 3
    message, fails = lifecycle.lost_lease(job, lease())
    assert not fails
    assert message == 'the worker w lost its lease on this job at 100'
    job.lostLeases = 2
    message, fails = lifecycle.lost_lease(job, lease())
    assert fails and message.endswith('(maxLostLeases is 3)')
    assert job.lostLeases == 2        # counting is the caller's


def test_the_message_of_the_last_lost_lease_tells_both_reasons():
    job = Job(1, 'echo', None)
    job.maxLostLeases, job.lostLeases = 2, 1
    assert lifecycle.lost_lease(job, lease()) == (
        'the worker w lost its lease on this job at 100; runs of this job '
        'lost their lease 2 times (maxLostLeases is 2)', True)


def test_a_job_that_runs_at_most_once_fails_with_its_first_lost_lease():
    job = Job(1, 'echo', None)
    job.atMostOnce = True
    assert lifecycle.lost_lease(job, lease(worker=None)) == (
        'the worker (unnamed) lost its lease on this job at 100', True)


def test_a_claim_given_back_goes_back_where_it_waited():
    job = Job(1, 'echo', None)
    place = (QUEUE, 12345, None, None)
    assert lifecycle.give_back(job, place, 50) == (
        interfaces.QUEUED, None, None)
    # Not before now + delay, and then from the due tree.
    assert lifecycle.give_back(job, place, 50, delay=10) == (
        interfaces.QUEUED, 60, NOW)
    retrying = (SCHEDULED, 1, RETRY, 40)
    assert lifecycle.give_back(job, retrying, 50) == (
        interfaces.RETRYING, 40, RETRY)
    assert lifecycle.give_back(job, retrying, 50, delay=5) == (
        interfaces.RETRYING, 55, RETRY)


def test_a_cron_job_given_back_keeps_its_due_time_and_reason():
    job = every(60)
    back = lifecycle.give_back(job, (SCHEDULED, 1, None, 60), 70)
    assert back == (interfaces.CRONJOB, 60, None)
    job.paused = True
    assert lifecycle.give_back(job, (SCHEDULED, 1, None, 60), 70) == (
        interfaces.PAUSED, 60, None)


def test_a_claim_given_back_keeps_the_reason_it_waited_for():
    # A cron job claimed for a retry, or for a run asked for now, keeps
    # that reason in the due tree: a retry does not count as a run.
    for why in (RETRY, NOW):
        job = every(60)
        assert lifecycle.give_back(job, (SCHEDULED, 1, why, 60), 70) == (
            interfaces.CRONJOB, 60, why)
        job.paused = True
        assert lifecycle.give_back(job, (SCHEDULED, 1, why, 60), 70) == (
            interfaces.PAUSED, 60, why)


def test_a_paused_job_given_back_waits_for_no_time():
    job = Job(1, 'echo', None)
    job.paused = True
    assert lifecycle.give_back(job, (QUEUE, 12345, None, None), 50) == (
        interfaces.PAUSED, None, None)
    assert lifecycle.give_back(job, (SCHEDULED, 1, RETRY, 40), 50,
                               delay=10) == (interfaces.PAUSED, None, RETRY)


def test_a_delayed_job_waits_as_delayed_and_resumes_to_the_queue():
    delayed = CronJob(1, 'echo', None, delay=30)
    assert lifecycle.waiting_status(delayed) == interfaces.DELAYED
    assert lifecycle.waiting_status(every(60)) == interfaces.CRONJOB
    assert lifecycle.give_back(delayed, (SCHEDULED, 1, None, 30), 10) == (
        interfaces.DELAYED, 30, None)


def test_a_paused_job_resumes_to_what_it_was():
    assert lifecycle.paused_from(every(60)) == interfaces.CRONJOB
    assert lifecycle.paused_from(Job(1, 'echo', None)) == interfaces.QUEUED


def test_a_missing_task_fails_the_job_after_the_timeout():
    job = Job(1, 'echo', None)
    assert not lifecycle.missing_task_fails(job, 100, 3600)  # first answer
    job.waitingForTask, job.missingSince = 'echo', 100
    assert not lifecycle.missing_task_fails(job, 3699, 3600)
    assert lifecycle.missing_task_fails(job, 3700, 3600)
    assert lifecycle.missing_task_fails(Job(2, 'echo', None), 5, 0)
