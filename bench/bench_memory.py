#!/usr/bin/env python
"""The memory of a worker draining a large service, at the default cache.

Run by hand from the repository root (it is not a test)::

    .venv/bin/python bench/bench_memory.py                  # 1,000,000 jobs
    .venv/bin/python bench/bench_memory.py --quick          # 20,000

A FileStorage is filled with ``--jobs`` queued no-op jobs (10,000 to a
transaction, in a child process, so that its memory is not counted). Then a
`SimpleProcessor` thread in this process, on a ``ZODB.DB`` with its default
cache (``cache_size`` 400 objects per connection), drains ``--drain`` of
them, while the process's resident memory (VmRSS) is read every second. The
table gives it before the worker starts, its peak, and at the end, next to
the same figures of the peer: this process holding an idle connection to
the same database.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'src'))

import transaction  # noqa: E402
import ZODB  # noqa: E402
import ZODB.FileStorage  # noqa: E402
import zope.component  # noqa: E402

import zodbtasks  # noqa: E402


def noop(input):
    return None


def rss_mb():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def fill(path, jobs):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    with db.transaction() as conn:
        conn.root()['tasks'] = zodbtasks.TaskService()
    for start in range(0, jobs, 10000):
        with db.transaction() as conn:
            service = conn.root()['tasks']
            for _ in range(start, min(jobs, start + 10000)):
                service.add('noop', now=1764547200.0)
            conn.cacheMinimize()
    db.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--jobs', type=int, default=1000000)
    parser.add_argument('--drain', type=int, default=50000)
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--fill', metavar='PATH', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    zope.component.provideUtility(zodbtasks.SimpleTask(noop), name='noop')
    if args.fill:
        fill(args.fill, args.jobs)
        return
    if args.quick:
        args.jobs, args.drain = 20000, 5000
    workdir = tempfile.mkdtemp(prefix='zodbtasks-memory-')
    path = os.path.join(workdir, 'Data.fs')
    started = time.perf_counter()
    subprocess.run([sys.executable, __file__, '--fill', path, '--jobs',
                    str(args.jobs)], check=True)
    filled = time.perf_counter() - started
    size = os.path.getsize(path) / 1e6
    from zodbtasks.processor import SimpleProcessor
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    try:
        conn = db.open()
        conn.root()['tasks'].countJobs()
        idle = rss_mb()
        conn.close()
        worker = SimpleProcessor(db, 'tasks', waitTime=0.05)
        thread = threading.Thread(target=worker, daemon=True)
        peak = before = rss_mb()
        thread.start()
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        begin = time.perf_counter()
        while True:
            time.sleep(1)
            peak = max(peak, rss_mb())
            tm.begin()
            done = conn.root()['tasks'].countJobs('completed')
            tm.abort()
            if done >= args.drain:
                break
        seconds = time.perf_counter() - begin
        worker.stop()
        thread.join(60)
        end = rss_mb()
        conn.close()
    finally:
        db.close()
        for name in os.listdir(workdir):
            os.remove(os.path.join(workdir, name))
        os.rmdir(workdir)
    print('%d queued jobs (filled in %.0f s, Data.fs %.0f MB); %d drained in'
          ' %.0f s' % (args.jobs, filled, size, done, seconds))
    print('%-40s %8s' % ('resident memory', 'MB'))
    print('%-40s %8.1f' % ('this process, one idle connection', idle))
    print('%-40s %8.1f' % ('worker: before it starts', before))
    print('%-40s %8.1f' % ('worker: peak while draining', peak))
    print('%-40s %8.1f' % ('worker: at the end', end))
    print('%-40s %8.1f' % ('peak less idle', peak - idle))


if __name__ == '__main__':
    main()
