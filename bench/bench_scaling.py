#!/usr/bin/env python
"""ZEO scaling predicted from what one worker costs, next to real drains.

Run by hand from the repository root (it is not a test)::

    .venv/bin/python bench/bench_scaling.py                  # 1 and 2 workers
    .venv/bin/python bench/bench_scaling.py --workers 1,2,4,8 --jobs 20000
    .venv/bin/python bench/bench_scaling.py --quick          # CI: < 1 minute
    .venv/bin/python bench/bench_scaling.py --profile /tmp/server.txt

A drain: a ZEO server (``_zeo_probe.py``: ``runzeo`` with counters) on a
FileStorage, ``--jobs`` no-op jobs queued, then N ``zodbtasks worker
--spread`` processes started (their task module, ``_scaling_tasks.py``,
counts their requests to the server). The window opens when 5% of the jobs
are completed and closes at 95%, so that workers starting one after the
other and the last jobs do not count. At both edges the script reads the
CPU time of every process from ``/proc/PID/stat`` and of the whole machine
from ``/proc/stat``, and sends SIGUSR1 to the server and the workers, which
write their counters to files. Everything per job is a difference between
the edges over the jobs completed in between.

The model takes the 1-worker drain only (nothing is fitted to the others)
and predicts N workers; see `predict` and docs/benchmarks.rst, "ZEO
scaling: the model". ``--profile PATH`` adds a 1-worker drain, not counted,
during which ``py-spy`` samples the server, and prints where its time goes.
"""
import argparse
import collections
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), 'src')
sys.path.insert(0, SRC)
sys.path.insert(0, HERE)

import ZEO  # noqa: E402

import bench_workers  # noqa: E402
from zodbtasks import lease_index  # noqa: E402
from zodbtasks import queues  # noqa: E402
from zodbtasks._testing import Workers  # noqa: E402
from zodbtasks._testing import ZEOServer  # noqa: E402
from zodbtasks._testing import waitFor  # noqa: E402

PROBE = os.path.join(HERE, '_zeo_probe.py')
CLK_TCK = os.sysconf('SC_CLK_TCK')
#: The mean pause before a step's second try (`Transactor.backoff`:
#: uniform(0, 2 ms)).
BACKOFF = 0.001
#: Oids written by at least this many commits of the window are the
#: service's shared structures; a job is written by two or three (its
#: claim, the step that marks it begun, the one that records it).
SHARED_WRITES = 4
#: Oids written by this share of the commits of one worker or more are its
#: own lease tree (`zodbtasks.lease_index`: a tree per shard of worker
#: names).
OWN = 0.9


class ProbedServer(ZEOServer):
    """A `ZEOServer` run by ``_zeo_probe.py``, optionally under py-spy."""

    def __init__(self, path, env, spy=None):
        super().__init__(path)
        self.env = env
        self.spy = spy

    def _launch(self, what):
        command = [sys.executable, PROBE, '-a', '%s:%d' % self.address,
                   '-f', self.path]
        with open(self.path + '.zeo.log', 'ab') as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        try:
            waitFor(self._listening, self.startTimeout, what % self.port)
        except BaseException:
            self.stop()
            raise
        return self


def machineBusy():
    """Seconds of CPU the whole machine has used so far, all cores."""
    with open('/proc/stat') as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLK_TCK


def cores():
    """The cores this process (and so the system it starts) may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


class Edge:
    """What every process had counted at one edge of the window."""

    def __init__(self, done, pids, probe, seq):
        self.done = done
        self.time = time.perf_counter()
        self.wall = time.time()
        self.cpu = {k: bench_workers.cpuSeconds(p) for k, p in pids.items()}
        self.cpu['bench'] = bench_workers.cpuSeconds(os.getpid())
        self.machine = machineBusy()
        for key, pid in pids.items():
            os.kill(pid, signal.SIGUSR1)
        self.files = {}
        for key, pid in pids.items():
            name = ('%s.server.json' % probe if key == 'server' else
                    '%s.worker.%d.json' % (probe, pid))
            self.files[key] = waitFor(lambda: _read(name, seq), 10,
                                      'the counters of %s' % key, 0.005)


def _read(path, seq):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if data['seq'] >= seq else None


def _delta(after, before):
    return collections.Counter({k: v - before.get(k, 0)
                                for k, v in after.items()})


def _sum(counters):
    total = collections.Counter()
    for c in counters:
        total.update(c)
    return total


def drain(jobs, workers, poll, spy=None, extra=()):
    """One drain with ``workers`` processes: a dict of what it measured."""
    work = tempfile.mkdtemp(prefix='zodbtasks-bench-scaling-')
    probe = os.path.join(work, 'probe')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, SRC]),
               ZODBTASKS_BENCH_PROBE=probe,
               ZODBTASKS_BENCH_CONFLICTS=os.path.join(work, 'conflicts'))
    try:
        with ProbedServer(os.path.join(work, 'Data.fs'), env) as server:
            db = ZEO.DB(server.address)
            try:
                bench_workers.newService(db)
                bench_workers.addJobs(db, jobs, perTransaction=100)
                logs = os.path.join(work, 'logs')
                os.mkdir(logs)
                with Workers(logs, env=env) as started:
                    for _ in range(workers):
                        started.start('worker', '--db', server.uri,
                                      '--service', 'tasks',
                                      '--tasks', '_scaling_tasks',
                                      '--poll', str(poll), '--spread',
                                      *extra)
                    pids = {'server': server.process.pid}
                    pids.update(('worker %d' % n, p.pid) for n, p in
                                enumerate(started.processes, 1))
                    first, last = _window(db, jobs, pids, probe, spy)
                    for process in started.processes:
                        process.send_signal(signal.SIGTERM)
                    started.wait(60)
            finally:
                db.close()
        result = measure(first, last, workers, jobs)
        if spy:
            result['written by class'] = writtenByClass(
                os.path.join(work, 'Data.fs'), first, last)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def writtenByClass(path, first, last):
    """The objects that the commits between two `Edge` objects wrote, per
    job, by class."""
    import ZODB.FileStorage
    from ZODB.TimeStamp import TimeStamp
    from ZODB.utils import get_pickle_metadata
    storage = ZODB.FileStorage.FileStorage(path, read_only=True)
    counts = collections.Counter()
    try:
        for txn in storage.iterator():
            if not first.wall <= TimeStamp(txn.tid).timeTime() <= last.wall:
                continue
            for record in txn:
                if record.data:
                    counts['.'.join(get_pickle_metadata(record.data))] += 1
    finally:
        storage.close()
    jobs = last.done - first.done
    return {k: v / jobs for k, v in counts.most_common()}


def _window(db, jobs, pids, probe, spy):
    """Wait for the drain; the edges at 5% and 95% of the jobs done."""
    low, high = max(1, jobs // 20), jobs - jobs // 20
    deadline = time.monotonic() + 600
    first = profiler = None
    while True:
        done = bench_workers.completedCount(db)
        if first is None and done >= low:
            first = Edge(done, pids, probe, 1)
            if spy:
                profiler = _spy(pids['server'], spy)
        if done >= high:
            last = Edge(done, pids, probe, 2)
            break
        if time.monotonic() > deadline:
            raise RuntimeError('only %d of %d jobs completed within 600 s'
                               % (done, jobs))
        time.sleep(0.05)
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(30)
    return first, last


def _spy(pid, path):
    """py-spy sampling ``pid`` into ``path`` (collapsed stacks) until
    interrupted."""
    spy = shutil.which('py-spy', path=os.pathsep.join(
        [os.path.dirname(sys.executable), os.environ.get('PATH', '')]))
    if spy is None:
        raise SystemExit('--profile needs py-spy (pip install py-spy)')
    return subprocess.Popen(
        [spy, 'record', '--pid', str(pid), '--rate', '250', '--format',
         'raw', '--output', path, '--nonblocking'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(first, last, workers, jobs):
    """Per job figures of the window between two `Edge` objects."""
    n = last.done - first.done
    elapsed = last.time - first.time
    cpu = {k: last.cpu[k] - first.cpu[k] for k in last.cpu}
    ours = sum(cpu.values())
    server = first.files['server'], last.files['server']
    stats = _delta(server[1]['stats'], server[0]['stats'])
    scpu = _delta(server[1]['cpu'], server[0]['cpu'])
    scalls = _delta(server[1]['calls'], server[0]['calls'])
    keys = [k for k in last.files if k != 'server']
    calls = _sum(_delta(last.files[k]['calls'], first.files[k]['calls'])
                 for k in keys)
    waited = _sum(_delta(last.files[k]['waited'], first.files[k]['waited'])
                  for k in keys)
    steps = _sum(_delta(last.files[k]['steps'], first.files[k]['steps'])
                 for k in keys)
    conflicts = _sum(_delta(last.files[k]['conflicts'],
                            first.files[k]['conflicts']) for k in keys)
    sync = sum(v for k, v in calls.items()
               if k.startswith('call ') or k in ('load_before', 'tpc_finish'))
    commits = stats['commits'] or 1
    writes = sorted(server[1]['writes'].values(), reverse=True)
    with open('/proc/loadavg') as f:
        load = ' '.join(f.read().split()[:3])
    return {
        'workers': workers, 'jobs': jobs, 'window jobs': n,
        'rate': n / elapsed, 'elapsed': elapsed,
        'cores': {k: v / elapsed for k, v in cpu.items()},
        'others cores': max(0.0, (last.machine - first.machine - ours)
                            / elapsed),
        'machine cores': cores(), 'load': load,
        'server ms': cpu['server'] / n * 1000,
        'worker ms': [cpu[k] / n * 1000 for k in keys],
        'bench ms': cpu['bench'] / n * 1000,
        'commits': stats['commits'] / n,
        'objects written': stats['objects written'] / n,
        'loads': scalls['loadBefore'] / n,
        'round trips': sync / n,
        'round trips by kind': {k: v / n for k, v in calls.items()},
        'wait ms': sum(waited.values()) / n * 1000,
        'load wait ms': (waited['load_before'] / calls['load_before'] * 1000
                         if calls['load_before'] else None),
        'steps': steps['steps'] / n, 'claims': steps['claims'] / n,
        'step ms': steps['step seconds'] / max(1, steps['steps']) * 1000,
        'round trips per claim': steps['round trips'] / max(1, steps['claims']),
        'round trips per step': steps['round trips'] / max(1, steps['steps']),
        'conflicts': dict(conflicts),
        'conflicts per claim': conflicts['claim'] / max(1, steps['claims']),
        'conflicts per step': conflicts['claim'] / max(1, steps['steps']),
        'lock ms': stats['lock wall'] / max(1, stats['lock holds']) * 1000,
        'lock cpu ms': stats['lock cpu'] / max(1, stats['lock holds']) * 1000,
        'lock holds': stats['lock holds'] / n,
        'fsync ms': stats['fsync wall'] / max(1, stats['fsyncs']) * 1000,
        'server cpu by kind ms': {k: v / n * 1000 for k, v in scpu.items()},
        'server calls by kind': {k: v / n for k, v in scalls.items()},
        'window commits': commits,
        'shared writes': [w for w in writes if w >= SHARED_WRITES],
        'writes by count': dict(collections.Counter(writes)),
    }


def predict(one, n, cores=None):
    """The throughput of ``n`` workers from the 1-worker drain ``one``.

    On a machine with enough cores (``cores`` None) it is the least of

    * n / T(n): T(n) the wall time a worker spends per job, its own CPU and
      its waits for the server together: 1 / the 1-worker rate, plus the
      extra work more workers cause (reloads and retries, below);
    * 1 / S(n): S(n) the server's CPU per job; the server handles every
      request in one thread;
    * 1 / L: L the time the commit lock is held per job (held per commit,
      times commits per job); commits are serialised.

    With ``cores``, also cores / (S(n) + W(n) + B): the CPU of the server,
    of the n workers and of this script's polling per job, shared by the
    cores of the machine.

    Extra work at n workers, from 1-worker figures only:

    * reloads: a worker's commit writes the shared objects of the service
      (those that at least `SHARED_WRITES` commits of the window wrote: lane
      buckets, counts, listings). An object written by a share f of all
      commits was written, since this worker last wrote it 1/f of its own
      commits ago, by the (n - 1) others' (n - 1)/f commits with
      probability 1 - (1 - f)^((n - 1)/f): it has to be loaded again. The
      objects that (nearly) every commit writes (`OWN`) are the worker's
      lease tree, which another worker writes only if its name falls in the
      same of the 16 shards: 1 - (15/16)^(n - 1). Each reload costs a
      worker the 1-worker wait of a load and the server its CPU per load.
    * invalidations: every commit is announced to the other n - 1 workers;
      the server's cost to send one is measured (sending to this script's
      connection); receiving one is taken to cost a worker the same.
    * conflicts: a step conflicts when another worker commits, while it
      runs, a step that took from the same lane: per other worker, the
      share of time it spends in steps (step time / time between steps)
      over the 16 lanes (``--spread`` picks lanes at random). A conflict
      costs a retry: a step's time, the backoff (1 ms on average) and the
      server's CPU per commit.
    """
    commits = one['commits'] or 1e-9
    shared = [w / one['window commits'] for w in one['shared writes']]
    # The worker's own lease tree: another writes it if its name falls in
    # the same shard.
    own = 1 - (1 - 1 / lease_index.SHARDS) ** (n - 1)
    reloadsPerCommit = sum(own if f >= OWN else
                           f * (1 - (1 - f) ** ((n - 1) / f)) for f in shared)
    reloads = reloadsPerCommit * commits
    t1 = 1.0 / one['rate']
    busy = sum(one['worker ms']) / 1000 / t1       # worker CPU per second
    stepGap = t1 / (one['steps'] or 1e-9)
    pair = (one['step ms'] / 1000) / stepGap / queues.LANES
    conflictsPerStep = 1 - math.exp(-(n - 1) * pair)
    retries = conflictsPerStep * one['steps']
    kinds = one['server cpu by kind ms']
    loadCpu = (kinds.get('loadBefore', 0) /
               one['server calls by kind'].get('loadBefore', 1e-9)) / 1000
    sends = one['server calls by kind'].get('send invalidateTransaction', 0)
    invCpu = (kinds.get('send invalidateTransaction', 0) / sends / 1000
              if sends else 0.0)
    commitCpu = sum(kinds.get(k, 0) for k in ('vote', 'tpc_finish',
                                              'tpc_begin', 'storea'))
    commitCpu = commitCpu / commits / 1000
    invalidations = (n - 1) * commits
    loadWait = (one['load wait ms'] or 0) / 1000
    extraWall = (reloads * loadWait + retries * (one['step ms'] / 1000
                 + BACKOFF) + invalidations * invCpu)
    t = t1 + extraWall
    s = (one['server ms'] / 1000 + reloads * loadCpu + retries * commitCpu
         + invalidations * invCpu)
    w = sum(one['worker ms']) / 1000 + extraWall * busy
    lock = one['lock ms'] / 1000 * one['lock holds']
    terms = {'workers': n / t, 'server': 1 / s, 'lock': 1 / lock}
    if cores:
        terms['cores'] = cores / (s + w + one['bench ms'] / 1000)
    bound = min(terms, key=terms.get)
    return {'rate': terms[bound], 'bound': bound, 'terms': terms,
            'worker ms': t * 1000, 'server ms': s * 1000,
            'worker cpu ms': w * 1000, 'reloads': reloads,
            'loads': one['loads'] + reloads,
            'round trips': (one['round trips'] + reloads
                            + retries * one['round trips per step']),
            'conflicts per step': conflictsPerStep}


def profile(path, jobs, poll):
    """A 1-worker drain with py-spy on the server: its samples, by own
    and total time, and what its commits wrote."""
    written = drain(jobs, 1, poll, spy=path)['written by class']
    own, total = collections.Counter(), collections.Counter()
    samples = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(' ')
            if not stack:
                continue
            count = int(count)
            frames = [_frame(fr) for fr in stack.split(';')]
            if frames[-1].startswith(WAITING):
                continue
            samples += count
            own[frames[-1]] += count
            for frame in set(frames):
                total[frame] += count
    return samples, own, total, written


#: Leaves of the samples in which the server waits: for a request, or for
#: the disk.
WAITING = ('EpollSelector.select ', '_fsync ')


def _frame(frame):
    # py-spy raw: "function (path/to/file.py:line)"; keep the file's name.
    name, _, where = frame.partition(' (')
    where = where.rstrip(')')
    return '%s (%s)' % (name, os.path.basename(where.rsplit(':', 1)[0]))


def _fmt(x, digits=2):
    return '-' if x is None else '%.*f' % (digits, x)


def report(runs, ns, jobs):
    ones = [r for r in runs if r['workers'] == 1]
    one = _median_run(ones)
    c = one['machine cores']
    print()
    print('%d no-op jobs per drain over ZEO, --spread, window 5%%-95%%; '
          'this machine: %d cores' % (jobs, c))
    print()
    print('Each run, per job:')
    print('workers  drain/s  server ms  workers ms  commits  written  loads  '
          'trips  trips/claim  lock ms/commit (fsync)  cf/step  cf/claim  '
          'cores ours/others  load')
    for r in runs:
        print('  '.join([
            '%7d' % r['workers'], '%7.0f' % r['rate'],
            '%9.3f' % r['server ms'], '%10.3f' % sum(r['worker ms']),
            '%7.3f' % r['commits'], '%7.2f' % r['objects written'],
            '%5.2f' % r['loads'], '%5.2f' % r['round trips'],
            '%11.1f' % r['round trips per claim'],
            '%15.2f (%.2f)' % (r['lock ms'], r['fsync ms']),
            '%7.4f' % r['conflicts per step'],
            '%8.3f' % r['conflicts per claim'],
            '%11.2f/%.2f' % (sum(r['cores'].values()), r['others cores']),
            r['load']]))
    print()
    print('The model\'s inputs, from the 1-worker run of median rate: worker '
          'time %.3f ms/job (its CPU %.3f, waiting for %.2f round trips '
          '%.3f), server CPU %.3f ms/job, commit lock %.3f ms x %.3f '
          'holds/job (fsync %.3f ms, server CPU %.3f ms of it), a step %.3f '
          'ms every %.3f ms, a load %.3f ms'
          % (1000 / one['rate'], sum(one['worker ms']), one['round trips'],
             one['wait ms'], one['server ms'], one['lock ms'],
             one['lock holds'], one['fsync ms'], one['lock cpu ms'],
             one['step ms'], 1000 / one['rate'] / (one['steps'] or 1e-9),
             one['load wait ms'] or 0))
    print()
    measured = [n for n in ns if n != 1]
    if measured:
        print('Predicted (any cores) and measured (median run), per job:')
        print('workers  what                 predicted  measured  ratio')
        for n in measured:
            p = predict(one, n)
            r = _median_run([r for r in runs if r['workers'] == n])
            for label, want, got in (
                    ('worker time ms', p['worker ms'], 1000 * n / r['rate']),
                    ('server CPU ms', p['server ms'], r['server ms']),
                    ('workers CPU ms', p['worker cpu ms'],
                     sum(r['worker ms'])),
                    ('loads', p['loads'], r['loads']),
                    ('round trips', p['round trips'], r['round trips']),
                    ('conflicts/step', p['conflicts per step'],
                     r['conflicts per step'])):
                print('%7d  %-19s  %9.4f  %8.4f  %5s' % (
                    n, label, want, got,
                    '%.2f' % (got / want) if want else '-'))
        print()
    free = max(0.1, c - one['others cores'])
    print('Predicted from it, for any number of cores, for the %d of this '
          'machine, and for the %.2f that other work left free while one '
          'worker drained:' % (c, free))
    print()
    columns = [('any cores', None), ('%d cores' % c, c),
               ('%.2f cores' % free, free)]
    print('workers  measured    x1  ' + '  '.join(
        '%19s  bound    ratio' % ('predicted, ' + label)
        for label, _ in columns))
    for n in sorted(set(ns) | {1, 2, 4, 8}):
        mine = [r for r in runs if r['workers'] == n]
        got = _median_run(mine)['rate'] if mine else None
        line = ['%7d' % n, '%8s' % ('-' if got is None else '%.0f' % got),
                '%4s' % ('-' if got is None else '%.2f' % (got / one['rate']))]
        for label, k in columns:
            p = predict(one, n, k)
            line += ['%19.0f' % p['rate'], '%7s' % p['bound'],
                     '%5s' % ('-' if got is None else '%.2f' % (got / p['rate']))]
        print('  '.join(line))
    print()
    print('Each run against the prediction for the cores that other work '
          'left free during it (%d - others):' % c)
    for r in runs:
        left = max(0.1, c - r['others cores'])
        p = predict(one, r['workers'], left)
        print('  %d worker(s): %.0f jobs/s measured, %.0f predicted on %.2f '
              'cores (%s), ratio %.2f' % (r['workers'], r['rate'], p['rate'],
                                          left, p['bound'],
                                          r['rate'] / p['rate']))
    print()
    print('Terms (jobs/s) of the prediction; cores: %d | %.2f:' % (c, free))
    for n in sorted(set(ns) | {1, 2, 4, 8}):
        p = predict(one, n)
        print('  %d: %s | cores %.0f | %.0f; worker %.3f ms/job, server '
              '%.3f ms/job, reloads %.2f/job, conflicts %.4f/step' % (
                  n, ', '.join('%s %.0f' % kv for kv in p['terms'].items()),
                  predict(one, n, c)['terms']['cores'],
                  predict(one, n, free)['terms']['cores'], p['worker ms'],
                  p['server ms'], p['reloads'], p['conflicts per step']))
    print()
    print('Server CPU per job by request (1 worker), ms:')
    kinds = sorted(one['server cpu by kind ms'].items(), key=lambda kv: -kv[1])
    rest = one['server ms'] - sum(v for k, v in kinds)
    for name, ms in kinds:
        if ms >= 0.0005:
            print('  %-28s %.4f  (%.3f calls/job)' % (
                name, ms, one['server calls by kind'].get(name, 0)))
    print('  %-28s %.4f' % ('outside requests (I/O, loop)', rest))


def _median_run(runs):
    runs = sorted(runs, key=lambda r: r['rate'])
    return runs[len(runs) // 2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--workers', default='1,2',
                        help='worker processes of each drain (1,2)')
    parser.add_argument('--jobs', type=int, default=10000)
    parser.add_argument('--runs', type=int, default=1)
    parser.add_argument('--poll', type=float, default=0.01)
    parser.add_argument('--quick', action='store_true',
                        help='1,000 jobs, 1 worker: a check that runs')
    parser.add_argument('--profile', metavar='PATH',
                        help='also sample the server with py-spy')
    parser.add_argument('--max-unrecorded', type=int, metavar='N',
                        help="the workers' --max-unrecorded (default: "
                        "theirs, 8)")
    parser.add_argument('--json', metavar='PATH',
                        help='write the runs to PATH as JSON')
    args = parser.parse_args(argv)
    if args.quick:
        args.workers, args.jobs, args.runs = '1', 1000, 1
    ns = sorted({int(v) for v in args.workers.split(',')})
    if 1 not in ns:
        parser.error('--workers must include 1: the model starts from it')
    extra = (() if args.max_unrecorded is None else
             ('--max-unrecorded', str(args.max_unrecorded)))
    runs = []
    for run in range(args.runs):
        for n in ns:
            result = drain(args.jobs, n, args.poll, extra=extra)
            runs.append(result)
            print('run %d, %d worker(s): %.0f jobs/s, server %.3f ms/job, '
                  'workers %s ms/job, cores ours %.2f others %.2f, load %s'
                  % (run + 1, n, result['rate'], result['server ms'],
                     '+'.join('%.3f' % w for w in result['worker ms']),
                     sum(result['cores'].values()), result['others cores'],
                     result['load']), file=sys.stderr, flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(runs, f, indent=2)
    report(runs, ns, args.jobs)
    if args.profile:
        samples, own, total, written = profile(args.profile, args.jobs,
                                               args.poll)
        print()
        print('Objects written per job, by class (%.2f in all):'
              % sum(written.values()))
        for name, count in written.items():
            print('  %6.3f  %s' % (count, name))
        print()
        print('py-spy on the server, 1-worker drain (%d samples, not '
              'counting those waiting in select or fsync):' % samples)
        print('  %6s %6s  %s' % ('own', 'total', 'function'))
        for frame, count in own.most_common(15):
            print('  %5.1f%% %5.1f%%  %s' % (100 * count / samples,
                                            100 * total[frame] / samples,
                                            frame))
        print('  by total:')
        for frame, count in total.most_common(25):
            print('  %5.1f%% %5.1f%%  %s' % (100 * own[frame] / samples,
                                            100 * count / samples, frame))


if __name__ == '__main__':
    main()
