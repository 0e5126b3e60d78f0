#!/usr/bin/env python
"""What the operator's views cost as the number of jobs grows.

Run by hand from the repository root (it is not a test)::

    .venv/bin/python bench/bench_ops.py                 # 1k, 100k
    .venv/bin/python bench/bench_ops.py --sizes 1000,100000,1000000

For each size a FileStorage is filled with that many jobs (60% completed,
20% queued, 10% failed, 10% cancelled, over three tasks), then each view is
timed from a cold start (a new database object, as a new ``zodbtasks
status`` process sees it; the median of ``--repeat`` runs) and the objects
it loaded are counted:

``status``
    what ``zodbtasks status`` reads: the counts and the heads of the
    indexes (`zodbtasks.admin._survey`).
``/api/counts``
    the counts by status that every dashboard tab polls.
``full scan``
    counting by reading every job, as both did before the counts: the
    peer measured in the same run.
``list page``
    the dashboard's list of 100 jobs with status ``error``.
"""
import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'src'))

import transaction  # noqa: E402
import ZODB  # noqa: E402
import ZODB.FileStorage  # noqa: E402

import zodbtasks  # noqa: E402
from zodbtasks import admin  # noqa: E402
from zodbtasks import dashboard  # noqa: E402

TASKS = ('mail', 'report', 'resize')


def _register():
    import zope.component
    for name in TASKS:
        zope.component.provideUtility(
            zodbtasks.SimpleTask(lambda input: None), name=name)


def fill(path, size, per=20000):
    """A FileStorage at ``path`` with ``size`` jobs of mixed statuses."""
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    try:
        with db.transaction() as conn:
            conn.root()['tasks'] = zodbtasks.TaskService()
        done = 0
        while done < size:
            n = min(per, size - done)
            with db.transaction() as conn:
                service = conn.root()['tasks']
                finished = service._finished
                for i in range(n):
                    jobid = service.add(random.choice(TASKS), i, now=0)
                    share = random.random()
                    if share < 0.2:
                        continue                      # stays queued
                    job = service.jobs[jobid]
                    service._unindex(job)
                    status = ('completed' if share < 0.8 else
                              'error' if share < 0.9 else 'cancelled')
                    service._setStatus(job, status)
                    finished[status].insert(jobid)
            conn = None
            db.cacheMinimize()
            done += n
    finally:
        db.close()


def fullScan(service):
    counts = {}
    for job in service.jobs.values():
        counts[job.status] = counts.get(job.status, 0) + 1
    return counts


def listPage(service):
    app = dashboard.Dashboard.__new__(dashboard.Dashboard)
    return app._scan(service, 'error', None, 100)


VIEWS = [
    ('status', lambda service: admin._survey(service, 10, 10)),
    ('/api/counts', dashboard._statusCounts),
    ('full scan', fullScan),
    ('list page', listPage),
]


def measure(path, view, repeat):
    times, loads = [], []
    for _ in range(repeat):
        db = ZODB.DB(ZODB.FileStorage.FileStorage(path, read_only=True))
        try:
            storage = db.storage
            loaded = []
            original = storage.loadBefore

            def counting(oid, tid, loaded=loaded, original=original):
                loaded.append(oid)
                return original(oid, tid)
            storage.loadBefore = counting
            conn = db.open()
            service = conn.root()['tasks']
            service._p_activate()
            before = len(loaded)
            start = time.perf_counter()
            view(service)
            times.append(time.perf_counter() - start)
            loads.append(len(loaded) - before)
            conn.close()
        finally:
            db.close()
    return statistics.median(times), statistics.median(loads)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', default='1000,100000')
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(',') if n]
    _register()
    workdir = tempfile.mkdtemp(prefix='zodbtasks-bench-ops-')
    rows = []
    try:
        for size in sizes:
            path = os.path.join(workdir, 'ops-%d.fs' % size)
            start = time.perf_counter()
            fill(path, size)
            print('%d jobs stored in %.1f s' % (size, time.perf_counter()
                                                - start), file=sys.stderr)
            results = {name: measure(path, view, args.repeat)
                       for name, view in VIEWS}
            scan = results['full scan'][0]
            for name, (seconds, loads) in results.items():
                rows.append((size, name, seconds, loads, scan / seconds))
            transaction.abort()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print('%9s  %-12s  %10s  %14s  %14s' % ('jobs', 'view', 'ms',
                                            'objects loaded',
                                            'vs full scan'))
    for size, name, seconds, loads, ratio in rows:
        print('%9d  %-12s  %10.2f  %14d  %13.0fx' % (
            size, name, seconds * 1000, loads, ratio))


if __name__ == '__main__':
    main()
