"""The operator's subcommands of ``zodbtasks``: look at a service, act on it.

Commands that only read (``status``, ``jobs``, ``show``, ``next``) open a
FileStorage read-only: they need no lock, work beside a running worker or
``zodbtasks serve``, and see what was committed before they opened.
Commands that write open it for writing, or connect through the socket of
the ``zodbtasks serve`` that owns the file (see `zodbtasks.connect`).

Each command prints tables for a person or, with ``--json``, a document for
a script. Bad input ends the command with a one-line reason and exit status
1; nothing is written then. Bulk changes (``requeue``, ``clean``) commit in
batches, so that no transaction grows with the size of the service.
"""
import argparse
import datetime
import importlib
import itertools
import json
import logging
import os
import re
import sys
import time

import transaction
import zope.component
from transaction.interfaces import TransientError

from zodbtasks import connect
from zodbtasks import interfaces
from zodbtasks.connect import UsageError
from zodbtasks.display import cut
from zodbtasks.display import duration
from zodbtasks.display import in_zone
from zodbtasks.display import log_without_tracebacks
from zodbtasks.display import moment
from zodbtasks.display import table
from zodbtasks.display import user_traceback
from zodbtasks.job import MAX_DURATION
from zodbtasks.job import MAX_NOW
from zodbtasks.job import CronJob
from zodbtasks.job import checkDuration
from zodbtasks.job import checkMoment

log = logging.getLogger('zodbtasks.admin')

#: Fields of a job shown by ``show`` and ``--json``, in order.
JOB_FIELDS = (
    'id', 'task', 'status', 'input', 'output', 'error', 'created', 'started',
    'completed', 'scheduledFor', 'attempts', 'retries', 'retried', 'failures',
    'progress', 'lease', 'expires', 'paused', 'atMostOnce', 'ttl', 'queue',
    'priority', 'limit', 'ranOn', 'history')
CRON_FIELDS = (
    'cron', 'timezone', 'minute', 'hour', 'dayOfMonth', 'month', 'dayOfWeek',
    'second', 'interval', 'start', 'end', 'delay', 'runs', 'missedRuns',
    'lastMissed', 'misfire', 'overlap', 'maxRuns')
TIME_FIELDS = ('created', 'started', 'completed', 'scheduledFor', 'expires',
               'start', 'end')

#: Jobs changed per transaction by ``requeue`` and ``clean``.
BATCH = 500


def iso(t):
    """A time in seconds as ``YYYY-MM-DD HH:MM:SS UTC``, or '-'."""
    return moment(t)


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
    # What the task keeps between runs (context.data), if it kept any.
    data = getattr(job, 'data', None)
    found['data'] = None if data is None else plain(dict(data))
    found['log'] = list(job.log)
    found['traceback'] = job.traceback
    return found


# -- opening the service ------------------------------------------------------

def importTasks(names):
    """Import the task modules, from the working directory too."""
    if os.getcwd() not in sys.path and '' not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names or ():
        try:
            importlib.import_module(name)
        except Exception as error:
            raise UsageError('cannot import task module %s: %s: %s'
                             % (name, type(error).__name__, error))


class Session:
    """The service at a path, in a connection and transaction of our own.

    ``write=False`` opens a FileStorage read-only.
    """

    def __init__(self, args, write=False):
        from zodbtasks.paths import traverse
        importTasks(getattr(args, 'tasks', None))
        create = write and getattr(args, 'create', False)
        self.db = connect.open_or_explain(args.db, read_only=not write,
                                          create=create)
        try:
            self.keys = connect.find_service(self.db, args.service,
                                             create=create)
        except BaseException:
            self.db.close()
            raise
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(transaction_manager=self.tm)
        self.tm.begin()
        self.service = traverse(self.conn.root(), self.keys)

    def commit(self):
        self.tm.commit()

    def fresh(self):
        """The service, in a new transaction (after a commit or abort)."""
        self.tm.begin()
        return self.service

    def close(self):
        self.tm.abort()
        self.conn.close()
        self.db.close()


def _withService(action, write=False):
    def command(args):
        session = Session(args, write)
        try:
            code = action(session.service, args, sys.stdout) \
                if not getattr(action, 'batched', False) \
                else action(session, args, sys.stdout)
            if write and not getattr(action, 'batched', False):
                session.commit()
            return code or 0
        finally:
            session.close()
    command.writes = write
    return command


def _batched(action):
    action.batched = True
    return action


def _job(service, jobid):
    try:
        jobid = int(jobid)
    except ValueError:
        raise UsageError('job ids are whole numbers, not %r' % jobid)
    try:
        return service.jobs[jobid]
    except (KeyError, IndexError):
        raise UsageError('no job %s in this service' % jobid)


def _now(args):
    return args.now if getattr(args, 'now', None) is not None else time.time()


def _dump(value, out):
    json.dump(value, out, indent=2, sort_keys=True)
    print(file=out)


# -- looking ------------------------------------------------------------------

def status(service, args, out):
    now = _now(args)
    report, counts, rows = _survey(service, now, args.limit)
    if args.json:
        _dump(report, out)
        return 0
    print('service at /%s%s, %s' % (
        args.service.strip('/'), ' (PAUSED: workers claim nothing)'
        if service.paused else '', moment(now)), file=out)
    table([[s, counts[s]] for s in interfaces.STATUSES],
          ['status', 'jobs'], out, right=('jobs',))
    queues = report.get('queues')
    if queues:
        statuses = [s for s in interfaces.STATUSES
                    if any(s in byStatus for byStatus in queues.values())]
        print('\nby queue:', file=out)
        table([[cut(queue, 40)] + [byStatus.get(s, 0) for s in statuses]
               for queue, byStatus in sorted(queues.items())],
              ['queue'] + statuses, out, right=tuple(statuses))
    unservedQueues = report.get('unservedQueues')
    if unservedQueues:
        print('\nqueued jobs in queues no live worker serves:', file=out)
        table([[cut(queue, 60), n]
               for queue, n in sorted(unservedQueues.items())],
              ['queue', 'queued'], out, right=('queued',))
    unserved = report.get('unservedTasks')
    if unserved:
        print('\nqueued jobs whose task no live worker knows (see "zodbtasks '
              'workers"):', file=out)
        table([[cut(task, 60), n] for task, n in sorted(unserved.items())],
              ['task', 'queued'], out, right=('queued',))
    oldest = report['oldestQueued']
    if oldest is not None:
        print('\noldest queued job: %s (%s), waiting %s' % (
            oldest['id'], oldest['task'], duration(oldest['waiting'])),
            file=out)
    overdue, expired, upcoming = rows
    for title, rows, headers in [
            ('overdue', [[j.id, j.task, moment(j.scheduledFor),
                          duration(late)] for late, j in overdue],
             ['id', 'task', 'due', 'late by']),
            ('held under expired leases',
             [[j.id, j.task, j.lease.worker, duration(late)]
              for late, j in expired],
             ['id', 'task', 'worker', 'expired for']),
            ('next cron runs', [[j.id, j.task, in_zone(due, j.timezone),
                                 'in ' + duration(due - now)]
                                for due, j in upcoming],
             ['id', 'task', 'due', 'when'])]:
        print('\n%s: %s' % (title, len(rows) or 'none'), file=out)
        if rows:
            table(rows, headers, out)
    return 0


def _survey(service, now, limit):
    """What ``status`` reports: (the JSON report, the counts, and the rows
    of its sections: overdue, under expired leases, next runs).

    It reads the service's counts and the heads of its indexes: the cost
    does not grow with the number of jobs.
    """
    counts = dict.fromkeys(interfaces.STATUSES, 0)
    for (status, task), n in service.jobCounts().items():
        counts[status] = counts.get(status, 0) + n
    oldest = service.oldestQueued()
    overdue = [(now - job.scheduledFor, job)
               for job in service.overdueJobs(now, limit)]
    expired = [(now - job.lease.expires, job)
               for job in service.expiredLeases(now, limit)]
    upcoming = [(job.scheduledFor, job)
                for job in service.upcomingJobs(now, limit)]
    report = {
        'now': now, 'paused': service.paused,
        'counts': {s: n for s, n in counts.items() if n},
        'oldestQueued': None if oldest is None else {
            'id': oldest.id, 'task': oldest.task, 'created': oldest.created,
            'waiting': now - (oldest.created or now)},
        'overdue': [{'id': j.id, 'task': j.task, 'due': j.scheduledFor,
                     'late': late} for late, j in overdue],
        'expiredLeases': [{'id': j.id, 'task': j.task,
                           'worker': j.lease.worker, 'expired': late}
                          for late, j in expired],
        'nextRuns': [{'id': j.id, 'task': j.task, 'due': due,
                      'timezone': j.timezone} for due, j in upcoming],
    }
    byQueue = {}
    for (queue, status), n in service.queueCounts().items():
        byQueue.setdefault(queue, {})[status] = n
    if set(byQueue) - {'default'}:
        report['queues'] = byQueue      # shown once there are queues
    if service.workers(now):
        # Only once workers registered: without records, nothing is known
        # of the workers that run the jobs.
        report['liveWorkers'] = len(service.liveWorkers(now))
        report['unservedTasks'] = service.unservedTasks(now)
        report['unservedQueues'] = service.unservedQueues(now)
    return report, counts, (overdue, expired, upcoming)


def workers(service, args, out):
    """The workers' records: live ones first, then the dead and stopped."""
    now = _now(args)
    order = {'live': 0, 'dead': 1, 'stopped': 2}
    found = sorted(service.workers(now),
                   key=lambda w: (order[w.state(now)], w.name))
    if args.json:
        _dump([w.describe(now) for w in found], out)
        return 0
    live = sum(1 for w in found if w.state(now) == 'live')
    print('%d live worker(s) of %d recorded, %s'
          % (live, len(found), moment(now)), file=out)
    if not found:
        return 0
    table([[cut(w.name, 40), w.state(now), w.host, w.pid, moment(w.started),
            duration(now - w.lastSeen) + ' ago', w.jobsDone,
            cut(' '.join(map(str, w.jobs)) or '-', 40),
            cut(', '.join(w.tasks) or '-', 50),
            cut(', '.join('%s %s' % item for item in sorted(
                w.counters.items())) or '-', 60)] for w in found],
          ['name', 'state', 'host', 'pid', 'started', 'last seen', 'done',
           'jobs now', 'tasks', 'counters'], out, right=('pid', 'done'))
    return 0


def _repeats(job):
    return isinstance(job, CronJob) and job.delay is None


def _checkStatus(name, accepted=interfaces.STATUSES):
    if name is not None and name not in accepted:
        raise UsageError('unknown status %r; statuses are %s' % (
            name, ', '.join(accepted)))


#: How many listed jobs ``jobs --match`` looks at per row it may show.
MATCH_SCAN = 1000


def jobs(service, args, out):
    _checkStatus(args.status)
    found = _listed(service, args)
    if args.json:
        json.dump([{name: plain(getattr(j, name, None)) for name in (
            'id', 'task', 'status', 'queue', 'priority', 'created',
            'scheduledFor', 'attempts', 'error')} for j in found],
            out, indent=2)
        print(file=out)
        return 0
    table([[j.id, cut(j.task, 40), j.status, j.queue, j.priority,
            moment(j.created), moment(j.scheduledFor), j.attempts,
            cut(j.error, 60)] for j in found],
          ['id', 'task', 'status', 'queue', 'prio', 'created', 'due',
           'attempts', 'error'], out, right=('id', 'prio', 'attempts'))
    return 0


def _listed(service, args):
    """The jobs ``jobs`` shows: a page of the service's listing, or with
    ``--match`` those whose task contains the text among the first
    ``MATCH_SCAN`` listed per row asked for."""
    try:
        if args.match is None:
            return service.listJobs(args.status, args.task, args.limit,
                                    queue=args.queue)[0]
        found, cursor, seen = [], None, 0
        while len(found) < args.limit and seen < MATCH_SCAN * args.limit:
            page, cursor = service.listJobs(args.status, args.task, 500,
                                            cursor, queue=args.queue)
            seen += len(page)
            found.extend(j for j in page if args.match in j.task)
            if cursor is None:
                break
        return found[:args.limit]
    except ValueError as error:
        raise UsageError(str(error))


def show(service, args, out):
    job = _job(service, args.jobid)
    found = describe(job)
    found['waitingFor'] = service.waitingFor(job.id, _now(args))
    if args.json:
        _dump(found, out)
        return 0
    zone = getattr(job, 'timezone', None)
    for name, value in found.items():
        if name in ('log', 'traceback', 'failures', 'history') \
                or value in (None, (), [], False) and name != 'status':
            continue
        if name in TIME_FIELDS:
            value = in_zone(value, zone)
        elif name == 'lease':
            value = '%s, until %s' % (value['worker'],
                                      in_zone(value['expires'], zone))
        else:
            value = cut(value if isinstance(value, str) else
                        json.dumps(value), 100)
        print('%-13s %s' % (name, value), file=out)
    if _repeats(job):
        from zodbtasks.schedule import next_times
        times = next_times(job.schedule, _now(args), 5)
        print('next runs     %s' % ('\n              '.join(
            in_zone(t, zone) for t in times) or 'none'), file=out)
    if job.history:
        print('\nruns before the latest (oldest first):', file=out)
        table([[moment(start), duration(end - start), cut(worker, 40),
                status, cut(error, 60)]
               for start, end, worker, status, error in job.history],
              ['started', 'took', 'worker', 'status', 'error'], out)
    if job.failures:
        print('\nfailures (latest last):', file=out)
        table([[moment(t), cut(message, 100)] for t, message in job.failures],
              ['when', 'error'], out)
    lines = log_without_tracebacks(job.log)
    if lines:
        print('\nlog:', file=out)
        for line in lines:
            print('  ' + line, file=out)
    if job.traceback:
        print('\ntraceback of the latest failure (without zodbtasks\' own '
              'frames):', file=out)
        print(user_traceback(job.traceback), file=out)
    return 0


# -- adding -------------------------------------------------------------------

def _input(args):
    if args.input is None:
        return None
    try:
        return json.loads(args.input)
    except ValueError as error:
        raise UsageError('--input is not JSON: %s' % error)


#: Command-line options of add and cron, and the job options they set.
JOB_OPTION_FLAGS = {
    'retries': 'retries', 'retry_delay': 'retryDelay',
    'retry_backoff': 'retryBackoff', 'retry_max_delay': 'retryMaxDelay',
    'ttl': 'ttl', 'lease': 'leaseSeconds', 'timeout': 'timeout',
    'at_most_once': 'atMostOnce', 'queue': 'queue', 'priority': 'priority',
    'limit': 'limit'}
CRON_OPTION_FLAGS = {
    'misfire': 'misfire', 'misfire_grace': 'misfireGrace',
    'catch_up': 'catchUp', 'overlap': 'overlap', 'max_runs': 'maxRuns'}


def _options(args, flags):
    options = {}
    for flag, name in flags.items():
        value = getattr(args, flag, None)
        if value is not None and value is not False:
            options[name] = value
    return options


class _UncheckedTask:
    """Stands for a task this command does not know, so that ``add`` can
    store its name for workers that do (see `_knownTask`)."""

    def __call__(self, service, jobid, input):   # pragma: no cover
        raise RuntimeError('an unchecked task name is never run here')


def _knownTask(service, name):
    """Register a stand-in for ``name`` when no task is registered at all.

    With task modules loaded (``--tasks``) the name is checked against
    them. Without any, the command cannot check it: it warns, and the name
    is stored as given. Returns a function that undoes the registration.
    """
    if service.getAvailableTasks() or _importable(name):
        return lambda: None
    log.warning('no task modules are loaded (--tasks MODULE): the task '
                'name %r is stored unchecked, and defaults that the task '
                'declares are not applied', name)
    stand_in = _UncheckedTask()
    sm = zope.component.getGlobalSiteManager()
    sm.registerUtility(stand_in, service.taskInterface, name)
    return lambda: sm.unregisterUtility(stand_in, service.taskInterface, name)


def _importable(dotted):
    module, _, name = dotted.rpartition('.')
    if not module:
        return False
    try:
        return callable(getattr(importlib.import_module(module), name, None))
    except Exception:
        return False


def _adding(service, args, call):
    undo = _knownTask(service, args.task)
    try:
        return call()
    except TypeError as error:
        raise UsageError(str(error))
    except ValueError as error:
        raise UsageError(str(error))
    finally:
        undo()


def add(service, args, out):
    options = _options(args, JOB_OPTION_FLAGS)
    if args.delay is None:
        jobid = _adding(service, args, lambda: service.add(
            args.task, _input(args), startLater=args.start_later,
            now=_now(args), **options))
    else:
        jobid = _adding(service, args, lambda: service.addCronJob(
            args.task, _input(args), delay=args.delay,
            startLater=args.start_later, now=_now(args), **options))
    return _added(service, jobid, args, out)


#: Schedule fields of ``cron``: (option, keyword, what the numbers mean).
FIELDS = [
    ('minute', 'minute', '0-59'),
    ('hour', 'hour', '0-23'),
    ('day_of_month', 'dayOfMonth', '1-31'),
    ('month', 'month', '1-12'),
    ('day_of_week', 'dayOfWeek', '0 = Monday ... 6 = Sunday, as Python\'s '
     'weekday(); unlike --cron, where 0 and 7 are Sunday'),
    ('second', 'second', '0-59'),
]


def cron(service, args, out):
    schedule = {}
    for flag, name, _ in FIELDS:
        text = getattr(args, flag)
        if text is not None:
            try:
                schedule[name] = tuple(int(v) for v in text.split(','))
            except ValueError:
                raise UsageError('--%s takes numbers separated by commas, '
                                 'not %r' % (flag.replace('_', '-'), text))
    if args.cron is None and args.interval is None and not schedule:
        raise UsageError('give --cron EXPR, --interval SECONDS or at least '
                         'one of --minute, --hour, --day-of-month, --month, '
                         '--day-of-week')
    for name in ('cron', 'timezone', 'interval'):
        if getattr(args, name) is not None:
            schedule[name] = getattr(args, name)
    for name in ('start', 'end'):
        if getattr(args, name) is not None:
            schedule[name] = _parseTime(getattr(args, name), '--' + name)
    options = dict(_options(args, JOB_OPTION_FLAGS),
                   **_options(args, CRON_OPTION_FLAGS))
    jobid = _adding(service, args, lambda: service.addCronJob(
        args.task, _input(args), startLater=args.start_later,
        now=_now(args), **schedule, **options))
    return _added(service, jobid, args, out)


def _added(service, jobid, args, out):
    job = service.jobs[jobid]
    if args.json:
        json.dump({'id': jobid, 'status': job.status}, out)
        print(file=out)
    else:
        print('added job %s (%s)%s' % (
            jobid, job.status, ': start it with "zodbtasks start %s"' % jobid
            if job.status == interfaces.STARTLATER else ''), file=out)
    return 0


# -- acting on one job or the service -----------------------------------------

def _act(method, done):
    def action(service, args, out):
        job = _job(service, args.jobid)
        if method == 'cancel' and job.status in interfaces.FINISHED:
            raise UsageError('job %s is %s already; only unfinished jobs can '
                             'be cancelled' % (job.id, job.status))
        if method == 'startJob' and job.status != interfaces.STARTLATER:
            # (startJob answers False here, as the original API did.)
            raise UsageError('job %s is %r, not waiting to start; only jobs '
                             'added with --start-later are started'
                             % (job.id, job.status))
        try:
            getattr(service, method)(job.id, now=_now(args))
        except (KeyError, ValueError) as error:
            raise UsageError(str(error).strip('"'))
        if args.json:
            json.dump({'id': job.id, 'status': job.status}, out)
            print(file=out)
        else:
            print('job %s %s: now %s' % (job.id, done, job.status), file=out)
        return 0
    return action


def _pauseOrResume(method, done, note):
    job_action = _act(method, done)

    def action(service, args, out):
        if args.jobid is not None:
            return job_action(service, args, out)
        getattr(service, method)(now=_now(args))
        if args.json:
            json.dump({'service': args.service.strip('/'),
                       'paused': service.paused}, out)
            print(file=out)
        else:
            print('service at /%s %s: %s' % (args.service.strip('/'), done,
                                             note), file=out)
        return 0
    return action


# -- bulk changes, in batches -------------------------------------------------

def _inBatches(session, jobids, change, size, retries=5):
    """Apply ``change(service, jobid)`` to ``jobids``, committing every
    ``size`` jobs; retry a batch that conflicts. Return how many changed."""
    changed = 0
    for start in range(0, len(jobids), size):
        batch = jobids[start:start + size]
        count = _committed(
            session, lambda service: sum(1 for jobid in batch
                                         if change(service, jobid)),
            retries, '%d job(s) were changed before it' % changed)
        changed += count
        if len(jobids) > size:
            log.info('%d of %d job(s) done', min(start + size, len(jobids)),
                     len(jobids))
    return changed


def _committed(session, work, retries, progress):
    """``work(service)`` in a fresh transaction, committed; retried when it
    conflicts, up to ``retries`` times. Returns what ``work`` returned."""
    for attempt in range(retries):
        service = session.fresh()
        try:
            result = work(service)
            session.commit()
            return result
        except TransientError:
            session.tm.abort()
    raise UsageError('gave up after %d conflicts in a batch; %s'
                     % (retries, progress))


def _matching(service, statuses, task=None, before=None):
    """Ids of the jobs with one of ``statuses`` (and ``task``, exactly),
    finished at or before ``before``, from the service's listings: it reads
    the jobs of those statuses only."""
    found = []
    for status in statuses:
        cursor = None
        while True:
            page, cursor = service.listJobs(status, task, 1000, cursor)
            found.extend(
                job.id for job in page if before is None
                or (job.completed or job.created or 0) <= before)
            if cursor is None:
                break
    return found


@_batched
def upgrade(session, args, out, retries=5):
    """Upgrade the layout, then count the uncounted jobs batch by batch,
    each batch in a transaction of its own."""
    service = session.fresh()
    upgraded = service.upgrade(now=_now(args))
    session.commit()
    total = batches = 0
    while True:
        counted, complete = _committed(
            session, lambda service: (service.buildCounts(limit=args.batch),
                                      service.countsComplete()),
            retries, 'run upgrade again to go on (%d job(s) counted so far)'
            % total)
        total += counted
        batches += 1
        if complete:
            break
        log.info('%d job(s) counted so far', total)
    if args.json:
        _dump({'upgraded': upgraded, 'counted': total, 'batches': batches,
               'complete': True}, out)
    else:
        print('service at /%s: %s; %d job(s) counted in %d batch(es); '
              'counts complete' % (
                  args.service.strip('/'),
                  'layout upgraded' if upgraded else 'layout up to date',
                  total, batches), file=out)
    return 0


@_batched
def requeue(session, args, out):
    _checkStatus(args.status, (interfaces.ERROR, interfaces.CANCELLED))
    now = _now(args)
    jobids = _matching(session.service, (args.status,), args.task)
    if args.dry_run:
        return _report(out, args, 'would requeue', len(jobids),
                       session.service, jobids)

    def change(service, jobid):
        job = service.jobs.get(jobid)
        if job is None or job.status != args.status:
            return False      # changed by someone else meanwhile
        service.retry(jobid, now=now)
        return True
    count = _inBatches(session, jobids, change, args.batch)
    return _report(out, args, 'requeued', count)


def _removeFinished(service, jobid):
    """Remove one finished job, if it still is (another process may have
    changed it meanwhile)."""
    job = service.jobs.get(jobid)
    if job is None or job.status not in interfaces.FINISHED:
        return False
    return service.remove(jobid)


@_batched
def clean(session, args, out):
    statuses = args.status or list(interfaces.FINISHED)
    now = _now(args)
    before = None if args.older_than is None else now - args.older_than
    jobids = _matching(session.service, statuses, args.task, before)
    if args.dry_run:
        return _report(out, args, 'would remove', len(jobids),
                       session.service, jobids, 'finished job(s)')
    count = _inBatches(session, jobids, _removeFinished, args.batch)
    return _report(out, args, 'removed', count, what='finished job(s)')


def _report(out, args, done, count, service=None, jobids=(),
            what='job(s)'):
    if args.json:
        json.dump({done.replace('would ', 'would-'): count,
                   'ids': list(jobids)} if service is not None
                  else {done: count}, out)
        print(file=out)
        return 0
    print('%s %d %s' % (done, count, what), file=out)
    if service is not None and jobids:
        shown = [service.jobs[i] for i in jobids[:args.limit]]
        table([[j.id, cut(j.task, 40), j.status, moment(j.completed),
                cut(j.error, 60)] for j in shown],
              ['id', 'task', 'status', 'finished', 'error'], out,
              right=('id',))
        if len(jobids) > len(shown):
            print('... and %d more' % (len(jobids) - len(shown)), file=out)
    return 0


# -- next ---------------------------------------------------------------------

def nextRuns(args):
    """``next``: the next fire times of an expression or of a job."""
    from zodbtasks import schedule as schedules
    after = _now(args) if args.after is None else _parseTime(args.after)
    if args.what.strip().isdigit():
        if not args.db or not args.service:
            raise UsageError('the next runs of a job need --db and --service')
        session = Session(args)
        try:
            job = _job(session.service, args.what)
            if not isinstance(job, CronJob):
                raise UsageError('job %s is not a cron job' % job.id)
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
            raise UsageError(str(error))
        times = schedules.next_times(compiled, after, args.n)
        zone = args.timezone
    if args.json:
        json.dump(times, sys.stdout)
        print()
        return 0
    for t in times:
        line = iso(t)
        if zone:
            from zoneinfo import ZoneInfo
            local = datetime.datetime.fromtimestamp(t, ZoneInfo(zone))
            line += '   %s %s' % (local.strftime('%Y-%m-%d %H:%M:%S'), zone)
        print(line)
    return 0


def _parseTime(text, flag='--after'):
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment_ = datetime.datetime.fromisoformat(text)
        except ValueError:
            raise UsageError('%s takes seconds since the epoch or an ISO '
                             'time such as 2026-03-29T01:30, not %r'
                             % (flag, text))
        if moment_.tzinfo is None:
            moment_ = moment_.replace(tzinfo=datetime.timezone.utc)
        seconds = moment_.timestamp()
    try:
        return checkMoment(seconds, flag)
    except ValueError as error:
        raise UsageError(str(error))


# -- the demo -----------------------------------------------------------------

def _demoLine(event, started):
    """The demo's line about a job event."""
    from zodbtasks import events
    job = event.job
    kind = type(event).__name__[3:].lower()
    detail = ''
    if isinstance(event, events.JobCompleted):
        detail = '-> %r' % (job.output,)
    elif isinstance(event, (events.JobFailed, events.JobRetried)):
        detail = '!! %s' % event.error
        if isinstance(event, events.JobRetried):
            detail += ' (retry at +%.0f s)' % (event.due - started)
    elif isinstance(event, events.JobMissed):
        detail = '%d missed, %s' % (event.count, event.action)
    return '%7.1f s  %-9s %-16s job %s %s' % (
        time.time() - started, kind, job.task, job.id, detail)


def demo(args):
    """Make a small database of jobs and run a worker on it, showing what
    happens. Run it again: the jobs are still there and go on."""
    from zodbtasks import _demo

    _demo.register()
    # The demo shows each job as it goes; the worker's own log would repeat it.
    logging.getLogger('zodbtasks').setLevel(logging.WARNING)
    db = connect.open_or_explain(args.db, create=True)
    out = sys.stdout
    started = time.time()
    status = None
    if out.isatty():
        from zodbtasks.display import StatusLine
        status = StatusLine(out, lambda: '  running: %.0f of %d s' % (
            time.time() - started, args.seconds))
    try:
        _demoJobs(db, args.db, out, started)
        _demoWorker(db, started + args.seconds,
                    _demoPrinter(out, status, started), status)
        _demoSummary(db, args.db, out, started)
    finally:
        db.close()
    return 0


def _demoJobs(db, name, out, started):
    """Open (or create) the demo's service at /tasks and add its jobs."""
    from zodbtasks import _demo
    from zodbtasks.service import TaskService
    with db.transaction() as conn:
        root = conn.root()
        fresh = 'tasks' not in root
        if fresh:
            root['tasks'] = TaskService()
        service = root['tasks']
        print('%s %s, service at /tasks with %d job(s)' % (
            'created' if fresh else 'opened', name,
            len(service.jobs)), file=out)
        _demo.addJobs(service, fresh, now=started)


def _demoPrinter(out, status, started):
    """The subscriber that prints a line about each job event, on the
    status line if there is one."""
    import threading
    lock = threading.Lock()

    def show(event):
        line = _demoLine(event, started)
        with lock:
            try:
                if status is not None:
                    status.print(line)
                else:
                    out.write(line + '\n')
                    out.flush()
            except OSError:
                pass    # the reader went away (a closed pipe): go on
    return show


def _demoWorker(db, deadline, show, status):
    """Run a worker on the demo's service until ``deadline`` (or Ctrl-C),
    with ``show`` subscribed to the events."""
    import threading

    import zope.event

    from zodbtasks.processor import MultiProcessor
    zope.event.subscribers.append(show)
    processor = MultiProcessor(db, ['tasks'], waitTime=0.2, maxThreads=2)
    thread = threading.Thread(target=processor, name='demo-worker',
                              daemon=True)
    thread.start()
    if status is not None:
        status.start()
    try:
        while time.time() < deadline and thread.is_alive():
            time.sleep(0.25)
    except KeyboardInterrupt:
        pass
    finally:
        processor.stop()
        thread.join(30)
        zope.event.subscribers.remove(show)
        if status is not None:
            status.stop()


def _demoSummary(db, name, out, started):
    """Print the demo's jobs by status."""
    with db.transaction() as conn:
        counts = {}
        for job in conn.root()['tasks'].jobs.values():
            counts[job.status] = counts.get(job.status, 0) + 1
    print('\njobs by status after %.0f s:' % (time.time() - started),
          file=out)
    table(sorted(counts.items()), ['status', 'jobs'], out,
          right=('jobs',))
    print('\nThe jobs live in %s: run the demo again and they go on.'
          % name, file=out)


# -- the parser ---------------------------------------------------------------

def _argError(message):
    return argparse.ArgumentTypeError(message)


def _numberArgument(check, accepted, kind=float):
    """An argparse type: a number that ``check`` accepts."""
    def convert(text):
        try:
            value = kind(text)
            check(value, 'it')
        except (TypeError, ValueError):
            raise _argError('%s, not %r' % (accepted, text))
        return value
    return convert


def _countCheck(value, name):
    if value < 0:
        raise ValueError(name)


#: ``--now``: what the service accepts as a time (see `zodbtasks.job`).
timeArgument = _numberArgument(checkMoment, (
    'takes a time in seconds since the epoch, from 0 to %d (%s UTC)'
    % (MAX_NOW, datetime.datetime.fromtimestamp(
        MAX_NOW, datetime.timezone.utc).strftime('%Y-%m-%d'))))

#: ``--delay`` and other lengths of time the service accepts.
delayArgument = _numberArgument(checkDuration, (
    'takes a number of seconds from 0 up to %d (100 years)' % MAX_DURATION))

countArgument = _numberArgument(_countCheck, 'takes a whole number, 0 or '
                                'more', kind=int)

_UNITS = {'s': 1, 'm': 60, 'min': 60, 'h': 3600, 'd': 86400, 'w': 604800}
_AGE = re.compile(r'^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)?\s*$')


def ageArgument(text):
    """``--older-than``: 90, 90s, 30m, 12h, 7d or 2w."""
    found = _AGE.match(text)
    if not found:
        raise _argError('takes a length of time such as 90s, 30m, 12h, 7d '
                        'or 2w, not %r' % text)
    seconds = float(found.group(1)) * _UNITS[found.group(2) or 's']
    if seconds > MAX_DURATION:
        raise _argError('takes at most 100 years, not %r' % text)
    return seconds


def positiveInt(text):
    try:
        value = int(text)
    except ValueError:
        raise _argError('not a whole number: %r' % text)
    if value <= 0:
        raise _argError('must be positive: %r' % text)
    return value


def addDatabaseOptions(parser, required=True):
    """``--db`` and ``--service``, with defaults from ``ZODBTASKS_DB`` and
    ``ZODBTASKS_SERVICE``."""
    db = os.environ.get('ZODBTASKS_DB') or None
    service = os.environ.get('ZODBTASKS_SERVICE') or None
    parser.add_argument(
        '--db', required=required and db is None, default=db, metavar='URI',
        help='the database: a zodburi URI (file://, zeo://, memory://, '
        'zconfig://, postgres:// with RelStorage), or a .conf or .fs path '
        '(default: $ZODBTASKS_DB%s)' % (', now %s' % db if db else ''))
    parser.add_argument(
        '--service', required=required and service is None, default=service,
        metavar='PATH', help='slash-separated keys from the root to the '
        'service, e.g. app/tasks (default: $ZODBTASKS_SERVICE%s)'
        % (', now %s' % service if service else ''))


def _jobOptions(p):
    p.add_argument('--input', metavar='JSON', help='the input, as JSON')
    p.add_argument('--tasks', action='append', default=[], metavar='MODULE',
                   help='a module that registers tasks, to check the name '
                   'against (repeat for more)')
    p.add_argument('--retries', type=countArgument, metavar='N',
                   help='runs to retry after a failure (default 0)')
    p.add_argument('--retry-delay', type=delayArgument, metavar='SECONDS',
                   help='wait before the first retry (default 30)')
    p.add_argument('--retry-backoff', type=float, metavar='FACTOR',
                   help='each further retry waits this many times longer '
                   '(default 2)')
    p.add_argument('--retry-max-delay', type=delayArgument, metavar='SECONDS',
                   help='the longest wait between retries (default 3600)')
    p.add_argument('--ttl', type=delayArgument, metavar='SECONDS',
                   help='keep the finished job this long (default: the '
                   "service's resultTTL)")
    p.add_argument('--lease', type=delayArgument, metavar='SECONDS',
                   help="a worker's lease on the job (default: the "
                   "service's)")
    p.add_argument('--timeout', type=delayArgument, metavar='SECONDS',
                   help='fail a run that takes longer')
    p.add_argument('--at-most-once', action='store_true',
                   help='never run it again after a worker died running it')
    p.add_argument('--start-later', action='store_true',
                   help='store it without running it until "zodbtasks '
                   'start JOBID"')
    p.add_argument('--queue', metavar='NAME', help='the queue it waits in '
                   '(default: the task\'s, else "default")')
    p.add_argument('--priority', type=int, metavar='0-9',
                   help='higher runs first within its queue (default: the '
                   'task\'s, else 5)')
    p.add_argument('--limit', metavar='NAME', help='the limit it shares '
                   'with other jobs (see "zodbtasks limit")')
    p.add_argument('--create', action='store_true',
                   help='create the database file and the service if they '
                   'do not exist')


def addCommands(commands):
    """Add the operator's subcommands to the ``zodbtasks`` parser."""
    for add in (_lookingCommands, _addingCommands, _cronCommand,
                _actingCommands, _bulkCommands, _upgradeCommand,
                _otherCommands, _workersCommand, _limitCommands):
        add(commands)


def _common(parser, required=True):
    addDatabaseOptions(parser, required)
    parser.add_argument('--json', action='store_true',
                        help='print JSON for scripts')
    parser.add_argument('--now', type=timeArgument, default=None,
                        help='the time to use, in seconds since the epoch '
                        '(default: the clock)')


_READ_ONLY = (' Reads a FileStorage read-only, beside running workers: it '
              'shows what was committed before it began.')


def _lookingCommands(commands):
    readOnly = _READ_ONLY

    p = commands.add_parser(
        'status', help='counts, overdue jobs, leases, next cron runs',
        description='Counts of jobs by status and what needs attention.'
        + readOnly)
    _common(p)
    p.add_argument('--limit', type=positiveInt, default=10,
                   help='rows per section (default 10)')
    p.set_defaults(func=_withService(status))

    p = commands.add_parser(
        'jobs', help='a table of jobs: running, waiting, then done',
        description='A table of jobs: running first, then queued (in the '
        'order workers take them), waiting (soonest first) and the others '
        '(latest change first). A page costs the same at any number of '
        'jobs.' + readOnly)
    _common(p)
    p.add_argument('--status', help='only jobs with this status')
    p.add_argument('--task', help='only jobs of this task (the exact name)')
    p.add_argument('--queue', help='only jobs of this queue')
    p.add_argument('--match', metavar='TEXT', help='only jobs whose task '
                   'name contains TEXT (looks at up to %d jobs per row)'
                   % MATCH_SCAN)
    p.add_argument('--limit', type=positiveInt, default=50,
                   help='at most this many (default 50)')
    p.set_defaults(func=_withService(jobs))

    p = commands.add_parser('show', help='every field of a job, its log and '
                            'traceback', description='Every field of a job, '
                            'its failures, log and traceback.' + readOnly)
    _common(p)
    p.add_argument('jobid')
    p.set_defaults(func=_withService(show))


def _workersCommand(commands):
    p = commands.add_parser(
        'workers', help='the workers, live and dead, from their records',
        description='The workers of a service, from the records they renew '
        'with their heartbeats: a worker is dead once it missed 3 renewals '
        '(of at most 5 s, or of its --heartbeat when shorter); records of '
        'workers dead or stopped for the service\'s workerDropAfter (1 h) '
        'are dropped by the workers. Reads a FileStorage read-only.')
    _common(p)
    p.set_defaults(func=_withService(workers))


def _addingCommands(commands):
    p = commands.add_parser('add', help='add a job', description='Add a '
                            'job that runs once, now or after --delay.')
    _common(p)
    p.add_argument('task')
    p.add_argument('--delay', type=delayArgument, metavar='SECONDS',
                   help='run once, this long after the next tick')
    _jobOptions(p)
    p.set_defaults(func=_withService(add, write=True))



def _cronCommand(commands):
    p = commands.add_parser(
        'cron', help='add a repeating job (cron, fields or interval)',
        description='Add a job that runs on a schedule: a cron expression '
        '(--cron), field lists (--minute ... --day-of-week) or an interval. '
        'Mind the days of the week: in --cron, 0 and 7 are Sunday and 1 is '
        'Monday (cron\'s convention); in --day-of-week, 0 is Monday and 6 is '
        'Sunday (Python\'s weekday()).')
    _common(p)
    p.add_argument('task')
    p.add_argument('--cron', metavar='EXPR', help="a cron expression, such "
                   "as '*/5 * * * *' (day of week: 0 or 7 = Sunday, 1 = "
                   "Monday, or MON-SUN)")
    for flag, name, meaning in FIELDS:
        p.add_argument('--' + flag.replace('_', '-'), dest=flag,
                       metavar='N,N,...', help='%s (%s)%s' % (
                           flag.replace('_', ' '), meaning,
                           '; --%s is the old spelling' % name
                           if name != flag else ''))
        if name != flag:
            p.add_argument('--' + name, dest=flag, help=argparse.SUPPRESS)
    p.add_argument('--interval', type=delayArgument, metavar='SECONDS',
                   help='run every this many seconds instead')
    p.add_argument('--timezone', metavar='ZONE', help='an IANA time zone '
                   'for --cron and the fields (default UTC)')
    p.add_argument('--start', metavar='TIME', help='no runs before this '
                   '(seconds since the epoch or an ISO time, UTC unless it '
                   'says)')
    p.add_argument('--end', metavar='TIME', help='no runs after this')
    p.add_argument('--misfire', choices=('coalesce', 'all', 'skip'),
                   help='what to do about missed runs (default coalesce)')
    p.add_argument('--misfire-grace', type=delayArgument, metavar='SECONDS',
                   help='how late a run may start under "skip" (default 60)')
    p.add_argument('--catch-up', type=positiveInt, metavar='N',
                   help='missed runs to make up under "all" (default 10)')
    p.add_argument('--overlap', choices=('wait', 'skip'),
                   help='a run due while the last one goes (default wait)')
    p.add_argument('--max-runs', type=positiveInt, metavar='N',
                   help='complete the job after this many runs')
    _jobOptions(p)
    p.set_defaults(func=_withService(cron, write=True))


#: Held-back jobs ``zodbtasks limits`` counts at most, per limit.
SHOWN_WAITING = 10000


def limits(service, args, out):
    """The service's limits: bounds, slots in use, jobs held back."""
    rows = []
    for name, limit in sorted(service.getLimits().items()):
        waiting = sum(1 for _ in itertools.islice(
            limit.waiting.keys(), SHOWN_WAITING + 1))
        rows.append({'name': name, 'concurrency': limit.concurrency,
                     'inUse': len(limit.holders), 'rate': limit.rate,
                     'nextStart': limit.nextStart if limit.rate else None,
                     'waiting': waiting if waiting <= SHOWN_WAITING
                     else '>%d' % SHOWN_WAITING})
    if args.json:
        _dump(rows, out)
        return 0
    if not rows:
        print('no limits (see "zodbtasks limit --help")', file=out)
        return 0
    table([[cut(r['name'], 40), r['concurrency'] or '-', r['inUse'],
            r['rate'] or '-', r['waiting']] for r in rows],
          ['limit', 'concurrency', 'in use', 'rate', 'held back'], out,
          right=('concurrency', 'in use', 'held back'))
    return 0


def setLimit(service, args, out):
    limit = service.getLimits().get(args.name)
    concurrency = None if limit is None else limit.concurrency
    rate = None if limit is None else limit.rate
    if args.concurrency is not None:
        concurrency = args.concurrency or None
    if args.rate is not None:
        rate = None if args.rate == 'none' else args.rate
    try:
        service.setLimit(args.name, concurrency=concurrency, rate=rate,
                         now=_now(args))
    except (TypeError, ValueError) as error:
        raise UsageError(str(error))
    print('limit %s: %s' % (args.name,
                            service.getLimits()[args.name].describe()),
          file=out)
    return 0


def _limitCommands(commands):
    p = commands.add_parser(
        'limits', help='the limits jobs share: bounds, slots in use, jobs '
        'held back', description='The concurrency and rate limits of the '
        'service.' + _READ_ONLY)
    _common(p)
    p.set_defaults(func=_withService(limits))

    p = commands.add_parser(
        'limit', help='set the bounds of a limit',
        description='Set how many jobs of a limit run at once across all '
        'workers (--concurrency, 0 for no bound) and how fast they start '
        '(--rate 10/s, 100/m, 1000/h, or none). Jobs join a limit with '
        '"zodbtasks add --limit NAME" or the limit option of the API.')
    _common(p)
    p.add_argument('name')
    p.add_argument('--concurrency', type=int, metavar='N')
    p.add_argument('--rate', metavar='RATE')
    p.set_defaults(func=_withService(setLimit, write=True))


def _actingCommands(commands):
    for name, method, done, helptext in [
            ('cancel', 'cancel', 'cancelled', 'cancel an unfinished job'),
            ('retry', 'retry', 'retried', 'run a failed or cancelled job '
             'again'),
            ('run-now', 'runNow', 'made due', 'run a waiting job now, once'),
            ('start', 'startJob', 'started', 'start a job added with '
             '--start-later')]:
        p = commands.add_parser(name, help=helptext)
        _common(p)
        p.add_argument('jobid')
        p.set_defaults(func=_withService(_act(method, done), write=True))

    for name, method, done, note, helptext in [
            ('pause', 'pause', 'paused', 'workers claim nothing until '
             '"zodbtasks resume"; jobs can still be added',
             'pause a job, or without JOBID the whole service'),
            ('resume', 'resume', 'resumed', 'workers claim jobs again',
             'resume a paused job, or without JOBID the service')]:
        p = commands.add_parser(name, help=helptext)
        _common(p)
        p.add_argument('jobid', nargs='?')
        p.set_defaults(func=_withService(
            _pauseOrResume(method, done, note), write=True))


def _bulkCommands(commands):
    def bulk(p):
        p.add_argument('--dry-run', action='store_true',
                       help='say which jobs, change nothing')
        p.add_argument('--batch', type=positiveInt, default=BATCH,
                       metavar='N', help='jobs per transaction (default %d)'
                       % BATCH)
        p.add_argument('--limit', type=positiveInt, default=20,
                       help='jobs listed by --dry-run (default 20)')

    p = commands.add_parser(
        'requeue', help='retry every failed (or cancelled) job',
        description='Give every job with --status (and --task) another run, '
        'committing in batches.')
    _common(p)
    p.add_argument('--status', required=True,
                   choices=(interfaces.ERROR, interfaces.CANCELLED))
    p.add_argument('--task', help='only jobs of this task (the exact name)')
    bulk(p)
    p.set_defaults(func=_withService(requeue, write=True))

    p = commands.add_parser(
        'clean', help='remove finished jobs',
        description='Remove finished jobs, committing in batches.')
    _common(p)
    p.add_argument('--status', action='append', choices=interfaces.FINISHED,
                   help='only this status (repeat for more; default all '
                   'finished)')
    p.add_argument('--task', help='only jobs of this task (the exact name)')
    p.add_argument('--older-than', type=ageArgument, metavar='AGE',
                   help='only jobs that finished at least this long ago: '
                   '90s, 30m, 12h, 7d, 2w')
    bulk(p)
    p.set_defaults(func=_withService(clean, write=True))


def _upgradeCommand(commands):
    p = commands.add_parser(
        'upgrade', help='bring the data of an older version up to date',
        description='Upgrade the layout of the service and count the jobs '
        'that an older version did not count, in batches of commits. '
        'Workers may run meanwhile; an interrupted upgrade goes on where '
        'it stopped when run again.')
    _common(p)
    p.add_argument('--batch', type=positiveInt, default=BATCH, metavar='N',
                   help='jobs per transaction (default %d)' % BATCH)
    p.set_defaults(func=_withService(upgrade, write=True))


def _otherCommands(commands):
    p = commands.add_parser('next', help='the next fire times of a cron '
                            'expression or a job')
    _common(p, required=False)
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
