"""``zodbtasks serve``: one process owns a FileStorage; the rest connect.

The server runs as a real subprocess; every wait is bounded.
"""
import json
import os
import re
import signal
import stat
import subprocess
import sys
import urllib.request

import pytest
import ZEO
import ZODB
import ZODB.FileStorage

from zodbtasks._testing import freePort
from zodbtasks._testing import waitFor

HERE = os.path.dirname(os.path.abspath(__file__))
WAIT = 60


def env():
    path = os.environ.get('PYTHONPATH')
    return dict(os.environ, PYTHONPATH=HERE + (os.pathsep + path if path
                                               else ''))


def zodbtasks(*args, timeout=WAIT):
    return subprocess.run([sys.executable, '-m', 'zodbtasks', *args],
                          env=env(), capture_output=True, text=True,
                          timeout=timeout)


class Serving:
    """``zodbtasks serve`` in a subprocess, stopped (or killed) at the end."""

    def __init__(self, tmp_path, *extra, processes=2):
        self.path = str(tmp_path / 'Data.fs')
        self.logPath = str(tmp_path / 'serve.log')
        self.dashboardPort = freePort()
        self.args = ['serve', '--db', self.path, '--service', 'tasks',
                     '--tasks', 'worker_tasks', '--create', '--processes',
                     str(processes), '--dashboard-port',
                     str(self.dashboardPort), '--restart-delay', '0.2',
                     '--worker-option=--poll=0.05', *extra]
        self.process = None

    def start(self):
        with open(self.logPath, 'ab') as log:
            self.process = subprocess.Popen(
                [sys.executable, '-m', 'zodbtasks', *self.args], env=env(),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        waitFor(lambda: self.alive() and os.path.exists(self.path + '.serve')
                and len(self.workers()) >= 1, WAIT, 'the server to start')
        return self

    def alive(self):
        if self.process.poll() is not None:
            raise RuntimeError('serve exited with %s:\n%s' % (
                self.process.returncode, self.log()))
        return True

    def log(self):
        with open(self.logPath) as f:
            return f.read()

    def workers(self):
        """{worker number: latest pid}, from the server's log."""
        return {int(n): int(pid) for n, pid in re.findall(
            r'started worker (\d+) \(pid (\d+)\)', self.log())}

    def info(self):
        with open(self.path + '.serve') as f:
            return json.load(f)

    def stop(self, timeout=WAIT):
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(WAIT)
        # Workers die with their server (PR_SET_PDEATHSIG); wait for them.
        for pid in self.workers().values():
            waitFor(lambda: not _running(pid), WAIT, 'worker %d to end' % pid)


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().split(') ')[-1][0] != 'Z'
    except OSError:
        return False


def statusOf(path):
    done = zodbtasks('status', '--db', path, '--service', 'tasks', '--json')
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)['counts']


def test_writers_connect_through_the_socket_and_readers_see_it(tmp_path):
    ledger = str(tmp_path / 'ledger')
    with Serving(tmp_path) as server:
        info = server.info()
        assert info['pid'] == server.process.pid
        # Only the owner may reach the socket or read where it is.
        assert stat.S_IMODE(os.stat(info['socket']).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(server.path + '.serve').st_mode) == 0o600
        assert info['socket'] == server.path + '.sock'
        added = zodbtasks('add', 'append_id', '--input', json.dumps(ledger),
                          '--db', server.path, '--service', 'tasks',
                          '--tasks', 'worker_tasks', '--json')
        assert added.returncode == 0, added.stderr
        assert ('Data.fs is served by zodbtasks serve (pid %d); connecting '
                'through its socket' % server.process.pid) in added.stderr
        jobid = json.loads(added.stdout)['id']
        # A second terminal: status, while the server and workers run.
        waitFor(lambda: statusOf(server.path).get('completed') == 1, WAIT,
                'the job to be run')
        with open(ledger) as f:
            assert f.read().split() == [str(jobid)]
        # The dashboard is one of the server's clients.
        page = urllib.request.urlopen(
            'http://127.0.0.1:%d/' % server.dashboardPort, timeout=10).read()
        assert str(jobid).encode() in page
        assert server.stop() == 0
    # Everything it made beside the file is gone, and the file is free.
    assert not os.path.exists(server.path + '.serve')
    assert not os.path.exists(server.path + '.sock')
    storage = ZODB.FileStorage.FileStorage(server.path)
    storage.close()
    assert 'ZEO' not in server.log()        # ZEO's INFO lines are off


def test_a_worker_that_dies_is_started_again(tmp_path):
    ledger = str(tmp_path / 'ledger')
    with Serving(tmp_path) as server:
        waitFor(lambda: len(server.workers()) == 2, WAIT, 'two workers')
        first = server.workers()[1]
        os.kill(first, signal.SIGKILL)
        waitFor(lambda: server.workers()[1] != first, WAIT,
                'worker 1 to start again')
        assert re.search(r'WARNING zodbtasks.serve worker 1 \(pid %d\) exited '
                         r'with status -9 after [\d.]+ s; starting it again '
                         r'in 0.2 s' % first, server.log())
        # The restarted worker works: kill the other, then add jobs.
        second = server.workers()[2]
        os.kill(second, signal.SIGKILL)
        waitFor(lambda: server.workers()[2] != second, WAIT,
                'worker 2 to start again')
        added = zodbtasks('add', 'append_id', '--input', json.dumps(ledger),
                          '--db', server.path, '--service', 'tasks',
                          '--tasks', 'worker_tasks')
        assert added.returncode == 0, added.stderr
        waitFor(lambda: statusOf(server.path).get('completed') == 1, WAIT,
                'the job to be run by a restarted worker')
        assert server.stop() == 0


def test_the_loopback_port_shares_the_invalidations_of_the_socket(tmp_path):
    with Serving(tmp_path, '--zeo-port', '0', '--no-dashboard',
                 processes=1) as server:
        port = server.info()['port']
        assert port
        tcp = ZEO.DB(('127.0.0.1', port), wait_timeout=WAIT)
        unix = ZEO.DB(server.info()['socket'], wait_timeout=WAIT)
        try:
            watcher = tcp.open()
            service = watcher.root()['tasks']
            before = len(service.jobs)
            with unix.transaction() as conn:
                conn.root()['tasks'].trustedModules = ['worker_tasks']
                conn.root()['tasks'].add('worker_tasks.append_id',
                                         str(tmp_path / 'x'), startLater=True)

            def seen():
                watcher.transaction_manager.begin()
                return len(service.jobs) == before + 1
            waitFor(seen, WAIT, 'the TCP client to see the commit')
            watcher.close()
        finally:
            tcp.close()
            unix.close()
        assert server.stop() == 0


def test_one_file_one_server(tmp_path):
    with Serving(tmp_path, '--no-dashboard', processes=1) as server:
        again = zodbtasks(*server.args[:-1], '--no-dashboard')
        assert again.returncode == 1
        assert again.stderr.strip().endswith(
            'Data.fs is served already by zodbtasks serve (pid %d)'
            % server.process.pid)
        assert server.stop() == 0


def test_serve_refuses_a_missing_file_without_create(tmp_path):
    path = str(tmp_path / 'Dta.fs')
    done = zodbtasks('serve', '--db', path, '--service', 'tasks',
                     '--no-dashboard')
    assert done.returncode == 1
    assert done.stderr.strip() == ('zodbtasks serve: error: --db %s: no such '
                                   'file (add --create to make a new '
                                   'database)' % path)
    assert os.listdir(tmp_path) == []


def test_serve_needs_a_file(tmp_path):
    done = zodbtasks('serve', '--db', 'memory://', '--service', 'tasks')
    assert done.returncode == 1
    assert 'serve owns a FileStorage file' in done.stderr


@pytest.mark.parametrize('name', ['a' * 120])
def test_a_long_path_gets_a_socket_of_its_own(tmp_path, name):
    from zodbtasks.connect import socket_path
    path = str(tmp_path / name / 'Data.fs')
    sock = socket_path(path)
    assert len(sock) <= 100 and sock.endswith('.sock')
    assert sock == socket_path(path) != socket_path(path + 'x')
    assert socket_path(str(tmp_path / 'D.fs')) == str(tmp_path / 'D.fs.sock')


def test_a_killed_server_leaves_nothing_in_the_way(tmp_path):
    server = Serving(tmp_path, '--no-dashboard', processes=1)
    with server:
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(WAIT)
    # Its socket and Data.fs.serve are left behind, but its pid is gone:
    # writers open the file themselves, and a new server starts.
    assert os.path.exists(server.path + '.serve')
    assert statusOf(server.path) == {}      # read from the file itself
    added = zodbtasks('add', 'noop', '--db', server.path, '--service',
                      'tasks', '--tasks', 'worker_tasks')
    assert added.returncode == 0, added.stderr
    assert 'connecting through its socket' not in added.stderr
    with Serving(tmp_path, '--no-dashboard', processes=1) as again:
        waitFor(lambda: statusOf(again.path).get('completed') == 1, WAIT,
                'the job to run')
        assert again.stop() == 0


def test_a_worker_that_keeps_dying_waits_longer_each_time():
    from zodbtasks.serve import Child
    child = Child('worker 1', [sys.executable, '-c', 'pass'],
                  restart_delay=1, max_restart_delay=3, stable_after=10)
    starts = []
    child.start = lambda now: starts.append(now) or setattr(
        child, 'process', Exited()) or setattr(child, 'started', now)
    child.check(0)                       # not started yet: starts now
    pauses = []
    now = 0
    for _ in range(5):
        now += 0.5                       # it dies half a second in
        child.check(now)
        pauses.append(child.restart_at - now)
        now = child.restart_at
        child.check(now)
    assert pauses == [1, 2, 3, 3, 3]
    # A worker that ran a while before it died waits the first pause again.
    now += 20
    child.check(now)
    assert child.restart_at - now == 1
    assert len(starts) == 6


class Exited:
    pid = 4242

    def poll(self):
        return 1


def test_the_socket_folder_must_be_the_users_alone(tmp_path):
    from zodbtasks.connect import UsageError
    from zodbtasks.serve import _privateFolder
    mine = tmp_path / 'mine'
    _privateFolder(str(mine))
    assert stat.S_IMODE(os.stat(mine).st_mode) == 0o700
    _privateFolder(str(mine))                   # there already: fine
    shared = tmp_path / 'shared'
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UsageError, match="not a folder of this user's alone"):
        _privateFolder(str(shared))
