"""Databases written by an earlier zodbtasks open and work with this one.

``tests/data/layout4.fs`` was written by ``tests/data/make_layout4.py`` with
the code of layout 4 as it was before the service and the processor were
split into modules.  Every class its records name must still be importable
from the module named in the record, and the service in it must still add,
claim, run, recover and list as it did.
"""
import shutil
import pathlib

import pytest
import transaction
import ZODB
import ZODB.FileStorage
import ZODB.utils
import zope.component

import zodbtasks
from zodbtasks import interfaces
from zodbtasks import service as service_module

DATA = pathlib.Path(__file__).parent / 'data' / 'layout4.fs'
T0 = 1764547200.0       # the clock of make_layout4.py

pytestmark = pytest.mark.timeout(60)


def stored_classes():
    found = set()
    for txn in ZODB.FileStorage.FileIterator(str(DATA)):
        for record in txn:
            if record.data:
                found.add(ZODB.utils.get_pickle_metadata(record.data))
    return found


def test_the_fixture_holds_the_classes_that_matter():
    names = {module + '.' + name for module, name in stored_classes()}
    for expected in ('zodbtasks.service.TaskService', 'zodbtasks.job.Job',
                     'zodbtasks.job.CronJob', 'zodbtasks.job.Lease',
                     'zodbtasks.queues.Queue', 'zodbtasks.limits.Limit',
                     'zodbtasks.counts.Counts',
                     'zodbtasks.registry.WorkerRecord',
                     'zodbtasks._trees.ShardedMapping'):
        assert expected in names


@pytest.mark.parametrize('module,name', sorted(stored_classes()))
def test_every_stored_class_is_found_where_the_record_says(module, name):
    found = ZODB.DB.classFactory(None, None, module, name)
    assert found.__name__ == name


@pytest.fixture
def stored(tmp_path):
    def echo(input):
        return 'ran %s' % (input,)
    registry = zope.component.getGlobalSiteManager()
    task = zodbtasks.SimpleTask(echo)
    registry.registerUtility(task, interfaces.ITask, name='echo')
    path = tmp_path / 'Data.fs'
    shutil.copy(DATA, path)
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(path)))
    conn = db.open()
    root = conn.root()
    yield root['tasks'], dict(root['ids']), root['claimed']
    transaction.abort()
    conn.close()
    db.close()
    registry.unregisterUtility(task, interfaces.ITask, name='echo')


def test_the_stored_jobs_keep_their_states(stored):
    service, ids, claimed = stored
    assert service._layout == service_module.LAYOUT
    assert claimed == ids['leased']
    expected = {
        'queued': 'completed', 'limited': 'completed', 'done': 'completed',
        'failed': 'error', 'urgent': 'queued', 'later': 'start later',
        'delayed': 'delayed', 'cron': 'cronjob', 'cronstring': 'cronjob',
        'every': 'cronjob', 'paused': 'paused', 'leased': 'processing',
    }
    assert {k: service.getStatus(v) for k, v in ids.items()} == expected
    assert service.getResult(ids['done']) == 'done'
    assert 'failed on purpose' in str(service.getError(ids['failed']))
    assert service.countJobs(interfaces.COMPLETED) == 3
    assert service.countJobs(queue='fast') == 1
    listed, _ = service.listJobs(interfaces.CRONJOB)
    assert sorted(job.id for job in listed) == sorted(
        ids[k] for k in ('cron', 'cronstring', 'every'))
    assert service.getLimits()['mail'].concurrency == 2
    assert [w.name for w in service.workers(T0 + 3)] == ['old-worker']


def test_the_stored_service_runs_its_jobs(stored):
    service, ids, _ = stored
    # The job in the 'fast' queue is claimed by a worker serving it.
    jobid = service.claimNextJob(now=T0 + 3, worker='w', queues=['fast'])
    assert jobid == ids['urgent']
    token = service.jobs[jobid].lease.token
    assert service.processNext(T0 + 3, jobid, token=token)
    assert service.getResult(jobid) == 'ran urgent'
    # The cron job (09:00 and 09:30 UTC) runs at its next time.
    nine = T0 + 9 * 3600
    while service.processNext(nine):
        pass
    cron = service.jobs[ids['cron']]
    assert cron.runs == 1
    assert service.getStatus(ids['cron']) == interfaces.CRONJOB
    assert cron.started == nine
    transaction.commit()


def test_a_stored_lease_runs_out_and_the_job_runs_again(stored):
    service, ids, _ = stored
    assert service.expiredLeases(now=T0 + 2 + 29) == []
    expired = service.expiredLeases(now=T0 + 2 + 31)
    assert [job.id for job in expired] == [ids['leased']]
    for _ in range(10):
        if not service.processNext(T0 + 40):
            break
    assert service.getStatus(ids['leased']) == interfaces.COMPLETED
    assert service.getResult(ids['leased']) == 'ran leased'


def test_stored_paused_and_later_jobs_resume(stored):
    service, ids, _ = stored
    service.resume(ids['paused'], now=T0 + 5)
    service.startJob(ids['later'], now=T0 + 5)
    for _ in range(10):
        if not service.processNext(T0 + 6):
            break
    assert service.getResult(ids['paused']) == 'ran paused'
    assert service.getResult(ids['later']) == 'ran later'


def test_new_jobs_go_into_a_stored_service(stored):
    service, ids, _ = stored
    jobid = service.add('echo', 'new', now=T0 + 7)
    assert jobid not in ids.values()
    while service.processNext(T0 + 8):
        pass
    assert service.getResult(jobid) == 'ran new'
    transaction.commit()
    assert service.countJobs(interfaces.COMPLETED) >= 5
