#!/usr/bin/env python
"""Per-call cost of zodbtasks' core operations, next to z3c.taskqueue.

Run by hand from the repository root (it is not a test and pytest does not
collect it)::

    .venv/bin/python bench/bench_core.py
    .venv/bin/python bench/bench_core.py --sizes 1000,10000 --quick
    .venv/bin/python bench/bench_core.py --no-reference

Both implementations are measured in the same run by the same code: this
file starts itself twice as a worker, once under the project's python for
zodbtasks and once under a throwaway virtualenv holding z3c.taskqueue 0.2.1,
the Python 2 package whose API zodbtasks keeps (see ``_reference.py`` for how
it is fetched and loaded under Python 3). Each worker prints its results as
JSON; this process prints the table.

Services are held in memory, without a database. Each measured call is timed
on its own with ``time.perf_counter_ns``; a cell of the table is the median
of those calls, in microseconds. A service of N jobs stays within 5% of N
while it is measured: calls are made in rounds of at most N/20, and between
rounds, untimed, the service is put back to N jobs. The cyclic garbage
collector is off while timing, as ``timeit`` does, and runs only between
cells: the numbers are those of a warm CPU cache.
"""
import argparse
import calendar
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

#: The ``now`` of the processNext calls: 2023-11-14 22:13:00 UTC, a whole
#: minute (the reference keeps the seconds of ``now`` in the times it
#: computes), that fits the reference's 32-bit BTree keys.
NOW = 1_699_999_980
#: Feb 29th asked from 2097 (the next one is in 2104, 2100 not being leap).
SPARSE_FROM = calendar.timegm((2097, 6, 1, 0, 0, 0))
#: Feb 29th asked from March 2103: the next one is less than a year ahead,
#: within reach of the reference, which looks one year ahead only.
NEAR_FROM = calendar.timegm((2103, 3, 1, 0, 0, 0))

OPERATIONS = (
    # key, label, depends on N
    ('add', 'add (service holding N jobs)', True),
    ('cancel', 'cancel a random queued job (N queued)', True),
    ('pn_cron', 'processNext(now), N cron jobs not due', True),
    ('pn_queued', 'processNext(now), N queued jobs', True),
    ('pn_due', 'processNext(now), cron job due, N cron', True),
    ('claim_mail', "claim from 'mail' (20 queued), N others", True),
    ('claim_default', "claim from 'default', N/2 mixed prio.", True),
    ('ton_sparse', 'timeOfNextCall Feb 29th, from 2097', False),
    ('ton_near', 'timeOfNextCall Feb 29th, from 2103-03', False),
    ('ton_plain', 'timeOfNextCall minute=(0, 30)', False),
)
LABELS = {key: label for key, label, _ in OPERATIONS}
#: Rows the reference has no API for (it knows no queues or priorities).
ZODBTASKS_ONLY = {'claim_mail', 'claim_default'}
#: The jobs of the named queue 'mail' in the claims rows.
MAIL_JOBS = 20
GOAL_US = 50.0
SCALING_GOAL = 2.0
MIN_SAMPLES = 30
PUBLISHED = ('processNext 86 us with 1k cron jobs and 463 us with 30k; '
             'cancel 178 us at 1k queued and 6,530 us at 30k; sparse '
             'timeOfNextCall (Feb 29th) 500,000 us')


def _progress(name, message):
    print('[%s] %s' % (name, message), file=sys.stderr, flush=True)


# -- the two implementations ------------------------------------------------

class Impl:
    """What the scenarios need of an implementation."""

    def __init__(self, name, TaskService, CronJob, SimpleTask, version,
                 notes=()):
        self.name = name
        self.TaskService = TaskService
        self.CronJob = CronJob
        self.SimpleTask = SimpleTask
        self.version = version
        self.notes = list(notes)


def load_zodbtasks():
    import zodbtasks
    try:
        from importlib.metadata import version
        found = version('zodbtasks')
    except Exception:
        found = '?'
    where = os.path.dirname(zodbtasks.__file__)
    return Impl('zodbtasks', zodbtasks.TaskService, zodbtasks.CronJob,
                zodbtasks.SimpleTask, '%s (%s)' % (found, where))


def load_reference(source):
    sys.path.insert(0, HERE)
    import _reference
    package, fixes = _reference.load(source)
    done = ', '.join('%s: %s' % (name, ', '.join(
        '%s x%d' % item for item in sorted(counts.items())))
        for name, counts in fixes.items() if counts)
    notes = ['reference loaded under Python 3 with mechanical fixes (%s); '
             'stubbed: %s' % (done, '; '.join(_reference.STUBS))]
    return Impl('reference', package.service.TaskService,
                package.job.CronJob, package.task.SimpleTask,
                '%s %s (%s)' % (_reference.NAME, _reference.VERSION,
                                os.path.dirname(source)), notes)


# -- measuring --------------------------------------------------------------

def summarize(samples_ns):
    us = [ns / 1000.0 for ns in samples_ns]
    us_sorted = sorted(us)
    return {
        'median_us': statistics.median(us),
        'mean_us': statistics.fmean(us),
        'p90_us': us_sorted[int(0.9 * (len(us_sorted) - 1))],
        'min_us': us_sorted[0],
        'calls': len(us),
    }


class Runner:
    """Times calls in rounds, restoring the service between rounds."""

    def __init__(self, calls, warmup, budget_s):
        self.calls = calls
        self.warmup = warmup
        self.budget_ns = budget_s * 1e9

    def run(self, n, timed_round, restore, round_size=None):
        """``timed_round(k)`` makes k calls, returns their times in ns."""
        if round_size is None:
            round_size = max(1, n // 20)
        wanted = self.warmup + self.calls
        samples = []
        while len(samples) < wanted:
            k = min(round_size, wanted - len(samples))
            samples.extend(timed_round(k))
            restore()
            kept = samples[self.warmup:]
            if len(kept) >= MIN_SAMPLES and sum(kept) > self.budget_ns:
                break
        kept = samples[self.warmup:] or samples
        return summarize(kept)


def _check(condition, message):
    if not condition:
        raise AssertionError(message)


def bench_queued(impl, sizes, runner, results):
    """add, cancel and processNext on a service holding N queued jobs."""
    pc = time.perf_counter_ns
    svc = impl.TaskService()
    alive = []                 # the queued job ids, oldest first

    def top_up(n):
        add = svc.add
        while len(alive) < n:
            alive.append(add('noop', None))

    def tidy():
        # No gc.collect() here: walking the heap between rounds would leave
        # the CPU caches cold for the calls that follow.
        svc.clean()

    for n in sizes:
        started = time.perf_counter()
        top_up(n)
        tidy()
        gc.collect()
        _progress(impl.name, 'N=%s: %s queued jobs ready in %.1f s'
                  % (format(n, ','), format(len(alive), ','),
                     time.perf_counter() - started))

        # add: the new jobs are cancelled between rounds.
        added = []

        def add_round(k):
            times = []
            add = svc.add
            for _ in range(k):
                t0 = pc()
                jobid = add('noop', None)
                t1 = pc()
                times.append(t1 - t0)
                added.append(jobid)
            return times

        def add_restore():
            for jobid in added:
                _check(svc.getStatus(jobid) == 'queued', 'add: not queued')
                svc.cancel(jobid)
            added.clear()
            tidy()

        results['add'][n] = runner.run(n, add_round, add_restore)

        # cancel: random queued jobs; new ones replace them between rounds.
        cancelled = []

        def cancel_round(k):
            times = []
            cancel = svc.cancel
            chosen = random.sample(range(len(alive)), k)
            for index in chosen:
                jobid = alive[index]
                t0 = pc()
                cancel(jobid)
                t1 = pc()
                times.append(t1 - t0)
                cancelled.append(jobid)
            chosen = set(chosen)
            alive[:] = [jobid for index, jobid in enumerate(alive)
                        if index not in chosen]
            return times

        def restorer(done, status, message):
            """Check that the jobs of a round reached ``status``, then
            bring the service back to N jobs."""
            def restore():
                for jobid in done:
                    _check(svc.getStatus(jobid) == status, message)
                done.clear()
                top_up(n)
                tidy()
            return restore

        results['cancel'][n] = runner.run(
            n, cancel_round,
            restorer(cancelled, 'cancelled', 'cancel: not cancelled'))

        # processNext: the oldest queued jobs run; new ones replace them.
        ran = []

        def next_round(k):
            times = []
            process = svc.processNext
            for _ in range(k):
                t0 = pc()
                done = process(NOW)
                t1 = pc()
                times.append(t1 - t0)
                _check(done is True, 'processNext found no job')
            ran.extend(alive[:k])
            del alive[:k]
            return times

        results['pn_queued'][n] = runner.run(
            n, next_round,
            restorer(ran, 'completed',
                     'processNext did not run the oldest job'))


def bench_cron(impl, sizes, runner, results):
    """processNext of one queued job while N cron jobs wait, not due."""
    pc = time.perf_counter_ns
    svc = impl.TaskService()
    count = 0
    for n in sizes:
        started = time.perf_counter()
        add = svc.addCronJob
        while count < n:
            # Spread over the hour; every one is due after NOW.
            add('noop', None, minute=(count % 60,))
            count += 1
        # One tick places the new cron jobs in the schedule.
        _check(svc.processNext(NOW) is False, 'a cron job was due')
        svc.clean()
        gc.collect()
        _progress(impl.name, 'N=%s: cron jobs added and placed in %.1f s'
                  % (format(n, ','), time.perf_counter() - started))

        def round_(k):
            times = []
            process = svc.processNext
            for _ in range(k):
                jobid = svc.add('noop', None)
                t0 = pc()
                done = process(NOW)
                t1 = pc()
                times.append(t1 - t0)
                _check(done is True and svc.getStatus(jobid) == 'completed',
                       'processNext did not run the queued job')
            return times

        def restore():
            svc.clean()

        results['pn_cron'][n] = runner.run(n, round_, restore,
                                           round_size=runner.calls)


def bench_due_cron(impl, sizes, runner, results):
    """processNext running a cron job due at ``now``, among N cron jobs.

    The clock goes forward a minute per round. The N/60 cron jobs of that
    minute are due exactly then: the round times some of them and, untimed,
    runs the others, so that no job is ever late. Each run places its job at
    its next time, an hour later.
    """
    pc = time.perf_counter_ns
    svc = impl.TaskService()
    count = 0
    clock = [NOW]           # the last tick; every cron job is due after it
    for n in sizes:
        started = time.perf_counter()
        add = svc.addCronJob
        while count < n:
            add('noop', None, minute=(count % 60,))
            count += 1
        _check(svc.processNext(clock[0]) is False, 'a cron job was due')
        gc.collect()
        _progress(impl.name, 'N=%s: cron jobs added and placed in %.1f s'
                  % (format(n, ','), time.perf_counter() - started))

        def round_(k):
            clock[0] += 60
            now = clock[0]
            times = []
            process = svc.processNext
            for _ in range(k):
                t0 = pc()
                done = process(now)
                t1 = pc()
                times.append(t1 - t0)
                _check(done is True, 'no cron job was due')
            return times

        def restore():
            while svc.processNext(clock[0]):
                pass

        results['pn_due'][n] = runner.run(n, round_, restore,
                                          round_size=max(1, n // 60))


def bench_claims(impl, sizes, runner, results):
    """claimNextJob from one queue while N jobs wait elsewhere.

    The service holds N jobs besides the 'mail' queue: N/2 in the queue
    'other' and N/2 in 'default', each at a random priority from 0 to 9,
    and MAIL_JOBS jobs in 'mail'. One row claims from 'mail' (the N others
    are never read), the other from 'default' (the highest priority first,
    among N/2 jobs of every priority). Between rounds, untimed, the claimed
    jobs are run to completion, cleaned away and replaced by jobs like
    them, so that the mix stays as it was. Only zodbtasks has queues.
    """
    pc = time.perf_counter_ns
    svc = impl.TaskService()
    rng = random.Random(15)
    waiting = {'other': 0, 'default': 0, 'mail': 0}

    def top_up(queue, n, priority=None):
        add = svc.add
        while waiting[queue] < n:
            add('noop', None, now=NOW, queue=queue,
                priority=rng.randint(0, 9) if priority is None else priority)
            waiting[queue] += 1

    for n in sizes:
        started = time.perf_counter()
        top_up('other', n - n // 2)
        top_up('default', n // 2)
        top_up('mail', MAIL_JOBS, priority=5)
        svc.clean()
        gc.collect()
        _progress(impl.name, 'N=%s: jobs in three queues ready in %.1f s'
                  % (format(n, ','), time.perf_counter() - started))
        claimed = []

        def claim_round(queue):
            def round_(k):
                times = []
                claim = svc.claimNextJob
                names = [queue]
                for _ in range(k):
                    t0 = pc()
                    jobid = claim(NOW, 'bench', queues=names)
                    t1 = pc()
                    times.append(t1 - t0)
                    _check(jobid is not None, 'no job claimed from %r'
                           % queue)
                    claimed.append(jobid)
                return times
            return round_

        def restorer(queue, size, priority=None):
            def restore():
                last = 9
                jobs = svc.jobs
                for jobid in claimed:
                    job = jobs[jobid]
                    _check(job.queue == queue, 'claimed from %r, not %r'
                           % (job.queue, queue))
                    # No job was added during the round: each claim took
                    # a priority no higher than the one before.
                    _check(job.priority <= last, 'claimed priority %d '
                           'after %d' % (job.priority, last))
                    last = job.priority
                    _check(svc.processNext(NOW, jobid, token=job.lease.token)
                           is True, 'the claimed job did not run')
                waiting[queue] -= len(claimed)
                claimed.clear()
                svc.clean()
                top_up(queue, size, priority)
            return restore

        results['claim_mail'][n] = runner.run(
            n, claim_round('mail'), restorer('mail', MAIL_JOBS, 5),
            round_size=MAIL_JOBS)
        results['claim_default'][n] = runner.run(
            n, claim_round('default'), restorer('default', n // 2))


def _utc(seconds):
    if seconds is None:
        return 'None'
    return time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(seconds))


def bench_time_of_next_call(impl, runner, results, answers):
    pc = time.perf_counter_ns
    cases = (
        ('ton_sparse', dict(dayOfMonth=(29,), month=(2,)), SPARSE_FROM, 3600),
        ('ton_near', dict(dayOfMonth=(29,), month=(2,)), NEAR_FROM, 600),
        ('ton_plain', dict(minute=(0, 30)), NOW, 7),
    )
    for key, fields, start, step in cases:
        job = impl.CronJob(-1, 'noop', None, **fields)
        answers[key] = '%s -> %s' % (_utc(start),
                                     _utc(job.timeOfNextCall(start)))
        calls = iter(range(10 ** 9))

        def round_(k):
            times = []
            for _ in range(k):
                now = start + next(calls) * step
                t0 = pc()
                job.timeOfNextCall(now)
                t1 = pc()
                times.append(t1 - t0)
            return times

        results[key][0] = runner.run(0, round_, lambda: None,
                                     round_size=runner.calls)


def worker(args):
    if args.worker == 'zodbtasks':
        impl = load_zodbtasks()
    else:
        impl = load_reference(args.ref_src)
    import zope.component
    zope.component.provideUtility(impl.SimpleTask(lambda input: None),
                                  name='noop')
    random.seed(args.seed)
    runner = Runner(args.calls, args.warmup, args.budget)
    results = {key: {} for key, _, _ in OPERATIONS}
    answers = {}
    sizes = sorted(set(args.sizes))
    gc.collect()
    gc.disable()
    _progress(impl.name, 'timeOfNextCall')
    bench_time_of_next_call(impl, runner, results, answers)
    if sizes:
        bench_queued(impl, sizes, runner, results)
        gc.collect()
        bench_cron(impl, sizes, runner, results)
        gc.collect()
        bench_due_cron(impl, sizes, runner, results)
        if impl.name == 'zodbtasks':
            gc.collect()
            bench_claims(impl, sizes, runner, results)
    json.dump({'impl': impl.name, 'version': impl.version,
               'notes': impl.notes, 'answers': answers,
               'results': results}, sys.stdout)


# -- the orchestrator -------------------------------------------------------

def _sizes(text):
    try:
        sizes = sorted({int(part.replace('_', '')) for part in
                        text.split(',') if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError('a comma separated list of ints')
    if any(size < 60 for size in sizes):
        # The due cron jobs scenario wants one cron job in every minute.
        raise argparse.ArgumentTypeError('sizes must be at least 60')
    return sizes


def run_worker(python, name, sizes, args, extra=()):
    command = [python, os.path.abspath(__file__), '--worker', name,
               '--sizes', ','.join(map(str, sizes)),
               '--calls', str(args.calls), '--warmup', str(args.warmup),
               '--budget', str(args.budget), '--seed', str(args.seed)]
    command += list(extra)
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit('the %s worker failed (exit %d)'
                         % (name, done.returncode))
    data = json.loads(done.stdout)
    data['seconds'] = time.perf_counter() - started
    for op in data['results'].values():
        for size in list(op):
            op[int(size)] = op.pop(size)
    return data


def _machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ''
    try:
        with open('/proc/meminfo') as f:
            kib = int(f.readline().split()[1])
        memory = ', %.0f GiB memory' % (kib / 2 ** 20)
    except (OSError, ValueError, IndexError):
        pass
    return '%s, %s, %d cores%s' % (platform.platform(), cpu,
                                   os.cpu_count() or 0, memory)


def _load():
    try:
        return '%.2f' % os.getloadavg()[0]
    except OSError:
        return '?'


def _commit():
    try:
        return subprocess.run(
            ['git', 'describe', '--always', '--dirty'], cwd=HERE,
            capture_output=True, text=True, timeout=10).stdout.strip() or '?'
    except (OSError, subprocess.SubprocessError):
        return '?'


def _us(value):
    if value >= 100:
        return format(round(value), ',')
    return '%.1f' % value


def _timer_overhead():
    pc = time.perf_counter_ns
    samples = []
    for _ in range(10000):
        t0 = pc()
        t1 = pc()
        samples.append(t1 - t0)
    return statistics.median(samples) / 1000.0


def report(args, zt, ref, ref_sizes, all_sizes):
    out = []
    say = out.append
    say('zodbtasks core benchmark, %s' % time.strftime('%Y-%m-%d %H:%M UTC',
                                                       time.gmtime()))
    say('Python %s (%s) %s' % (platform.python_version(),
                               platform.python_implementation(),
                               sys.executable))
    say('Machine: %s; load average %s at the start, %s at the end (other '
        'processes share this machine)' % (
            _machine(), args.load_at_start, _load()))
    say('zodbtasks %s, git %s' % (zt['version'], _commit()))
    if ref:
        say('Reference: %s' % ref['version'])
    say('Each call timed alone (perf_counter_ns, about %.2f us of it is the '
        'timer); a cell is the MEDIAN per call in microseconds over up to %d '
        'calls (after %d warm-up calls; fewer where a cell used its %g s '
        'budget); cyclic GC off while timing; services in memory, no '
        'database.' % (_timer_overhead(), args.calls, args.warmup,
                       args.budget))
    say('')
    header = '%-40s %10s %13s %13s %9s  %s' % (
        'operation', 'N', 'zodbtasks us', 'reference us', 'ref/zt', 'flag')
    say(header)
    say('-' * len(header))
    flagged = []
    cut = False
    for key, label, sized in OPERATIONS:
        for n in (all_sizes if sized else [0]):
            cell = zt['results'][key].get(n)
            if cell is None:
                continue
            mine = cell['median_us']
            if ref is None:
                theirs, ratio = 'not run', ''
            elif key in ZODBTASKS_ONLY:
                theirs, ratio = 'no queues', ''
            elif n in ref['results'][key]:
                other = ref['results'][key][n]
                theirs = _us(other['median_us'])
                if other['calls'] < args.calls:
                    theirs = '(%d) %s' % (other['calls'], theirs)
                    cut = True
                ratio = '%.1fx' % (other['median_us'] / mine)
            else:
                theirs, ratio = 'skipped (O(n))', ''
            flag = ''
            if mine > GOAL_US:
                flag = '> %g us' % GOAL_US
                flagged.append((label, n, mine))
            say('%-40s %10s %13s %13s %9s  %s' % (
                label, format(n, ',') if sized else '-', _us(mine), theirs,
                ratio, flag))
        if sized:
            say('')
    say('')

    if len(all_sizes) > 1:
        small, large = all_sizes[0], all_sizes[-1]
        say('zodbtasks scaling, per-call cost at N=%s over N=%s (goal: '
            'within %gx):' % (format(large, ','), format(small, ','),
                              SCALING_GOAL))
        for key, label, sized in OPERATIONS:
            if not sized:
                continue
            a = zt['results'][key][small]['median_us']
            b = zt['results'][key][large]['median_us']
            verdict = 'ok' if b / a <= SCALING_GOAL else 'OVER GOAL'
            say('  %-40s %8s -> %8s us  %5.2fx  %s' % (
                label, _us(a), _us(b), b / a, verdict))
        say('')
    if flagged:
        say('zodbtasks calls over %g us:' % GOAL_US)
        for label, n, value in flagged:
            say('  %s%s: %s us' % (label, ' at N=%s' % format(n, ',')
                                   if n else '', _us(value)))
    else:
        say('No zodbtasks call over %g us at any size.' % GOAL_US)
    say('')

    say('What timeOfNextCall returned for the first `now` of each case:')
    for key, label, sized in OPERATIONS:
        if sized:
            continue
        line = '  %-40s zodbtasks %s' % (label, zt['answers'][key])
        if ref:
            line += '; reference %s' % ref['answers'][key].split(' -> ')[1]
        say(line)
    say('')
    say('Notes:')
    if cut:
        say('- "(n) value": the reference cell used its %g s budget after '
            'n calls.' % args.budget)
    if ref:
        for note in ref['notes']:
            say('- ' + note + '.')
        skipped = [n for n in all_sizes if n not in ref_sizes]
        if skipped:
            say('- The reference is O(n) per add, cancel and queued '
                'processNext, and O(n) per cron job it places (O(n^2) to '
                'build N cron jobs): it runs at N = %s only; larger sizes '
                'are "skipped (O(n))".'
                % ', '.join(format(n, ',') for n in ref_sizes))
        say('- The reference looks for the next call one year ahead at '
            'most: for Feb 29th from 2097 it gives up and returns None, so '
            'that row compares a give-up with a found answer; the 2103-03 '
            'row is within its reach. Its answers also keep the seconds of '
            '`now` (not aligned to the minute).')
        say('- The reference stamps jobs with datetime.now() and validates '
            'fields with zope.schema; zodbtasks stamps `now` and runs each '
            'job within a transaction savepoint and a job context.')
    say('- Published reference numbers, for orientation (seed API, no '
        'database): %s.' % PUBLISHED)
    say('- Worker wall time: zodbtasks %.0f s%s.' % (
        zt['seconds'], ', reference %.0f s' % ref['seconds'] if ref else ''))
    return '\n'.join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=_sizes,
                        help='numbers of jobs (default 1000,10000,100000,'
                        '1000000; with --quick 1000,10000,100000)')
    parser.add_argument('--ref-sizes', type=_sizes,
                        help='sizes at which the reference runs too '
                        '(default: the sizes up to --ref-max, and --ref-max '
                        'itself if a size is larger)')
    parser.add_argument('--ref-max', type=int, default=None,
                        help='largest size for the reference (default '
                        '30000; with --quick 10000)')
    parser.add_argument('--quick', action='store_true',
                        help='fewer calls per cell and smaller sizes')
    parser.add_argument('--calls', type=int,
                        help='timed calls per cell (default 1000, --quick '
                        '200)')
    parser.add_argument('--warmup', type=int, default=10,
                        help='untimed calls before each cell (default 10)')
    parser.add_argument('--budget', type=float,
                        help='seconds of timed calls after which a cell '
                        'stops early, once it has 30 (default 5, --quick 1)')
    parser.add_argument('--seed', type=int, default=20240229)
    parser.add_argument('--no-reference', action='store_true',
                        help='measure zodbtasks only')
    parser.add_argument('--json', metavar='PATH',
                        help='also write the raw results there')
    parser.add_argument('--worker', choices=('zodbtasks', 'reference'),
                        help=argparse.SUPPRESS)
    parser.add_argument('--ref-src', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    quick = args.quick
    if args.calls is None:
        args.calls = 200 if quick else 1000
    if args.budget is None:
        args.budget = 1.0 if quick else 5.0
    if args.worker:
        args.sizes = [s for s in (args.sizes or []) if s]
        return worker(args)

    if args.sizes is None:
        args.sizes = ([1000, 10000, 100000] if quick
                      else [1000, 10000, 100000, 1000000])
    ref_max = args.ref_max or (10000 if quick else 30000)
    if args.ref_sizes is None:
        ref_sizes = {s for s in args.sizes if s <= ref_max}
        if max(args.sizes) > ref_max:
            ref_sizes.add(ref_max)
        args.ref_sizes = sorted(ref_sizes)
    ref_sizes = [] if args.no_reference else args.ref_sizes
    all_sizes = sorted(set(args.sizes) | set(ref_sizes))

    args.load_at_start = _load()
    ref = None
    if not args.no_reference:
        sys.path.insert(0, HERE)
        import _reference
        python, source = _reference.prepare()
        _progress('bench', 'reference worker: N = %s'
                  % ', '.join(map(str, ref_sizes)))
        ref = run_worker(python, 'reference', ref_sizes, args,
                         ['--ref-src', source])
    _progress('bench', 'zodbtasks worker: N = %s'
              % ', '.join(map(str, all_sizes)))
    zt = run_worker(sys.executable, 'zodbtasks', all_sizes, args)
    text = report(args, zt, ref, ref_sizes, all_sizes)
    print(text)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'zodbtasks': zt, 'reference': ref,
                       'sizes': all_sizes, 'ref_sizes': ref_sizes,
                       'args': vars(args)}, f, indent=1, default=str)


if __name__ == '__main__':
    main()
