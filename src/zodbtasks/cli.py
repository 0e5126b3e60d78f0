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
import logging
import logging.handlers
import os
import queue
import signal
import threading
import sys
import time

from zodbtasks import admin
from zodbtasks import connect
from zodbtasks.admin import importTasks
from zodbtasks.connect import UsageError                   # noqa: F401
from zodbtasks.connect import find_service as findService  # noqa: F401
from zodbtasks.connect import open_database

log = logging.getLogger('zodbtasks.worker')
jobLog = logging.getLogger('zodbtasks.jobs')


class _Parser(argparse.ArgumentParser):

    def error(self, message):
        # One line, not argparse's usage block.
        self.exit(2, '%s: error: %s (see --help)\n' % (self.prog, message))


def _queueName(text):
    from zodbtasks.queues import check_name
    try:
        return check_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error))


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


def openDatabase(spec, pool_size=None, connect_timeout=None, read_only=False,
                 create=False):
    """Open the database named by ``spec``; see `zodbtasks.connect`."""
    return open_database(spec, pool_size=pool_size,
                         connect_timeout=connect_timeout, read_only=read_only,
                         create=create)


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


_importTasks = importTasks


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
        with _QueuedLogging(args.log_queue) as queued:
            # The handlers that the queue feeds: the progress line needs
            # those that write to the terminal.
            args.logHandlers = queued.handlers
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
    db = connect.open_or_explain(args.db, pool_size=2 * args.threads + 4,
                                 connect_timeout=args.connect_timeout,
                                 create=args.create)
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
    processor = _makeProcessor(db, keys, args)
    previous = _stopOnSignals(processor)
    started = time.monotonic()
    log.info('worker for /%s on %s: %d thread(s), polling every %ss%s',
             '/'.join(keys), args.db, args.threads, args.poll,
             ', until idle' if args.until_idle else '')
    code = 0
    subscriber = _logStarts()
    handlers = getattr(args, 'logHandlers', logging.getLogger().handlers)
    progress = (_Progress(processor, started, handlers)
                if sys.stderr.isatty() else None)
    try:
        processor()
    except KeyboardInterrupt:
        log.warning('interrupted: the jobs in hand are given back when '
                    'their leases expire')
        code = 130
    finally:
        if progress is not None:
            progress.stop()
        _unsubscribe(subscriber)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _logStopped(processor, started)
    if code:
        raise _Interrupted(code)
    return code


def _makeProcessor(db, keys, args):
    """The processor the worker's options ask for."""
    from zodbtasks.processor import MultiProcessor
    from zodbtasks.processor import SimpleProcessor
    options = dict(waitTime=args.poll, lease=args.lease,
                   untilIdle=args.until_idle,
                   heartbeatInterval=(0 if args.no_heartbeat else
                                      args.heartbeat or 'auto'),
                   spread=args.spread, groupOutcomes=not args.no_group,
                   linger=args.linger, maxUnrecorded=args.max_unrecorded,
                   logJobs=True, register=True,
                   queues=args.queue or ['default'])
    if args.threads > 1:
        return MultiProcessor(db, keys, maxThreads=args.threads, **options)
    return SimpleProcessor(db, keys, **options)


def _stopOnSignals(processor):
    """Stop ``processor`` gracefully on SIGTERM or SIGINT, interrupt it on
    a second signal; return the handlers this replaced."""
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

    return {sig: signal.signal(sig, stop)
            for sig in (signal.SIGTERM, signal.SIGINT)}


def _logStopped(processor, started):
    """Log what the worker did from ``started`` (a monotonic time) on."""
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


def _logStarts():
    """Log each job's start at DEBUG (the processor logs its end)."""
    import zope.event
    from zodbtasks import events
    if not jobLog.isEnabledFor(logging.DEBUG):
        return None

    def started(event):
        if isinstance(event, events.JobStarted):
            jobLog.debug('job %s %s started (attempt %d)', event.job.id,
                         event.job.task, event.job.attempts)
    zope.event.subscribers.append(started)
    return started


def _unsubscribe(subscriber):
    import zope.event
    if subscriber is not None and subscriber in zope.event.subscribers:
        zope.event.subscribers.remove(subscriber)


class _Interrupted(Exception):
    """The worker was interrupted: threads may still hold the database."""

    def __init__(self, code):
        self.code = code


class _Progress:
    """On a terminal, a line that says how far the worker has got; the log
    lines of ``handlers`` (those writing to that terminal) go above it."""

    def __init__(self, processor, started, handlers, every=0.5):
        from zodbtasks.display import StatusLine
        self.processor = processor
        self.started = started
        self.line = StatusLine(sys.stderr, self.render, every)
        self.handlers = [h for h in handlers
                         if getattr(h, 'stream', None) is sys.stderr]
        stream = self.line.stream()
        for handler in self.handlers:
            handler.setStream(stream)
        self.line.start()

    def render(self):
        stats = self.processor.stats
        return '  %d job(s) done (%s) in %.0f s' % (
            sum(stats.values()), ', '.join(
                '%s %d' % item for item in sorted(stats.items()))
            or 'none yet', time.monotonic() - self.started)

    def stop(self):
        self.line.stop()
        for handler in self.handlers:
            handler.setStream(sys.stderr)


LOG_LEVELS = ['DEBUG', 'INFO', 'WARNING', 'ERROR']


def _loggingOptions(parser, default):
    parser.add_argument('--log-level', default=default, choices=LOG_LEVELS,
                        help='what to log to stderr (default INFO)')
    parser.add_argument('--verbose', action='store_true', default=default,
                        help="log ZEO's and ZODB's INFO lines too")


def _version():
    try:
        from importlib.metadata import version
        return version('zodbtasks')
    except Exception:          # not installed, e.g. run from a checkout
        return 'unknown'


def _addWorker(commands):
    run = commands.add_parser(
        'worker', help='run the jobs of a service',
        description='Claim and run the jobs of a service until stopped '
        '(SIGTERM or SIGINT: after the jobs in hand; a second signal '
        'interrupts them). A FileStorage that "zodbtasks serve" owns is '
        'reached through its socket.')
    admin.addDatabaseOptions(run)
    _addTaskOptions(run)
    _addRunOptions(run)
    _addProcessOptions(run)
    _addClaimOptions(run)
    run.set_defaults(func=worker)


def _addTaskOptions(run):
    """The tasks the worker knows: a Zope instance's, or modules'."""
    run.add_argument('--zope-conf', metavar='PATH',
                     help="a Zope instance's zope.conf: load its ZCML, so "
                     'that the tasks it registers are known (the worker '
                     'starts no processors of its own; needs the zope '
                     'extra)')
    run.add_argument('--tasks', action='append', default=[], metavar='MODULE',
                     help='a module to import; it registers task utilities '
                     '(repeat for more)')


def _addRunOptions(run):
    """How many jobs the worker runs, how often it looks, and its leases."""
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


def _addProcessOptions(run):
    """The worker process: its wait for ZEO, its log, when it ends, and
    whether it creates the service."""
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
                     help='create the service (and a FileStorage file) if '
                     'there is none')


def _addClaimOptions(run):
    """Which jobs the worker claims, and how it records their outcomes."""
    run.add_argument('--queue', action='append', metavar='NAME',
                     type=_queueName, help='claim jobs of this queue; give '
                     'it again for more queues (default: "default")')
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


def buildParser(argv=None):
    """The parser of the ``zodbtasks`` command; given the ``argv`` it will
    parse, it leaves out what those cannot need."""
    parser = _Parser(prog='zodbtasks',
                     description='Work with zodbtasks task services.')
    parser.add_argument('--version', action='version',
                        version='zodbtasks %s' % _version())
    parser.add_argument('--log-level', default='INFO', choices=LOG_LEVELS,
                        help='what to log to stderr (default INFO; also '
                        'after the subcommand)')
    parser.add_argument('--verbose', action='store_true',
                        help="log ZEO's and ZODB's INFO lines too")
    commands = parser.add_subparsers(dest='command', metavar='COMMAND',
                                     parser_class=_Parser)
    commands.required = True
    _addWorker(commands)

    p = commands.add_parser(
        'serve', help='own a FileStorage: ZEO on a socket, the dashboard '
        'and watched workers',
        description='Own a FileStorage file: serve it with ZEO on a Unix '
        'socket beside it (and on a loopback port if asked), run the '
        'dashboard and N worker processes, and start again any worker that '
        'dies. Other zodbtasks commands given --db PATH.fs connect to it.')
    from zodbtasks import serve
    serve.addArguments(p)
    p.set_defaults(func=serve.run)

    # The operator's subcommands (status, jobs, show, add, cron, cancel, ...).
    admin.addCommands(commands)
    board = commands.add_parser(
        'dashboard', help='serve the web dashboard (needs the dashboard '
        'extra: WebOb and waitress)')
    if argv is not None and 'dashboard' not in argv:
        # It cannot be the command: spare the others the import of its web
        # stack (a fifth of a second, and WebOb's warnings).
        return _finish(parser, commands)
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
    return _finish(parser, commands)


def _finish(parser, commands):
    # --log-level and --verbose work after the subcommand too.
    for sub in commands.choices.values():
        _loggingOptions(sub, argparse.SUPPRESS)
    return parser


def _setUpLogging(args):
    logging.basicConfig(
        level=getattr(logging, args.log_level), stream=sys.stderr,
        format='%(asctime)s %(levelname)s %(name)s %(message)s')
    server = logging.getLogger('ZEO.asyncio.server')
    server.removeFilter(_clientGone)
    if not args.verbose:
        # ZEO and ZODB say at INFO every connection, cache and storage
        # they open: noise for an operator, unless asked for.
        for name in ('ZEO', 'ZODB', 'zc.lockfile', 'txn'):
            logger = logging.getLogger(name)
            if logger.level < logging.WARNING:
                logger.setLevel(logging.WARNING)
        # A ZEO server (serve's) logs at ERROR each client that went away
        # while it was sent the invalidations of a commit: a command or a
        # worker exiting as another commits. Shown with --verbose.
        server.addFilter(_clientGone)


def _clientGone(record):
    """False for ZEO's line about a client that reset or closed its
    connection while the server wrote to it."""
    return not (str(record.msg).startswith('Disconnected') and record.args
                and record.args[0] in ('ConnectionResetError',
                                       'BrokenPipeError'))


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
    parser = buildParser(argv)
    args = parser.parse_args(argv)
    _setUpLogging(args)
    try:
        code = args.func(args)
        sys.stdout.flush()
        return code
    except UsageError as error:
        print('zodbtasks %s: error: %s' % (args.command, error),
              file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (``zodbtasks jobs | head``): end quietly,
        # and keep Python from complaining again when it flushes at exit.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141


if __name__ == '__main__':
    sys.exit(main())
