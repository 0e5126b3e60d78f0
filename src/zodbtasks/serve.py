"""``zodbtasks serve``: one process that owns a FileStorage file.

A FileStorage can have one writer. ``serve`` is that writer: it opens the
file, serves it with ZEO on a Unix socket beside it (``Data.fs.sock``, only
for its owner) and, if asked, on a loopback TCP port, and runs the dashboard
and N worker processes as its clients. Every commit goes through its one
ZEO server, so every client's cache learns of every change.

Commands that write (``zodbtasks add --db Data.fs`` and the like) find the
server through ``Data.fs.serve``, a small JSON file it writes beside the
database, and connect through the socket; commands that only read open the
file read-only. See `zodbtasks.connect`.

The workers are watched: one that exits while the server runs is started
again after a pause that doubles, from ``restart_delay`` up to
``max_restart_delay``, each time it dies within ``stable_after`` seconds of
its start, and each restart is logged.
"""
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time

from zodbtasks import connect
from zodbtasks.connect import UsageError

log = logging.getLogger('zodbtasks.serve')

LOOPBACK = '127.0.0.1'


def _parentDeathSignal():
    """A function that asks Linux to send SIGTERM to the calling process
    when its parent dies; None elsewhere."""
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    PR_SET_PDEATHSIG = 1

    def ask():
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    return ask


_dieWithParent = _parentDeathSignal()


class Child:
    """A process that the server runs and starts again when it dies."""

    def __init__(self, name, command, restart_delay, max_restart_delay,
                 stable_after):
        self.name = name
        self.command = command
        self.process = None
        self.started = None
        self.delay = restart_delay
        self.first_delay = restart_delay
        self.max_delay = max_restart_delay
        self.stable_after = stable_after
        self.restart_at = 0.0
        self.restarts = 0

    def start(self, now):
        # A session of its own: a Ctrl-C on the terminal reaches the server
        # alone, which stops its children once (a second signal would
        # interrupt their jobs). They end with the server if it is killed.
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_dieWithParent)
        self.started = now
        log.info('started %s (pid %d)', self.name, self.process.pid)

    def check(self, now):
        """Start the child again if it died and its pause is over."""
        if self.process is not None:
            code = self.process.poll()
            if code is None:
                return
            ran = now - self.started
            if ran >= self.stable_after:
                self.delay = self.first_delay
            log.warning('%s (pid %d) exited with status %s after %.1f s; '
                        'starting it again in %.1f s', self.name,
                        self.process.pid, code, ran, self.delay)
            self.restart_at = now + self.delay
            self.delay = min(self.delay * 2, self.max_delay)
            self.process = None
        if now >= self.restart_at:
            self.restarts += 1
            self.start(now)

    def terminate(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, deadline):
        if self.process is None:
            return
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning('%s (pid %d) did not stop in time: killed it',
                        self.name, self.process.pid)
            self.process.kill()
            self.process.wait()


def _privateFolder(folder):
    """Make ``folder`` for our sockets, or check that it is ours alone."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    found = os.lstat(folder)
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() \
            or stat.S_IMODE(found.st_mode) & 0o077:
        raise UsageError('%s is not a folder of this user\'s alone: it '
                         'cannot hold the socket' % folder)


class Server:
    """The ZEO server on one FileStorage, and the processes it watches."""

    def __init__(self, path, service, tasks=(), processes=1, threads=1,
                 port=None, dashboard_port=8080, dashboard=True,
                 create=False, worker_options=(), child_options=(),
                 restart_delay=1.0, max_restart_delay=60.0,
                 stable_after=30.0, stop_timeout=30.0):
        self.path = os.path.abspath(path)
        self.service = service
        self.tasks = list(tasks)
        self.processes = processes
        self.threads = threads
        self.port = port
        self.dashboard_port = dashboard_port
        self.dashboard = dashboard
        self.create = create
        self.worker_options = list(worker_options)
        self.child_options = list(child_options)
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.stable_after = stable_after
        self.stop_timeout = stop_timeout
        self.socket = connect.socket_path(self.path)
        self.children = []
        self.stopSignal = None      # set by `stop`, from a signal handler
        self.zeo = None
        self.tcp = None
        self.address = None

    @property
    def uri(self):
        return 'zeo://' + self.socket

    # -- the ZEO server -------------------------------------------------------

    def open(self):
        """Take the file and serve it; return self."""
        import ZODB.FileStorage
        import zc.lockfile
        if not os.path.exists(self.path) and not self.create:
            raise UsageError('--db %s: no such file (add --create to make a '
                             'new database)' % self.path)
        try:
            storage = ZODB.FileStorage.FileStorage(self.path)
        except zc.lockfile.LockError:
            served = connect.served_by(self.path)
            if served is not None:
                raise UsageError('%s is served already by zodbtasks serve '
                                 '(pid %s)' % (self.path, served['pid']))
            raise UsageError('%s is in use by another process (it holds '
                             '%s.lock): stop it first' % (
                                 self.path, os.path.basename(self.path)))
        try:
            self._listen(storage)
        except BaseException:
            storage.close()
            raise
        return self

    def _listen(self, storage):
        from ZEO.StorageServer import StorageServer
        folder = os.path.dirname(self.socket)
        if folder != os.path.dirname(self.path):
            _privateFolder(folder)
        if os.path.exists(self.socket):
            # We hold the file's lock: whatever left this is gone.
            os.unlink(self.socket)
        # Only the owner may connect: the socket is made under a umask that
        # leaves nothing to others, and its mode is set again after.
        umask = os.umask(0o077)
        try:
            self.zeo = StorageServer(self.socket, {'1': storage})
        finally:
            os.umask(umask)
        os.chmod(self.socket, 0o600)
        self.zeo.start_thread()
        if self.port is not None:
            self._listenOnLoopback()
        log.info('serving %s on %s%s', self.path, self.socket,
                 ' and %s:%d' % self.address if self.address else '')

    def _listenOnLoopback(self):
        # A second acceptor of the same StorageServer: its clients share the
        # server's invalidations with those of the socket.
        from ZEO.asyncio.server import Acceptor
        self.tcp = Acceptor(self.zeo, (LOOPBACK, self.port), None, False)
        self.address = tuple(self.tcp.addr[:2])
        thread = threading.Thread(target=self.tcp.loop, daemon=True,
                                  name='zodbtasks-serve-tcp')
        thread.start()

    def checkService(self):
        db = connect.open_or_explain(self.uri, connect_timeout=10)
        try:
            connect.find_service(db, self.service, create=self.create)
        finally:
            db.close()

    def writeInfo(self):
        info = {'pid': os.getpid(), 'socket': self.socket,
                'port': self.address[1] if self.address else None,
                'dashboard': ('http://%s:%d/' % (LOOPBACK, self.dashboard_port)
                              if self.dashboard else None),
                'service': self.service, 'started': time.time()}
        target = connect.served_file(self.path)
        temporary = target + '.tmp'
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            json.dump(info, f)
        os.replace(temporary, target)

    def close(self):
        if self.tcp is not None:
            self.tcp.close()
            self.tcp = None
        if self.zeo is not None:
            self.zeo.close(join_timeout=5)   # closes the storage too
            self.zeo = None
        for name in (connect.served_file(self.path), self.socket):
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass

    # -- the children ---------------------------------------------------------

    def _command(self, *args):
        return [sys.executable, '-m', 'zodbtasks', *self.child_options, *args]

    def makeChildren(self):
        tasks = [arg for name in self.tasks for arg in ('--tasks', name)]
        for n in range(self.processes):
            self.children.append(Child(
                'worker %d' % (n + 1), self._command(
                    'worker', '--db', self.uri, '--service', self.service,
                    '--threads', str(self.threads), *tasks,
                    *self.worker_options),
                self.restart_delay, self.max_restart_delay,
                self.stable_after))
        if self.dashboard:
            self.children.append(Child(
                'dashboard', self._command(
                    'dashboard', '--db', self.uri, '--service', self.service,
                    '--port', str(self.dashboard_port)),
                self.restart_delay, self.max_restart_delay,
                self.stable_after))

    def supervise(self, every=0.2):
        """Keep the children running until `stop`."""
        while self.stopSignal is None:
            now = time.monotonic()
            for child in self.children:
                child.check(now)
            time.sleep(every)
        log.info('stopping (%s): workers finish the jobs in hand',
                 self.stopSignal)

    def stop(self, why='asked to'):
        # Called from a signal handler: no locks, no logging here (the
        # interrupted code may hold the lock they would take).
        self.stopSignal = why

    def stopChildren(self):
        for child in self.children:
            child.terminate()
        deadline = time.monotonic() + self.stop_timeout
        for child in self.children:
            child.wait(deadline)


def run(args):
    """``zodbtasks serve`` with parsed arguments; return the exit status."""
    from zodbtasks.admin import importTasks
    spec = args.db
    if spec.startswith('file://'):
        spec = connect._file_uri_path(spec) or spec
    if '://' in spec or not spec.endswith('.fs'):
        raise UsageError('serve owns a FileStorage file: give --db '
                         'PATH.fs, not %s' % args.db)
    # Check the task modules here, before a worker fails on them N times.
    importTasks(args.tasks)
    dashboard = not args.no_dashboard
    if dashboard:
        try:
            import webob  # noqa: F401
        except ImportError:
            log.warning('no dashboard: it needs the "dashboard" extra '
                        '(pip install zodbtasks[dashboard])')
            dashboard = False
    childOptions = ['--log-level', args.log_level]
    if args.verbose:
        childOptions.append('--verbose')
    server = Server(
        spec, args.service, args.tasks, processes=args.processes,
        threads=args.threads, port=args.zeo_port,
        dashboard_port=args.dashboard_port, dashboard=dashboard,
        create=args.create, worker_options=args.worker_option,
        child_options=childOptions, restart_delay=args.restart_delay,
        max_restart_delay=args.max_restart_delay,
        stop_timeout=args.stop_timeout)
    server.open()
    previous = {}
    try:
        server.checkService()
        server.writeInfo()

        def stop(signum, frame):
            server.stop(signal.Signals(signum).name)
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, stop)
        server.makeChildren()
        try:
            server.supervise()
        finally:
            server.stopChildren()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.close()
    log.info('stopped serving %s', server.path)
    return 0


def addArguments(parser):
    from zodbtasks.admin import positiveInt
    parser.add_argument('--db', metavar='PATH.fs',
                        default=os.environ.get('ZODBTASKS_DB') or None,
                        required=not os.environ.get('ZODBTASKS_DB'),
                        help='the FileStorage file to own (default: '
                        '$ZODBTASKS_DB)')
    parser.add_argument('--service', metavar='PATH',
                        default=os.environ.get('ZODBTASKS_SERVICE') or None,
                        required=not os.environ.get('ZODBTASKS_SERVICE'),
                        help='slash-separated keys from the root to the '
                        'service its workers run (default: '
                        '$ZODBTASKS_SERVICE)')
    parser.add_argument('--tasks', action='append', default=[],
                        metavar='MODULE', help='a module that registers '
                        'tasks, for the workers (repeat for more)')
    parser.add_argument('--processes', type=positiveInt, default=1,
                        metavar='N', help='worker processes to run and '
                        'watch (default 1)')
    parser.add_argument('--threads', type=positiveInt, default=1,
                        metavar='N', help='threads of each worker (default 1)')
    parser.add_argument('--zeo-port', type=int, default=None, metavar='PORT',
                        help='serve ZEO on 127.0.0.1:PORT too (0: any free '
                        'port); the Unix socket is always served')
    parser.add_argument('--dashboard-port', type=int, default=8080,
                        metavar='PORT', help='the dashboard\'s port on '
                        '127.0.0.1 (default 8080)')
    parser.add_argument('--no-dashboard', action='store_true',
                        help='run no dashboard')
    parser.add_argument('--create', action='store_true',
                        help='create the file and the service if they do not '
                        'exist')
    parser.add_argument('--worker-option', action='append', default=[],
                        metavar='OPTION', help='pass this option to each '
                        'worker, e.g. --worker-option=--poll=0.1 (repeat for '
                        'more)')
    parser.add_argument('--restart-delay', type=float, default=1.0,
                        metavar='SECONDS', help='pause before a worker that '
                        'died starts again; it doubles while workers keep '
                        'dying (default 1)')
    parser.add_argument('--max-restart-delay', type=float, default=60.0,
                        metavar='SECONDS', help='the longest such pause '
                        '(default 60)')
    parser.add_argument('--stop-timeout', type=float, default=30.0,
                        metavar='SECONDS', help='on SIGTERM, how long '
                        'workers may take to finish their jobs before they '
                        'are killed (default 30)')
    return parser
