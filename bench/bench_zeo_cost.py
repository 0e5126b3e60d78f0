#!/usr/bin/env python
"""What a job costs the ZEO server and its workers, next to older code.

Run by hand from the repository root (it is not a test)::

    .venv/bin/python bench/bench_zeo_cost.py
    git archive 02aa930 src bench | tar -x -C /tmp/old
    .venv/bin/python bench/bench_zeo_cost.py --baseline /tmp/old/src --runs 3

Each run is the drain of `bench_workers.py`: a ZEO server on a FileStorage
(a process of its own, on 127.0.0.1), ``--jobs`` no-op jobs queued before
``--processes`` worker processes (``zodbtasks worker --spread``) start, and
the rate counted from the first completion to the last. Meanwhile the CPU
time of the server and of each worker is read from /proc: CPU per job is
that time (the server's; all the workers' together) over the jobs
completed in the window. The workers count the
conflicts they retry, by where they met them (see `_zeo_cost_tasks`):
``claim`` is the claim transaction, which also records the outcomes of the
jobs run since the last claim; ``run`` a job's own transaction; the others
are named after their step.

With ``--baseline SRC`` (the ``src`` of an older tree, beside its own
``bench``), the runs alternate between this tree and the baseline, each in
a process of its own, so that both meet the same load on the machine. The
server, the workers and the process adding the jobs all run the code they
measure (the server resolves conflicts with it).
"""
import argparse
import glob
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), 'src')


def drain(src, jobs, processes, poll):
    """One drain with the code in ``src``: a dict of what it measured."""
    sys.path.insert(0, src)
    os.environ['PYTHONPATH'] = src      # for the ZEO server
    import ZEO
    import zodbtasks
    if not os.path.abspath(zodbtasks.__file__).startswith(src):
        raise RuntimeError('imported zodbtasks from %s, not from %s'
                           % (zodbtasks.__file__, src))
    from zodbtasks._testing import Workers
    from zodbtasks._testing import ZEOServer
    # That tree's own bench_workers: how it counts completed jobs.
    sys.path.insert(0, os.path.join(os.path.dirname(src), 'bench'))
    import bench_workers
    work = tempfile.mkdtemp(prefix='zodbtasks-bench-zeo-')
    try:
        with ZEOServer(os.path.join(work, 'Data.fs')) as server:
            db = ZEO.DB(server.address)
            try:
                bench_workers.newService(db)
                bench_workers.addJobs(db, jobs, perTransaction=100)
                logs = os.path.join(work, 'logs')
                os.mkdir(logs)
                env = {'PYTHONPATH': HERE + os.pathsep + src,
                       'ZODBTASKS_BENCH_CONFLICTS':
                       os.path.join(work, 'conflicts')}
                with Workers(logs, env=env) as workers:
                    for _ in range(processes):
                        workers.start('worker', '--db', server.uri,
                                      '--service', 'tasks',
                                      '--tasks', '_zeo_cost_tasks',
                                      '--poll', str(poll), '--spread')
                    pids = {'server': server.process.pid}
                    pids.update(('worker %d' % n, p.pid) for n, p in
                                enumerate(workers.processes, 1))
                    rate = bench_workers.waitForCount(
                        lambda: bench_workers.completedCount(db), jobs, 600,
                        pids, 'drain')
                    busy = bench_workers.BUSY['drain']
                    for process in workers.processes:
                        process.send_signal(signal.SIGTERM)
                    workers.wait(60)
            finally:
                db.close()
        conflicts = {}
        for path in glob.glob(os.path.join(work, 'conflicts.*')):
            with open(path) as f:
                for where, n in json.load(f).items():
                    conflicts[where] = conflicts.get(where, 0) + n
    finally:
        shutil.rmtree(work, ignore_errors=True)
    workersBusy = sum(v for k, v in busy.items() if k != 'server')
    with open('/proc/loadavg') as f:
        load = f.read().split()[:3]
    return {'src': src, 'rate': rate, 'busy': busy,
            'server_ms': busy['server'] / rate * 1000,
            'worker_ms': workersBusy / rate * 1000,
            'conflicts': conflicts, 'load': load}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--jobs', type=int, default=2000)
    parser.add_argument('--processes', type=int, default=2)
    parser.add_argument('--poll', type=float, default=0.01)
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--baseline', metavar='SRC',
                        help="an older tree's src to measure in turn")
    parser.add_argument('--one', metavar='SRC', help=argparse.SUPPRESS)
    parser.add_argument('--json', metavar='PATH',
                        help='also write the runs to PATH as JSON')
    parser.add_argument('--quick', action='store_true',
                        help='200 jobs, 1 worker, 1 run: that it works')
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.processes, args.runs = 200, 1, 1
    if args.one:
        print(json.dumps(drain(os.path.abspath(args.one), args.jobs,
                               args.processes, args.poll)))
        return
    trees = [('this tree', SRC)]
    if args.baseline:
        trees.insert(0, ('baseline', os.path.abspath(args.baseline)))
    runs = []
    for n in range(args.runs):
        for label, src in trees:
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), '--one', src,
                 '--jobs', str(args.jobs), '--processes',
                 str(args.processes), '--poll', str(args.poll)],
                check=True, stdout=subprocess.PIPE, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            result['label'] = label
            runs.append(result)
            print('%s run %d: %.0f jobs/s, server %.2f ms/job, worker %.2f '
                  'ms/job, conflicts %s, load %s' % (
                      label, n + 1, result['rate'], result['server_ms'],
                      result['worker_ms'], result['conflicts'] or 0,
                      ' '.join(result['load'])), file=sys.stderr, flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(runs, f, indent=2)
    print()
    print('%d no-op jobs drained by %d worker processes over ZEO; %d CPUs'
          % (args.jobs, args.processes, os.cpu_count()))
    print()
    print('%-10s  %4s  %7s  %15s  %15s  %9s  %9s  %s' % (
        'code', 'run', 'drain/s', 'server ms/job', 'worker ms/job',
        'claim cf', 'other cf', 'load'))
    for label, src in trees:
        mine = [r for r in runs if r['label'] == label]
        for n, r in enumerate(mine, 1):
            claim = r['conflicts'].get('claim', 0)
            other = sum(r['conflicts'].values()) - claim
            print('%-10s  %4d  %7.0f  %15.2f  %15.2f  %9d  %9d  %s' % (
                label, n, r['rate'], r['server_ms'], r['worker_ms'], claim,
                other, ' '.join(r['load'])))
        print('%-10s  %4s  %7.0f  %15.2f  %15.2f' % (
            label, 'med', statistics.median(r['rate'] for r in mine),
            statistics.median(r['server_ms'] for r in mine),
            statistics.median(r['worker_ms'] for r in mine)))


if __name__ == '__main__':
    main()
