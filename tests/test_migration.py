"""Moving a z3c.taskqueue or lovely.remotetask database to zodbtasks.

The old packages do not run on Python 3, so the old database is written here
with stand-in classes that carry the old class names and the old stored
layout (see `zodbtasks.migration`), in modules made at run time and removed
before the database is converted. The conversion is zodbupdate with
`zodbtasks.migration.renames`, in a process of its own as in real life.
"""
import contextlib
import datetime
import importlib
import subprocess
import sys
import types
from importlib.metadata import entry_points

import persistent
import pytest
import ZODB
import ZODB.FileStorage
import zope.component
from BTrees.IOBTree import IOBTree
from persistent.mapping import PersistentMapping

import zodbtasks
from zodbtasks import migration
from zodbtasks._testing import consoleScript
from zodbtasks.service import LAYOUT

#: 2024-01-02 00:00:00 UTC, a Tuesday: the time the old database was left.
T0 = 1704153600


def localTime(seconds):
    """A time as the old packages stored it: a naive local datetime."""
    return datetime.datetime.fromtimestamp(seconds)


# -- stand-ins for the old classes -------------------------------------------

def _class(module, name, bases, namespace):
    namespace = dict(namespace, __module__=module.__name__)
    cls = type(name, bases, namespace)
    setattr(module, name, cls)
    return cls


class _Queue:
    """zc.queue's Queue: the items are a tuple in ``_data``."""

    def __init__(self):
        self._data = ()

    def put(self, item):
        self._data += (item,)


class _CompositeQueue:
    """zc.queue's CompositeQueue: ``_data`` is a tuple of sub-queues."""

    def __init__(self, compositeSize=15, subfactory=None):
        self._data = ()
        self.compositeSize = compositeSize
        self.subfactory = subfactory or type(self).bucketClass

    def put(self, item):
        if not self._data or len(self._data[-1]._data) >= self.compositeSize:
            self._data += (self.subfactory(),)
        self._data[-1].put(item)


class _Job:
    def __init__(self, id, task, input, created):
        self.id = id
        self.task = task
        self.input = input
        self.created = localTime(created)


class _CronJob(_Job):
    def __init__(self, id, task, input, created, minute=(), hour=(),
                 dayOfMonth=(), month=(), dayOfWeek=(), delay=None):
        super().__init__(id, task, input, created)
        self.minute, self.hour, self.dayOfMonth = minute, hour, dayOfMonth
        self.month, self.dayOfWeek = month, dayOfWeek
        self.delay = delay or None


class _Service:
    """The old service's stored layout, with what the test needs to fill it.

    Its queues and trees are built as the old ``__init__`` built them.
    """

    def __init__(self, scheduling=True):
        self.jobs = IOBTree()
        self._queue = self.modules.queueFactory()
        if scheduling:
            self._scheduledJobs = IOBTree()
            self._scheduledQueue = self.modules.queueFactory()

    def store(self, job, status):
        job.status = status
        self.jobs[job.id] = job
        return job

    def add(self, id, task, input, created, status='queued', **fields):
        job = self.store(self.modules.Job(id, task, input, created), status)
        for name, value in fields.items():
            setattr(job, name, value)
        if status == 'queued':
            self._queue.put(job)
        return job

    def addCronJob(self, id, task, input, created, dueAt=None,
                   status=None, **schedule):
        job = self.modules.CronJob(id, task, input, created, **schedule)
        self.store(job, status or ('cronjob' if job.delay is None
                                   else 'delayed'))
        if dueAt is None:
            self._scheduledQueue.put(job)       # placed at the next tick
        else:
            job.scheduledFor = localTime(dueAt)
            self._scheduledJobs[dueAt] = \
                self._scheduledJobs.get(dueAt, ()) + (job,)
        return job


class OldModules:
    """Modules named as an old package's, registered while in a ``with``."""

    def __init__(self, package, queueClass='Queue'):
        self.package = package
        self.names = [package.split('.')[0], package] + [
            '%s.%s' % (package, name) for name in ('service', 'job', 'task')
        ] + ['zc.queue', 'zc.queue._queue']
        self.modules = {name: types.ModuleType(name) for name in self.names}
        mod = lambda name: self.modules['%s.%s' % (package, name)]
        queues = self.modules['zc.queue._queue']
        bucket = _class(queues, 'Queue', (_Queue, persistent.Persistent), {})
        _class(queues, 'BucketQueue', (bucket,), {})
        _class(queues, 'CompositeQueue',
               (_CompositeQueue, persistent.Persistent),
               {'bucketClass': queues.BucketQueue})
        self.queueFactory = getattr(queues, queueClass)
        self.Job = _class(mod('job'), 'Job', (_Job, persistent.Persistent), {})
        self.CronJob = _class(mod('job'), 'CronJob', (_CronJob, self.Job), {})
        self.TaskError = _class(mod('task'), 'TaskError', (Exception,), {})
        self.TaskService = _class(
            mod('service'), 'TaskService', (persistent.Persistent,), dict(
                {name: vars(_Service)[name] for name in (
                    '__init__', 'store', 'add', 'addCronJob')},
                __parent__=None, __name__=None, modules=self))

    def __enter__(self):
        self.saved = {name: sys.modules.get(name) for name in self.names}
        sys.modules.update(self.modules)
        return self

    def __exit__(self, *exc):
        for name, module in self.saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


# -- writing, converting and opening the database ----------------------------

def snapshot(job):
    """What must survive the migration, in the new form."""
    state = dict(vars(job))
    info = {name: state.get(name) for name in (
        'id', 'task', 'status', 'input', 'output', 'error')}
    for name in ('created', 'started', 'completed'):
        if state.get(name) is not None:
            info[name] = state[name].timestamp()
    for name in ('minute', 'hour', 'dayOfMonth', 'month', 'dayOfWeek',
                 'delay'):
        if name in state:
            info[name] = state[name]
    return info


def writeZ3cDatabase(path):
    """An old z3c.taskqueue service with a job in every state.

    Returns {name: snapshot} of its jobs.
    """
    jobs = {}
    with OldModules('z3c.taskqueue') as old:
        db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
        with db.transaction() as conn:
            service = old.TaskService()
            service.__name__ = 'tasks'
            conn.root()['tasks'] = service
            # Queued, in this order; the ids go the other way (and 0 is a
            # valid old id).
            jobs['first'] = service.add(301, 'echo', 'first', T0 - 500)
            jobs['second'] = service.add(201, 'echo', 'second', T0 - 400)
            jobs['third'] = service.add(101, 'echo', 'third', T0 - 300)
            jobs['fourth'] = service.add(0, 'echo', 'fourth', T0 - 200)
            jobs['done'] = service.add(
                401, 'echo', 'done', T0 - 900, 'completed', output='DONE',
                started=localTime(T0 - 800), completed=localTime(T0 - 790))
            jobs['failed'] = service.add(
                402, 'echo', 'failed', T0 - 900, 'error',
                error='it failed', started=localTime(T0 - 700),
                completed=localTime(T0 - 690))
            jobs['cancelled'] = service.add(403, 'echo', 'cancelled',
                                            T0 - 900, 'cancelled')
            jobs['later'] = service.add(404, 'echo', 'later', T0 - 900,
                                        'start later')
            # Taken by workers that died: one claimed (still 'queued', in no
            # queue), one 'processing'. They run first, oldest first.
            jobs['claimed'] = service.add(
                405, 'echo', 'claimed', T0 - 600, 'claimed')
            jobs['claimed'].status = 'queued'
            jobs['running'] = service.add(
                406, 'echo', 'running', T0 - 650, 'processing',
                started=localTime(T0 - 610))
            # Delayed: one placed at a fixed time, one not placed yet.
            jobs['delayed'] = service.addCronJob(
                501, 'echo', 'delayed', T0 - 600, dueAt=T0 + 3000, delay=3600)
            jobs['soon'] = service.addCronJob(
                502, 'echo', 'soon', T0 - 100, delay=60)
            # Cron: daily at 02:30 UTC, placed; hourly, not placed yet;
            # cancelled but still in the old schedule; one due at 23:15
            # while the old service was stopped.
            jobs['daily'] = service.addCronJob(
                503, 'echo', 'daily', T0 - 900, dueAt=T0 + 9000,
                hour=(2,), minute=(30,))
            jobs['hourly'] = service.addCronJob(
                504, 'echo', 'hourly', T0 - 900, minute=(0,))
            jobs['stopped'] = service.addCronJob(
                505, 'echo', 'stopped', T0 - 900, dueAt=T0 + 60,
                minute=(1,), status='cancelled')
            jobs['overdue'] = service.addCronJob(
                506, 'echo', 'overdue', T0 - 90000, dueAt=T0 - 2700,
                minute=(15,))
            # Something else of the application that refers to a job.
            conn.root()['ref'] = PersistentMapping(job=jobs['first'])
            jobs = {name: snapshot(job) for name, job in jobs.items()}
        db.close()
    return jobs


def writeLovelyDatabase(path):
    """An old lovely.remotetask service: a composite queue, exceptions as
    errors, and no schedule trees (as the oldest versions left them)."""
    with OldModules('lovely.remotetask', 'CompositeQueue') as old:
        db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
        with db.transaction() as conn:
            service = old.TaskService(scheduling=False)
            service._queue.compositeSize = 2
            conn.root()['remotetasks'] = service
            for jobid, name in [(13, 'a'), (12, 'b'), (11, 'c')]:
                service.add(jobid, 'echo', name, T0 - 100)
            service.add(14, 'echo', 'boom', T0 - 900, 'error',
                        error=old.TaskError('boom'))
            service.add(15, 'echo', 'bad', T0 - 900, 'error',
                        error=ValueError('bad'))
            assert len(service._queue._data) == 2
        db.close()


_ZODBUPDATE = '''
import sys
import ZODB.FileStorage
import zodbupdate.main
from zodbtasks.migration import renames
storage = ZODB.FileStorage.FileStorage(sys.argv[1])
rules = {tuple(old.split()): tuple(new.split()) for old, new in renames.items()}
zodbupdate.main.create_updater(storage, default_renames=rules)()
storage.close()
'''


def zodbupdate(path):
    """Convert the database with zodbupdate's Python API and our map."""
    pytest.importorskip('zodbupdate')
    result = subprocess.run([sys.executable, '-c', _ZODBUPDATE, str(path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stderr


@contextlib.contextmanager
def opened(path):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(path)))
    try:
        with db.transaction() as conn:
            yield conn.root()
    finally:
        db.close()


@pytest.fixture
def ran():
    ran = []

    def echo(input):
        ran.append(input)
        return str(input).upper()

    zope.component.provideUtility(zodbtasks.SimpleTask(echo), name='echo')
    return ran


def tick(service, now, ran):
    """Run every job due at ``now``; return the inputs of those that ran."""
    del ran[:]
    service.process(now)
    return list(ran)


# -- the tests ---------------------------------------------------------------

def test_the_rename_map_names_real_classes():
    assert len(migration.renames) == 2 * len(migration._CLASSES)
    for old, new in migration.renames.items():
        oldModule, oldName = old.split(' ')
        assert oldModule.split('.')[0] in ('z3c', 'lovely')
        module, name = new.split(' ')
        target = getattr(importlib.import_module(module), name)
        assert target.__module__ == module and target.__name__ == name
        assert oldName == name
    assert migration.renames['z3c.taskqueue.service TaskService'] == \
        'zodbtasks.service TaskService'
    assert migration.renames['lovely.remotetask.job CronJob'] == \
        'zodbtasks.job CronJob'


def test_z3c_taskqueue_database(tmp_path, ran):
    path = tmp_path / 'Data.fs'
    before = writeZ3cDatabase(str(path))
    assert 'z3c.taskqueue.job' not in sys.modules
    zodbupdate(path)

    with opened(path) as root:
        service = root['tasks']
        # Renamed, still in the old layout.
        assert type(service) is zodbtasks.TaskService
        assert service._layout == 0
        assert type(service.jobs) is IOBTree
        assert type(service.jobs[503]) is zodbtasks.CronJob
        assert type(service.jobs[301]) is zodbtasks.Job
        # The first tick upgrades, then runs the cron job that came due
        # while the old service was stopped.
        assert service.processNext(now=T0 + 10)
        assert ran == ['overdue']
        assert service._layout == LAYOUT
        for name in ('_scheduledJobs', '_scheduledQueue'):
            assert name not in vars(service)
        assert type(service._queue) is tuple
        assert service.__name__ == 'tasks'
        assert len(service.jobs) == len(before)

        # Every job keeps its id, status, input, output, error, times and
        # schedule fields.
        after = {name: service.jobs[info['id']]
                 for name, info in before.items()}
        for name, info in before.items():
            job = after[name]
            for field, value in info.items():
                if name == 'overdue' and field == 'output':
                    continue      # it just ran
                if field == 'status':
                    value = {'processing': 'queued'}.get(value, value)
                assert getattr(job, field) == value, (name, field)
        assert root['ref']['job'] is after['first']
        assert after['later'].status == 'start later'
        assert after['overdue'].output == 'OVERDUE'
        assert after['overdue'].status == 'cronjob'
        for job in after.values():
            assert isinstance(job.created, float)

        # Where each waiting job is due now.
        assert after['delayed'].scheduledFor == T0 + 3000    # kept
        assert after['soon'].scheduledFor == T0 + 10 + 60    # first tick
        assert after['daily'].scheduledFor == T0 + 9000
        assert after['hourly'].scheduledFor == T0 + 3600
        assert after['overdue'].scheduledFor == T0 + 900
        assert after['overdue'].missedRuns == 0
        assert after['stopped'].scheduledFor is None
        for name in ('done', 'failed', 'cancelled', 'stopped'):
                assert after[name].id in service._catalog.finished_ids(
                    after[name].status)

        # The jobs workers had taken run first, then the queue in its old
        # order.
        assert tick(service, T0 + 10, ran) == [
            'running', 'claimed', 'first', 'second', 'third', 'fourth']
        assert after['fourth'].output == 'FOURTH'
        assert tick(service, T0 + 69, ran) == []
        assert tick(service, T0 + 70, ran) == ['soon']
        assert tick(service, T0 + 900, ran) == ['overdue']
        assert tick(service, T0 + 3000, ran) == ['delayed']
        assert tick(service, T0 + 3600, ran) == ['hourly']
        assert tick(service, T0 + 9000, ran) == ['overdue', 'hourly', 'daily']
        assert after['daily'].scheduledFor == T0 + 9000 + 86400
        assert after['daily'].runs == 1
        assert after['delayed'].status == after['soon'].status == 'completed'

        # A second tick does not upgrade again.
        assert not service.upgrade(T0 + 9001)
        assert migration.upgrade(service, T0 + 9001) == {}

        service.clean()
        assert sorted(service.jobs.keys()) == [404, 503, 504, 506]
        assert service.startJob(404, now=T0 + 9001)
        assert tick(service, T0 + 9001, ran) == ['later']

    # Everything stored is readable again, without the old queues.
    with opened(path) as root:
        service = root['tasks']
        assert service._layout == LAYOUT
        assert sorted(service.jobs.keys()) == [404, 503, 504, 506]
        assert service.getResult(404) == 'LATER'
        assert service.jobs[503].scheduledFor == T0 + 9000 + 86400


def test_lovely_remotetask_database(tmp_path, ran):
    path = tmp_path / 'Data.fs'
    writeLovelyDatabase(str(path))
    zodbupdate(path)

    with opened(path) as root:
        service = root['remotetasks']
        assert type(service) is zodbtasks.TaskService
        # lovely.remotetask kept the exception of a failed run.
        assert isinstance(service.jobs[14].error, zodbtasks.TaskError)
        assert tick(service, T0, ran) == ['a', 'b', 'c']
        assert [service.getStatus(i) for i in (11, 12, 13, 14, 15)] == \
            ['completed'] * 3 + ['error'] * 2
        assert service.getError(14) == 'boom'
        assert service.getError(15) == 'ValueError: bad'
        assert service.getResult(13) == 'A'
        jobid = service.addCronJob('echo', 'new', minute=(5,), now=T0)
        assert tick(service, T0 + 60, ran) == []
        assert tick(service, T0 + 300, ran) == ['new']
        assert service.jobs[jobid].scheduledFor == T0 + 3900
        service.clean()
        assert list(service.jobs.keys()) == [jobid]


def test_zodbupdate_command_line(tmp_path, ran):
    """``zodbupdate -f Data.fs`` finds the map through its entry point."""
    found = [ep for ep in entry_points().select(group='zodbupdate')
             if ep.value == 'zodbtasks.migration:renames']
    if not found:
        pytest.skip('zodbtasks is installed without its zodbupdate entry '
                    'point (see setup.py)')
    assert found[0].load() is migration.renames
    command = consoleScript('zodbupdate')
    assert command, 'no zodbupdate script beside %s or on PATH' % (
        sys.executable,)
    path = tmp_path / 'Data.fs'
    writeLovelyDatabase(str(path))
    subprocess.run([command, '-f', str(path)], check=True, timeout=300,
                   capture_output=True)
    with opened(path) as root:
        assert tick(root['remotetasks'], T0, ran) == ['a', 'b', 'c']


# -- the upgrade on its own, for the odd cases --------------------------------

class PlainQueue:
    def __init__(self, *items):
        self._data = items


def oldService(*jobs, queue=(), scheduled=None, unplaced=()):
    """A service unpickled from the old layout, built in memory."""
    service = zodbtasks.TaskService.__new__(zodbtasks.TaskService)
    service.jobs = IOBTree({job.id: job for job in jobs})
    service._queue = PlainQueue(*queue)
    service._scheduledJobs = IOBTree(scheduled or {})
    service._scheduledQueue = PlainQueue(*unplaced)
    return service


def oldJob(cls, id, status, **state):
    job = cls.__new__(cls)
    job.__dict__.update(id=id, task='echo', input=id, status=status,
                        created=localTime(T0 - 10), **state)
    return job


def oldCronJob(id, status, **state):
    fields = dict(minute=(), hour=(), dayOfMonth=(), month=(), dayOfWeek=(),
                  delay=None)
    fields.update(state)
    return oldJob(zodbtasks.CronJob, id, status, **fields)


def test_odd_jobs(ran):
    badSchedule = oldCronJob(1, 'cronjob', hour=(25,))
    unknown = oldJob(zodbtasks.Job, 2, 'frozen')
    taken = oldCronJob(3, 'delayed', delay=30,
                       scheduledFor=localTime(T0 - 5))
    lost = oldCronJob(4, 'processing', minute=(0,))
    orphan = oldCronJob(5, 'cronjob', minute=(0,))
    zeroDelay = oldCronJob(6, 'cronjob', delay=0, minute=[10])
    service = oldService(badSchedule, unknown, taken, lost, orphan,
                         zeroDelay, scheduled={T0 - 60: (zeroDelay,)})
    summary = migration.upgrade(service, T0)
    assert summary == {'failed': 2, 'recovered': 2, 'unplaced': 1,
                       'scheduled': 1}
    assert badSchedule.status == 'error'
    assert 'schedule cannot be used' in badSchedule.error
    assert unknown.status == 'error' and "'frozen'" in unknown.error
    # A delayed job the old service had taken out of its schedule, and a
    # job that was running, are due again at once.
    assert taken.status == 'delayed' and taken.scheduledFor == T0
    assert lost.status == 'cronjob' and lost.scheduledFor == T0
    assert orphan.scheduledFor is None and orphan.second == ()
    assert zeroDelay.delay is None and zeroDelay.minute == (10,)
    assert zeroDelay.scheduledFor == T0 - 60
    assert zeroDelay.schedule.next_after(T0) == T0 + 600
    assert sorted(tick(service, T0, ran)) == [3, 4, 6]
    assert orphan.scheduledFor == T0 + 3600


def test_an_empty_or_partial_old_service():
    service = zodbtasks.TaskService.__new__(zodbtasks.TaskService)
    service.__name__ = 'empty'
    assert service.upgrade(T0)
    assert len(service.jobs) == 0 and not service.hasJobsWaiting(T0)
    assert not service.upgrade(T0)


def test_an_id_beyond_the_new_range():
    job = oldJob(zodbtasks.Job, -5, 'queued')
    service = oldService(job, queue=[job])
    migration.upgrade(service, T0)
    assert 0 < job.id < 2 ** 53 and service.jobs[job.id] is job
    assert -5 not in service.jobs
    assert service.claimNextJob(now=T0) == job.id
