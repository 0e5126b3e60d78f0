"""Behaviour that no other test pinned down: each test here fails under a
plausible one-line bug that the rest of the suite let through."""
import contextlib
import http.client
import threading

import pytest
import transaction

import zodbtasks
from zodbtasks import writes
from zodbtasks._testing import waitFor
from zodbtasks.cli import main
from zodbtasks.processor import SimpleProcessor

WAIT = 30   # seconds before a test gives up waiting for a thread
HOUR = 3600


# The helpers of the processor's tests.
from test_processor import add  # noqa: E402
from test_processor import opened  # noqa: E402
from test_processor import register  # noqa: E402
from test_processor import stored  # noqa: E402,F401 (a fixture)
from test_processor import ticking  # noqa: E402


def runDue(service, now):
    """Run every job due at ``now``; how many runs that was."""
    ran = 0
    while service.processNext(now=now):
        ran += 1
        assert ran < 100
    return ran


# -- an explicit lease wins over the job's leaseSeconds -----------------------

def test_an_explicit_lease_wins_over_the_jobs_lease_seconds(service):
    one, two, three = (service.add('echo', n, leaseSeconds=5, now=1000)
                       for n in range(3))
    assert service.claimNextJob(now=1000, worker='w', lease=100) == one
    assert service.jobs[one].lease.expires == 1100
    assert service.claimJobs(now=1000, count=1, worker='w',
                             lease=200) == [two]
    assert service.jobs[two].lease.expires == 1200
    # Without one, the job's own leaseSeconds beats the service's 60.
    assert service.claimNextJob(now=1000, worker='w') == three
    assert service.jobs[three].lease.expires == 1005


def test_a_heartbeat_renews_for_the_seconds_it_is_given(service):
    jobid = service.add('echo', leaseSeconds=5, now=1000)
    service.claimNextJob(now=1000, worker='w', lease=100)
    token = service.jobs[jobid].lease.token
    assert service.heartbeat(jobid, token, now=1050, seconds=300) == 1350
    # Without seconds: the job's leaseSeconds, but a lease never shrinks.
    assert service.heartbeat(jobid, token, now=1060) == 1350
    assert service.heartbeat(jobid, token, now=1348) == 1353


def test_the_processors_lease_wins_over_the_jobs(stored, tasks):
    jobid, = add(stored, 'echo', 'x', leaseSeconds=5)
    proc = SimpleProcessor(stored, 'app/tasks', clock=lambda: 1000.0,
                           lease=100, name='w')
    assert proc.claimNextJob() == jobid
    with opened(stored) as service:
        assert service.jobs[jobid].lease.expires == 1100


# -- misfires: exactly catchUp missed times are replayed ------------------------

def test_exactly_catch_up_missed_times_of_a_cron_job_are_replayed(service):
    jobid = service.addCronJob('echo', minute=(0,), misfire='all',
                               catchUp=3, now=0)
    assert runDue(service, 0) == 0                 # placed at 01:00
    # Due at 01:00; 02:00, 03:00 and 04:00 missed too: three, as catchUp.
    now = 4 * HOUR + 30
    assert service.processNext(now=now)
    job = service.jobs[jobid]
    assert job.lastMissed == (now, 3, 'replaying')
    assert job.scheduledFor == 2 * HOUR
    assert runDue(service, now) == 3
    assert (job.runs, job.missedRuns) == (4, 0)
    assert job.scheduledFor == 5 * HOUR


def test_one_more_than_catch_up_missed_times_are_coalesced(service):
    jobid = service.addCronJob('echo', minute=(0,), misfire='all',
                               catchUp=3, now=0)
    runDue(service, 0)
    assert runDue(service, 5 * HOUR + 30) == 1     # four missed: too many
    job = service.jobs[jobid]
    assert (job.runs, job.missedRuns) == (1, 4)
    assert job.lastMissed == (5 * HOUR + 30, 4, 'coalesced')
    assert job.scheduledFor == 6 * HOUR


def test_exactly_catch_up_missed_times_of_an_interval_job_are_replayed(
        service):
    jobid = service.addCronJob('echo', interval=600, misfire='all',
                               catchUp=2, now=0)
    runDue(service, 0)
    due = service.jobs[jobid].scheduledFor
    assert runDue(service, due + 2 * 600) == 3
    assert service.jobs[jobid].scheduledFor == due + 3 * 600
    assert service.jobs[jobid].missedRuns == 0


# -- intervals count from the time due, not from when they ran -------------------

def test_an_interval_job_run_late_keeps_its_times(service):
    jobid = service.addCronJob('echo', interval=600, now=1000)
    runDue(service, 1000)
    job = service.jobs[jobid]
    due = job.scheduledFor
    assert due == 1600
    for late in (7, 250, 599):
        assert runDue(service, due + late) == 1
        assert job.scheduledFor == due + 600, late
        assert job.timeOfNextCall(due + late) == due + 600
        assert job.timeOfNextCall(due + 600) == due + 1200
        due = job.scheduledFor


def test_an_interval_job_back_from_a_long_outage_keeps_its_times(service):
    jobid = service.addCronJob('echo', interval=600, catchUp=2, now=1000)
    runDue(service, 1000)
    job = service.jobs[jobid]
    assert job.scheduledFor == 1600
    # Due at 1600, then missed 30 times: more than counting goes to.
    assert runDue(service, 1600 + 30 * 600 + 100) == 1
    assert job.scheduledFor == 1600 + 31 * 600
    assert job.missedRuns == 3         # "more than catchUp"


# -- a time to live of 0 ------------------------------------------------------

def test_a_ttl_of_zero_expires_at_once_despite_the_result_ttl(service):
    service.resultTTL = 3600
    gone = service.add('echo', 'gone', ttl=0, now=1000)
    kept = service.add('echo', 'kept', now=1000)
    for jobid in (gone, kept):
        assert service.processNext(now=1000, jobid=jobid)
    assert service.jobs[gone].expires == 1000
    assert service.jobs[kept].expires == 4600
    assert service.purgeExpired(now=1000) == 1
    assert gone not in service.jobs and kept in service.jobs


# -- processNext of a finished job ---------------------------------------------

def test_process_next_of_a_finished_job_does_not_run_it_again(service, tasks):
    done = service.add('echo', 'done', now=1000)
    failed = service.add('crash', 'failed', now=1000)
    cancelled = service.add('echo', 'cancelled', now=1000)
    service.cancel(cancelled, now=1000)
    assert service.processNext(now=1000, jobid=done)
    assert service.processNext(now=1000, jobid=failed)
    assert tasks == [('echo', 'done'), ('crash', 'failed')]
    before = {jobid: (job.status, job.attempts, job.completed)
              for jobid, job in service.jobs.items()}
    for jobid in (done, failed, cancelled):
        assert service.processNext(now=2000, jobid=jobid) is False
    assert tasks == [('echo', 'done'), ('crash', 'failed')]
    assert {jobid: (job.status, job.attempts, job.completed)
            for jobid, job in service.jobs.items()} == before


def test_a_processor_does_not_run_a_finished_job_again(stored, tasks):
    jobid, = add(stored, 'echo', 'once')
    proc = SimpleProcessor(stored, 'app/tasks', clock=lambda: 1000.0)
    assert proc.processNext(jobid)
    assert proc.processNext(jobid) is False
    assert tasks == [('echo', 'once')]


# -- what a task leaves to commit --------------------------------------------------

def test_a_task_that_adds_only_an_after_commit_hook_is_committed(stored):
    hooks = []

    def hooked(service, jobid, input):
        transaction.get().addAfterCommitHook(
            lambda ok: hooks.append((input, ok)))

    register('hooked', hooked)
    ids = add(stored, 'hooked', 1, 2, 3, 4)
    SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                    clock=ticking(), batchBelow=60)()
    # Put off with the outcomes of other runs, the hooks would be dropped.
    assert hooks == [(1, True), (2, True), (3, True), (4, True)]
    with opened(stored) as service:
        assert [service.getStatus(i) for i in ids] == ['completed'] * 4


def test_commit_hooks_alone_are_work_left_to_commit(stored):
    tm = transaction.TransactionManager()
    conn = stored.open(transaction_manager=tm)
    try:
        for add_hook in ('addBeforeCommitHook', 'addAfterCommitHook'):
            txn = tm.begin()
            assert not writes.left_work(conn, txn, None)
            getattr(txn, add_hook)(lambda *args: None)
            assert writes.left_work(conn, txn, None), add_hook
            tm.abort()
    finally:
        tm.abort()
        conn.close()


# -- a batched job past half its lease ------------------------------------------

def test_a_batched_job_past_half_its_lease_is_renewed_before_it_runs(
        stored, tasks):
    """Claimed in a batch behind a slow job, a job whose lease is half gone
    when its turn comes gets a full lease before it runs: no other worker
    takes it while it runs."""
    now = [1000.0]
    taken = []

    def slow(service, jobid, input):
        if input == 'first':
            now[0] += 45             # past half of the 60 s lease
        else:
            now[0] += 25             # past the end of the lease it had
            # Another worker's claim, not committed: could it take the job?
            with opened(service._p_jar.db()) as other:
                taken.append(other.claimNextJob(now=now[0], worker='other'))

    register('slow', slow)
    # Three runs first, in batches of one and two: then the batch is four.
    add(stored, 'echo', 'warm-up 1', 'warm-up 2', 'warm-up 3')
    ids = add(stored, 'slow', 'first', 'second')
    SimpleProcessor(stored, 'app/tasks', waitTime=0.01, untilIdle=True,
                    clock=lambda: now[0], batch=4, batchBelow=60,
                    heartbeatInterval=0, groupOutcomes=False)()
    assert taken == [None]
    with opened(stored) as service:
        assert [service.getStatus(i) for i in ids] == ['completed'] * 2
        assert service.jobs[ids[1]].attempts == 1


# -- the command line refuses limits of zero -----------------------------------

@pytest.fixture
def fs(tmp_path, tasks):
    import ZODB
    import ZODB.FileStorage
    path = str(tmp_path / 'Data.fs')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    with db.transaction() as conn:
        conn.root()['tasks'] = zodbtasks.TaskService()
    db.close()
    return path


def runCommand(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as stop:      # argparse refused the arguments
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize('argv, option', [
    (['status', '--limit', '0'], '--limit'),
    (['jobs', '--limit', '0'], '--limit'),
    (['clean', '--dry-run', '--limit', '0'], '--limit'),
    (['requeue', '--status', 'error', '--dry-run', '--limit', '0'],
     '--limit'),
    (['next', '*/5 * * * *', '-n', '0'], '-n'),
    (['jobs', '--limit', '-1'], '--limit'),
    (['next', '*/5 * * * *', '-n', '-3'], '-n'),
])
def test_a_limit_of_zero_or_less_is_refused(fs, capsys, argv, option):
    code, out, err = runCommand(capsys, *argv[:1], '--db', fs,
                                '--service', 'tasks', *argv[1:])
    assert code == 2
    assert out == ''
    value = argv[argv.index(option) + 1]
    assert 'argument %s: must be positive: %r' % (option, value) in err


def test_a_limit_of_one_is_accepted(fs, capsys):
    code, out, err = runCommand(capsys, 'next', '*/5 * * * *', '-n', '1',
                                '--after', '0')
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1


# -- the dashboard: host names and its loopback default -------------------------

@pytest.fixture
def dashboard():
    """The dashboard package (it needs the dashboard extra)."""
    pytest.importorskip('webob')
    pytest.importorskip('webtest')
    from zodbtasks import dashboard
    return dashboard


def test_host_names_are_checked_without_regard_to_case(stored, dashboard):
    import webtest
    app = webtest.TestApp(dashboard.make_app(
        stored, 'app/tasks', allowed_hosts=('127.0.0.1', 'LocalHost')))
    for host in ('LOCALHOST:8080', 'localhost', 'Localhost:80'):
        app.get('/', extra_environ={'HTTP_HOST': host}, status=200)
    app.get('/', extra_environ={'HTTP_HOST': 'LOCALHOST.evil:80'},
            status=400)


def test_localhost_is_loopback_in_any_case(dashboard):
    from zodbtasks.dashboard import auth
    assert all(map(auth.is_loopback, ['LOCALHOST', 'LocalHost']))
    assert not auth.is_loopback('localhost.evil.example')


def get(port, host):
    """GET / from the server on 127.0.0.1:``port``, as ``host``."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=WAIT)
    try:
        conn.request('GET', '/', headers={'Host': host,
                                          'Connection': 'close'})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@contextlib.contextmanager
def serving(serve, make, stop, *args, **kw):
    """Run ``serve(*args, **kw)`` in a thread; yield the server it made
    (``make(servers)`` patches in what records it), and stop it with
    ``stop(server)``."""
    servers = []
    errors = []

    def run():
        try:
            serve(*args, **kw)
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    make(servers)
    thread.start()
    try:
        waitFor(lambda: servers or errors or not thread.is_alive(), WAIT,
                'the dashboard listening')
        assert not errors, errors
        yield servers[0]
    finally:
        if servers:
            stop(servers[0])
        thread.join(WAIT)
    assert not thread.is_alive()
    assert not errors, errors


def test_serve_binds_to_loopback_only_by_default(stored, dashboard,
                                                 monkeypatch):
    import waitress
    import waitress.server
    from waitress import wasyncore

    def make(servers):
        real = waitress.server.create_server

        def create_server(app, **kw):
            server = real(app, **kw)
            servers.append(server)
            return server
        monkeypatch.setattr(waitress, 'create_server', create_server)

    def stop(server):
        # In the server's own loop: it ends when nothing is left to serve.
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))

    with serving(dashboard.serve, make, stop, stored, 'app/tasks',
                 port=0) as server:
        host, port = server.socket.getsockname()[:2]
        assert host == '127.0.0.1'
        assert server.effective_host == '127.0.0.1'
        assert get(port, '127.0.0.1:%d' % port) == 200
        assert get(port, 'LOCALHOST:%d' % port) == 200
        # Bound to loopback, it answers to loopback names only.
        assert get(port, 'rebound.example:%d' % port) == 400
    server.task_dispatcher.shutdown()


def test_serve_without_waitress_binds_to_loopback_too(stored, dashboard,
                                                      monkeypatch):
    import sys
    import wsgiref.simple_server

    def make(servers):
        real = wsgiref.simple_server.make_server

        def make_server(host, port, app, **kw):
            server = real(host, port, app, **kw)
            servers.append(server)
            return server
        monkeypatch.setitem(sys.modules, 'waitress', None)
        monkeypatch.setattr(wsgiref.simple_server, 'make_server',
                            make_server)

    with serving(dashboard.serve, make, lambda server: server.shutdown(),
                 stored, 'app/tasks', port=0) as server:
        host, port = server.socket.getsockname()[:2]
        assert host == '127.0.0.1'
        assert get(port, 'localhost:%d' % port) == 200
        assert get(port, 'rebound.example:%d' % port) == 400


@pytest.mark.parametrize('host', ['0.0.0.0', '::', '10.0.0.1', 'example.com',
                                  ''])
def test_serve_refuses_other_addresses_without_auth_before_binding(
        stored, dashboard, monkeypatch, host):
    import waitress
    made = []
    monkeypatch.setattr(waitress, 'create_server',
                        lambda *args, **kw: made.append(kw))
    with pytest.raises(dashboard.command.NeedsAuth,
                       match='is not a loopback address: give --auth'):
        dashboard.serve(stored, 'app/tasks', host=host, port=0)
    assert made == []
