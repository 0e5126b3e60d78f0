"""The workers' records: registering, renewing, dying, being dropped."""
import re
import threading
import time

import pytest
import transaction
from zope.interface.verify import verifyObject

import zodbtasks
from zodbtasks import interfaces
from zodbtasks.heartbeats import Claim
from zodbtasks.heartbeats import Heartbeats
from zodbtasks.processor import SimpleProcessor
from zodbtasks.registry import WorkerRecord

T0 = 1_000_000.0


def register(service, name='w1', now=T0, every=2.0, tasks=('echo',)):
    return service.registerWorker(name, now, 'host1', 42, every, tasks)


def written(db, before):
    """The oids each transaction after ``before`` wrote, in order."""
    return [{record.oid for record in txn}
            for txn in db.storage.iterator() if txn.tid > before]


def test_the_service_and_its_records_provide_their_interfaces(service):
    assert verifyObject(interfaces.IWorkerRegistry, service)
    record = register(service)
    assert verifyObject(interfaces.IWorkerRecord, record)
    assert isinstance(record, WorkerRecord)


def test_a_service_without_records_has_no_workers_and_serves_nothing(
        service):
    service.add('echo')
    assert service._workers is None
    assert service.workers(T0) == []
    assert service.liveWorkers(T0) == []
    assert service.dropDeadWorkers(T0) == []
    assert service.workerSeen('w1', T0) is None
    assert service.workerStopped('w1', T0) is None
    assert service._workers is None          # none of these created it
    assert service.unservedTasks(T0) == {'echo': 1}


def test_a_record_says_what_its_worker_said(service):
    record = register(service, tasks=('fail', 'echo'))
    assert (record.name, record.host, record.pid) == ('w1', 'host1', 42)
    assert record.started == record.lastSeen == T0
    assert record.tasks == ('echo', 'fail')
    assert (record.jobs, record.jobsDone, record.counters) == ((), 0, {})
    seen = service.workerSeen('w1', T0 + 1, jobs=[7, 9], jobsDone=3,
                              counters={'completed': 3})
    assert seen is record
    assert record.lastSeen == T0 + 1
    assert record.describe(T0 + 1) == {
        'name': 'w1', 'host': 'host1', 'pid': 42, 'state': 'live',
        'started': T0, 'lastSeen': T0 + 1, 'every': 2.0, 'stopped': None,
        'jobsDone': 3, 'jobs': [7, 9], 'tasks': ['echo', 'fail'],
        'queues': None, 'counters': {'completed': 3}}
    # What is not given stays as it was.
    service.workerSeen('w1', T0 + 2)
    assert (record.jobs, record.jobsDone) == ((7, 9), 3)


def test_a_worker_is_dead_after_missing_three_renewals(service):
    register(service, every=2.0)
    register(service, 'w2', every=10.0)
    assert [w.name for w in service.liveWorkers(T0 + 6)] == ['w1', 'w2']
    assert [w.name for w in service.liveWorkers(T0 + 6.5)] == ['w2']
    record = service.workers(T0 + 6.5)[0]
    assert record.state(T0 + 6.5) == 'dead'
    assert record.deadSince(T0 + 6.5) == T0
    # A renewal brings it back.
    service.workerSeen('w1', T0 + 7)
    assert record.state(T0 + 7) == 'live'
    assert record.deadSince(T0 + 7) is None


def test_a_stopped_worker_is_not_live(service):
    register(service)
    service.workerStopped('w1', T0 + 1, jobsDone=5, counters={'error': 5})
    (record,) = service.workers(T0 + 1)
    assert record.state(T0 + 1) == 'stopped'
    assert (record.stopped, record.jobsDone, record.jobs) == (T0 + 1, 5, ())
    assert service.liveWorkers(T0 + 1) == []


def test_records_long_dead_or_stopped_are_dropped_a_few_at_a_time(service):
    service.workerDropAfter = 100
    for n in range(5):
        register(service, 'dead%d' % n, every=1.0)
    register(service, 'stopped', every=1.0)
    service.workerStopped('stopped', T0 + 50)
    register(service, 'live', every=1.0)
    service.workerSeen('live', T0 + 200)
    # Dead since T0 (their last renewal), stopped at T0 + 50.
    assert service.dropDeadWorkers(T0 + 100) == []
    assert service.dropDeadWorkers(T0 + 101, limit=2) == ['dead0', 'dead1']
    assert service.dropDeadWorkers(T0 + 101) == ['dead2', 'dead3', 'dead4']
    assert service.dropDeadWorkers(T0 + 151) == ['stopped']
    assert [w.name for w in service.workers(T0 + 200)] == ['live']
    with pytest.raises(ValueError, match='limit'):
        service.dropDeadWorkers(T0, limit=-1)


def test_bad_registrations_are_refused_and_leave_no_trace(service):
    for args, error, says in [
            (('', T0, 'h', 1, 1.0), ValueError, 'name'),
            ((None, T0, 'h', 1, 1.0), TypeError, 'name'),
            (('w', -1, 'h', 1, 1.0), ValueError, 'now'),
            (('w', T0, 'h', 'one', 1.0), TypeError, 'pid'),
            (('w', T0, 'h', True, 1.0), TypeError, 'pid'),
            (('w', T0, 'h', 1, 0), ValueError, 'every'),
            (('w', T0, 'h', 1, 1.0, [3]), TypeError, 'tasks')]:
        with pytest.raises(error, match=says):
            service.registerWorker(*args)
    assert service._workers is None
    with pytest.raises(ValueError, match='workerDropAfter'):
        service.workerDropAfter = -5
    assert service.workerDropAfter == 3600


def test_queued_jobs_are_unserved_when_no_live_worker_knows_their_task(
        service):
    service.add('echo')
    service.add('echo')
    service.add('fail')
    done = service.add('crash')
    service.processNext(T0, done)
    register(service, 'w1', tasks=['echo'], every=1.0)
    assert service.unservedTasks(T0) == {'fail': 1}
    register(service, 'w2', tasks=['fail'], every=10.0)
    assert service.unservedTasks(T0) == {}
    # w1 died: its tasks are no longer served.
    assert service.unservedTasks(T0 + 5) == {'echo': 2}
    service.workerStopped('w2', T0 + 5)
    assert service.unservedTasks(T0 + 5) == {'echo': 2, 'fail': 1}


def test_registering_writes_the_mapping_once_and_renewals_only_the_record(
        db, tasks):
    conn = db.open()
    with transaction.manager:
        # A service stored before workers registered: no mapping.
        conn.root()['tasks'] = service = zodbtasks.TaskService()
    assert '_workers' not in service.__dict__
    before = db.lastTransaction()
    with transaction.manager:
        register(service, 'w1')
    with transaction.manager:
        register(service, 'w2')
    with transaction.manager:
        service.workerSeen('w1', T0 + 1, jobs=[1], jobsDone=1,
                           counters={'completed': 1})
    with transaction.manager:
        service.workerStopped('w2', T0 + 2)
    with transaction.manager:
        # w1 again, restarted under its name: its record is reset in place.
        again = register(service, 'w1', now=T0 + 3)
    with transaction.manager:
        service.dropDeadWorkers(T0 + 3)          # none to drop: no write
    first, second, seen, stopped, restarted = written(db, before)
    tree = service._workers._p_oid
    w1, w2 = service._workers['w1']._p_oid, service._workers['w2']._p_oid
    assert first == {service._p_oid, tree, w1}
    assert second == {tree, w2}
    assert seen == {w1}
    assert stopped == {w2}
    assert restarted == {w1}
    assert again.jobsDone == 0 and again.started == T0 + 3
    conn.close()


def test_heartbeats_call_an_idle_worker_to_renew_its_record():
    calls = []

    def renew(claims, seen=False):
        calls.append(([c.jobid for c in claims], seen))
        return {}
    beats = Heartbeats(renew, None, interval=10, every=0.05)
    beats._seen = time.monotonic()
    beats.beat()
    assert calls == []                       # not due yet, nothing held
    time.sleep(0.06)
    beats.beat()
    assert calls == [([], True)]
    beats.beat()
    assert calls == [([], True)]             # renewed just now
    claim = Claim(5, 'token', time.time() + 30, 30)
    claim.renewed -= 11
    beats.hold(claim)
    beats.beat()
    assert calls[-1] == ([5], False)         # a lease, not the record
    # Without ``every`` the worker is never asked about its record.
    quiet = []
    Heartbeats(lambda claims: quiet.append(claims), None, 10).beat()
    assert quiet == []


def test_a_registered_processor_keeps_its_record_while_it_loops(db, tasks):
    conn = db.open()
    with transaction.manager:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
        for n in range(3):
            service.add('echo', n)
        service.add('fail', 'x')
    processor = SimpleProcessor(db, 'tasks', waitTime=0.02, name='tester',
                                heartbeatInterval=0.05, register=True)
    assert processor.workerEvery == 0.05
    loop = threading.Thread(target=processor, daemon=True)
    loop.start()

    def record():
        transaction.begin()
        workers = service._workers
        return None if workers is None else workers.get('tester:%s'
                                                        % loop.name)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = record()
            if found is not None and found.jobsDone == 4 \
                    and found.lastSeen > found.started + 0.1:
                break
            time.sleep(0.02)
        found = record()
        assert found.state(time.time()) == 'live'
        assert found.jobsDone == 4, found.describe(time.time())
        assert found.counters == {'completed': 3, 'error': 1}
        assert found.tasks == ('crash', 'echo', 'fail')
        assert found.pid > 0 and found.every == 0.05
        assert found.lastSeen > found.started + 0.1   # renewed while idle
    finally:
        processor.stop()
        loop.join(10)
    assert not loop.is_alive()
    found = record()
    assert found.state(time.time()) == 'stopped'
    assert found.jobs == ()
    conn.close()


def test_a_worker_whose_record_was_dropped_registers_again(db, tasks):
    conn = db.open()
    with transaction.manager:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
    processor = SimpleProcessor(db, 'tasks', waitTime=0.02, name='again',
                                heartbeatInterval=0.05, register=True)
    loop = threading.Thread(target=processor, daemon=True)
    loop.start()
    name = 'again:%s' % loop.name

    def registered():
        transaction.begin()
        return service._workers is not None and name in service._workers
    try:
        deadline = time.monotonic() + 10
        while not registered() and time.monotonic() < deadline:
            time.sleep(0.02)
        first = service._workers[name]
        with transaction.manager:
            del service._workers[name]       # as if dropped for dead
        deadline = time.monotonic() + 10
        while not registered() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert registered()
        assert service._workers[name] is not first
        assert service._workers[name].state(time.time()) == 'live'
    finally:
        processor.stop()
        loop.join(10)
    assert not loop.is_alive()
    conn.close()


def test_an_unregistered_processor_leaves_no_record(db, tasks):
    conn = db.open()
    with transaction.manager:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
        service.add('echo', 1)
    SimpleProcessor(db, 'tasks', waitTime=0.02, untilIdle=True)()
    transaction.begin()
    assert service._workers is None
    conn.close()


# -- real worker processes over ZEO -------------------------------------------

def _cli(capsys, *argv):
    from zodbtasks.cli import main
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_worker_processes_show_in_workers_and_status_flags_what_none_knows(
        tmp_path, capsys):
    import json
    import os

    import ZEO

    from zodbtasks._testing import Workers
    from zodbtasks._testing import ZEOServer
    from zodbtasks._testing import waitFor
    here = os.path.dirname(os.path.abspath(__file__))
    env = {'PYTHONPATH': os.pathsep.join(
        filter(None, [here, os.environ.get('PYTHONPATH')]))}
    ledger = str(tmp_path / 'ledger')
    with ZEOServer(str(tmp_path / 'Data.fs')) as zeo:
        db = ZEO.DB(zeo.address)
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        try:
            import worker_tasks
            worker_tasks.register()
            with tm:
                conn.root()['tasks'] = service = zodbtasks.TaskService()
                for _ in range(6):
                    service.add('append_id', ledger)
            tm.abort()
            conn.close()
        finally:
            db.close()
        on = ['--db', zeo.uri, '--service', 'tasks']

        def shown():
            return {w['pid']: w for w in json.loads(
                _cli(capsys, 'workers', *on, '--json'))}
        with Workers(str(tmp_path), env=env) as workers:
            args = ['worker', *on, '--tasks', 'worker_tasks', '--poll',
                    '0.05', '--heartbeat', '0.2']
            first, second = workers.start(*args), workers.start(*args)
            pids = {first.pid, second.pid}

            def bothRan():
                found = shown()
                return set(found) == pids and all(
                    w['state'] == 'live' for w in found.values()) and sum(
                    w['jobsDone'] for w in found.values()) == 6 and found
            found = waitFor(bothRan, 60, 'two live workers that ran 6 jobs',
                            interval=0.2)
            for pid, record in found.items():
                assert record['tasks'] == sorted(worker_tasks.TASKS)
                assert record['every'] == 0.2
                assert record['name'].endswith(':%d' % pid)
                assert record['jobs'] == []
                assert record['counters'].get('completed', 0) \
                    == record['jobsDone']
            table = _cli(capsys, 'workers', *on)
            assert table.startswith('2 live worker(s) of 2 recorded, ')
            rows = [line.split() for line in table.splitlines()
                    if line.split()[1:2] == ['live']
                    and not line.startswith('2 live')]
            assert sorted(int(row[3]) for row in rows) == sorted(pids)
            assert all('append_id,' in row for row in rows), table

            # Nobody knows this task: status says so, once it is queued.
            capsys.readouterr()
            import zope.component.testing
            zope.component.testing.tearDown()     # no task known here
            zope.component.testing.setUp()
            from zodbtasks.cli import main
            assert main(['add', *on, 'nobody_knows']) == 0
            capsys.readouterr()
            waitFor(lambda: json.loads(_cli(capsys, 'status', *on, '--json'))
                    .get('unservedTasks') == {'nobody_knows': 1}, 30,
                    'status flagging the unknown task', interval=0.2)
            report = _cli(capsys, 'status', *on)
            assert 'queued jobs whose task no live worker knows' in report
            assert re.search(r'nobody_knows\s+1', report), report

            first.kill()
            assert first.wait(30) == -9
            found = waitFor(lambda: (lambda f: f[first.pid]['state'] == 'dead'
                                     and f)(shown()),
                            30, 'the killed worker shown dead', interval=0.2)
            assert found[second.pid]['state'] == 'live'
            assert _cli(capsys, 'workers', *on).startswith(
                '1 live worker(s) of 2 recorded')

            second.terminate()                 # a graceful stop
            assert second.wait(30) == 0, workers.log(second)
            found = shown()
            assert found[second.pid]['state'] == 'stopped'
            assert found[second.pid]['stopped'] is not None
            assert json.loads(_cli(capsys, 'status', *on, '--json'))[
                'liveWorkers'] == 0


def test_zeo_lines_about_clients_gone_are_left_out_unless_verbose():
    import logging

    from zodbtasks import cli
    server = logging.getLogger('ZEO.asyncio.server')
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())
    keep = Keep()
    server.addHandler(keep)
    names = ('ZEO', 'ZODB', 'zc.lockfile', 'txn')
    levels = {name: logging.getLogger(name).level for name in names}
    args = ['status', '--db', 'Data.fs', '--service', 'tasks']
    try:
        cli._setUpLogging(cli.buildParser().parse_args(args + ['--verbose']))
        server.error('Disconnected %s:%s', 'BrokenPipeError', 'Broken pipe')
        assert seen == ['Disconnected BrokenPipeError:Broken pipe']
        del seen[:]
        cli._setUpLogging(cli.buildParser().parse_args(args))
        server.error('Disconnected %s:%s', 'BrokenPipeError', 'Broken pipe')
        server.error('Disconnected %s:%s', 'ConnectionResetError', 'reset')
        server.error('Disconnected %s:%s', 'OSError', 'something else')
        server.error('the storage failed')
        assert seen == ['Disconnected OSError:something else',
                        'the storage failed']
    finally:
        server.removeHandler(keep)
        server.removeFilter(cli._clientGone)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
