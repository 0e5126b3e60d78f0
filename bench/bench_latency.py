#!/usr/bin/env python
"""From the commit of an add to the start of its job, with an idle worker.

Run by hand from the repository root (it is not a test)::

    .venv/bin/python bench/bench_latency.py            # 200 jobs a scenario
    .venv/bin/python bench/bench_latency.py --quick    # 10, to see it works

Every scenario uses the default settings: the worker polls every second when
idle (``waitTime`` / ``--poll`` 1.0). A job is added in a transaction of its
own; the clock starts just before the commit (so the commit's own fsync is
counted) and stops when the task starts (``time.time()`` in the worker, on
the same machine). Between two adds the worker is left idle for a random
50-250 ms.

``FileStorage, thread``
    a `SimpleProcessor` thread in the process that adds, as in an
    application server: the commit rings the worker (`zodbtasks.doorbell`).
``FileStorage, thread, polling``
    the same with the doorbell silenced: what the poll alone gives.
``ZEO, worker process``
    a ZEO server and a ``zodbtasks worker`` process: the server's
    invalidations ring the worker.
``huey SqliteHuey, consumer``
    the peer, with its consumer's defaults (it polls, backing off from
    0.1 s to 10 s while idle).
"""
import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'src'))

import transaction  # noqa: E402
import ZODB  # noqa: E402
import ZODB.FileStorage  # noqa: E402

import zodbtasks  # noqa: E402
from zodbtasks import doorbell  # noqa: E402
from zodbtasks._testing import ZEOServer  # noqa: E402
from zodbtasks.processor import SimpleProcessor  # noqa: E402


def stamps(path):
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return dict(line.split() for line in f if line.strip())


def waitFor(path, label, timeout):
    deadline = time.monotonic() + timeout
    while True:
        found = stamps(path).get(label)
        if found is not None:
            return float(found)
        if time.monotonic() > deadline:
            raise RuntimeError('job %s did not start within %ss'
                               % (label, timeout))
        time.sleep(0.001)


def measure(add, path, jobs):
    """Latencies in seconds of ``jobs`` adds made by ``add(label)``, which
    returns the time.time() just before its commit."""
    found = []
    rng = random.Random(7)
    for n in range(jobs):
        time.sleep(rng.uniform(0.05, 0.25))
        label = 'j%d' % n
        before = add(label)
        found.append(waitFor(path, label, 30) - before)
    return found


def adder(db):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)

    def add(label):
        tm.begin()
        conn.root()['tasks'].add('stamp', label)
        before = time.time()
        tm.commit()
        return before
    return add, conn


def newService(db):
    with db.transaction() as conn:
        conn.root()['tasks'] = zodbtasks.TaskService()


def benchThread(workdir, jobs, ring=True):
    path = os.path.join(workdir, 'stamps-thread-%d' % ring)
    os.environ['ZODBTASKS_BENCH_STAMPS'] = path
    import _latency_tasks  # noqa: F401 (registers 'stamp')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(
        os.path.join(workdir, 'thread-%d.fs' % ring)))
    newService(db)
    silenced = doorbell.ring_after_commit
    if not ring:
        doorbell.ring_after_commit = lambda txn, db: None
    worker = SimpleProcessor(db, 'tasks')       # waitTime=1.0
    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    add, conn = adder(db)
    try:
        return measure(add, path, jobs)
    finally:
        doorbell.ring_after_commit = silenced
        worker.stop()
        thread.join(30)
        conn.close()
        db.close()


def benchZEO(workdir, jobs):
    path = os.path.join(workdir, 'stamps-zeo')
    env = dict(os.environ, ZODBTASKS_BENCH_STAMPS=path,
               PYTHONPATH=os.pathsep.join(
                   [HERE] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    with ZEOServer(os.path.join(workdir, 'zeo.fs')) as server:
        import ZEO
        db = ZEO.DB(server.address)
        newService(db)
        worker = subprocess.Popen(
            [sys.executable, '-m', 'zodbtasks', 'worker', '--db', server.uri,
             '--service', 'tasks', '--tasks', '_latency_tasks'],
            env=env, cwd=workdir, stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT)
        add, conn = adder(db)
        try:
            add('warm-up')
            waitFor(path, 'warm-up', 60)
            return measure(add, path, jobs)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
            conn.close()
            db.close()


def benchHuey(workdir, jobs):
    path = os.path.join(workdir, 'stamps-huey')
    os.environ['ZODBTASKS_BENCH_STAMPS'] = path
    os.environ['ZODBTASKS_BENCH_HUEY'] = os.path.join(workdir, 'huey.db')
    import _latency_tasks
    huey = _latency_tasks._makeHuey()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [HERE] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    consumer = shutil.which('huey_consumer',
                            path=os.path.dirname(sys.executable))
    command = ([consumer] if consumer else
               [sys.executable, '-m', 'huey.bin.huey_consumer'])
    process = subprocess.Popen(
        command + ['_latency_tasks.huey', '-w', '1', '-k', 'thread'],
        env=env, cwd=workdir, stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT)

    def add(label):
        before = time.time()
        huey.stamp(label)
        return before
    try:
        add('warm-up')
        waitFor(path, 'warm-up', 60)
        return measure(add, path, jobs)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--jobs', type=int, default=200)
    parser.add_argument('--quick', action='store_true',
                        help='10 jobs a scenario, no peer: that it works')
    parser.add_argument('--no-huey', action='store_true')
    args = parser.parse_args(argv)
    jobs = 10 if args.quick else args.jobs
    workdir = tempfile.mkdtemp(prefix='zodbtasks-latency-')
    rows = []
    try:
        rows.append(('FileStorage, thread', benchThread(workdir, jobs)))
        rows.append(('FileStorage, thread, polling',
                     benchThread(workdir, jobs, ring=False)))
        rows.append(('ZEO, worker process', benchZEO(workdir, jobs)))
        if not (args.quick or args.no_huey):
            try:
                import huey  # noqa: F401
            except ImportError:
                print('huey is not installed: pip install huey',
                      file=sys.stderr)
            else:
                rows.append(('huey SqliteHuey, consumer',
                             benchHuey(workdir, jobs)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    peer = dict(rows).get('huey SqliteHuey, consumer')
    print('%-30s %8s %8s %8s %8s  %s' % ('add -> start, %d jobs' % jobs,
                                          'p50 ms', 'p99 ms', 'max ms',
                                          'mean ms', 'huey p50 / p50'))
    for name, values in rows:
        p50 = percentile(values, 50)
        print('%-30s %8.1f %8.1f %8.1f %8.1f  %s' % (
            name, 1000 * p50, 1000 * percentile(values, 99),
            1000 * max(values), 1000 * statistics.mean(values),
            '%.2fx' % (percentile(peer, 50) / p50) if peer else ''))


if __name__ == '__main__':
    main()
