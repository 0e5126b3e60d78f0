#!/usr/bin/env python
"""The memory of a worker draining a large service, at the default cache.

Run by hand from the repository root (it is not a test)::

    .venv/bin/python bench/bench_memory.py                  # 1,000,000 jobs
    .venv/bin/python bench/bench_memory.py --quick          # 20,000

A FileStorage is filled with ``--jobs`` queued no-op jobs (100,000 to a
transaction, in a child process, so that its memory is not counted: job ids
are random, so every transaction of the fill rewrites most buckets of the
job mapping, and fewer, larger ones fill a million jobs in minutes). Then, for each
``--cache-size`` (400, ``ZODB.DB``'s default, and 10,000, that of
``zodbtasks worker`` on a path or a URI), a process of its own runs a
`SimpleProcessor` thread that drains ``--drain`` more of them, while the
process's resident memory (VmRSS) is read every second. The table gives it
before the worker starts, its peak, and at the end, next to the figure of
the peer: the same process holding an idle connection to the same
database.
"""
import argparse
import json
import os
import shutil
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


FILL_BATCH = 100000


def fill(path, jobs):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    with db.transaction() as conn:
        conn.root()['tasks'] = zodbtasks.TaskService()
    for start in range(0, jobs, FILL_BATCH):
        with db.transaction() as conn:
            service = conn.root()['tasks']
            for _ in range(start, min(jobs, start + FILL_BATCH)):
                service.add('noop', now=1764547200.0)
            conn.cacheMinimize()
    db.close()


def drain(path, cache_size, jobs):
    """In a process of its own: drain ``jobs`` more jobs of the service in
    ``path`` with a worker thread on a database keeping ``cache_size``
    objects a connection; its memory (MB) and time, as a dict."""
    from zodbtasks.processor import SimpleProcessor
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path), cache_size=cache_size)
    try:
        conn = db.open()
        first = conn.root()['tasks'].countJobs('completed')
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
            done = conn.root()['tasks'].countJobs('completed') - first
            tm.abort()
            if done >= jobs:
                break
        seconds = time.perf_counter() - begin
        worker.stop()
        thread.join(60)
        end = rss_mb()
        conn.close()
    finally:
        db.close()
    return {'cache': cache_size, 'idle': idle, 'before': before,
            'peak': peak, 'end': end, 'done': done, 'seconds': seconds}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--jobs', type=int, default=1000000)
    parser.add_argument('--drain', type=int, default=50000)
    parser.add_argument('--cache-size', default='400,10000',
                        help="comma-separated cache sizes to drain with, "
                        "one after the other: 400 is ZODB.DB's default, "
                        "10,000 zodburi's and zodbtasks worker's")
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--fill', metavar='PATH', help=argparse.SUPPRESS)
    parser.add_argument('--drain-in', metavar='PATH', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    zope.component.provideUtility(zodbtasks.SimpleTask(noop), name='noop')
    if args.fill:
        fill(args.fill, args.jobs)
        return
    if args.drain_in:
        print(json.dumps(drain(args.drain_in, int(args.cache_size),
                               args.drain)))
        return
    if args.quick:
        args.jobs, args.drain = 20000, 5000
    caches = [int(n) for n in args.cache_size.split(',') if n]
    workdir = tempfile.mkdtemp(prefix='zodbtasks-memory-')
    path = os.path.join(workdir, 'Data.fs')
    rows = []
    try:
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, '--fill', path, '--jobs',
                        str(args.jobs)], check=True)
        filled = time.perf_counter() - started
        size = os.path.getsize(path) / 1e6
        for cache in caches:
            out = subprocess.run(
                [sys.executable, __file__, '--drain-in', path, '--drain',
                 str(args.drain), '--cache-size', str(cache)],
                check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print('%d queued jobs (filled in %.0f s, Data.fs %.0f MB); a worker '
          'thread drains %d of them for each cache size, in a process of '
          'its own' % (args.jobs, filled, size, args.drain))
    print()
    header = ('cache (objects)', 'idle MB', 'before MB', 'peak MB', 'end MB',
              'peak - idle', 'drained/s')
    print('  '.join(header))
    print('  '.join('-' * len(h) for h in header))
    for row in rows:
        cells = ('%d' % row['cache'], '%.1f' % row['idle'],
                 '%.1f' % row['before'], '%.1f' % row['peak'],
                 '%.1f' % row['end'], '%.1f' % (row['peak'] - row['idle']),
                 '%.0f' % (row['done'] / row['seconds']))
        print('  '.join(c.rjust(len(h)) for c, h in zip(cells, header)))
    print()
    print('idle: the same process holding one idle connection to the '
          'database (the peer); before: with the worker made, not started')


if __name__ == '__main__':
    main()
