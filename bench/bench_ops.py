#!/usr/bin/env python
"""What the operator's views cost as the number of jobs grows.

Run by hand from the repository root (it is not a test)::

    .venv/bin/python bench/bench_ops.py                 # 1k, 100k
    .venv/bin/python bench/bench_ops.py --sizes 1000,100000,1000000
    .venv/bin/python bench/bench_ops.py --quick         # small, for CI

For each size a FileStorage is filled with that many jobs (60% completed,
20% queued, 10% failed, 10% cancelled, over three tasks), then each view is
timed from a cold start (a new database object, as a new ``zodbtasks
status`` process sees it; the median of ``--repeat`` runs) and the objects
it loaded are counted. The jobs are added with ``service.add``; those that
finish are moved by the service's own ``_unindex`` and ``_finish`` (what a
run or a cancel ends with), so that the counts and listings are the
service's. Before timing, the smallest size is checked: every page of
``listJobs`` equals a full scan and ``countJobs`` a full count.

``status``
    what ``zodbtasks status`` reads: the counts and the heads of the
    indexes (`zodbtasks.admin._survey`).
``/api/counts``
    the counts by status that every dashboard tab polls (the WSGI app).
``/jobs page``
    the dashboard's jobs page, 100 jobs of every status, rendered.
``/jobs?status=error``
    the same page filtered to the failed jobs.
``listJobs(completed)``, ``listJobs(error, task)``, ``listJobs()``
    a page of 100 from `listJobs`: by status, by status and task, with no
    filter.
``jobs --status error``
    ``zodbtasks jobs --status error --limit 100`` (`zodbtasks.admin.jobs`),
    its table printed to a string; ``... --json``, the same jobs as JSON.
``full scan``
    counting by reading every job, as ``status`` and ``/api/counts`` did
    before the counts: the peer of the count rows, measured in the same run.
``scan page``
    a page of 100 failed jobs found by reading every job
    (``zodbtasks.catalog.scan``, what `listJobs` does until the listings of an
    older layout are built, and what the list page did before them): the
    peer of the page rows.

The ratio column compares each count row (``status``, ``/api/counts``)
with the full scan and each page row with the scan page.
"""
import argparse
import io
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
import webob  # noqa: E402
import ZODB  # noqa: E402
import ZODB.FileStorage  # noqa: E402

import zodbtasks  # noqa: E402
from zodbtasks import admin  # noqa: E402
from zodbtasks import cli  # noqa: E402
from zodbtasks import interfaces  # noqa: E402
from zodbtasks.catalog import scan  # noqa: E402
from zodbtasks.dashboard import make_app  # noqa: E402

TASKS = ('mail', 'report', 'resize')
#: The time the first job is added; each one after it 10 ms later.
T0 = 1.7e9
STEP = 0.01
NOW = T0 + 86400 * 30


def _register():
    import zope.component
    for name in TASKS:
        zope.component.provideUtility(
            zodbtasks.SimpleTask(lambda input: None), name=name)


def fill(path, size, per=20000, seed=0):
    """A FileStorage at ``path`` with ``size`` jobs of mixed statuses."""
    rng = random.Random(seed)
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    try:
        with db.transaction() as conn:
            conn.root()['tasks'] = zodbtasks.TaskService()
        done = 0
        while done < size:
            n = min(per, size - done)
            with db.transaction() as conn:
                service = conn.root()['tasks']
                for i in range(done, done + n):
                    now = T0 + i * STEP
                    jobid = service.add(rng.choice(TASKS), i, now=now)
                    share = rng.random()
                    if share < 0.2:
                        continue                      # stays queued
                    job = service.jobs[jobid]
                    status = ('completed' if share < 0.8 else
                              'error' if share < 0.9 else 'cancelled')
                    # What the end of a run (or a cancel) does to a job.
                    service._indexes.unindex(job)
                    service._parts.transitions.finish(job, status,
                                                      now + STEP / 2)
            conn = None
            db.cacheMinimize()
            done += n
    finally:
        db.close()


# -- checks: the listings and counts are the service's own -------------------

def _allPages(service, **filters):
    found, cursor = [], None
    while True:
        page, cursor = service.listJobs(limit=37, cursor=cursor, **filters)
        found.extend(job.id for job in page)
        if cursor is None:
            return found


def check(path):
    """Every page of listJobs equals a full scan, countJobs a full count."""
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path, read_only=True))
    try:
        conn = db.open()
        service = conn.root()['tasks']
        assert service.listingComplete() and service.countsComplete()
        jobs = list(service.jobs.values())
        for status in (None,) + interfaces.STATUSES:
            for task in (None,) + TASKS:
                want = [j for j in jobs if status in (None, j.status)
                        and task in (None, j.task)]
                assert service.countJobs(status, task) == len(want), (
                    status, task, service.countJobs(status, task), len(want))
                listed = _allPages(service, status=status, task=task)
                if status == interfaces.PROCESSING:
                    assert listed == [], listed
                    continue
                assert len(listed) == len(set(listed)), (status, task)
                assert set(listed) == {j.id for j in want}, (status, task)
                scanned = scan(
                    service.jobs, interfaces.LISTING_ORDER if status is None
                    else (status,), task, None, len(jobs) + 1, None)[0]
                assert listed == [j.id for j in scanned], (status, task)
        conn.close()
    finally:
        db.close()


# -- the views ---------------------------------------------------------------

def fullScan(db, service):
    counts = {}
    for job in service.jobs.values():
        counts[job.status] = counts.get(job.status, 0) + 1
    return counts


def scanPage(db, service):
    return scan(service.jobs, ('error',), None, None, 100, None)


def _get(url):
    def view(db, service):
        response = webob.Request.blank(url).get_response(make_app(db, 'tasks'))
        assert response.status_int == 200, (url, response.status)
        return response.body
    return view


def _cliJobs(*options):
    def view(db, service):
        args = cli.buildParser(['jobs']).parse_args(
            ['jobs', '--db', 'unused.fs', '--service', 'tasks', '--status',
             'error', '--limit', '100'] + list(options))
        out = io.StringIO()
        assert admin.jobs(service, args, out) == 0
        assert out.getvalue().count('\n') > 20
        return out.getvalue()
    return view


#: (name, view, peer): each row's ratio is to its peer's time.
VIEWS = [
    ('status', lambda db, s: admin._survey(s, NOW, 10), 'full scan'),
    ('/api/counts', _get('/api/counts'), 'full scan'),
    ('full scan', fullScan, 'full scan'),
    ('/jobs page', _get('/jobs'), 'scan page'),
    ('/jobs?status=error', _get('/jobs?status=error'), 'scan page'),
    ('listJobs(completed)',
     lambda db, s: s.listJobs('completed', limit=100), 'scan page'),
    ('listJobs(error, task)',
     lambda db, s: s.listJobs('error', task='mail', limit=100), 'scan page'),
    ('listJobs()', lambda db, s: s.listJobs(limit=100), 'scan page'),
    ('jobs --status error', _cliJobs(), 'scan page'),
    ('  ... --json', _cliJobs('--json'), 'scan page'),
    ('scan page', scanPage, 'scan page'),
]
SCANS = ('full scan', 'scan page')


def measure(path, view, repeat, warm=True):
    """(median seconds, median objects loaded) of ``view``; with
    ``warm``, a first run not counted, as a long-running dashboard has its
    templates compiled."""
    times, loads = [], []
    for n in range(repeat + warm):
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
            # The dashboard opens its own connection: the pool gives it
            # this one back, with the root and the service loaded.
            conn.close()
            conn = db.open()
            service = conn.root()['tasks']
            before = len(loaded)
            start = time.perf_counter()
            view(db, service)
            if n >= warm:
                times.append(time.perf_counter() - start)
                loads.append(len(loaded) - before)
            transaction.abort()
            conn.close()
        finally:
            db.close()
    return statistics.median(times), statistics.median(loads)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', default='1000,100000')
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--scan-repeat', type=int, default=None,
                        help='runs of the two scans above 100,000 jobs '
                        '(default: --repeat; each is a minute at 1M)')
    parser.add_argument('--quick', action='store_true',
                        help='1,000 and 5,000 jobs, 1 run each: a smoke '
                        'test, for CI')
    parser.add_argument('--keep', metavar='DIR',
                        help='fill (or reuse) the FileStorages in DIR and '
                        'keep them')
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeat = '1000,5000', 1
    sizes = [int(n) for n in args.sizes.split(',') if n]
    _register()
    workdir = args.keep or tempfile.mkdtemp(prefix='zodbtasks-bench-ops-')
    os.makedirs(workdir, exist_ok=True)
    rows = []
    try:
        for n, size in enumerate(sizes):
            path = os.path.join(workdir, 'ops-%d.fs' % size)
            if not os.path.exists(path):
                start = time.perf_counter()
                fill(path, size)
                print('%d jobs stored in %.1f s' % (
                    size, time.perf_counter() - start), file=sys.stderr,
                    flush=True)
            if n == 0:
                start = time.perf_counter()
                check(path)
                print('%d jobs: listJobs pages equal a full scan, countJobs '
                      'a full count (%.1f s)' % (
                          size, time.perf_counter() - start),
                      file=sys.stderr, flush=True)
            results = {}
            for name, view, peer in VIEWS:
                repeat = args.repeat
                if name in SCANS and size > 100000 and args.scan_repeat:
                    repeat = args.scan_repeat
                results[name] = measure(path, view, repeat,
                                        warm=name not in SCANS)
                print('  %9d  %-22s %10.2f ms' % (
                    size, name, results[name][0] * 1000), file=sys.stderr,
                    flush=True)
            for name, view, peer in VIEWS:
                seconds, loads = results[name]
                rows.append((size, name, seconds, loads,
                             results[peer][0] / seconds))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print('%9s  %-22s  %10s  %14s  %12s' % ('jobs', 'view', 'ms',
                                            'objects loaded', 'vs its scan'))
    for size, name, seconds, loads, ratio in rows:
        print('%9d  %-22s  %10.2f  %14d  %12s' % (
            size, name, seconds * 1000, loads,
            ('%.1fx' if ratio < 10 else '%.0fx') % ratio))


if __name__ == '__main__':
    main()
