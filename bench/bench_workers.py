#!/usr/bin/env python
"""Jobs per second through workers, from enqueue to a durable "completed".

Run by hand from the repository root (it is not a test)::

    .venv/bin/python bench/bench_workers.py
    .venv/bin/python bench/bench_workers.py --jobs 500 --processes 1,2
    .venv/bin/python bench/bench_workers.py --no-huey

Each scenario starts its workers, lets them poll an empty queue, then adds
``--jobs`` no-op jobs, **each in a transaction of its own** (as an
application adding jobs from its requests would), and stops the clock when
the last job's completion is committed. The rate is jobs / that time; the
enqueue column is how long adding took (the workers run meanwhile).

Then a second measure, the **drain**: ``--jobs`` jobs are queued before any
worker starts, the workers are started, and the rate is counted from the
first completed job to the last: how fast the workers empty a backlog,
without the enqueuing in the way. This is where more worker processes
should help.

Scenarios:

``FileStorage, 1 thread, cache N``
    the jobs are added and run in one process, as an application server
    with a processor thread does: a `SimpleProcessor` thread, on a database
    keeping N objects a connection (``--cache-size``: 400, ``ZODB.DB``'s
    default, and 10,000, zodburi's and ``zodbtasks worker``'s).
``ZEO, N processes``
    a ZEO server (a process of its own on 127.0.0.1), the jobs added by
    this process, ``zodbtasks worker --threads 1 --spread`` processes (the
    setting docs/workers.rst advises for several workers).
``huey SQLite, 1 worker``
    the same no-op task through huey's ``SqliteHuey`` and its consumer with
    one worker thread; the task returns a value so that huey stores a
    result, the counterpart of the "completed" status. Twice: with huey's
    default ``fsync=False`` (SQLite ``synchronous=OFF``: not durable across
    a power loss) and with ``fsync=True``. FileStorage and ZEO fsync every
    commit. The "vs huey" column compares with huey's default.

Polling: the workers poll every 10 ms when idle (``--poll``), huey's
consumer likewise (``-d 0.01 -m 0.01``).
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'src'))

import persistent  # noqa: E402
import transaction  # noqa: E402
import zope.component  # noqa: E402

from zodbtasks.interfaces import ITask  # noqa: E402


def noop(service, jobid, input):
    return None


def ledger(service, jobid, input):
    """Append "jobid pid" to the file ``input``: who ran what, and how often."""
    with open(input, 'a') as f:
        f.write('%d %d\n' % (jobid, os.getpid()))


# Worker processes import this module (--tasks bench_workers) to get 'noop'
# and 'ledger'.
zope.component.provideUtility(noop, ITask, name='noop')
zope.component.provideUtility(ledger, ITask, name='ledger')


def _makeHuey():
    path = os.environ.get('ZODBTASKS_BENCH_HUEY')
    if not path:
        return None
    from huey import SqliteHuey
    fsync = os.environ.get('ZODBTASKS_BENCH_HUEY_FSYNC') == '1'
    instance = SqliteHuey('bench', filename=path, fsync=fsync)

    @instance.task()
    def hueyNoop():
        return 1
    instance.noop = hueyNoop
    return instance


# The huey consumer loads ``bench_workers.huey``.
huey = _makeHuey()


def waitUntil(check, timeout, what):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError('%s did not happen within %ss' % (what, timeout))
        time.sleep(0.005)


def completedCount(db):
    """How many jobs the service says are completed (a fresh read)."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        tm.begin()
        return conn.root()['tasks'].countJobs('completed')
    finally:
        tm.abort()
        conn.close()


def addJobs(db, jobs, perTransaction=1):
    """Add ``jobs`` no-op jobs, ``perTransaction`` in each transaction."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        left = jobs
        while left:
            n = min(left, perTransaction)
            for attempt in range(10):
                try:
                    tm.begin()
                    service = conn.root()['tasks']
                    for _ in range(n):
                        service.add('noop')
                    tm.commit()
                    break
                except transaction.interfaces.TransientError:
                    tm.abort()
            else:
                raise RuntimeError('could not add a job for conflicts')
            left -= n
    finally:
        tm.abort()
        conn.close()


def enqueueAndWait(db, jobs, timeout):
    """Add ``jobs`` no-op jobs one transaction each; wait for completion.

    Returns (seconds to enqueue, seconds until all completed).
    """
    start = time.perf_counter()
    addJobs(db, jobs)
    enqueued = time.perf_counter() - start
    waitForCount(lambda: completedCount(db), jobs, timeout)
    return enqueued, time.perf_counter() - start


def cpuSeconds(pid):
    """User and system CPU seconds of process ``pid`` so far (Linux)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


#: Cores kept busy by each process while the last ZEO drain ran, by label.
BUSY = {}


def waitForCount(count, jobs, timeout, pids=None, label=None):
    """Poll ``count()`` until it reaches ``jobs``; return the rate from the
    first completion seen to the last (jobs/s). With ``pids`` (label ->
    pid), note in `BUSY` how many cores each process kept busy meanwhile.
    """
    deadline = time.monotonic() + timeout
    first = None
    while True:
        done = count()
        now = time.perf_counter()
        if first is None and done:
            first = (now, done)
            before = {k: cpuSeconds(p) for k, p in (pids or {}).items()}
        if done >= jobs:
            break
        if time.monotonic() > deadline:
            raise RuntimeError('only %d of %d jobs completed within %ss'
                               % (done, jobs, timeout))
        # Not more often: the polls take CPU from the workers.
        time.sleep(0.05)
    elapsed = now - first[0]
    if pids and elapsed > 0:
        after = {k: cpuSeconds(p) for k, p in pids.items()}
        if None not in after.values() and None not in before.values():
            BUSY[label] = {k: (after[k] - before[k]) / elapsed for k in pids}
    return (jobs - first[1]) / elapsed if elapsed > 0 else float('inf')


def newService(db):
    import zodbtasks
    with db.transaction() as conn:
        conn.root()['tasks'] = zodbtasks.TaskService()


def benchFileStorage(workdir, jobs, poll, timeout, drains=(False, True),
                     cache_size=400, **options):
    """(enqueue s, total s, drain jobs/s) with a processor thread, on a
    database keeping ``cache_size`` objects a connection."""
    import ZODB
    import ZODB.FileStorage
    from zodbtasks.processor import SimpleProcessor
    results = []
    for drain in drains:
        path = os.path.join(workdir, 'fs-%d.fs' % drain)
        for suffix in ('', '.index', '.lock', '.tmp'):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        db = ZODB.DB(ZODB.FileStorage.FileStorage(path),
                     cache_size=cache_size)
        try:
            newService(db)
            if drain:
                addJobs(db, jobs, perTransaction=100)
            proc = SimpleProcessor(db, 'tasks', waitTime=poll, **options)
            thread = threading.Thread(target=proc, daemon=True)
            thread.start()
            try:
                if drain:
                    results.append(waitForCount(
                        lambda: completedCount(db), jobs, timeout))
                else:
                    results.extend(enqueueAndWait(db, jobs, timeout))
            finally:
                proc.stop()
                thread.join(60)
        finally:
            db.close()
    return tuple(results)


def benchZEO(workdir, jobs, processes, poll, timeout):
    """(enqueue s, total s, drain jobs/s) with worker processes."""
    import ZEO
    from zodbtasks._testing import Workers
    from zodbtasks._testing import ZEOServer
    results = []
    env = {'PYTHONPATH': os.pathsep.join(
        [HERE] + [p for p in [os.environ.get('PYTHONPATH')] if p])}
    for drain in (False, True):
        name = 'zeo-%d-%d' % (processes, drain)
        with ZEOServer(os.path.join(workdir, name + '.fs')) as server:
            db = ZEO.DB(server.address)
            try:
                newService(db)
                if drain:
                    addJobs(db, jobs, perTransaction=100)
                logDir = os.path.join(workdir, name + '-logs')
                os.mkdir(logDir)
                with Workers(logDir, env=env) as workers:
                    for _ in range(processes):
                        workers.start('worker', '--db', server.uri,
                                      '--service', 'tasks',
                                      '--tasks', 'bench_workers',
                                      '--poll', str(poll), '--spread')
                    if drain:
                        pids = {'server': server.process.pid}
                        pids.update(('worker %d' % n, p.pid) for n, p in
                                    enumerate(workers.processes, 1))
                        results.append(waitForCount(
                            lambda: completedCount(db), jobs, timeout, pids,
                            processes))
                    else:
                        # Ready when each worker says it runs.
                        waitUntil(lambda: all(
                            'worker for /' in workers.log(p)
                            for p in workers.processes),
                            60, 'the workers starting')
                        results.extend(enqueueAndWait(db, jobs, timeout))
                    for process in workers.processes:
                        process.send_signal(signal.SIGTERM)
                    workers.wait(60)
            finally:
                db.close()
    return tuple(results)


class _Record(persistent.Persistent):
    """A job of the floor: task and status, nothing else."""

    def __init__(self, task):
        self.task = task
        self.status = 'queued'
        self.worker = None


def benchFloor(workdir, jobs, window, cache_size=10000):
    """Drain jobs/s of the least a durable ZODB queue does: a record per
    job in a LOBTree and a queue LOBTree of job ids; a claim of ``window``
    jobs writes their records and commits, each run is a transaction that
    reads its record, and the outcomes are written with the next claim.
    The commits are those of our worker with ``maxUnrecorded=window``
    (one claim and one record per ``window`` jobs), the objects written per
    job the fewest that any queue keeping a record per job can write (the
    record twice), and nothing is counted, listed, leased or checked."""
    import ZODB
    import ZODB.FileStorage
    from BTrees.LOBTree import LOBTree
    path = os.path.join(workdir, 'floor.fs')
    for suffix in ('', '.index', '.lock', '.tmp'):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path), cache_size=cache_size)
    try:
        with db.transaction() as conn:
            conn.root()['queue'] = queue = LOBTree()
            conn.root()['records'] = records = LOBTree()
        for start in range(0, jobs, 100):
            with db.transaction() as conn:
                queue, records = conn.root()['queue'], conn.root()['records']
                for jobid in range(start, min(jobs, start + 100)):
                    records[jobid] = _Record('noop')
                    queue[jobid] = jobid
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        start = time.perf_counter()
        ran = []
        while True:
            tm.begin()
            queue, records = conn.root()['queue'], conn.root()['records']
            for jobid in ran:
                records[jobid].status = 'completed'
            claimed = []
            while queue and len(claimed) < max(1, window):
                jobid = queue.minKey()
                del queue[jobid]
                records[jobid].status = 'processing'
                records[jobid].worker = 'floor'
                claimed.append(jobid)
            tm.commit()
            if not claimed:
                break
            ran = []
            for jobid in claimed:
                tm.begin()
                noop(None, jobid, records[jobid].task)
                tm.commit()
                ran.append(jobid)
        elapsed = time.perf_counter() - start
        conn.close()
    finally:
        db.close()
    return jobs / elapsed


def benchHuey(workdir, jobs, timeout, fsync):
    """(enqueue s, total s, drain jobs/s) with a consumer process."""
    results = []
    for drain in (False, True):
        results.extend(_benchHuey(workdir, jobs, timeout, fsync, drain))
    return tuple(results)


def _benchHuey(workdir, jobs, timeout, fsync, drain):
    path = os.path.join(workdir, 'huey-%d-%d.db' % (fsync, drain))
    for suffix in ('', '-wal', '-shm', '-journal'):
        # an earlier run's (the window curve measures huey too)
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    os.environ['ZODBTASKS_BENCH_HUEY'] = path
    os.environ['ZODBTASKS_BENCH_HUEY_FSYNC'] = '1' if fsync else '0'
    # Enqueue through the module the consumer loads, so that the task has
    # the same name (bench_workers.hueyNoop) on both sides.
    sys.path.insert(0, HERE)
    import bench_workers
    huey = bench_workers._makeHuey()
    if drain:
        for _ in range(jobs):
            huey.noop()
    logPath = os.path.join(workdir, 'huey-%d-%d.log' % (fsync, drain))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [HERE] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    consumer = shutil.which('huey_consumer',
                            path=os.path.dirname(sys.executable))
    command = ([consumer] if consumer else
               [sys.executable, '-m', 'huey.bin.huey_consumer'])
    with open(logPath, 'ab') as logFile:
        process = subprocess.Popen(
            command + ['bench_workers.huey', '-w', '1', '-k', 'thread',
                       '-d', '0.01', '-m', '0.01', '-C'],
            env=env, cwd=workdir, stdout=logFile, stderr=subprocess.STDOUT)
    try:
        if drain:
            return (waitForCount(huey.storage.result_store_size, jobs,
                                 timeout),)
        waitUntil(lambda: _read(logPath).count('started') > 0, 60,
                  'the huey consumer starting')
        start = time.perf_counter()
        for _ in range(jobs):
            huey.noop()
        enqueued = time.perf_counter() - start
        waitForCount(huey.storage.result_store_size, jobs, timeout)
        return enqueued, time.perf_counter() - start
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _read(path):
    with open(path, errors='replace') as f:
        return f.read().lower()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--jobs', type=int, default=2000)
    parser.add_argument('--processes', default='1,2,4',
                        help='numbers of ZEO worker processes to try')
    parser.add_argument('--poll', type=float, default=0.01)
    parser.add_argument('--timeout', type=float, default=600)
    parser.add_argument('--no-huey', action='store_true')
    parser.add_argument('--no-filestorage', action='store_true')
    parser.add_argument('--window', default='',
                        help='comma-separated values of maxUnrecorded (the '
                        'crash window) to measure the FileStorage drain '
                        'with, e.g. 0,1,4,8,16,32,64')
    parser.add_argument('--kills', type=int, default=0,
                        help='also run a kill -9 storm over ZEO with this '
                        'many kills (one every 0.4 s) at each --window value '
                        '(default: the default window) and print the jobs '
                        're-run per kill')
    parser.add_argument('--baseline', metavar='SRC',
                        help="a source tree (e.g. an older checkout's src) "
                        'whose worker the storm also measures, in the same '
                        'run, for comparison')
    parser.add_argument('--cache-size', default='400,10000',
                        help='comma-separated cache sizes (objects a '
                        'connection) of the in-process FileStorage rows; '
                        "400 is ZODB.DB's default, 10,000 zodburi's")
    parser.add_argument('--json', metavar='PATH',
                        help='also write the rows to PATH as JSON')
    parser.add_argument('--quick', action='store_true',
                        help='100 jobs, 1 ZEO worker, no peer: that it works')
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.processes, args.no_huey = 100, '1', True
        args.cache_size = '400'
    caches = [int(n) for n in args.cache_size.split(',') if n]
    rows = []
    workdir = tempfile.mkdtemp(prefix='zodbtasks-bench-')
    windows = [int(n) for n in args.window.split(',') if n]
    try:
        if windows:
            _windowCurve(workdir, args, windows)
        if args.kills:
            _stormTable(workdir, args, windows)
        for cache in caches * (not args.no_filestorage):
            rows.append(('FileStorage, 1 thread, cache %d' % cache,) +
                        benchFileStorage(workdir, args.jobs, args.poll,
                                         args.timeout, cache_size=cache))
            _show(rows[-1], args.jobs)
        for n in [int(n) for n in args.processes.split(',') if n]:
            rows.append(('ZEO, %d worker process%s' % (n, 'es' * (n > 1)),)
                        + benchZEO(workdir, args.jobs, n, args.poll,
                                   args.timeout))
            _show(rows[-1], args.jobs)
        if not args.no_huey:
            try:
                import huey as _  # noqa: F401
            except ImportError:
                print('huey is not installed: pip install huey',
                      file=sys.stderr)
            else:
                for fsync in (False, True):
                    rows.append(('huey SqliteHuey, 1 worker, fsync=%s'
                                 % fsync,) + benchHuey(
                                     workdir, args.jobs, args.timeout, fsync))
                    _show(rows[-1], args.jobs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        import json
        with open(args.json, 'w') as f:
            json.dump({'jobs': args.jobs, 'cpus': os.cpu_count(),
                       'rows': [{'scenario': label, 'enqueue': enqueued,
                                 'total': total, 'rate': args.jobs / total,
                                 'drain': drain}
                                for label, enqueued, total, drain in rows]},
                      f, indent=2)
    if not rows:
        return
    print()
    print('%d no-op jobs; each added in its own transaction ("jobs/s": '
          'enqueue to completed), or queued before the workers start '
          '("drain"); %d CPUs; Python %s'
          % (args.jobs, os.cpu_count(), sys.version.split()[0]))
    print()
    header = ('scenario', 'enqueue s', 'total s', 'jobs/s', 'vs huey',
              'drain/s', 'vs ZEO x1', 'vs huey')
    rates = {label: (args.jobs / total, drain)
             for label, enqueued, total, drain in rows}
    zeo1 = next((v[1] for k, v in rates.items() if k.startswith('ZEO, 1 ')),
                None)
    # Compared with huey as configured by default (fsync=False).
    huey = next((v for k, v in rates.items() if k.startswith('huey')),
                (None, None))
    table = [header]
    for label, enqueued, total, drain in rows:
        rate = args.jobs / total
        table.append((label, '%.2f' % enqueued, '%.2f' % total,
                      '%.0f' % rate,
                      '%.2fx' % (rate / huey[0]) if huey[0] else '',
                      '%.0f' % drain,
                      '%.2fx' % (drain / zeo1) if zeo1 and label.startswith(
                          'ZEO') else '',
                      '%.2fx' % (drain / huey[1]) if huey[1] else ''))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for n, row in enumerate(table):
        print('  '.join(cell.ljust(w) if i == 0 else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(row, widths))))
        if n == 0:
            print('  '.join('-' * w for w in widths))
    if BUSY:
        print()
        print('Cores busy while ZEO workers drained the backlog (of %d):'
              % os.cpu_count())
        for processes, busy in sorted(BUSY.items()):
            print('  %d worker process%s: %s; in all %.2f' % (
                processes, 'es' * (processes > 1), ', '.join(
                    '%s %.2f' % item for item in busy.items()),
                sum(busy.values())))


def _windowCurve(workdir, args, windows):
    """The drain of a FileStorage backlog against the crash window, and
    against huey's default drain measured in the same run."""
    cache = max(int(n) for n in args.cache_size.split(',') if n)
    peer = None
    if not args.no_huey:
        try:
            import huey as _  # noqa: F401
        except ImportError:
            print('huey is not installed: pip install huey', file=sys.stderr)
        else:
            peer = benchHuey(workdir, args.jobs, args.timeout, False)[-1]
    print('Crash window (maxUnrecorded): drain of %d queued no-op jobs by '
          'one in-process worker, cache %d; a kill -9 re-runs at most '
          'window + 1 jobs' % (args.jobs, cache))
    if peer:
        print("huey SqliteHuey's default (fsync=False) drained %.0f jobs/s "
              'in the same run' % peer)
    print('"floor": plain ZODB records with the same commits (see '
          '`benchFloor`)')
    print('%8s  %9s  %8s  %8s  %8s  %8s' % (
        'window', 'drain/s', 'vs 64', 'vs huey', 'floor/s', 'vs floor'))
    rates, floors = {}, {}
    for window in windows:
        rates[window] = benchFileStorage(
            workdir, args.jobs, args.poll, args.timeout, drains=(True,),
            cache_size=cache, maxUnrecorded=window)[0]
        floors[window] = benchFloor(workdir, args.jobs, window, cache)
    top = rates.get(64) or max(rates.values())
    for window in windows:
        print('%8d  %9.0f  %7.2fx  %8s  %8.0f  %7.2fx' % (
            window, rates[window], rates[window] / top,
            '%.2fx' % (rates[window] / peer) if peer else '',
            floors[window], rates[window] / floors[window]))
    print()


def killStorm(workdir, jobs, kills, window=None, src=None, interval=0.4,
              slots=3, warm=32, timeout=180):
    """SIGKILL a ZEO worker every ``interval`` s, ``kills`` times, then drain
    with a worker that is not killed. Return the jobs run more than once by
    each killed worker, and whether every job completed.

    A victim is a worker that has run ``warm`` jobs (so that it dies at full
    speed); ``window`` is its --max-unrecorded (None: its default). ``src``
    runs the workers from another source tree.
    """
    import collections
    import ZEO
    from zodbtasks._testing import Workers
    from zodbtasks._testing import ZEOServer
    name = 'storm-%s-%s' % (window, abs(hash(src)))
    path = os.path.join(workdir, name + '.ledger')
    open(path, 'w').close()
    paths = [HERE] + ([src] if src else []) + [
        p for p in [os.environ.get('PYTHONPATH')] if p]
    env = {'PYTHONPATH': os.pathsep.join(paths)}

    def runsBy():
        counts = collections.Counter()
        with open(path) as f:
            for line in f:
                if line.endswith('\n'):
                    counts[int(line.split()[1])] += 1
        return counts

    with ZEOServer(os.path.join(workdir, name + '.fs')) as server:
        db = ZEO.DB(server.address)
        try:
            tm = transaction.TransactionManager()
            conn = db.open(transaction_manager=tm)
            with tm:
                import zodbtasks
                conn.root()['tasks'] = zodbtasks.TaskService()
            for start in range(0, jobs, 500):
                with tm:
                    service = conn.root()['tasks']
                    for _ in range(min(500, jobs - start)):
                        service.add('ledger', path)
            logDir = os.path.join(workdir, name + '-logs')
            os.mkdir(logDir)
            args = ['worker', '--db', server.uri, '--service', 'tasks',
                    '--tasks', 'bench_workers', '--threads', '2',
                    '--lease', '3', '--poll', '0.05']
            if window is not None:
                args += ['--max-unrecorded', str(window)]
            killed = []
            with Workers(logDir, env=env) as workers:
                live = [workers.start(*args) for _ in range(slots)]
                tick = time.monotonic()
                while len(killed) < kills:
                    tick += interval
                    time.sleep(max(0.0, tick - time.monotonic()))
                    waitUntil(lambda: any(runsBy()[p.pid] >= warm
                                          for p in live), 60,
                              'a worker running %d jobs' % warm)
                    counts = runsBy()
                    victim = next(p for p in live if counts[p.pid] >= warm)
                    live.remove(victim)
                    victim.kill()
                    victim.wait(10)
                    killed.append(victim.pid)
                    live.append(workers.start(*args))
                    tick = max(tick, time.monotonic() - interval / 2)
                for victim in live:
                    victim.kill()
                    victim.wait(10)
                    killed.append(victim.pid)
                final = workers.start(*(args + ['--until-idle']))
                final.wait(timeout)
            runs = collections.defaultdict(list)
            with open(path) as f:
                for line in f:
                    jobid, pid = map(int, line.split())
                    runs[jobid].append(pid)
            tm.begin()
            service = conn.root()['tasks']
            complete = (len(runs) == jobs and all(
                service.getStatus(i) == 'completed' for i in runs))
            tm.abort()
            conn.close()
        finally:
            db.close()
    lostBy = collections.Counter(pid for pids in runs.values()
                                 for pid in pids[:-1])
    return [lostBy.get(pid, 0) for pid in killed], complete


def _stormTable(workdir, args, windows):
    """Jobs re-run per kill at each window, and for --baseline's code."""
    import statistics
    print('kill -9 storm over ZEO: %d kills, one every 0.4 s, 2 threads per '
          'worker, %d ledger jobs' % (args.kills, args.jobs))
    print('%-24s  %9s  %9s  %9s  %s' % ('code, window', 'mean/kill',
                                       'most/kill', 'all done', 'per kill'))
    cases = [('this code, %s' % (w if w is not None else 'default'), w, None)
             for w in (windows or [None])]
    if args.baseline:
        cases.append(('baseline (%s)' % args.baseline, None, args.baseline))
    for label, window, src in cases:
        perKill, complete = killStorm(workdir, args.jobs, args.kills,
                                      window=window, src=src)
        print('%-24s  %9.1f  %9d  %9s  %s' % (
            label, statistics.mean(perKill), max(perKill),
            'yes' if complete else 'NO', perKill))
    print()


def _show(row, jobs):
    print('%-40s %6.2fs enqueue, %6.2fs total, %5.0f jobs/s, drain %5.0f/s'
          % (row[0], row[1], row[2], jobs / row[2], row[3]),
          file=sys.stderr)


if __name__ == '__main__':
    main()
