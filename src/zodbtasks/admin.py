"""The operator's subcommands of ``zodbtasks``: look at a service and act on it.

Each command opens the database, reads or changes the service in one
transaction, and prints a table for a person or, with ``--json``, a document
for a script. Bad input ends the command with a one-line reason and a
non-zero exit status; nothing is written then.
"""
import datetime
import importlib
import json
import logging
import sys
import time

import transaction

from zodbtasks import interfaces
from zodbtasks.job import MAX_DURATION
from zodbtasks.job import MAX_NOW
from zodbtasks.job import CronJob
from zodbtasks.job import checkDuration
from zodbtasks.job import checkMoment

#: Fields of a job shown by ``show`` and ``--json``, in order.
JOB_FIELDS = (
    'id', 'task', 'status', 'input', 'output', 'error', 'created', 'started',
    'completed', 'scheduledFor', 'attempts', 'retries', 'retried', 'failures',
    'progress', 'lease', 'expires', 'paused', 'atMostOnce', 'ttl')
CRON_FIELDS = (
    'cron', 'timezone', 'minute', 'hour', 'dayOfMonth', 'month', 'dayOfWeek',
    'second', 'interval', 'start', 'end', 'delay', 'runs', 'missedRuns',
    'lastMissed', 'misfire', 'overlap', 'maxRuns')


def _usage(message):
    from zodbtasks.cli import UsageError
    return UsageError(message)


def iso(t):
    """A time in seconds as an ISO 8601 UTC string, or '-'."""
    if t is None:
        return '-'
    return datetime.datetime.fromtimestamp(
        t, datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S')


def duration(seconds):
    """A readable length of time: 45s, 12m05s, 3h02m, 2d04h."""
    seconds = int(seconds)
    if seconds < 60:
        return '%ds' % seconds
    if seconds < 3600:
        return '%dm%02ds' % divmod(seconds, 60)
    if seconds < 86400:
        return '%dh%02dm' % (seconds // 3600, seconds % 3600 // 60)
    return '%dd%02dh' % (seconds // 86400, seconds % 86400 // 3600)


def table(rows, headers, out):
    """Print ``rows`` under ``headers`` in aligned columns."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows])
              for i, h in enumerate(headers)]
    line = '  '.join('%%-%ds' % w for w in widths)
    print((line % tuple(headers)).rstrip(), file=out)
    print('  '.join('-' * w for w in widths), file=out)
    for row in rows:
        print((line % tuple(row)).rstrip(), file=out)


def plain(value):
    """``value`` made fit for JSON: persistent and odd objects as text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if getattr(value, 'token', None) is not None:      # a lease
        return {'worker': value.worker, 'expires': value.expires}
    return repr(value)


def describe(job):
    """Every field of a job as a dict."""
    fields = JOB_FIELDS + (CRON_FIELDS if isinstance(job, CronJob) else ())
    found = {name: plain(getattr(job, name, None)) for name in fields}
    found['log'] = list(job.log)
    found['traceback'] = job.traceback
    return found


# -- opening the service --------------------------------------------------------

class Session:
    """The service at a path, in a connection and transaction of our own."""

    def __init__(self, args):
        from zodbtasks.cli import findService
        from zodbtasks.cli import openDatabase
        for name in getattr(args, 'tasks', None) or ():
            try:
                importlib.import_module(name)
            except Exception as error:
                raise _usage('cannot import task module %s: %s: %s'
                             % (name, type(error).__name__, error))
        try:
            self.db = openDatabase(args.db)
        except Exception as error:
            if type(error).__name__ == 'UsageError':
                raise
            raise _usage('cannot open --db %s: %s: %s'
                         % (args.db, type(error).__name__, error))
        try:
            keys = findService(self.db, args.service)
        except BaseException:
            self.db.close()
            raise
        from zodbtasks.processor import traverse
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(transaction_manager=self.tm)
        self.tm.begin()
        self.service = traverse(self.conn.root(), keys)

    def commit(self):
        self.tm.commit()

    def close(self):
        self.tm.abort()
        self.conn.close()
        self.db.close()


def _withService(action, write=False):
    def command(args):
        session = Session(args)
        try:
            code = action(session.service, args, sys.stdout)
            if write:
                session.commit()
            return code or 0
        finally:
            session.close()
    return command


def _job(service, jobid):
    try:
        jobid = int(jobid)
    except ValueError:
        raise _usage('job ids are whole numbers, not %r' % jobid)
    try:
        return service.jobs[jobid]
    except (KeyError, IndexError):
        raise _usage('no job %s in this service' % jobid)


def _now(args):
    return args.now if getattr(args, 'now', None) is not None else time.time()


# -- commands -------------------------------------------------------------------

def status(service, args, out):
    now = _now(args)
    counts = {s: 0 for s in interfaces.STATUSES}
    oldest = None
    overdue = []
    expired = []
    upcoming = []
    for job in service.jobs.values():
        counts[job.status] = counts.get(job.status, 0) + 1
        if job.status == interfaces.QUEUED:
            if oldest is None or (job.created or 0) < (oldest.created or 0):
                oldest = job
        due = job.scheduledFor
        if job.status in (interfaces.DELAYED, interfaces.CRONJOB,
                          interfaces.RETRYING) and due is not None:
            if due <= now:
                overdue.append((now - due, job))
            elif _repeats(job):
                upcoming.append((due, job))
        lease = job.lease
        if job.status == interfaces.PROCESSING and lease is not None \
                and lease.expires <= now:
            expired.append((now - lease.expires, job))
    overdue.sort(key=lambda item: -item[0])
    upcoming.sort(key=lambda item: item[0])
    report = {
        'now': now, 'paused': service.paused,
        'counts': {s: n for s, n in counts.items() if n},
        'oldestQueued': None if oldest is None else {
            'id': oldest.id, 'task': oldest.task, 'created': oldest.created,
            'waiting': now - (oldest.created or now)},
        'overdue': [{'id': j.id, 'task': j.task, 'due': j.scheduledFor,
                     'late': late} for late, j in overdue[:args.limit]],
        'expiredLeases': [{'id': j.id, 'task': j.task,
                           'worker': j.lease.worker, 'expired': late}
                          for late, j in expired[:args.limit]],
        'nextRuns': [{'id': j.id, 'task': j.task, 'due': due}
                     for due, j in upcoming[:args.limit]],
    }
    if args.json:
        json.dump(report, out, indent=2, sort_keys=True)
        print(file=out)
        return 0
    print('service at /%s%s, %s UTC' % (
        args.service.strip('/'), ' (PAUSED)' if service.paused else '',
        iso(now)), file=out)
    table([[s, counts[s]] for s in interfaces.STATUSES],
          ['status', 'jobs'], out)
    if oldest is not None:
        print('\noldest queued job: %s (%s), waiting %s' % (
            oldest.id, oldest.task, duration(now - (oldest.created or now))),
            file=out)
    for title, rows, headers in [
            ('overdue', [[j.id, j.task, iso(j.scheduledFor), duration(late)]
                         for late, j in overdue[:args.limit]],
             ['id', 'task', 'due', 'late by']),
            ('held under expired leases',
             [[j.id, j.task, j.lease.worker, duration(late)]
              for late, j in expired[:args.limit]],
             ['id', 'task', 'worker', 'expired for']),
            ('next cron runs', [[j.id, j.task, iso(due),
                                 'in ' + duration(due - now)]
                                for due, j in upcoming[:args.limit]],
             ['id', 'task', 'due', 'when'])]:
        print('\n%s: %s' % (title, len(rows) or 'none'), file=out)
        if rows:
            table(rows, headers, out)
    return 0


def _repeats(job):
    return isinstance(job, CronJob) and job.delay is None


def jobs(service, args, out):
    if args.status and args.status not in interfaces.STATUSES:
        raise _usage('unknown status %r; statuses are %s' % (
            args.status, ', '.join(interfaces.STATUSES)))
    found = []
    for job in service.jobs.values():
        if args.status and job.status != args.status:
            continue
        if args.task and args.task not in job.task:
            continue
        found.append(job)
    found.sort(key=lambda j: -(j.created or 0))
    found = found[:args.limit]
    if args.json:
        json.dump([{name: plain(getattr(j, name, None)) for name in (
            'id', 'task', 'status', 'created', 'scheduledFor', 'attempts',
            'error')} for j in found], out, indent=2)
        print(file=out)
        return 0
    table([[j.id, j.task, j.status, iso(j.created), iso(j.scheduledFor),
            j.attempts, (j.error or '')[:60]] for j in found],
          ['id', 'task', 'status', 'created', 'due', 'attempts', 'error'],
          out)
    return 0


def show(service, args, out):
    job = _job(service, args.jobid)
    found = describe(job)
    if args.json:
        json.dump(found, out, indent=2, sort_keys=True)
        print(file=out)
        return 0
    for name, value in found.items():
        if name in ('log', 'traceback') or value in (None, (), [], False) \
                and name not in ('status',):
            continue
        if name in ('created', 'started', 'completed', 'scheduledFor',
                    'expires', 'start', 'end'):
            value = '%s UTC (%s)' % (iso(value), value)
        print('%-13s %s' % (name, value), file=out)
    if _repeats(job):
        from zodbtasks.schedule import next_times
        times = next_times(job.schedule, _now(args), 5)
        print('next runs     %s' % ', '.join(iso(t) for t in times), file=out)
    if job.log:
        print('\nlog:', file=out)
        for line in job.log:
            print('  ' + line, file=out)
    if job.traceback:
        print('\ntraceback:', file=out)
        print(job.traceback.rstrip(), file=out)
    return 0


def _input(args):
    if args.input is None:
        return None
    try:
        return json.loads(args.input)
    except ValueError as error:
        raise _usage('--input is not JSON: %s' % error)


def add(service, args, out):
    try:
        if args.delay is None:
            jobid = service.add(args.task, _input(args), now=_now(args))
        else:
            jobid = service.addCronJob(args.task, _input(args),
                                       delay=args.delay, now=_now(args))
    except (ValueError, TypeError) as error:
        raise _usage(str(error))
    return _added(service, jobid, args, out)


def cron(service, args, out):
    fields = {}
    for name in ('minute', 'hour', 'dayOfMonth', 'month', 'dayOfWeek'):
        text = getattr(args, name)
        if text is not None:
            try:
                fields[name] = tuple(int(v) for v in text.split(','))
            except ValueError:
                raise _usage('--%s takes numbers separated by commas, not %r'
                             % (name, text))
    if args.cron is None and not fields:
        raise _usage('give --cron EXPR or at least one of --minute, --hour, '
                     '--dayOfMonth, --month, --dayOfWeek')
    try:
        jobid = service.addCronJob(args.task, _input(args), cron=args.cron,
                                   timezone=args.timezone, now=_now(args),
                                   **fields)
    except (ValueError, TypeError) as error:
        raise _usage(str(error))
    return _added(service, jobid, args, out)


def _added(service, jobid, args, out):
    if args.json:
        json.dump({'id': jobid, 'status': service.getStatus(jobid)}, out)
        print(file=out)
    else:
        print('added job %s (%s)' % (jobid, service.getStatus(jobid)),
              file=out)
    return 0


def _act(method, done):
    def action(service, args, out):
        job = _job(service, args.jobid)
        try:
            getattr(service, method)(job.id, now=_now(args))
        except ValueError as error:
            raise _usage(str(error))
        if args.json:
            json.dump({'id': job.id, 'status': job.status}, out)
            print(file=out)
        else:
            print('job %s %s: now %s' % (job.id, done, job.status), file=out)
        return 0
    return action


def clean(service, args, out):
    statuses = args.status or list(interfaces.FINISHED)
    before = len(service.jobs)
    try:
        service.clean(status=statuses)
    except ValueError as error:
        raise _usage(str(error))
    removed = before - len(service.jobs)
    if args.json:
        json.dump({'removed': removed}, out)
        print(file=out)
    else:
        print('removed %d finished job(s) (%s)' % (removed,
                                                   ', '.join(statuses)),
              file=out)
    return 0


def nextRuns(args):
    """``next``: the next fire times of an expression or of a job."""
    from zodbtasks import schedule as schedules
    after = _now(args) if args.after is None else _parseTime(args.after)
    if args.what.strip().isdigit():
        if not args.db or not args.service:
            raise _usage('the next runs of a job need --db and --service')
        session = Session(args)
        try:
            job = _job(session.service, args.what)
            if not isinstance(job, CronJob):
                raise _usage('job %s is not a cron job' % job.id)
            times = []
            t = after
            for _ in range(args.n):
                t = job.timeOfNextCall(t)
                if t is None:
                    break
                times.append(t)
            zone = job.timezone
        finally:
            session.close()
    else:
        try:
            compiled = schedules.from_cron(args.what, timezone=args.timezone)
        except (ValueError, TypeError) as error:
            raise _usage(str(error))
        times = schedules.next_times(compiled, after, args.n)
        zone = args.timezone
    if args.json:
        json.dump(times, sys.stdout)
        print()
        return 0
    for t in times:
        line = iso(t) + ' UTC'
        if zone:
            from zoneinfo import ZoneInfo
            local = datetime.datetime.fromtimestamp(t, ZoneInfo(zone))
            line += '   %s %s' % (local.strftime('%Y-%m-%d %H:%M:%S'), zone)
        print(line)
    return 0


def _parseTime(text):
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            raise _usage('--after takes seconds since the epoch or an ISO '
                         'time such as 2026-03-29T01:30, not %r' % text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        seconds = moment.timestamp()
    try:
        return checkMoment(seconds, '--after')
    except ValueError as error:
        raise _usage(str(error))


# -- the demo -------------------------------------------------------------------

def demo(args):
    """Make a small database of jobs and run a worker on it, showing what
    happens. Run it again: the jobs are still there and go on."""
    import threading

    import zope.event

    from zodbtasks import _demo
    from zodbtasks import events
    from zodbtasks.cli import openDatabase
    from zodbtasks.processor import MultiProcessor
    from zodbtasks.service import TaskService

    _demo.register()
    # The demo shows each job as it goes; the worker's own log would repeat it.
    logging.getLogger('zodbtasks').setLevel(logging.WARNING)
    db = openDatabase(args.db)
    out = sys.stdout
    tty = out.isatty()
    lock = threading.Lock()
    started = time.time()
    try:
        with db.transaction() as conn:
            root = conn.root()
            fresh = 'tasks' not in root
            if fresh:
                root['tasks'] = TaskService()
            service = root['tasks']
            print('%s %s, service at /tasks with %d job(s)' % (
                'created' if fresh else 'opened', args.db,
                len(service.jobs)), file=out)
            _demo.addJobs(service, fresh, now=started)

        def show(event):
            job = event.job
            kind = type(event).__name__[3:].lower()
            detail = ''
            if isinstance(event, events.JobCompleted):
                detail = '-> %r' % (job.output,)
            elif isinstance(event, (events.JobFailed, events.JobRetried)):
                detail = '!! %s' % event.error
                if isinstance(event, events.JobRetried):
                    detail += ' (retry at +%.0fs)' % (event.due - started)
            elif isinstance(event, events.JobMissed):
                detail = '%d missed, %s' % (event.count, event.action)
            line = '%7.1fs  %-9s %-16s job %s %s' % (
                time.time() - started, kind, job.task, job.id, detail)
            with lock:
                try:
                    out.write(('\r\x1b[K' if tty else '') + line + '\n')
                    out.flush()
                except OSError:
                    pass    # the reader went away (a closed pipe): go on

        zope.event.subscribers.append(show)
        processor = MultiProcessor(db, ['tasks'], waitTime=0.2, maxThreads=2)
        thread = threading.Thread(target=processor, name='demo-worker',
                                  daemon=True)
        thread.start()
        deadline = started + args.seconds
        try:
            while time.time() < deadline and thread.is_alive():
                if tty:
                    with lock:
                        out.write('\r\x1b[K  running: %.0f of %ds ' % (
                            time.time() - started, args.seconds))
                        out.flush()
                time.sleep(0.25)
        except KeyboardInterrupt:
            pass
        finally:
            processor.stop()
            thread.join(30)
            zope.event.subscribers.remove(show)
            if tty:
                out.write('\r\x1b[K')
        with db.transaction() as conn:
            counts = {}
            for job in conn.root()['tasks'].jobs.values():
                counts[job.status] = counts.get(job.status, 0) + 1
        print('\njobs by status after %.0fs:' % (time.time() - started),
              file=out)
        table(sorted(counts.items()), ['status', 'jobs'], out)
        print('\nThe jobs live in %s: run the demo again and they go on.'
              % args.db, file=out)
    finally:
        db.close()
    return 0


# -- the parser -----------------------------------------------------------------

def addCommands(commands):
    """Add the operator's subcommands to the ``zodbtasks`` parser."""

    def common(parser, db_required=True):
        parser.add_argument('--db', required=db_required, metavar='URI',
                            help='the database: a zodburi URI, or a .conf or '
                            '.fs path')
        parser.add_argument('--service', required=db_required,
                            metavar='PATH', help='slash-separated keys from '
                            'the root to the service')
        parser.add_argument('--json', action='store_true',
                            help='print JSON for scripts')
        parser.add_argument('--now', type=timeArgument, default=None,
                            help='the time to use, in seconds since the '
                            'epoch (default: the clock)')

    def positiveInt(text):
        try:
            value = int(text)
        except ValueError:
            raise _argError('not a whole number: %r' % text)
        if value <= 0:
            raise _argError('must be positive: %r' % text)
        return value

    p = commands.add_parser('status', help='counts, overdue jobs, leases, '
                            'next cron runs')
    common(p)
    p.add_argument('--limit', type=positiveInt, default=10,
                   help='rows per section (default 10)')
    p.set_defaults(func=_withService(status))

    p = commands.add_parser('jobs', help='a table of jobs, newest first')
    common(p)
    p.add_argument('--status', help='only jobs with this status')
    p.add_argument('--task', help='only jobs whose task name contains this')
    p.add_argument('--limit', type=positiveInt, default=50,
                   help='at most this many (default 50)')
    p.set_defaults(func=_withService(jobs))

    p = commands.add_parser('show', help='every field of a job, its log and '
                            'traceback')
    common(p)
    p.add_argument('jobid')
    p.set_defaults(func=_withService(show))

    p = commands.add_parser('add', help='add a job')
    common(p)
    p.add_argument('task')
    p.add_argument('--input', metavar='JSON', help='the input, as JSON')
    p.add_argument('--delay', type=delayArgument, metavar='SECONDS',
                   help='run once, this long after the next tick')
    p.add_argument('--tasks', action='append', default=[], metavar='MODULE',
                   help='a module that registers tasks (repeat for more)')
    p.set_defaults(func=_withService(add, write=True))

    p = commands.add_parser('cron', help='add a cron job')
    common(p)
    p.add_argument('task')
    p.add_argument('--cron', metavar='EXPR', help="a cron expression, such "
                   "as '*/5 * * * *'")
    for name in ('minute', 'hour', 'dayOfMonth', 'month', 'dayOfWeek'):
        p.add_argument('--' + name, metavar='N,N,...',
                       help='field tuple (day of week 0 = Monday)'
                       if name == 'dayOfWeek' else None)
    p.add_argument('--timezone', metavar='ZONE', help='an IANA time zone')
    p.add_argument('--input', metavar='JSON', help='the input, as JSON')
    p.add_argument('--tasks', action='append', default=[], metavar='MODULE',
                   help='a module that registers tasks (repeat for more)')
    p.set_defaults(func=_withService(cron, write=True))

    for name, method, done, helptext in [
            ('cancel', 'cancel', 'cancelled', 'cancel a job'),
            ('retry', 'retry', 'retried', 'run a failed or cancelled job '
             'again'),
            ('pause', 'pause', 'paused', 'pause a job'),
            ('resume', 'resume', 'resumed', 'resume a paused job'),
            ('run-now', 'runNow', 'made due', 'run a waiting job now, once')]:
        p = commands.add_parser(name, help=helptext)
        common(p)
        p.add_argument('jobid')
        p.set_defaults(func=_withService(_act(method, done), write=True))

    p = commands.add_parser('clean', help='remove finished jobs')
    common(p)
    p.add_argument('--status', action='append', choices=interfaces.FINISHED,
                   help='only this status (repeat for more; default all '
                   'finished)')
    p.set_defaults(func=_withService(clean, write=True))

    p = commands.add_parser('next', help='the next fire times of a cron '
                            'expression or a job')
    common(p, db_required=False)
    p.add_argument('what', metavar='EXPR|JOBID')
    p.add_argument('-n', type=positiveInt, default=5,
                   help='how many (default 5)')
    p.add_argument('--timezone', metavar='ZONE',
                   help='read the expression in this IANA zone')
    p.add_argument('--after', metavar='TIME', help='seconds since the '
                   'epoch or an ISO time (UTC unless it says)')
    p.set_defaults(func=nextRuns)

    p = commands.add_parser('demo', help='run a worker on a small local '
                            'database of example jobs')
    p.add_argument('--db', default='zodbtasks-demo.fs', metavar='PATH',
                   help='the database (default zodbtasks-demo.fs, a '
                   'FileStorage in the current folder)')
    p.add_argument('--seconds', type=positiveInt, default=20,
                   help='how long to run the worker (default 20)')
    p.set_defaults(func=demo)


def _argError(message):
    import argparse
    return argparse.ArgumentTypeError(message)


def _numberArgument(check, accepted):
    """An argparse type: a number that ``check`` accepts."""
    def convert(text):
        try:
            value = float(text)
            check(value, 'it')
        except (TypeError, ValueError):
            raise _argError('%s, not %r' % (accepted, text))
        return value
    return convert


#: ``--now``: what the service accepts as a time (see `zodbtasks.job`).
timeArgument = _numberArgument(checkMoment, (
    'takes a time in seconds since the epoch, from 0 to %d (%s UTC)'
    % (MAX_NOW, datetime.datetime.fromtimestamp(
        MAX_NOW, datetime.timezone.utc).strftime('%Y-%m-%d'))))

#: ``--delay``: what the service accepts as a delay.
delayArgument = _numberArgument(checkDuration, (
    'takes a number of seconds from 0 up to %d (100 years)' % MAX_DURATION))
