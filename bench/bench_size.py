#!/usr/bin/env python
"""Bytes a job costs in Data.fs after a pack, against a plain record.

Run by hand from the repository root (it is not a test)::

    .venv/bin/python bench/bench_size.py            # 20,000 jobs a kind
    .venv/bin/python bench/bench_size.py --quick    # 1,000

For each kind of job -- queued, completed (run once, its outcome kept),
cron (a repeating job waiting for its next time) -- a fresh FileStorage
gets a service and that many jobs of the kind, is packed, and its size,
less that of the same service with no job, is divided by the number of
jobs. The peer is the smallest thing that would hold the same job: a
plain `persistent.Persistent` record with the task name, the input and a
status, in one LOBTree by id.
"""
import argparse
import os
import random
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'src'))

import persistent  # noqa: E402
import ZODB  # noqa: E402
import ZODB.FileStorage  # noqa: E402
import zope.component  # noqa: E402
from BTrees.LOBTree import LOBTree  # noqa: E402

import zodbtasks  # noqa: E402

T0 = 1764547200.0


class Record(persistent.Persistent):
    """The peer: a job as the least a queue must store."""

    def __init__(self, task, input):
        self.task = task
        self.input = input
        self.status = 'queued'


def echo(input):
    return input


def packedSize(path, fill, jobs, per=1000):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    try:
        with db.transaction() as conn:
            fill.setup(conn.root())
        for start in range(0, jobs, per):
            with db.transaction() as conn:
                for n in range(start, min(jobs, start + per)):
                    fill.add(conn.root(), n)
        fill.finish(db)
        db.pack()
        return os.path.getsize(path)
    finally:
        db.close()


class Peer:
    def setup(self, root):
        root['records'] = LOBTree()

    def add(self, root, n):
        root['records'][random.getrandbits(53)] = Record('echo', 'job %d' % n)

    def finish(self, db):
        pass


class Ours:
    def __init__(self, kind):
        self.kind = kind

    def setup(self, root):
        root['tasks'] = zodbtasks.TaskService()

    def add(self, root, n):
        service = root['tasks']
        if self.kind == 'cron':
            service.addCronJob('echo', 'job %d' % n, minute=(0, 30), now=T0)
        else:
            service.add('echo', 'job %d' % n, now=T0)

    def finish(self, db):
        if self.kind == 'queued':
            return
        while True:
            with db.transaction() as conn:
                service = conn.root()['tasks']
                ran = 0
                while ran < 1000 and service.processNext(T0 + 1):
                    ran += 1
            if ran < 1000:
                break
        if self.kind == 'cron':
            with db.transaction() as conn:
                # Placed at their first time; none ran yet.
                conn.root()['tasks'].claimNextJob(now=T0 + 1)


class Empty(Ours):
    def add(self, root, n):
        pass


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--jobs', type=int, default=20000)
    parser.add_argument('--quick', action='store_true')
    args = parser.parse_args(argv)
    jobs = 1000 if args.quick else args.jobs
    zope.component.provideUtility(zodbtasks.SimpleTask(echo), name='echo')
    workdir = tempfile.mkdtemp(prefix='zodbtasks-size-')
    try:
        def perJob(fill, name):
            base = packedSize(os.path.join(workdir, name + '-0.fs'),
                              Empty('none') if isinstance(fill, Ours)
                              else Peer(), 0)
            full = packedSize(os.path.join(workdir, name + '.fs'), fill, jobs)
            return (full - base) / jobs
        peer = perJob(Peer(), 'peer')
        print('%-28s %10s %10s' % ('bytes per job, %d jobs' % jobs,
                                   'bytes', 'vs record'))
        print('%-28s %10.0f %10s' % ('plain record in a LOBTree', peer, '1.00x'))
        for kind in ('queued', 'completed', 'cron'):
            size = perJob(Ours(kind), kind)
            print('%-28s %10.0f %9.2fx' % (kind, size, size / peer))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
