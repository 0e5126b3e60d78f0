"""The ``zodbtasks`` command.

``zodbtasks worker`` runs the jobs of a service in a process of its own::

    zodbtasks worker --db zeo://127.0.0.1:8100 --service app/tasks \\
        --tasks myapp.tasks --threads 4

``--db`` takes a URI that zodburi understands (``file://``, ``zeo://``,
``memory://``, ``zconfig://``, and ``postgres://`` etc. when RelStorage is
installed), a ZConfig file (a path ending in ``.conf``) or a FileStorage file
(a path ending in ``.fs``). The operator's subcommands (``status``, ``jobs``,
``show``, ``add``, ``cron``, ``cancel``, ...) come from `zodbtasks.admin`.
"""
import argparse
import importlib
import logging
import logging.handlers
import os
import queue
import signal
import threading
import sys
import time

import transaction

log = logging.getLogger('zodbtasks.worker')


class UsageError(Exception):
    """Bad input: the command ends with a one-line message."""


class _Parser(argparse.ArgumentParser):

    def error(self, message):
        # One line, not argparse's usage block.
        self.exit(2, '%s: error: %s (see --help)\n' % (self.prog, message))


def _positive(kind, zero=False):
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError('not a number: %r' % text)
        if value < 0 or value == 0 and not zero or value != value \
                or value == float('inf'):
            raise argparse.ArgumentTypeError(
                'must be a finite number %s: %r' % (
                    '0 or more' if zero else 'above 0', text))
        return value
    convert.__name__ = kind.__name__
    return convert


def _nonNegative(kind):
    return _positive(kind, zero=True)


def openDatabase(spec, pool_size=None, connect_timeout=None):
    """Open the database named by ``spec``: a URI, a .conf or a .fs path.

    ``connect_timeout`` is how long a ZEO client waits for its server when
    it is out of reach, before an operation fails (ZEO's own default: 30 s).
    """
    import ZODB
    if connect_timeout is not None and spec.startswith('zeo://') \
            and 'wait_timeout=' not in spec:
        spec += ('&' if '?' in spec else '?') + 'wait_timeout=%s' % (
            connect_timeout,)
    if '://' in spec:
        try:
            import zodburi
        except ImportError:
            raise UsageError('--db %s needs the zodburi package' % spec)
        try:
            factory, dbkw = zodburi.resolve_uri(spec)
        except KeyError as error:
            raise UsageError('--db %s: unknown kind of URI (%s)' % (
                spec, error.args[0] if error.args else error))
        storage = factory()
    elif spec.endswith('.conf'):
        import ZODB.config
        try:
            return ZODB.config.databaseFromURL(spec)
        except OSError as error:
            raise UsageError('--db %s: %s' % (spec, error))
    elif spec.endswith('.fs'):
        import ZODB.FileStorage
        storage = ZODB.FileStorage.FileStorage(spec)
        dbkw = {}
    else:
        raise UsageError('--db %s: give a URI (file://, zeo://, memory://, '
                         'postgres://, ...), a .conf or a .fs path' % spec)
    if pool_size and dbkw.get('pool_size', 7) < pool_size:
        dbkw['pool_size'] = pool_size
    return ZODB.DB(storage, **dbkw)


def findService(db, path, create=False):
    """Check that a service is at ``path``; create it there if asked."""
    from zodbtasks.interfaces import ITaskService
    from zodbtasks.processor import splitPath
    from zodbtasks.processor import traverse
    from zodbtasks.service import TaskService
    try:
        keys = splitPath(path)
    except (TypeError, ValueError) as error:
        raise UsageError('--service: %s' % error)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        tm.begin()
        try:
            service = traverse(conn.root(), keys)
        except KeyError as error:
            if not create:
                raise UsageError('no service at /%s (%s); add --create to '
                                 'create one' % ('/'.join(keys),
                                                 error.args[0]))
            try:
                parent = traverse(conn.root(), keys[:-1])
            except KeyError as error:
                raise UsageError('cannot create /%s: %s' % (
                    '/'.join(keys), error.args[0]))
            parent[keys[-1]] = service = TaskService()
            tm.commit()
            log.info('created a task service at /%s', '/'.join(keys))
        if not ITaskService.providedBy(service):
            raise UsageError('/%s is a %s, not a task service' % (
                '/'.join(keys), type(service).__name__))
        return keys
    finally:
        tm.abort()
        conn.close()


class _BoundedQueueHandler(logging.handlers.QueueHandler):
    """Hands records to a listener thread; drops them when its queue is
    full, so that a log sink that blocks never stops the worker."""

    def __init__(self, size):
        super().__init__(queue.Queue(size))
        self.dropped = 0

    def enqueue(self, record):
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


class _QueuedLogging:
    """While a worker runs, its log lines go through a bounded queue."""

    def __init__(self, size=10000):
        self.root = logging.getLogger()
        self.handlers = list(self.root.handlers)
        self.handler = _BoundedQueueHandler(size)
        self.listener = logging.handlers.QueueListener(
            self.handler.queue, *self.handlers, respect_handler_level=True)

    def __enter__(self):
        for handler in self.handlers:
            self.root.removeHandler(handler)
        self.root.addHandler(self.handler)
        self.listener.start()
        return self

    def __exit__(self, *exc):
        self.root.removeHandler(self.handler)
        self.listener.stop()
        for handler in self.handlers:
            self.root.addHandler(handler)
        if self.handler.dropped:
            log.warning('%d log line(s) were dropped while the log output '
                        'was slower than the worker', self.handler.dropped)


def _importTasks(names):
    """Import the task modules, from the working directory too."""
    if os.getcwd() not in sys.path and '' not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as error:
            raise UsageError('cannot import task module %s: %s: %s' % (
                name, type(error).__name__, error))


def worker(args):
    if args.zope_conf:
        from zodbtasks.zope.lifetime import loadZopeConfiguration
        try:
            loadZopeConfiguration(args.zope_conf)
        except Exception as error:
            raise UsageError('cannot load --zope-conf %s: %s: %s' % (
                args.zope_conf, type(error).__name__, error))
    _importTasks(args.tasks)
    try:
        with _QueuedLogging(args.log_queue):
            return _worker(args)
    except _Interrupted as interrupted:
        # Leave without closing the database that threads may still use.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(interrupted.code)


def _worker(args):
    import zope.component
    from zodbtasks.interfaces import ITask
    if not any(True for _ in zope.component.getUtilitiesFor(ITask)):
        log.warning('this worker knows no tasks (give their modules with '
                    '--tasks): it gives back every job it claims, unless '
                    'its task is a dotted name it can import')
    try:
        db = openDatabase(args.db, pool_size=2 * args.threads + 4,
                          connect_timeout=args.connect_timeout)
    except UsageError:
        raise
    except Exception as error:
        raise UsageError('cannot open --db %s: %s: %s' % (
            args.db, type(error).__name__, error))
    try:
        keys = findService(db, args.service, args.create)
        code = _work(db, keys, args)
    except _Interrupted:
        raise
    except BaseException:
        db.close()
        raise
    db.close()
    return code


def _work(db, keys, args):
    from zodbtasks.processor import MultiProcessor
    from zodbtasks.processor import SimpleProcessor
    options = dict(waitTime=args.poll, lease=args.lease,
                   untilIdle=args.until_idle,
                   heartbeatInterval=(0 if args.no_heartbeat else
                                      args.heartbeat or 'auto'),
                   spread=args.spread, groupOutcomes=not args.no_group,
                   linger=args.linger, maxUnrecorded=args.max_unrecorded)
    if args.threads > 1:
        processor = MultiProcessor(db, keys, maxThreads=args.threads,
                                   **options)
    else:
        processor = SimpleProcessor(db, keys, **options)
    signals = []

    def graceful(signum):
        log.info('stopping after the job(s) in hand (signal %s again to '
                 'interrupt them)', signal.Signals(signum).name)
        processor.stop()

    def stop(signum, frame):
        signals.append(signum)
        if len(signals) == 1:
            # Not here: the handler runs in the loop's thread, which may
            # hold a lock that stopping (or logging) needs.
            threading.Thread(target=graceful, args=(signum,),
                             daemon=True).start()
        else:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop)
                for sig in (signal.SIGTERM, signal.SIGINT)}
    started = time.monotonic()
    log.info('worker for /%s on %s: %d thread(s), polling every %ss%s',
             '/'.join(keys), args.db, args.threads, args.poll,
             ', until idle' if args.until_idle else '')
    code = 0
    progress = _Progress(processor, started) if sys.stderr.isatty() else None
    try:
        processor()
    except KeyboardInterrupt:
        log.warning('interrupted: the jobs in hand are given back when '
                    'their leases expire')
        code = 130
    finally:
        if progress is not None:
            progress.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stats = processor.stats
        total = sum(stats.values())
        conflicts = processor.conflicts
        log.info('worker stopped after %.1fs: %d job(s)%s%s%s',
                 time.monotonic() - started, total, (' (%s)' % ', '.join(
                     '%s: %d' % item for item in sorted(stats.items())))
                 if total else '', '; conflicts: %s' % ', '.join(
                     '%s %d' % item for item in sorted(conflicts.items()))
                 if conflicts else '', '; storage outages: %d'
                 % processor.outages if processor.outages else '')
    if code:
        raise _Interrupted(code)
    return code


class _Interrupted(Exception):
    """The worker was interrupted: threads may still hold the database."""

    def __init__(self, code):
        self.code = code


class _Clearing(logging.Formatter):

    def __init__(self, formatter):
        super().__init__()
        self.formatter = formatter or logging.Formatter()

    def format(self, record):
        return '\r\x1b[K' + self.formatter.format(record)


class _Progress:
    """On a terminal, a line that says how far the worker has got."""

    def __init__(self, processor, started, every=0.5):
        import threading
        self.processor = processor
        self.started = started
        self.every = every
        self.done = threading.Event()
        # Log lines first clear the progress line they would follow.
        self.handlers = [h for h in logging.getLogger().handlers
                         if getattr(h, 'stream', None) is sys.stderr]
        for handler in self.handlers:
            handler.setFormatter(_Clearing(handler.formatter))
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name='zodbtasks-progress')
        self.thread.start()

    def _run(self):
        while not self.done.wait(self.every):
            stats = self.processor.stats
            sys.stderr.write('\r\x1b[K  %d job(s) done (%s) in %.0fs ' % (
                sum(stats.values()), ', '.join(
                    '%s %d' % item for item in sorted(stats.items()))
                or 'none yet', time.monotonic() - self.started))
            sys.stderr.flush()

    def stop(self):
        self.done.set()
        self.thread.join()
        for handler in self.handlers:
            handler.setFormatter(handler.formatter.formatter)
        sys.stderr.write('\r\x1b[K')
        sys.stderr.flush()


def buildParser():
    parser = _Parser(prog='zodbtasks',
                     description='Work with zodbtasks task services.')
    parser.add_argument('--log-level', default='INFO',
                        choices=['DEBUG', 'INFO', 'WARNING', 'ERROR'],
                        help='what to log to stderr (default INFO)')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND',
                                     parser_class=_Parser)
    commands.required = True
    run = commands.add_parser(
        'worker', help='run the jobs of a service',
        description='Claim and run the jobs of a service until stopped '
        '(SIGTERM or SIGINT: after the jobs in hand; a second signal '
        'interrupts them).')
    run.add_argument('--db', required=True, metavar='URI',
                     help='zodburi URI (file://, zeo://, memory://, '
                     'zconfig://, postgres:// with RelStorage), or a path '
                     'to a .conf (ZConfig) or .fs (FileStorage) file')
    run.add_argument('--service', required=True, metavar='PATH',
                     help='slash-separated keys from the database root to '
                     'the service, e.g. app/tasks')
    run.add_argument('--zope-conf', metavar='PATH',
                     help="a Zope instance's zope.conf: load its ZCML, so "
                     'that the tasks it registers are known (the worker '
                     'starts no processors of its own; needs the zope '
                     'extra)')
    run.add_argument('--tasks', action='append', default=[], metavar='MODULE',
                     help='a module to import; it registers task utilities '
                     '(repeat for more)')
    run.add_argument('--threads', type=_positive(int), default=1,
                     help='jobs to run at once (default 1)')
    run.add_argument('--poll', type=_positive(float), default=1.0,
                     metavar='SECONDS',
                     help='wait when nothing is due (default 1)')
    run.add_argument('--lease', type=_positive(float), default=None,
                     metavar='SECONDS',
                     help="length of a claim's lease (default: the job's, "
                     "else the service's)")
    run.add_argument('--heartbeat', type=_positive(float), default=None,
                     metavar='SECONDS', help='renew the lease of every job '
                     'in hand this often (default: after a third of the '
                     'lease)')
    run.add_argument('--no-heartbeat', action='store_true',
                     help='renew leases only when tasks call heartbeat(); a '
                     'job that outlives its lease then runs again, and ends '
                     'in error after its maxLostLeases')
    run.add_argument('--max-unrecorded', type=_nonNegative(int), default=8,
                     metavar='N', help='finished jobs whose outcomes may '
                     'wait, unrecorded, to be committed together (default '
                     '8): a worker killed with -9 runs at most these and the '
                     'jobs it was running again')
    run.add_argument('--connect-timeout', type=_positive(float),
                     default=None, metavar='SECONDS',
                     help='how long a ZEO client waits for its server before '
                     'a step fails (default: ZEO\'s 30)')
    run.add_argument('--log-queue', type=_positive(int), default=10000,
                     metavar='LINES', help='log lines that may wait for a '
                     'slow log output; more are dropped and counted '
                     '(default 10000)')
    run.add_argument('--until-idle', action='store_true',
                     help='exit when nothing is due and no worker holds a job')
    run.add_argument('--create', action='store_true',
                     help='create the service if there is none at PATH')
    run.add_argument('--spread', action='store_true',
                     help='take queued jobs from the heads of random lanes, '
                     'roughly in order, so that many workers rarely want the '
                     'same job (default: the oldest first)')
    run.add_argument('--linger', type=_nonNegative(float), default=0.02,
                     metavar='SECONDS', help='after a batch that emptied the '
                     'queue, wait this long before claiming again, so that '
                     'jobs added meanwhile are claimed together (default: '
                     '0.02)')
    run.add_argument('--no-group', action='store_true',
                     help='commit every run on its own, instead of '
                     'recording the outcomes of tasks that wrote nothing '
                     'with the next claim')
    run.set_defaults(func=worker)
    # The operator's subcommands (status, jobs, show, add, cron, cancel, ...).
    from zodbtasks import admin
    admin.addCommands(commands)
    board = commands.add_parser(
        'dashboard', help='serve the web dashboard (needs the dashboard '
        'extra: WebOb and waitress)')
    try:
        from zodbtasks import dashboard
    except ImportError as error:
        missing = str(error)

        def unavailable(args):
            raise UsageError('the dashboard needs the "dashboard" extra '
                             '(pip install zodbtasks[dashboard]): %s'
                             % missing)
        board.set_defaults(func=unavailable)
    else:
        dashboard.add_arguments(board)
        board.set_defaults(func=dashboard.run)
    return parser


def main(argv=None):
    parser = buildParser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level), stream=sys.stderr,
        format='%(asctime)s %(levelname)s %(name)s %(message)s')
    try:
        return args.func(args)
    except UsageError as error:
        print('zodbtasks %s: error: %s' % (args.command, error),
              file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
