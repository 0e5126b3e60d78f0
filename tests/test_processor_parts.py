"""The parts of a processor, each on its own: what is said after a
transaction, the transactor's retries, the step's claims, the settler's
timing, the outcome writer's reports, lease renewals, the worker record."""
import logging
import threading
import time

import pytest
import transaction
import zope.event
from ZODB.POSException import ConflictError

from zodbtasks.heartbeats import Claim
from zodbtasks.heartbeats import Heartbeats
from zodbtasks.interfaces import LeaseLost
from zodbtasks.outcomes import OutcomeWriter
from zodbtasks.outcomes import Run
from zodbtasks.presence import DROP_AT_ONCE
from zodbtasks.processor import SimpleProcessor
from zodbtasks.presence import Presence
from zodbtasks.recorder import Settler
from zodbtasks.recorder import Unrecorded
from zodbtasks.renewals import Renewals
from zodbtasks.service import Outcome
from zodbtasks.steps import Steps
from zodbtasks.transactor import GAVE_UP
from zodbtasks.transactor import Said
from zodbtasks.transactor import Transactor
from zodbtasks.transactor import disconnected
from zodbtasks.worksettings import WorkerSettings

T0 = 1_000_000.0
WAIT = 10


class ClientDisconnected(ConflictError):
    """Named as ZEO's: the storage is out of reach."""


@pytest.fixture
def stored(db, service):
    with db.transaction() as conn:
        conn.root()['tasks'] = service
    return db


def transactor(db, attempts=3, clock=lambda: T0):
    return Transactor(db, ('tasks',),
                      WorkerSettings(clock=clock, attempts=attempts))


# -- Said -------------------------------------------------------------------

def test_what_is_said_waits_for_deliver_and_is_said_once(caplog):
    caplog.set_level(logging.INFO, 'zodbtasks')
    events = []
    zope.event.subscribers.append(events.append)
    try:
        said = Said()
        said(logging.INFO, 'one %s', 1)
        said(logging.WARNING, 'two')
        said.events.append('an event')
        assert caplog.records == [] and events == []
        said.deliver()
        said.deliver()
    finally:
        zope.event.subscribers.remove(events.append)
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] \
        == [('zodbtasks.processor', 'INFO', 'one 1'),
            ('zodbtasks.processor', 'WARNING', 'two')]
    assert events == ['an event']


def test_a_failing_subscriber_is_logged_and_the_next_event_still_sent(
        caplog):
    got = []

    def subscriber(event):
        if event == 'bad':
            raise RuntimeError('no')
        got.append(event)
    zope.event.subscribers.append(subscriber)
    try:
        said = Said()
        said.events.extend(['bad', 'good'])
        said.deliver()
    finally:
        zope.event.subscribers.remove(subscriber)
    assert got == ['good']
    assert "an event subscriber failed on 'bad'" in caplog.text


# -- the transactor ---------------------------------------------------------

def test_disconnected_knows_the_errors_of_a_storage_out_of_reach():
    assert disconnected(ClientDisconnected())
    assert not disconnected(ConflictError())
    assert not disconnected(ValueError())


def test_a_transaction_is_tried_again_on_conflicts_and_counted(stored):
    tx = transactor(stored, attempts=3)
    tries = []

    def write(service):
        tries.append(1)
        service.title = 'written'
        if len(tries) < 3:
            raise ConflictError()
        return 'done'
    assert tx.transact(write, 'claim') == 'done'
    assert tx.conflicts == {'claim': 2}
    assert tx.read(lambda service, now: (service.title, now)) == (
        'written', T0)


def test_a_transaction_that_always_conflicts_gives_up_and_writes_nothing(
        stored):
    tx = transactor(stored, attempts=2)

    def write(service):
        service.title = 'never'
        raise ConflictError()
    assert tx.transact(write) is GAVE_UP
    assert tx.conflicts == {}            # no step named: not counted
    assert tx.read(
        lambda service, now: getattr(service, 'title', None)) is None


def test_a_storage_out_of_reach_is_not_tried_again(stored):
    tx = transactor(stored, attempts=5)
    tries = []

    def write(service):
        tries.append(1)
        raise ClientDisconnected('gone')
    with pytest.raises(ClientDisconnected):
        tx.transact(write, 'claim')
    assert tries == [1] and tx.conflicts == {}


def test_an_outage_is_said_once_and_counted_when_it_ends(stored):
    tx = transactor(stored)
    said = Said()
    tx.reached(said)                     # never out of reach: nothing
    assert said.lines == [] and tx.outages == 0
    tx.unreached(ClientDisconnected('gone'), said)
    tx.unreached(ClientDisconnected('still gone'), said)
    assert len(said.lines) == 1
    assert 'disconnected (ClientDisconnected: gone)' in said.lines[0][2] \
        % said.lines[0][3]
    assert tx.down is not None
    tx.reached(said)
    tx.reached(said)
    assert len(said.lines) == 2 and 'reconnected' in said.lines[1][2]
    assert tx.down is None and tx.outages == 1
    assert tx.counters() == {'storage outages': 1}


# -- the step ----------------------------------------------------------------

def parts(db, **settings):
    settings = WorkerSettings(clock=lambda: T0, **settings)
    tx = Transactor(db, ('tasks',), settings)
    beats = Heartbeats(None, None)
    writer = OutcomeWriter(tx, beats, settings, Outcome)
    unrecorded = Unrecorded(8, 0.2)
    return tx, beats, writer, unrecorded, Steps(tx, unrecorded, writer,
                                                beats, settings)


def test_a_step_claims_jobs_of_which_the_first_begin(stored):
    with stored.transaction() as conn:
        ids = [conn.root()['tasks'].add('echo', n, now=T0) for n in range(3)]
    tx, beats, writer, unrecorded, steps = parts(stored, name='w', lease=30)
    claims = steps.step(3, start=1)
    assert [claim.jobid for claim in claims] == ids
    assert [claim.started for claim in claims] == [True, False, False]
    assert {claim.length for claim in claims} == {30}
    assert sorted(claim.jobid for claim in beats.held()) == sorted(ids)
    with stored.transaction() as conn:
        jobs = conn.root()['tasks'].jobs
        assert [jobs[i].lease.token for i in ids] == [c.token for c in claims]
        assert {jobs[i].lease.worker for i in ids} == {
            'w:%s' % threading.current_thread().name}


def test_a_step_records_the_outcomes_waiting_and_gives_back_claims(stored):
    with stored.transaction() as conn:
        ids = [conn.root()['tasks'].add('echo', n, now=T0) for n in range(2)]
    tx, beats, writer, unrecorded, steps = parts(stored)
    done, back = steps.step(2, start=1)
    with stored.transaction() as conn:
        job = conn.root()['tasks'].jobs[done.jobid]
        run = Run(done, job.task, 1, Outcome(job, T0, output='out'))
    unrecorded.add(run)
    assert steps.step(release=[back]) == []
    assert len(unrecorded) == 0 and run.status == 'completed'
    assert writer.stats == {'completed': 1}
    assert beats.held() == [back]        # the step does not drop `back`
    with stored.transaction() as conn:
        service = conn.root()['tasks']
        assert service.getStatus(ids[0]) == 'completed'
        assert service.getResult(ids[0]) == 'out'
        assert service.getStatus(ids[1]) == 'queued'


# -- the settler -------------------------------------------------------------

class FakeRun:
    def __init__(self, age=0.0):
        self.ended = time.monotonic() - age


class FakeTransactor:
    def __init__(self, attempts=3, down=None):
        self.settings = WorkerSettings(attempts=attempts)
        self.down = down


def settler(unrecorded, step, alone=None, stop=None, **tx):
    stop = stop if stop is not None else threading.Event()
    return Settler(unrecorded, step, alone or (lambda run: None),
                   FakeTransactor(**tx), stop, stop.is_set)


def recording(unrecorded, steps):
    def step(tm=None):
        steps.append(tm)
        runs = unrecorded.take()
        unrecorded.recorded(runs)
        return []
    return step


def test_before_a_run_the_outcomes_past_the_limit_are_recorded():
    unrecorded = Unrecorded(limit=1)
    steps = []
    for _ in range(3):
        unrecorded.add(FakeRun())
    settler(unrecorded, recording(unrecorded, steps)).recordToLimit()
    assert len(unrecorded) == 0 and steps == [None]
    settler(unrecorded, recording(unrecorded, steps)).recordToLimit()
    assert steps == [None]               # within the limit: no step


def test_before_a_run_a_commit_under_way_is_waited_for_not_stepped():
    unrecorded = Unrecorded(limit=1)
    unrecorded.add(FakeRun())
    unrecorded.add(FakeRun())
    taken = unrecorded.take()            # a commit records them

    def ends():
        time.sleep(0.1)
        unrecorded.recorded(taken)
    thread = threading.Thread(target=ends)
    thread.start()
    steps = []
    began = time.monotonic()
    settler(unrecorded, recording(unrecorded, steps)).recordToLimit()
    thread.join(WAIT)
    assert steps == [] and len(unrecorded) == 0
    assert time.monotonic() - began >= 0.09


def test_a_stopped_worker_does_not_wait_for_the_storage_before_a_run():
    unrecorded = Unrecorded(limit=0)
    unrecorded.add(FakeRun())
    stop = threading.Event()
    calls = []

    def failing(tm=None):
        calls.append(1)
        if len(calls) == 2:
            stop.set()
        runs = unrecorded.take()
        unrecorded.putBack(runs)
        return None                      # the storage is out of reach
    settler(unrecorded, failing, stop=stop).recordToLimit()
    assert calls == [1, 1] and len(unrecorded) == 1


@pytest.mark.parametrize('down, steps', [(None, 1), (1.0, 3)])
def test_at_the_end_what_the_steps_could_not_record_is_recorded_alone(
        down, steps):
    unrecorded = Unrecorded(limit=8)
    runs = [FakeRun(), FakeRun()]
    for run in runs:
        unrecorded.add(run)
    calls, alone = [], []

    def failing(tm=None):
        calls.append(1)
        unrecorded.putBack(unrecorded.take())
        return None
    settler(unrecorded, failing, alone.append, attempts=3,
            down=down).settleAll()
    # A step that failed with the storage in reach is not tried again; one
    # out of reach is, up to the tries of a transaction.
    assert len(calls) == steps
    assert alone == runs and len(unrecorded) == 0


def test_at_the_end_nothing_waiting_means_no_step():
    calls = []
    settler(Unrecorded(), lambda tm=None: calls.append(1)).settleAll()
    assert calls == []


def test_the_settler_thread_records_what_waited_long_enough():
    unrecorded = Unrecorded(limit=8, settleWithin=0.05)
    stop = threading.Event()
    steps = []
    step = recording(unrecorded, steps)
    part = settler(unrecorded, step, stop=stop)
    thread = threading.Thread(target=part.loop, daemon=True)
    thread.start()
    try:
        time.sleep(0.2)
        assert steps == []               # nothing waits: no step
        unrecorded.add(FakeRun())
        deadline = time.monotonic() + WAIT
        while len(unrecorded) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(WAIT)
    assert not thread.is_alive()
    assert len(steps) == 1 and len(unrecorded) == 0
    # In a transaction manager of its own, not the loop's.
    assert isinstance(steps[0], transaction.TransactionManager)
    assert steps[0] is not transaction.manager


# -- the outcome writer's reports ---------------------------------------------

class Outcomeish:
    def __init__(self, error=None):
        self.failed = error is not None
        self.error = error


def a_run(jobid, status, error=None, seconds=0.25):
    run = Run(Claim(jobid, 'token', T0 + 30, 30), 'echo', 2,
              Outcomeish(error))
    run.status, run.seconds = status, seconds
    return run


def writer(logJobs=True):
    beats = Heartbeats(None, None)
    return OutcomeWriter(None, beats, WorkerSettings(logJobs=logJobs),
                         Outcome), beats


def test_a_report_counts_the_run_and_says_its_line():
    part, _ = writer()
    said = Said()
    part.report(a_run(1, 'completed'), said)
    part.report(a_run(2, 'retrying', error='boom'), said)
    part.report(a_run(3, None), said)
    assert part.stats == {'completed': 1, 'retrying': 1, 'lost': 1}
    assert [(logger.name, message % args)
            for logger, _, message, args in said.lines] == [
        ('zodbtasks.jobs', 'job 1 echo completed in 0.250 s (attempt 2)'),
        ('zodbtasks.jobs', 'job 2 echo failed after 0.250 s, retrying '
         '(attempt 2): boom')]
    assert part.counters() == (
        {'completed': 1, 'retrying': 1, 'lost': 1}, 2)


def test_without_log_jobs_a_report_only_counts():
    part, _ = writer(logJobs=False)
    said = Said()
    part.report(a_run(1, 'failed', error='x'), said)
    assert said.lines == [] and part.stats == {'failed': 1}


def test_settled_runs_let_go_of_their_claims_and_a_dropped_one_is_lost():
    part, beats = writer(logJobs=False)
    kept, dropped = a_run(1, 'completed'), a_run(2, 'completed')
    dropped.claim.timedOut, dropped.claim.timeout = True, 5
    for run in (kept, dropped):
        beats.hold(run.claim)
    said = Said()
    part.settled([kept, dropped], [dropped], said)
    assert beats.held() == []
    assert dropped.status is None and kept.status == 'completed'
    assert part.stats == {'completed': 1, 'lost': 1}
    assert [message % args for _, _, message, args in said.lines] == [
        'discarded the late outcome of job 2: it timed out after 5 s']
    assert part.counters()[1] == 1


# -- lease renewals ------------------------------------------------------------

def test_renewals_extend_the_leases_held_and_say_which_are_gone(stored):
    with stored.transaction() as conn:
        service = conn.root()['tasks']
        ids = [service.add('echo', n, now=T0) for n in range(2)]
        service.claimJobs(T0, 2, 'w', lease=30, start=2)
        tokens = [service.jobs[i].lease.token for i in ids]
    later = T0 + 10
    tx = transactor(stored, clock=lambda: later)
    renewals = Renewals(tx, WorkerSettings(lease=60), None)
    held = Claim(ids[0], tokens[0], T0 + 30, 30)
    held.began = time.monotonic()
    stale = Claim(ids[1], 'not the token', T0 + 30, 30)
    renewed = renewals.renew([held, stale])
    assert renewed == {ids[0]: later + 60, ids[1]: LeaseLost}
    assert renewals.extend(ids[0], tokens[0]) == later + 60
    with pytest.raises(LeaseLost):
        renewals.extend(ids[1], 'not the token')
    assert tx.conflicts == {}


def test_a_task_heartbeat_renews_its_claim_until_the_run_timed_out(stored):
    with stored.transaction() as conn:
        service = conn.root()['tasks']
        jobid = service.add('echo', now=T0)
        service.claimJobs(T0, 1, 'w', lease=30, start=1)
        token = service.jobs[jobid].lease.token
    renewals = Renewals(transactor(stored, clock=lambda: T0 + 5),
                        WorkerSettings(lease=30), None)
    claim = Claim(jobid, token, T0 + 30, 30, timeout=2)
    heartbeat = renewals.heartbeatFor(claim)
    assert heartbeat() == T0 + 35 == claim.expires
    claim.timedOut = True
    with pytest.raises(LeaseLost, match='timed out after 2 s'):
        heartbeat()


# -- the worker's record ---------------------------------------------------------

class RecordingService:
    """Answers as the service does, and notes what it was asked."""

    def __init__(self, known=True):
        self.known = known
        self.calls = []

    def workerSeen(self, name, now, jobs, done, counters):
        self.calls.append(('seen', name, now, jobs, done, counters))
        return object() if self.known else None

    def registerWorker(self, name, now, host, pid, every, tasks, queues):
        self.known = True
        self.calls.append(('register', name, now, every, tasks, queues))

    def dropDeadWorkers(self, now, most):
        self.calls.append(('drop', now, most))

    def getAvailableTasks(self):
        return {'b': None, 'a': None}


def presence(name='w', queues=None):
    snapshot = ([7], 3, {'completed': 3})
    part = Presence(None, WorkerSettings(name=name, queues=queues), 2.0,
                    lambda: snapshot)
    part.name = part.recordName()
    return part


def test_a_record_is_named_by_the_worker_and_its_loops_thread():
    assert presence('w').recordName() == 'w'     # the main thread
    names = []
    thread = threading.Thread(target=lambda: names.append(
        presence('w').recordName()), name='loop-1')
    thread.start()
    thread.join(WAIT)
    assert names == ['w:loop-1']


def test_a_record_seen_renews_it_and_drops_the_dead_now_and_then():
    part = presence()
    service = RecordingService()
    part.lastDrop = time.monotonic()
    part.seen(service, T0)
    assert service.calls == [('seen', 'w', T0, [7], 3, {'completed': 3})]
    part.lastDrop = time.monotonic() - 61
    part.seen(service, T0 + 1)
    assert service.calls[-1] == ('drop', T0 + 1, DROP_AT_ONCE)


def test_a_record_gone_is_made_again_when_seen():
    part = presence(queues=('q',))
    service = RecordingService(known=False)
    part.seen(service, T0)
    assert [call[0] for call in service.calls] == [
        'seen', 'register', 'drop', 'seen']
    assert service.calls[1] == ('register', 'w', T0, 2.0, ['a', 'b'], ('q',))


def test_the_worker_settings_default_to_the_clock_and_the_manager():
    settings = WorkerSettings()
    assert settings.clock is time.time
    assert settings.transaction_manager is transaction.manager
    assert (settings.attempts, settings.lease, settings.queues) == (
        5, None, None)


def test_a_processor_option_set_later_reaches_its_parts(stored):
    processor = SimpleProcessor(stored, 'tasks')
    processor.clock = lambda: 42.0
    processor.lease = 7
    assert processor._tx.now() == 42.0
    assert processor._steps.settings.lease == 7
    assert processor.stats is processor._writer.stats
