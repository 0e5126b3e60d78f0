"""Poison-proof input: a value the indexes cannot file is refused at once.

A job holding a NaN, an infinity or a time past what a 64-bit index key can
hold used to be accepted, and then made every claim fail. These tests give
each such value, check that the call is refused with an error naming the
argument, that the refused call left no trace, and that the queue goes on
working for good jobs.
"""
import datetime
from decimal import Decimal
from fractions import Fraction
import hashlib
import io
import math
import pickle
import re

import persistent
import pytest
from hypothesis import HealthCheck
from hypothesis import event
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import transaction
import zope.component
import ZODB
import ZODB.FileStorage
import ZODB.MappingStorage
from BTrees.LLBTree import LLBTree

import zodbtasks
from zodbtasks import interfaces
from zodbtasks.job import CRON_OPTIONS
from zodbtasks.job import JOB_OPTIONS
from zodbtasks.job import MAX_BACKOFF
from zodbtasks.job import MAX_CATCH_UP
from zodbtasks.job import MAX_COUNT
from zodbtasks.job import MAX_DURATION
from zodbtasks.job import MAX_NOW
from zodbtasks.job import MAX_RETRIES
from zodbtasks.job import MAX_TIME
from zodbtasks.job import MIN_INTERVAL
from zodbtasks.job import Job
from zodbtasks.keys import LOW_MASK as _LOW_MASK
from zodbtasks.keys import time_key as _timeKey

T0 = 1000


# -- a snapshot of everything a service stores --------------------------------

class _Referencing(pickle.Pickler):
    """A pickler that asks ``reference`` for persistent ids (a method: Python
    3.13 refuses to set ``persistent_id`` on the instance)."""

    def __init__(self, file, protocol, reference):
        super().__init__(file, protocol)
        self.reference = reference

    def persistent_id(self, obj):
        return self.reference(obj)


def snapshot(service):
    """The pickled state of every persistent object reachable from
    ``service``, in the order they are reached, and its volatile attributes.

    Each object is pickled on its own, with the persistent objects it refers
    to replaced by the number of the order in which they were first reached,
    so that a change anywhere (a new job in a shard of ``jobs``, an entry in
    an index, a changed attribute) changes the snapshot; see
    `test_the_snapshot_sees_any_change`.
    """
    numbers = {id(service): 0}
    todo = [service]
    states = []
    while todo:
        ob = todo.pop(0)

        def reference(other, ob=ob):
            if isinstance(other, persistent.Persistent) and other is not ob:
                if id(other) not in numbers:
                    numbers[id(other)] = len(numbers)
                    todo.append(other)
                return numbers[id(other)]
            return None

        ob._p_activate()
        out = io.BytesIO()
        _Referencing(out, 3, reference).dump((type(ob), ob.__getstate__()))
        states.append(out.getvalue())
    volatile = {k: v for k, v in vars(service).items() if k.startswith('_v_')}
    return states, volatile


def test_the_snapshot_sees_any_change(service):
    service.add('echo', 1, now=T0)
    service.addCronJob('echo', minute=(5,), now=T0)
    service.processNext(now=T0)
    before = snapshot(service)
    assert snapshot(service) == before
    # A stray job, stored but in no index: only the jobs' shard changes.
    assert service.jobs.insert(12345, Job(12345, 'echo', None))
    assert snapshot(service) != before
    del service.jobs[12345]
    assert snapshot(service) == before
    # A stray index entry.
    service._scheduled[7] = 12345
    assert snapshot(service) != before
    del service._scheduled[7]
    # A changed attribute of a job, and a volatile attribute.
    job = next(iter(service.jobs.values()))
    job.retries = 5
    assert snapshot(service) != before
    del job.retries
    assert snapshot(service) == before
    service._v_lastOrderKey = 1
    assert snapshot(service) != before


# -- the limits -----------------------------------------------------------------

def test_the_limits_are_what_a_key_holds():
    # The latest time's key, with every random low bit set, fits in a key...
    tree = LLBTree()
    tree[_timeKey(MAX_TIME) | _LOW_MASK] = 1
    # ...and the next second's does not.
    with pytest.raises((TypeError, OverflowError)):
        tree[_timeKey(MAX_TIME + 1)] = 1
    assert MAX_NOW + MAX_DURATION == MAX_TIME
    assert MAX_DURATION == 100 * 365.25 * 86400
    utc = datetime.timezone.utc
    assert datetime.datetime.fromtimestamp(MAX_TIME, utc).year == 2248
    assert datetime.datetime.fromtimestamp(MAX_NOW, utc).year == 2148
    # The largest retry delay the limits allow is a finite float.
    assert math.isfinite(float(MAX_DURATION) * float(MAX_BACKOFF)
                         ** (MAX_RETRIES - 1))


def test_the_new_options_have_their_defaults():
    assert JOB_OPTIONS['timeout'][0] is None and Job.timeout is None
    assert JOB_OPTIONS['maxLostLeases'][0] == 3 and Job.maxLostLeases == 3


# -- the values of the finding, one by one ---------------------------------------

def named(name, message):
    """Whether ``message`` names ``name`` (as a word, if it is one)."""
    if name.isidentifier():
        return re.search(r'\b%s\b' % name, message) is not None
    return name in message


def refused(service, error, call, *names):
    """Check that ``call`` raises ``error`` naming each of ``names`` and
    leaves ``service`` as it was."""
    before = snapshot(service)
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for name in names:
        assert named(name, message), message
    assert '\n' not in message
    assert snapshot(service) == before
    return message


def still_works(service, now=T0 + 10):
    """A good job added after the refused call is claimed and run."""
    jobid = service.add('echo', 'good', now=now)
    assert service.claimNextJob(now=now + 1, worker='w') == jobid
    job = service.jobs[jobid]
    assert service.processNext(now=now + 1, jobid=jobid,
                               token=job.lease.token)
    assert job.status == 'completed' and job.output == 'good'


@pytest.mark.parametrize('delay', [math.inf, math.nan, 1e10, -math.inf,
                                   MAX_DURATION + 1, -1, 2 ** 70])
def test_a_delay_that_does_not_fit_is_refused(service, delay):
    message = refused(service, ValueError, lambda: service.addCronJob(
        'echo', delay=delay, now=T0), 'delay')
    assert 'up to %d (100 years)' % MAX_DURATION in message
    if delay == 1e10:
        assert 'not 10000000000.0' in message
    still_works(service)


@pytest.mark.parametrize('interval', [1e12, math.inf, math.nan, 0, 1e-4,
                                      5e-324, -60, MAX_DURATION + 0.5])
def test_an_interval_that_does_not_fit_is_refused(service, interval):
    message = refused(service, ValueError, lambda: service.addCronJob(
        'echo', interval=interval, now=T0), 'interval')
    assert 'from %r up to' % MIN_INTERVAL in message
    assert repr(interval) in message
    still_works(service)


@pytest.mark.parametrize('name', ['start', 'end'])
@pytest.mark.parametrize('value', [math.inf, math.nan, -1, MAX_NOW + 1,
                                   1e300])
def test_a_start_or_end_that_does_not_fit_is_refused(service, name, value):
    refused(service, ValueError, lambda: service.addCronJob(
        'echo', interval=60, now=T0, **{name: value}), name)
    refused(service, ValueError, lambda: service.addCronJob(
        'echo', cron='* * * * *', now=T0, **{name: value}), name)
    still_works(service)


@pytest.mark.parametrize('name, value', [
    ('leaseSeconds', math.nan), ('leaseSeconds', math.inf),
    ('leaseSeconds', 1e12), ('leaseSeconds', 0), ('leaseSeconds', -5),
    ('ttl', math.nan), ('ttl', math.inf), ('ttl', -1), ('ttl', 1e10),
    ('retryMaxDelay', math.inf), ('retryMaxDelay', math.nan),
    ('retryMaxDelay', 1e10), ('retryDelay', math.inf), ('retryDelay', 1e10),
    ('retryBackoff', math.inf), ('retryBackoff', math.nan),
    ('retryBackoff', MAX_BACKOFF + 1), ('retryBackoff', 1e300),
    ('retries', MAX_RETRIES + 1), ('retries', 10 ** 100),
    ('timeout', 0), ('timeout', -1), ('timeout', math.inf),
    ('timeout', math.nan), ('timeout', 1e10),
    ('maxLostLeases', 0), ('maxLostLeases', -3), ('maxLostLeases', 2 ** 53),
])
def test_a_job_option_that_does_not_fit_is_refused(service, name, value):
    message = refused(service, ValueError, lambda: service.add(
        'echo', now=T0, **{name: value}), name)
    assert 'must be a' in message
    refused(service, ValueError, lambda: service.addCronJob(
        'echo', minute=(0,), now=T0, **{name: value}), name)
    refused(service, ValueError, lambda: service.addCronJob(
        'echo', delay=5, now=T0, **{name: value}), name)
    still_works(service)


@pytest.mark.parametrize('name, value', [
    ('timeout', '10'), ('timeout', True), ('maxLostLeases', 2.0),
    ('maxLostLeases', True), ('retries', False), ('leaseSeconds', 1j),
    ('catchUp', True), ('misfireGrace', '60'), ('retryBackoff', '2'),
    ('ttl', Fraction(1, 3)), ('retryDelay', Decimal('1')), ('misfire', 5),
    ('overlap', None.__class__),
])
def test_an_option_of_the_wrong_type_is_refused(service, name, value):
    refused(service, TypeError, lambda: service.addCronJob(
        'echo', minute=(0,), now=T0, **{name: value}), name, repr(value))


@pytest.mark.parametrize('name, value', [
    ('misfireGrace', math.inf), ('misfireGrace', math.nan),
    ('misfireGrace', -1), ('catchUp', MAX_CATCH_UP + 1), ('catchUp', 0),
    ('maxRuns', MAX_COUNT + 1), ('maxRuns', 0),
])
def test_a_repeating_option_that_does_not_fit_is_refused(service, name,
                                                         value):
    refused(service, ValueError, lambda: service.addCronJob(
        'echo', minute=(0,), now=T0, **{name: value}), name)
    still_works(service)


def test_the_largest_values_are_accepted_and_run(service, tasks):
    """Durations of 100 years at the latest time: every key still fits."""
    longest = dict(leaseSeconds=MAX_DURATION, ttl=MAX_DURATION,
                   retries=MAX_RETRIES, retryDelay=MAX_DURATION,
                   retryBackoff=MAX_BACKOFF, retryMaxDelay=MAX_DURATION,
                   timeout=MAX_DURATION, maxLostLeases=MAX_COUNT)
    # A failed run's retry, 100 years on.
    plain = service.jobs[service.add('fail', now=MAX_NOW, **longest)]
    assert service.processNext(now=MAX_NOW)
    assert plain.status == 'retrying' and plain.scheduledFor == MAX_TIME
    # A delay of 100 years from the tick.
    delayed = service.jobs[service.addCronJob(
        'echo', delay=MAX_DURATION, now=MAX_NOW, **longest)]
    assert service.claimNextJob(now=MAX_NOW) is None
    assert delayed.status == 'delayed' and delayed.scheduledFor == MAX_TIME
    # A repeating job whose one time is the latest time accepted, kept for
    # 100 years after it ran.
    repeating = service.jobs[service.addCronJob(
        'echo', interval=MAX_DURATION, start=MAX_NOW, end=MAX_NOW,
        misfireGrace=MAX_DURATION, catchUp=MAX_CATCH_UP, maxRuns=MAX_COUNT,
        now=MAX_NOW - 1, **longest)]
    assert service.claimNextJob(now=MAX_NOW - 1) is None
    assert repeating.scheduledFor == MAX_NOW
    assert service.processNext(now=MAX_NOW)
    assert repeating.status == 'completed' and repeating.runs == 1
    assert repeating.expires == MAX_TIME
    # A claim at the latest time, under the longest lease.
    jobid = service.add('echo', now=MAX_NOW)
    assert service.claimNextJob(now=MAX_NOW, lease=MAX_DURATION) == jobid
    assert service.jobs[jobid].lease.expires == MAX_TIME
    assert not service.hasJobsWaiting(now=MAX_NOW)
    assert service.purgeExpired(now=MAX_NOW) == 0


# -- now ------------------------------------------------------------------------

@pytest.mark.parametrize('now', [math.nan, 1e300, math.inf, -math.inf, -1,
                                 MAX_NOW + 1, 2 ** 64, 10 ** 400])
def test_a_now_that_does_not_fit_is_refused_by_add(service, now):
    first = service.add('echo', 'first', now=T0)   # sets the order counter
    message = refused(service, ValueError,
                      lambda: service.add('echo', now=now), 'now')
    assert 'from 0 to %d (2148-09-25 UTC)' % MAX_NOW in message
    refused(service, ValueError,
            lambda: service.addCronJob('echo', delay=5, now=now), 'now')
    refused(service, ValueError,
            lambda: service.addCronJob('echo', minute=(1,), now=now), 'now')
    # The counter did not move: later adds go on in order.
    second = service.add('echo', 'second', now=T0)
    service.process(now=T0)
    assert [service.getResult(i) for i in (first, second)] == [
        'first', 'second']


@pytest.mark.parametrize('now', ['soon', True, [], b'1', 1j,
                                 Fraction(1, 2), Decimal(5)])
def test_a_now_of_the_wrong_type_is_refused(service, now):
    refused(service, TypeError, lambda: service.add('echo', now=now), 'now')


@pytest.mark.parametrize('method', ['startJob', 'runNow', 'retry', 'resume',
                                    'pause', 'cancel'])
def test_the_other_calls_refuse_a_bad_now_and_change_nothing(service, method):
    waiting = service.addCronJob('echo', minute=(0,), now=T0)
    held = service.addCronJob('echo', minute=(0,), now=T0)
    later = service.add('echo', startLater=True, now=T0)
    failed = service.add('fail', now=T0)
    service.process(now=T0)
    service.pause(held, now=T0)
    jobid = {'startJob': later, 'runNow': waiting, 'retry': failed,
             'resume': held, 'pause': waiting, 'cancel': later}[method]
    for now in (math.nan, math.inf, 1e300, MAX_NOW + 1, -1):
        refused(service, ValueError,
                lambda: getattr(service, method)(jobid, now=now), 'now')
    # With a good time the call goes through.
    getattr(service, method)(jobid, now=T0 + 5)
    assert service.jobs[jobid].status == {
        'startJob': 'queued', 'runNow': 'cronjob', 'retry': 'queued',
        'resume': 'cronjob', 'pause': 'paused', 'cancel': 'cancelled'}[method]


def test_a_refused_call_does_not_even_upgrade_old_data(service):
    service._layout = 1     # as data of a development version
    for call in (lambda: service.add('echo', ttl=math.inf, now=T0),
                 lambda: service.add('nope', now=T0),
                 lambda: service.addCronJob('echo', delay=math.nan, now=T0),
                 lambda: service.addCronJob('echo', minute=(60,), now=T0)):
        refused(service, ValueError, call)
    assert service._layout == 1
    still_works(service)
    from zodbtasks.service import LAYOUT
    assert service._layout == LAYOUT


def test_a_bad_clock_is_refused_and_named(service):
    service.clock = lambda: math.inf
    refused(service, ValueError, lambda: service.add('echo'),
            "the service's clock")
    service.clock = lambda: T0
    still_works(service)


def test_the_order_counter_never_moves_for_a_refused_time(service):
    service.add('echo', now=T0)
    last = service._v_lastOrderKey
    for now in (1e300, MAX_TIME * 2 ** 20):
        with pytest.raises(ValueError, match='now'):
            service._indexes.order_key(now)
        assert service._v_lastOrderKey == last
    # A good time moves it on, and only forward.
    key = service._indexes.order_key(T0)
    assert key == service._v_lastOrderKey > last
    assert service._indexes.order_key(0) == key + 1 == service._v_lastOrderKey


def test_claims_refuse_a_lease_that_does_not_fit(service):
    service.add('echo', now=T0)
    for lease in (math.nan, math.inf, 1e12, 0, -1):
        refused(service, ValueError, lambda: service.claimNextJob(
            now=T0, lease=lease), 'lease')
    assert service.claimNextJob(now=T0, lease=MAX_DURATION) is not None


# -- options a task declares ------------------------------------------------------

def test_declared_options_that_do_not_fit_are_refused(service):
    class Declaring:
        jobOptions = {'ttl': math.inf}

        def __call__(self, service, jobid, input):
            return input

    zope.component.provideUtility(Declaring(), interfaces.ITask,
                                  name='declaring')
    refused(service, ValueError,
            lambda: service.add('declaring', now=T0), 'ttl')
    # A value given with the call replaces the declared one.
    jobid = service.add('declaring', 'x', now=T0, ttl=60)
    service.process(now=T0)
    assert service.getStatus(jobid) == 'completed'
    assert service.jobs[jobid].expires == T0 + 60


def test_decorators_refuse_values_that_do_not_fit():
    from zodbtasks import decorators
    for bad in (math.inf, math.nan, 1e10):
        with pytest.raises(ValueError, match='delay'):
            decorators.delayed_task(delay=bad)
        with pytest.raises(ValueError, match='interval'):
            decorators.periodic_task(seconds=bad)
        with pytest.raises(ValueError, match='ttl'):
            decorators.task(ttl=bad)(lambda: None)
    decorators.declarations.clear()


# -- in a database ----------------------------------------------------------------

def test_a_refused_call_commits_nothing_and_the_queue_goes_on(tasks):
    storage = ZODB.MappingStorage.MappingStorage()
    db = ZODB.DB(storage)
    try:
        with db.transaction() as conn:
            conn.root()['tasks'] = service = zodbtasks.TaskService()
            first = service.add('echo', 'first', now=T0)
        last = storage.lastTransaction()
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        service = conn.root()['tasks']
        for call in (lambda: service.addCronJob('echo', delay=math.inf,
                                                now=T0),
                     lambda: service.add('echo', leaseSeconds=math.nan,
                                         now=T0),
                     lambda: service.add('echo', now=1e300),
                     lambda: service.addCronJob('echo', interval=1e12,
                                                now=T0)):
            with pytest.raises(ValueError):
                call()
            tm.commit()      # as an application that caught the error
            assert storage.lastTransaction() == last
        second = service.add('echo', 'second', now=T0)
        tm.commit()
        for expected in (first, second):
            assert service.claimNextJob(now=T0 + 1) == expected
            tm.commit()
            job = service.jobs[expected]
            assert service.processNext(now=T0 + 1, jobid=expected,
                                       token=job.lease.token)
            tm.commit()
        assert [service.getResult(i) for i in (first, second)] == [
            'first', 'second']
        conn.close()
    finally:
        db.close()


# -- the command line -------------------------------------------------------------

@pytest.fixture
def dbfile(tmp_path, tasks):
    path = str(tmp_path / 'Data.fs')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    with db.transaction() as conn:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
        service.add('echo', 'x', now=T0)
    db.close()
    return path


def digest(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.parametrize('argv, name', [
    (['add', 'echo', '--delay', 'inf'], '--delay'),
    (['add', 'echo', '--delay', 'nan'], '--delay'),
    (['add', 'echo', '--delay', '1e10'], '--delay'),
    (['add', 'echo', '--delay', '-1'], '--delay'),
    (['add', 'echo', '--delay', 'soon'], '--delay'),
    (['add', 'echo', '--now', 'inf'], '--now'),
    (['add', 'echo', '--now', 'nan'], '--now'),
    (['add', 'echo', '--now', '1e300'], '--now'),
    (['add', 'echo', '--now', '-5'], '--now'),
    (['add', 'echo', '--delay', '5', '--now=-inf'], '--now'),
    (['cron', 'echo', '--cron', '* * * * *', '--now', 'nan'], '--now'),
    (['cron', 'echo', '--cron', '* * * * *', '--now', '1e11'], '--now'),
])
def test_the_command_line_refuses_values_that_do_not_fit(dbfile, capsys, argv,
                                                         name):
    from zodbtasks.cli import main
    before = digest(dbfile)
    with pytest.raises(SystemExit) as info:
        main([argv[0], '--db', dbfile, '--service', 'tasks', '--tasks',
              'zodbtasks_test_tasks', *argv[1:]])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and name in err, err
    assert 'from 0' in err
    assert digest(dbfile) == before


@pytest.mark.parametrize('argv', [
    ['status', '--now', 'inf'],
    ['cancel', '1', '--now', 'nan'],
    ['run-now', '1', '--now', '1e300'],
])
def test_every_command_refuses_a_now_that_does_not_fit(dbfile, capsys, argv):
    from zodbtasks.cli import main
    before = digest(dbfile)
    with pytest.raises(SystemExit) as info:
        main([argv[0], '--db', dbfile, '--service', 'tasks', *argv[1:]])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and '--now' in err, err
    assert digest(dbfile) == before


def test_next_refuses_an_after_that_does_not_fit(capsys):
    from zodbtasks.cli import main
    for after in ('inf', 'nan', '1e300'):
        assert main(['next', '* * * * *', '--after', after]) == 1
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and '--after' in err, err


def test_the_command_line_still_adds_good_jobs(dbfile, capsys):
    from zodbtasks.cli import main
    before = digest(dbfile)
    code = main(['add', '--db', dbfile, '--service', 'tasks', '--tasks',
                 'zodbtasks_test_tasks', 'echo', '--delay', str(MAX_DURATION),
                 '--now', str(MAX_NOW), '--json'])
    assert code == 0, capsys.readouterr().err
    assert digest(dbfile) != before


# -- any value at all ------------------------------------------------------------
#
# Hypothesis draws a value for every argument of add or addCronJob: mostly
# good ones (so that many jobs are accepted and run), and for a few
# arguments anything at all. A small oracle, written from the rules in the
# documentation, says which values are bad. A call with a bad value must be
# refused naming one of the bad arguments, leaving the snapshot as it was; a
# call with none must store a job that, once due, is claimed and run to a
# recorded outcome, after which a claim at the latest time still works.

class _Absent:
    def __repr__(self):
        return 'ABSENT'


ABSENT = _Absent()    # the argument is not given

EDGES = [math.nan, -math.nan, math.inf, -math.inf, 1e300, -1e300, 1e10,
         1e12, -1, -0.0, 0, 1, 5e-324, -5e-324, 1e-4, 2.0, MIN_INTERVAL,
         MAX_NOW, MAX_NOW + 1, MAX_NOW + 0.5, MAX_DURATION,
         MAX_DURATION + 1e-6, MAX_TIME, MAX_TIME * 2 ** 20, 2 ** 53, 2 ** 63,
         2 ** 64, -2 ** 63, 10 ** 30, 10 ** 400, MAX_RETRIES, MAX_RETRIES + 1,
         MAX_BACKOFF, MAX_BACKOFF + 1e-9, MAX_CATCH_UP, MAX_CATCH_UP + 1,
         MAX_COUNT, MAX_COUNT + 1, True, False, None, '', '60', 'inf', b'1',
         1j, (), [], Fraction(1, 3), Decimal('1'), 'coalesce', 'skip']

ANYTHING = st.one_of(
    st.sampled_from(EDGES),
    st.floats(),              # NaN, infinities, subnormals, huge, negative
    st.integers(),            # of any size
    st.booleans(), st.none(), st.text(max_size=8),
)


def _seconds(low, high, positive=False):
    return st.one_of(
        st.integers(low + positive, high),
        st.floats(low, high, exclude_min=positive),
        st.sampled_from([high] + ([] if positive else [low])))


TIMES = st.one_of(st.sampled_from([0, T0, MAX_NOW]),
                  _seconds(0, 2 * 10 ** 9), _seconds(0, MAX_NOW))
DURATIONS = st.one_of(_seconds(0, 7200), _seconds(0, MAX_DURATION))
POSITIVE = st.one_of(_seconds(0, 7200, True),
                     _seconds(0, MAX_DURATION, True))

CHOICES = {'misfire': ('coalesce', 'all', 'skip'), 'overlap': ('wait', 'skip')}

GOOD = {
    'now': TIMES, 'start': TIMES, 'end': TIMES,
    'delay': DURATIONS,
    'interval': st.one_of(st.floats(MIN_INTERVAL, 7200),
                          _seconds(1, MAX_DURATION)),
    'leaseSeconds': POSITIVE, 'timeout': POSITIVE,
    'atMostOnce': st.booleans(),
    'retries': st.integers(0, MAX_RETRIES),
    'retryDelay': DURATIONS, 'retryMaxDelay': DURATIONS, 'ttl': DURATIONS,
    'retryBackoff': st.one_of(st.integers(1, MAX_BACKOFF),
                              st.floats(1, MAX_BACKOFF)),
    'maxLostLeases': st.integers(1, MAX_COUNT),
    'misfire': st.sampled_from(CHOICES['misfire']),
    'misfireGrace': DURATIONS,
    'catchUp': st.integers(1, MAX_CATCH_UP),
    'overlap': st.sampled_from(CHOICES['overlap']),
    'maxRuns': st.integers(1, MAX_COUNT),
    'queue': st.sampled_from(['default', 'mail', 'reports.daily', 'a:b-c']),
    'priority': st.integers(0, 9),
    'limit': st.just('shared'),
}


def _isNumber(value):
    return type(value) in (int, float)


def expectedError(name, value):
    """The error a single argument's value should raise, or None."""
    if value is None:
        return None                  # not set: the default, or the clock
    number, whole = _isNumber(value), type(value) is int
    rules = {
        'now': (number, 0, MAX_NOW, False),
        'start': (number, 0, MAX_NOW, False),
        'end': (number, 0, MAX_NOW, False),
        'delay': (number, 0, MAX_DURATION, False),
        'interval': (number, MIN_INTERVAL, MAX_DURATION, False),
        'leaseSeconds': (number, 0, MAX_DURATION, True),
        'timeout': (number, 0, MAX_DURATION, True),
        'retryDelay': (number, 0, MAX_DURATION, False),
        'retryMaxDelay': (number, 0, MAX_DURATION, False),
        'ttl': (number, 0, MAX_DURATION, False),
        'misfireGrace': (number, 0, MAX_DURATION, False),
        'retryBackoff': (number, 1, MAX_BACKOFF, False),
        'retries': (whole, 0, MAX_RETRIES, False),
        'catchUp': (whole, 1, MAX_CATCH_UP, False),
        'maxRuns': (whole, 1, MAX_COUNT, False),
        'maxLostLeases': (whole, 1, MAX_COUNT, False),
    }
    if name == 'atMostOnce':
        return None if type(value) is bool else TypeError
    if name == 'queue':
        if type(value) is not str:
            return TypeError
        return None if re.fullmatch(
            r'[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}', value) else ValueError
    if name == 'limit':
        if type(value) is not str:
            return TypeError
        return None if value == 'shared' else ValueError
    if name == 'priority':
        if type(value) is not int:
            return TypeError
        return None if 0 <= value <= 9 else ValueError
    if name in CHOICES:
        if type(value) is not str:
            return TypeError
        return None if value in CHOICES[name] else ValueError
    kind, low, high, open_low = rules[name]
    if not kind:
        return TypeError
    if open_low:
        return None if low < value <= high else ValueError
    return None if low <= value <= high else ValueError


SCHEDULES = {
    'add': (),
    'delay': ('delay',),
    'interval': ('interval', 'start', 'end'),
    'cron': ('start', 'end'),
    'fields': ('start', 'end'),
}


@settings(max_examples=200, deadline=datetime.timedelta(seconds=1),
          # The tasks fixture registers the same tasks for every example;
          # drawing them is slow on a loaded machine, and that is no fault.
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(st.data())
def test_any_value_is_refused_cleanly_or_the_job_runs(tasks, data):
    kind = data.draw(st.sampled_from(sorted(SCHEDULES)), label='kind')
    event('kind: ' + kind)
    repeating = kind in ('interval', 'cron', 'fields')
    names = (['now'] + list(JOB_OPTIONS) + list(SCHEDULES[kind])
             + (list(CRON_OPTIONS) if repeating else []))
    # About half the calls have only good values, the others one to three
    # arguments drawn from anything.
    wild = data.draw(st.one_of(st.just(set()), st.sets(
        st.sampled_from(names), min_size=1, max_size=3)),
        label='drawn from anything')
    arguments = {}
    for name in names:
        value = data.draw(ANYTHING if name in wild
                          else st.one_of(st.just(ABSENT), GOOD[name]),
                          label=name)
        if value is not ABSENT:
            arguments[name] = value
    task = data.draw(st.sampled_from(['echo', 'fail']), label='task')
    startLater = data.draw(st.booleans(), label='startLater')

    bad = {name: expectedError(name, value)
           for name, value in arguments.items()}
    bad = {name: error for name, error in bad.items() if error is not None}
    start, end = arguments.get('start'), arguments.get('end')
    if not bad and start is not None and end is not None and end < start:
        bad = {'end': ValueError}      # a window that ends before it starts

    service = zodbtasks.TaskService()
    service.setLimit('shared', concurrency=2, rate='1000/s', now=T0)
    clocked = []                       # the clock is read only for now=None
    service.clock = lambda: clocked.append(T0) or T0
    if kind == 'add':
        def call():
            return service.add(task, startLater=startLater, **arguments)
    else:
        schedule = {'cron': {'cron': '*/7 * * * *'},
                    'fields': {'minute': (0, 30)}}.get(kind, {})

        def call():
            return service.addCronJob(task, startLater=startLater,
                                      **schedule, **arguments)

    before = snapshot(service)
    if bad:
        errors = tuple(set(bad.values()))
        with pytest.raises((TypeError, ValueError)) as info:
            call()
        assert isinstance(info.value, errors), (info.value, bad)
        message = str(info.value)
        assert any(named(name, message) for name in bad), (message, bad)
        assert not clocked or arguments.get('now') is None
        # Nothing stored, nothing filed, no counter moved.
        assert snapshot(service) == before
        still_works(service)
        event('refused: %s' % type(info.value).__name__)
        return

    jobid = call()
    now = arguments.get('now')
    assert len(clocked) == (now is None)
    runToAnOutcome(service, jobid, T0 if now is None else now)


def runToAnOutcome(service, jobid, now):
    job = service.jobs[jobid]
    if job.status == interfaces.STARTLATER:
        service.startJob(jobid, now=now)
    # The first claim places a delayed or repeating job, and takes it if it
    # is due already.
    claimed = service.claimNextJob(now=now, worker='w')
    if claimed is None:
        assert job.status in ('delayed', 'cronjob', 'completed'), job.status
        due = job.scheduledFor
        if due is None:
            # A window that holds none of its times: done at once.
            assert job.status == 'completed' and job.attempts == 0
        elif due > MAX_NOW:
            # Due after the latest time a call takes: it waits, harmlessly.
            assert service.claimNextJob(now=MAX_NOW) is None
        else:
            now = due
            claimed = service.claimNextJob(now=now, worker='w')
    if claimed is not None:
        assert claimed == jobid and job.status == 'processing'
        lease = job.leaseSeconds or service.leaseSeconds
        assert job.lease.expires == now + lease <= MAX_TIME
        assert service.processNext(now=now, jobid=jobid,
                                   token=job.lease.token)
        assert job.completed == now and job.attempts == 1
        assert job.status in ('completed', 'error', 'retrying', 'cronjob')
        assert (job.error is None) == (job.task == 'echo')
        event('ran: %s' % job.status)
    else:
        event('never due: %s' % job.status)
    # Whatever the job holds now (a retry, a next time, a lease, a time to
    # live), a claim at the latest time still works and runs what is due.
    claimed = service.claimNextJob(now=MAX_NOW, worker='z')
    if claimed is not None:
        assert service.processNext(now=MAX_NOW, jobid=claimed,
                                   token=service.jobs[claimed].lease.token)
    service.purgeExpired(now=MAX_NOW)
    service.hasJobsWaiting(now=MAX_NOW)
