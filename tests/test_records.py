"""Jobs and leases are stored compactly and load as they were.

`zodbtasks.records`: attributes by number, empty defaults left out, and
records stored by name (by earlier versions) still load.
"""
import pickle

import pytest
import transaction
import ZODB
import ZODB.FileStorage

from zodbtasks import records
from zodbtasks.job import CronJob
from zodbtasks.job import Job
from zodbtasks.job import Lease

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def db(tmp_path):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / 'Data.fs')))
    yield db
    db.close()


def stored_bytes(db, obj):
    data, _ = db.storage.load(obj._p_oid)
    return data


def reloaded(db, key):
    with db.transaction() as conn:
        conn.cacheMinimize()        # loaded afresh from the storage
        found = conn.root()[key]
        found._p_activate()
        return dict(vars(found)), found


def test_a_job_comes_back_with_every_attribute(db):
    job = CronJob(7, 'report', {'to': 'ops'}, minute=(0, 30),
                  timezone='Europe/Berlin', created=1.5)
    job.status = 'error'
    job.error, job.attempts, job.history = 'boom', 3, ((1, 2, 'w', 'error',
                                                        'boom'),)
    job.lease = None                      # empty: left out
    job.retryDelay = 30                   # the default, but it means something
    job.colour = 'blue'                   # not in the table: by its name
    with db.transaction() as conn:
        conn.root()['job'] = job
    state, found = reloaded(db, 'job')
    assert (found.id, found.task, found.input, found.status) == (
        7, 'report', {'to': 'ops'}, 'error')
    assert (found.error, found.attempts, found.history) == (
        'boom', 3, ((1, 2, 'w', 'error', 'boom'),))
    assert (found.minute, found.timezone, found.created) == (
        (0, 30), 'Europe/Berlin', 1.5)
    assert found.lease is None and 'lease' not in state
    assert state['retryDelay'] == 30
    assert found.colour == 'blue'
    assert found.timeOfNextCall(0) == job.timeOfNextCall(0)


def test_names_in_the_table_are_not_stored(db):
    job = Job(1, 'echo', 'x', created=5.0)
    job.status, job.attempts, job._listKey = 'completed', 1, 12345
    with db.transaction() as conn:
        conn.root()['job'] = job
    data = stored_bytes(db, job)
    for name in (b'status', b'attempts', b'_listKey', b'created', b'input'):
        assert name not in data
    plain = pickle.dumps({k: v for k, v in vars(job).items()
                          if not k.startswith('_v_')}, 3)
    assert len(data) < len(plain)


def test_a_record_stored_by_name_loads():
    job = Job.__new__(Job)
    job.__setstate__({'id': 3, 'task': 'echo', 'input': None,
                      'status': 'queued', 'created': 1.0, 'error': None})
    assert (job.id, job.task, job.status, job.error) == (3, 'echo',
                                                         'queued', None)


def test_compact_and_expand_are_inverse_but_for_empty_defaults():
    named = {'status': 'queued', 'error': None, 'attempts': 0,
             'retries': 0, 'paused': False, 'colour': ''}
    stored = records.compact(Job, named)
    assert records.NUMBER['status'] in stored
    assert records.NUMBER['error'] not in stored       # Job.error is None
    assert 'colour' in stored         # no class default: kept, by name
    assert records.expand(stored) == {'status': 'queued', 'colour': ''}


def test_the_table_only_grows():
    # Stored records name their attributes by these numbers: the first
    # ones must stay where they are.
    assert records.FIELDS[:4] == ('id', 'task', 'input', 'status')
    assert records.FIELDS[70:75] == ('token', 'worker', 'key', 'place',
                                     'revoked')
    assert len(set(records.FIELDS)) == len(records.FIELDS)


def test_concurrent_renewal_and_start_of_a_lease_merge(db):
    with db.transaction() as conn:
        conn.root()['lease'] = Lease(1, 'w', 100.0, claimed=0.0)
    first = db.open(transaction_manager=transaction.TransactionManager())
    second = db.open(transaction_manager=transaction.TransactionManager())
    try:
        a, b = first.root()['lease'], second.root()['lease']
        a.expires = 160.0
        b.started = 50.0
        first.transaction_manager.commit()
        second.transaction_manager.commit()     # resolved, not refused
    finally:
        first.close()
        second.close()
    state, found = reloaded(db, 'lease')
    assert (found.expires, found.started, found.worker) == (160.0, 50.0, 'w')
