"""Benchmark zodbtasks.schedule against cronsim and croniter.

Run by hand:  .venv/bin/python bench/bench_schedule.py [--quick] [--calls N]

Two measures, each call timed on its own (best of 3), medians shown:

*cold*: build a schedule for an expression the process has not seen and ask
its first fire time.  For us that is ``from_cron(expr, zone).next_after(now)``
after forgetting the parsed expressions and every zone's year tables (the
zones themselves stay loaded, as a ZoneInfo does for cronsim); for cronsim
``next(CronSim(expr, start))``; for croniter
``croniter(expr, start).get_next(float)``.

*warm*: the next fire time after the previous one, on a schedule (or
iterator) that already answered once.

First a random mix: lists, ranges, steps, L, LW, nL, n#k, a seconds field in
a sixth of the expressions, eight zones (UTC, Lord Howe and Chatham among
them), instants in 1971-2098, a third of them within a day and a half of a
change of UTC offset.  Then fixed expressions on random instants in
2000-2040 (the fixed cases: cold and warm per case).
"""
import argparse
import os
import random
import statistics
import sys
import time
from datetime import datetime
from datetime import timezone
from zoneinfo import ZoneInfo

from croniter import croniter
from cronsim import CronSim
from cronsim import CronSimError

from zodbtasks import schedule as schedule_module
from zodbtasks._calendar import zone_table
from zodbtasks.schedule import from_cron
from zodbtasks.schedule import from_fields

UTC = timezone.utc
ZONES = [None, 'Europe/Berlin', 'America/New_York', 'Australia/Lord_Howe',
         'Pacific/Chatham', 'America/Sao_Paulo', 'Asia/Kolkata',
         'Europe/London']
MONTHS = 'JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC'.split()
DAYS = 'SUN MON TUE WED THU FRI SAT'.split()

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


def forget():
    """Forget what the schedule module learnt: the parsed expressions and
    the year tables of every zone."""
    schedule_module._forget_caches()


def best_of(call, arg, repeat=3, before=None):
    best = float('inf')
    for _ in range(repeat):
        if before is not None:
            before()
        t0 = time.perf_counter()
        call(arg)
        best = min(best, time.perf_counter() - t0)
    return best


def median_us(call, args, before=None):
    return statistics.median(best_of(call, a, before=before)
                             for a in args) * 1e6


# -- the random mix -----------------------------------------------------------

def random_term(rng, low, high, names=None):
    def value(lo, hi):
        v = rng.randint(lo, hi)
        if names and rng.random() < 0.3:
            return v, names[v - low]
        return v, str(v)
    k = rng.random()
    if k < 0.4 or low == high:
        return value(low, high)[1]
    a, text_a = value(low, high - 1)
    b, text_b = value(a + 1, high)
    if k < 0.65:
        return f'{text_a}-{text_b}'
    if k < 0.8:
        return f'{text_a}-{text_b}/{rng.randint(1, high - low)}'
    return f'*/{rng.randint(1, high - low + 1)}'


def random_field(rng, low, high, names=None, star=0.3):
    if rng.random() < star:
        return '*'
    count = 1 if rng.random() < 0.6 else rng.randint(2, 4)
    return ','.join(random_term(rng, low, high, names) for _ in range(count))


def random_expression(rng):
    minute = random_field(rng, 0, 59)
    hour = random_field(rng, 0, 23)
    k = rng.random()
    if k < 0.45:
        dom = '*'
    elif k < 0.55:
        dom = rng.choice(['L', 'LW'])
    else:
        dom = random_field(rng, 1, 31, star=0)
    month = random_field(rng, 1, 12, MONTHS, star=0.5)
    k = rng.random()
    if k < 0.45:
        dow = '*'
    elif k < 0.6:
        day = rng.randint(0, 6)
        dow = (f'{day}L' if rng.random() < 0.5
               else f'{DAYS[day]}#{rng.randint(1, 5)}')
    else:
        dow = random_field(rng, 0, 6, DAYS, star=0)
    parts = [minute, hour, dom, month, dow]
    if rng.random() < 1 / 6:
        parts.append(random_field(rng, 0, 59))
    return ' '.join(parts)


def cronsim_order(expression):
    """cronsim puts seconds first in 6-field expressions; we put them last."""
    parts = expression.split()
    return ' '.join(parts[5:] + parts[:5]) if len(parts) == 6 else expression


def random_instant(rng, tz):
    first = int(datetime(1971, 1, 1, tzinfo=UTC).timestamp())
    last = int(datetime(2098, 12, 31, tzinfo=UTC).timestamp())
    if tz is not None and rng.random() < 1 / 3:
        starts = zone_table(tz).year_table(rng.randint(1971, 2098))[0][1:]
        if starts:
            return rng.choice(starts) + rng.randint(-129600, 129600)
    return rng.randint(first, last)


def random_mix(count, seed=20261202):
    """(expression, zone, now) that both libraries accept and can answer."""
    rng = random.Random(seed)
    mix = []
    while len(mix) < count:
        tz = rng.choice(ZONES)
        expression = random_expression(rng)
        now = random_instant(rng, tz)
        start = datetime.fromtimestamp(now, ZoneInfo(tz) if tz else UTC)
        try:
            ours = from_cron(expression, tz).next_after(now)
            theirs = next(CronSim(cronsim_order(expression), start))
        except (ValueError, CronSimError, StopIteration):
            continue   # never fires, or not within cronsim's 50 years
        if ours is None or theirs is None:
            continue
        mix.append((expression, tz, now, start))
    forget()
    return mix


def run_mix(count):
    mix = random_mix(count)

    def our_cold(item):
        expression, tz, now, _ = item
        from_cron(expression, tz).next_after(now)

    def their_cold(item):
        next(CronSim(cronsim_order(item[0]), item[3]))

    def other_cold(item):
        croniter(item[0], item[3]).get_next(float)

    ours_cold = median_us(our_cold, mix, before=forget)
    theirs_cold = median_us(their_cold, mix)
    croniter_mix = [m for m in mix if len(m[0].split()) == 5
                    and '#' not in m[0] and 'L' not in m[0]]
    other_cold_us = median_us(other_cold, croniter_mix)

    # warm: the next time after the one just found
    ours_warm, theirs_warm = [], []
    for expression, tz, now, start in mix:
        schedule = from_cron(expression, tz)
        last = schedule.next_after(now)
        ours_warm.append(best_of(schedule.next_after, last))
        times = []
        for _ in range(3):
            iterator = CronSim(cronsim_order(expression), start)
            next(iterator)
            t0 = time.perf_counter()
            try:
                next(iterator)
            except StopIteration:
                pass
            times.append(time.perf_counter() - t0)
        theirs_warm.append(min(times))
    ours_warm = statistics.median(ours_warm) * 1e6
    theirs_warm = statistics.median(theirs_warm) * 1e6

    print(f'random mix: {len(mix)} expressions, median microseconds'
          f' (croniter cold on the {len(croniter_mix)} 5-field ones'
          ' without L or #)\n')
    header = (f'{"":22} {"ours":>7} {"cronsim":>8} {"croniter":>9}'
              f' {"x cronsim":>10}')
    print(header)
    print('-' * len(header))
    print(f'{"cold (build + first)":22} {ours_cold:7.2f} {theirs_cold:8.2f}'
          f' {other_cold_us:9.1f} {theirs_cold / ours_cold:9.2f}x')
    print(f'{"warm (next after next)":22} {ours_warm:7.2f}'
          f' {theirs_warm:8.2f} {"-":>9} {theirs_warm / ours_warm:9.2f}x')
    return dict(cold=(ours_cold, theirs_cold, other_cold_us),
                warm=(ours_warm, theirs_warm))


def run_cases(calls):
    rng = random.Random(20240331)
    first = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp())
    last = int(datetime(2040, 1, 1, tzinfo=UTC).timestamp())
    nows = [rng.randint(first, last) for _ in range(calls)]
    print(f'\nfixed expressions: median of {calls} instants, microseconds'
          ' per next fire time; cold = build + first\n')
    header = (f'{"schedule":44} {"warm":>6} {"cronsim":>8} {"croniter":>9}'
              f' {"x cs":>6} {"cold":>6} {"cronsim":>8} {"x cs":>6}')
    print(header)
    print('-' * len(header))
    for label, build, cronsim_expr, croniter_expr, tz in CASES:
        schedule = build()
        zone = ZoneInfo(tz) if tz else UTC
        starts = [datetime.fromtimestamp(n, zone) for n in nows]
        for n in nows[:50]:   # warm the lazily built tables
            schedule.next_after(n)
        ours = median_us(schedule.next_after, nows)
        cold = median_us(lambda n: build().next_after(n), nows,
                         before=forget)
        row = f'{label:44} {ours:6.2f}'
        if cronsim_expr is None:
            print(row + f' {"-":>8} {"-":>9} {"-":>6} {cold:6.1f}')
            continue
        theirs = median_us(lambda s: next(CronSim(cronsim_expr, s)), starts)
        other = median_us(
            lambda s: croniter(croniter_expr, s).get_next(float), starts)
        print(row + f' {theirs:8.1f} {other:9.1f} {theirs / ours:5.1f}x'
              f' {cold:6.1f} {theirs:8.1f} {theirs / cold:5.1f}x')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--calls', type=int, default=1000,
                        help='instants per fixed schedule (default 1000)')
    parser.add_argument('--mix', type=int, default=2000,
                        help='expressions in the random mix (default 2000)')
    parser.add_argument('--quick', action='store_true',
                        help='a few seconds: 100 instants, 200 expressions')
    options = parser.parse_args(argv)
    if options.quick:
        options.calls, options.mix = 100, 200
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    print(f'Python {sys.version.split()[0]}; load average {load:.2f}\n')
    run_mix(options.mix)
    run_cases(options.calls)


if __name__ == '__main__':
    main()
