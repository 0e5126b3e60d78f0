"""Benchmark zodbtasks.schedule against cronsim and croniter.

Run by hand:  .venv/bin/python bench/bench_schedule.py [--calls N]

For each schedule, the time of one "next fire time after `now`" for the same
random instants (2000-2040, fixed seed): ours is ``next_after(now)`` on a
schedule built once; cronsim is ``next(CronSim(expr, start))`` and croniter
``croniter(expr, start).get_next(float)`` (both need a new object per start
time, so that is what a scheduler using them pays).  Each call is timed on
its own, best of 3; the table shows the median over the instants.
"""
import argparse
import random
import statistics
import sys
import time
from datetime import datetime
from datetime import timezone
from zoneinfo import ZoneInfo

from croniter import croniter
from cronsim import CronSim

from zodbtasks.schedule import from_cron
from zodbtasks.schedule import from_fields

UTC = timezone.utc

# (label, our schedule, cronsim expression, croniter expression, zone)
CASES = [
    ('0 0 29 2 *  (leap day)', lambda: from_cron('0 0 29 2 *'),
     '0 0 29 2 *', '0 0 29 2 *', None),
    ('*/15 9-17 * * 1-5', lambda: from_cron('*/15 9-17 * * 1-5'),
     '*/15 9-17 * * 1-5', '*/15 9-17 * * 1-5', None),
    ('*/15 9-17 * * 1-5  New York', lambda: from_cron(
        '*/15 9-17 * * 1-5', 'America/New_York'),
     '*/15 9-17 * * 1-5', '*/15 9-17 * * 1-5', 'America/New_York'),
    ('30 2 * * *  Europe/Berlin', lambda: from_cron(
        '30 2 * * *', 'Europe/Berlin'),
     '30 2 * * *', '30 2 * * *', 'Europe/Berlin'),
    ('* * * * * */10  (seconds)', lambda: from_cron('* * * * * */10'),
     '*/10 * * * * *', '* * * * * */10', None),
    ('0 9 L * *', lambda: from_cron('0 9 L * *'),
     '0 9 L * *', '0 9 L * *', None),
    ('0 12 * * 5#3', lambda: from_cron('0 12 * * 5#3'),
     '0 12 * * 5#3', '0 12 * * 5#3', None),
    ('0 18 * * 5L', lambda: from_cron('0 18 * * 5L'),
     '0 18 * * 5L', '0 18 * * L5', None),
    ('fields minute=(0,30) hour=(9,17) dow=(0,4)', lambda: from_fields(
        minute=(0, 30), hour=(9, 17), day_of_week=(0, 4)),
     '0,30 9,17 * * 1,5', '0,30 9,17 * * 1,5', None),
    ('fields dom=(29,) month=(2,) dow=(0,)', lambda: from_fields(
        day_of_month=(29,), month=(2,), day_of_week=(0,)),
     None, None, None),
]


def best_of(call, arg, repeat=3):
    best = float('inf')
    for _ in range(repeat):
        t0 = time.perf_counter()
        call(arg)
        best = min(best, time.perf_counter() - t0)
    return best


def median_us(call, args):
    return statistics.median(best_of(call, a) for a in args) * 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--calls', type=int, default=1000,
                        help='instants per schedule (default 1000)')
    options = parser.parse_args(argv)
    rng = random.Random(20240331)
    first = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp())
    last = int(datetime(2040, 1, 1, tzinfo=UTC).timestamp())
    nows = [rng.randint(first, last) for _ in range(options.calls)]

    print(f'Python {sys.version.split()[0]}; median of {options.calls} calls,'
          ' microseconds per next fire time\n')
    header = (f'{"schedule":44} {"ours":>7} {"cronsim":>8} {"croniter":>9}'
              f' {"x cronsim":>10} {"x croniter":>11}')
    print(header)
    print('-' * len(header))
    for label, build, cronsim_expr, croniter_expr, tz in CASES:
        schedule = build()
        zone = ZoneInfo(tz) if tz else UTC
        starts = [datetime.fromtimestamp(n, zone) for n in nows]
        for n in nows[:50]:   # warm the lazily built tables
            schedule.next_after(n)
        ours = median_us(schedule.next_after, nows)
        row = f'{label:44} {ours:7.2f}'
        if cronsim_expr is None:
            print(row + f' {"-":>8} {"-":>9} {"-":>10} {"-":>11}')
            continue
        theirs = median_us(lambda s: next(CronSim(cronsim_expr, s)), starts)
        other = median_us(
            lambda s: croniter(croniter_expr, s).get_next(float), starts)
        print(row + f' {theirs:8.1f} {other:9.1f} {theirs / ours:10.1f}'
              f' {other / ours:11.1f}')

    print('\nbuilding a schedule (microseconds):')
    for label, build in [
            ("from_cron('*/15 9-17 * * 1-5', 'Europe/Berlin')",
             lambda: from_cron('*/15 9-17 * * 1-5', 'Europe/Berlin')),
            ('from_fields(minute=(0, 30), hour=(9, 17))',
             lambda: from_fields(minute=(0, 30), hour=(9, 17)))]:
        build()
        t0 = time.perf_counter()
        for _ in range(10000):
            build()
        print(f'  {label:60} {(time.perf_counter() - t0) * 100:6.2f}')


if __name__ == '__main__':
    main()
