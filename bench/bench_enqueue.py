#!/usr/bin/env python
"""Adding jobs over ZEO from several processes at once.

Run by hand from the repository root (it is not a test)::

    .venv/bin/python bench/bench_enqueue.py                 # 1, 2, 4, 8 adders
    .venv/bin/python bench/bench_enqueue.py --adders 1,2 --jobs 4000
    .venv/bin/python bench/bench_enqueue.py --quick

A ZEO server on a FileStorage (a process of its own, on 127.0.0.1) holds a
service; N processes each add ``--jobs`` / N no-op jobs, one job in each
transaction, as N application servers whose requests each add a job do.
They start together (each waits for a go file) and the rate is the jobs
added over the time from the go to the last commit. No worker runs: this is
the cost of adding alone. Meanwhile the CPU time of the server and of the
adders is read from /proc, so that each row also gives the CPU an add costs
the server and an adder, and the conflicts the adders retried.

The columns say what bounds the rate: the time the server holds its commit
lock per commit (from the vote to the reply to ``tpc_finish``, the
FileStorage's fsync inside), which no two commits share, so that N adders
reach at most 1 / lock; the CPU an add costs the server and the adders,
which grows with N, as the server tells every other client of each commit
(an invalidation each) and every client reads what the others committed;
and the cores that the adders, the server and other work kept busy (from
``/proc``), which on a small machine run out first. The server is run by
``_zeo_probe.py``, which measures the lock.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'src'))
sys.path.insert(0, HERE)

import ZEO  # noqa: E402

import bench_workers  # noqa: E402
from bench_scaling import ProbedServer  # noqa: E402
from bench_scaling import _read as read_probe  # noqa: E402
from bench_scaling import machineBusy  # noqa: E402
from zodbtasks._testing import waitFor  # noqa: E402


def adder(address, jobs, go, out):
    """In an adding process: add ``jobs`` jobs, one per transaction, once
    the file ``go`` exists; write "seconds conflicts" to ``out``."""
    import transaction
    host, port = address.rsplit(':', 1)
    db = ZEO.DB((host, int(port)))
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    tm.begin()
    conn.root()['tasks'].countJobs()     # load the service before the go
    tm.abort()
    with open(out + '.ready', 'w'):
        pass
    waitFor(lambda: os.path.exists(go), 120, 'the go file')
    start, cpu = time.perf_counter(), time.process_time()
    conflicts = 0
    for _ in range(jobs):
        for attempt in range(20):
            try:
                tm.begin()
                conn.root()['tasks'].add('noop')
                tm.commit()
                break
            except transaction.interfaces.TransientError:
                tm.abort()
                conflicts += 1
        else:
            raise RuntimeError('an add conflicted 20 times')
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    conn.close()
    db.close()
    with open(out, 'w') as f:
        f.write('%r %d %r\n' % (seconds, conflicts, cpu))


def run(workdir, adders, jobs):
    """One row: {'adders', 'rate', 'conflicts', 'server ms', 'adder ms',
    'lock ms', 'fsync ms'}."""
    name = os.path.join(workdir, 'enqueue-%d' % adders)
    probe = name + '.probe'
    env = dict(os.environ, ZODBTASKS_BENCH_PROBE=probe)
    with ProbedServer(name + '.fs', env) as server:
        db = ZEO.DB(server.address)
        try:
            bench_workers.newService(db)
        finally:
            db.close()
        go = name + '.go'
        outs = [name + '.%d.out' % n for n in range(adders)]
        share = [jobs // adders + (n < jobs % adders) for n in range(adders)]
        processes = [subprocess.Popen(
            [sys.executable, __file__, '--adder', server.uri[len('zeo://'):],
             str(count), go, out]) for count, out in zip(share, outs)]
        try:
            waitFor(lambda: all(os.path.exists(out + '.ready')
                                for out in outs), 120, 'the adders starting')
            before = probed(server, probe, 1)
            server_before = bench_workers.cpuSeconds(server.process.pid)
            machine_before, start = machineBusy(), time.perf_counter()
            with open(go, 'w'):
                pass
            for process in processes:
                process.wait(600)
            elapsed = time.perf_counter() - start
            machine = machineBusy() - machine_before
            server_cpu = bench_workers.cpuSeconds(server.process.pid) \
                - server_before
            after = probed(server, probe, 2)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        results = [_read(out) for out in outs]
    # The server's CPU includes the adders' connecting and loading before
    # the go, a few ms in all: negligible beside thousands of commits.
    held = {k: after[k] - before.get(k, 0) for k in after}
    ours = server_cpu + sum(cpu for _, _, cpu in results)
    return {'adders': adders,
            'cores ours': ours / elapsed,
            'cores others': max(0.0, machine - ours) / elapsed,
            'rate': jobs / max(seconds for seconds, _, _ in results),
            'lock ms': held['lock wall'] / max(1, held['lock holds']) * 1000,
            'fsync ms': held['fsync wall'] / max(1, held['fsyncs']) * 1000,
            'conflicts': sum(conflicts for _, conflicts, _ in results),
            'server ms': server_cpu / jobs * 1000,
            'adder ms': sum(cpu for _, _, cpu in results) / jobs * 1000}


def probed(server, probe, seq):
    """The server's counters (see ``_zeo_probe.py``), asked for the
    ``seq``-th time."""
    os.kill(server.process.pid, signal.SIGUSR1)
    found = waitFor(lambda: read_probe(probe + '.server.json', seq), 10,
                    'the counters of the server', 0.005)
    return found['stats']


def _read(out):
    with open(out) as f:
        seconds, conflicts, cpu = f.read().split()
    return float(seconds), int(conflicts), float(cpu)


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == '--adder':
        address, jobs, go, out = sys.argv[2:6]
        return adder(address, int(jobs), go, out)
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--jobs', type=int, default=2000,
                        help='jobs added in all, per row')
    parser.add_argument('--adders', default='1,2,4,8')
    parser.add_argument('--quick', action='store_true',
                        help='100 jobs, 1 and 2 adders: that it works')
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.adders = 100, '1,2'
    counts = [int(n) for n in args.adders.split(',') if n]
    workdir = tempfile.mkdtemp(prefix='zodbtasks-enqueue-')
    try:
        rows = [run(workdir, n, args.jobs) for n in counts]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    show(rows, args.jobs)


def show(rows, jobs):
    print('%d no-op jobs added over ZEO, one per transaction, by N processes '
          'at once; %d CPUs; Python %s'
          % (jobs, os.cpu_count(), sys.version.split()[0]))
    print()
    one = rows[0]['rate']
    header = ('adders', 'jobs/s', 'vs first', 'server ms/add',
              'adders ms/add', 'lock ms (fsync)', '1/lock', 'conflicts',
              'cores: ours', 'others')
    table = [header]
    for row in rows:
        table.append((
            str(row['adders']), '%.0f' % row['rate'],
            '%.2fx' % (row['rate'] / one), '%.3f' % row['server ms'],
            '%.3f' % row['adder ms'],
            '%.2f (%.2f)' % (row['lock ms'], row['fsync ms']),
            '%.0f' % (1000 / row['lock ms']) if row['lock ms'] else '',
            str(row['conflicts']), '%.2f' % row['cores ours'],
            '%.2f' % row['cores others']))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for n, r in enumerate(table):
        print('  '.join(c.rjust(w) for c, w in zip(r, widths)))
        if n == 0:
            print('  '.join('-' * w for w in widths))


if __name__ == '__main__':
    main()
