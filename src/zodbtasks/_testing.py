"""Helpers for tests and benchmarks: servers on the loopback interface.

Everything started here is stopped by the object that started it; use them
as context managers.
"""
import os
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import threading
import time

LOOPBACK = '127.0.0.1'


def freePort(host=LOOPBACK):
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def consoleScript(name):
    """The path of the console script ``name``, or None: beside the running
    interpreter (a virtual environment's bin/), else on PATH, where buildout's
    bin/test puts its bin/ first."""
    return shutil.which(name, path=os.pathsep.join(
        [os.path.dirname(sys.executable), os.environ.get('PATH', '')]))


def waitFor(check, timeout, what, interval=0.02):
    """Call ``check`` until it returns a true value; raise after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError('%s did not happen within %ss' % (what, timeout))
        time.sleep(interval)


def _stopProcess(process, timeout=15):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ZEOServer:
    """A ZEO server on a FileStorage, in a process of its own, on 127.0.0.1.

    >>> with ZEOServer('/tmp/x/Data.fs') as server:   # doctest: +SKIP
    ...     db = ZEO.DB(server.address)
    """

    def __init__(self, path, startTimeout=30):
        self.path = path
        self.startTimeout = startTimeout
        self.process = None
        self.port = None

    @property
    def address(self):
        return (LOOPBACK, self.port)

    @property
    def uri(self):
        return 'zeo://%s:%d' % self.address

    def start(self):
        self.port = freePort()
        return self._launch('the ZEO server listening on port %d')

    def _launch(self, what):
        """Run the server on ``self.port``; wait until it listens."""
        logPath = self.path + '.zeo.log'
        with open(logPath, 'ab') as logFile:
            self.process = subprocess.Popen(
                [sys.executable, '-m', 'ZEO.runzeo',
                 '-a', '%s:%d' % self.address, '-f', self.path],
                stdout=logFile, stderr=subprocess.STDOUT)
        try:
            waitFor(self._listening, self.startTimeout, what % self.port)
        except BaseException:
            self.stop()
            raise
        return self

    def _listening(self):
        if self.process.poll() is not None:
            raise RuntimeError('the ZEO server exited with %s; see %s.zeo.log'
                               % (self.process.returncode, self.path))
        try:
            socket.create_connection(self.address, timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self):
        if self.process is not None:
            _stopProcess(self.process)
            self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class PostgresDatabase:
    """A fresh PostgreSQL database for RelStorage, dropped at the end.

    Connects as ``user`` to ``host``:``port`` (trust authentication); the
    database's name is ``zodbtasks_test_`` and random letters.
    """

    def __init__(self, host=LOOPBACK, port=5432, user='postgres'):
        self.host, self.port, self.user = host, port, user
        self.name = 'zodbtasks_test_' + ''.join(
            random.choice(string.ascii_lowercase) for _ in range(10))
        self.created = False

    @property
    def uri(self):
        return 'postgres://%s@%s:%d/%s' % (self.user, self.host, self.port,
                                           self.name)

    def _admin(self):
        import psycopg2
        conn = psycopg2.connect(host=self.host, port=self.port,
                                user=self.user, dbname='postgres',
                                connect_timeout=5)
        conn.autocommit = True
        return conn

    def create(self):
        conn = self._admin()
        try:
            with conn.cursor() as cursor:
                cursor.execute('CREATE DATABASE %s' % self.name)
            self.created = True
        finally:
            conn.close()
        return self

    def drop(self):
        if not self.created:
            return
        conn = self._admin()
        try:
            with conn.cursor() as cursor:
                cursor.execute('DROP DATABASE IF EXISTS %s WITH (FORCE)'
                               % self.name)
            self.created = False
        finally:
            conn.close()

    def __enter__(self):
        return self.create()

    def __exit__(self, *exc):
        self.drop()


def openRelStorage(uri, **options):
    """A ZODB.DB on the RelStorage ``uri`` (``postgres://...``)."""
    import ZODB
    import zodburi
    factory, dbkw = zodburi.resolve_uri(uri)
    dbkw.update(options)
    return ZODB.DB(factory(), **dbkw)


class Workers:
    """``zodbtasks worker`` processes, killed if still running at the end.

    Each process logs to ``logDir/worker-<n>.log``.
    """

    def __init__(self, logDir, env=None, cwd=None):
        self.logDir = logDir
        self.env = dict(os.environ, **(env or {}))
        self.cwd = cwd
        self.processes = []
        self.logs = []

    def start(self, *args):
        path = os.path.join(self.logDir, 'worker-%d.log' % len(self.processes))
        with open(path, 'ab') as logFile:
            process = subprocess.Popen(
                [sys.executable, '-m', 'zodbtasks.cli'] + list(args),
                env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                stdout=logFile, stderr=subprocess.STDOUT)
        self.processes.append(process)
        self.logs.append(path)
        return process

    def log(self, process):
        with open(self.logs[self.processes.index(process)]) as f:
            return f.read()

    def wait(self, timeout):
        """Wait for every process to exit; return their exit codes."""
        deadline = time.monotonic() + timeout
        codes = []
        for process in self.processes:
            try:
                codes.append(process.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                raise TimeoutError('worker %d did not exit within %ss; its '
                                   'log: %s' % (process.pid, timeout,
                                                self.log(process)[-2000:]))
        return codes

    def stopAll(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stopAll()


class RestartableZEOServer(ZEOServer):
    """A `ZEOServer` that starts again on the port it had, on the same file.

    The first `start` picks a free port; after `stop`, `start` listens on
    that port again, so that clients that knew the address can reconnect.
    """

    def start(self):
        if self.port is None:
            return super().start()
        return self._launch('the ZEO server listening on port %d again')


class WaitressServer:
    """A WSGI application served by waitress on 127.0.0.1, in a thread.

    >>> with WaitressServer(app) as served:    # doctest: +SKIP
    ...     urllib.request.urlopen(served.url)

    waitress's sockets belong to the thread of its loop: closed from another
    thread while the loop waits on them, they fail its select() with EBADF,
    and a task thread that finishes a response then writes to a closed
    trigger. So `stop` ends the task threads first (they finish what they
    serve), then has the loop close every socket of its map itself, which
    ends the loop.
    """

    def __init__(self, app, threads=2, timeout=60):
        import waitress
        self.map = {}
        self.timeout = timeout
        self.server = waitress.create_server(app, host=LOOPBACK, port=0,
                                             threads=threads, map=self.map)
        self.url = 'http://%s:%s' % (LOOPBACK, self.server.effective_port)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        from waitress import wasyncore
        dispatcher = self.server.task_dispatcher
        dispatcher.shutdown(timeout=self.timeout)
        # Run by the loop, in its thread, when it reads the trigger.
        self.server.trigger.pull_trigger(lambda: wasyncore.close_all(self.map))
        self.thread.join(self.timeout)
        if self.thread.is_alive() or dispatcher.threads or self.map:
            raise RuntimeError('waitress on %s did not stop' % self.url)

    __enter__ = start

    def __exit__(self, *exc):
        self.stop()
