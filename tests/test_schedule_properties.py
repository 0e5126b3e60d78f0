"""Property tests: schedules against a slow brute-force reference.

Hypothesis draws a schedule as plain sets of field values (plus the special
day forms), renders it as a cron string or as from_fields tuples, and checks
``next_times`` against a reference that walks day by day through the local
calendar and tests each wall time with a plain matcher written here.  That
covers "strictly after now", "matches the expression", "nothing matching was
skipped" and "fire times increase" at once.
"""
import calendar
from datetime import date
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from zodbtasks.schedule import bounded
from zodbtasks.schedule import every
from zodbtasks.schedule import from_cron
from zodbtasks.schedule import from_fields
from zodbtasks.schedule import next_times

UTC = timezone.utc
FIRST = int(datetime(1970, 1, 1, tzinfo=UTC).timestamp())
LAST = int(datetime(2099, 12, 31, tzinfo=UTC).timestamp())
ZONES = ['Europe/Berlin', 'America/New_York', 'Australia/Lord_Howe',
         'America/Sao_Paulo', 'Pacific/Chatham', 'Asia/Kolkata']
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# -- the plain matcher --------------------------------------------------------

class Spec:
    """A schedule as sets.  None means '*' (or '?').  Days of the week use
    cron numbers (0 and 7 Sunday)."""

    def __init__(self, minutes, hours, days, months, weekdays, seconds,
                 last_day=False, last_workday=False, nearest=(),
                 last_weekdays=(), nth_weekdays=(), days_and=None):
        self.seconds = seconds
        self.minutes = minutes
        self.hours = hours
        self.days = days
        self.months = months
        self.weekdays = weekdays
        self.last_day = last_day
        self.last_workday = last_workday
        self.nearest = nearest
        self.last_weekdays = last_weekdays
        self.nth_weekdays = nth_weekdays
        self.day_field_restricted = (
            days is not None or last_day or last_workday or bool(nearest))
        self.weekday_field_restricted = (
            weekdays is not None or bool(last_weekdays) or bool(nth_weekdays))
        if days_and is None:
            # cron: "or" only when neither day field is '*'
            days_and = not (self.day_field_restricted
                            and self.weekday_field_restricted)
        self.days_and = days_and

    def day_of_month_matches(self, d):
        last = calendar.monthrange(d.year, d.month)[1]
        if not self.day_field_restricted:
            return True
        if self.days is not None and d.day in self.days:
            return True
        if self.last_day and d.day == last:
            return True
        if self.last_workday:
            workday = last
            while date(d.year, d.month, workday).weekday() >= 5:
                workday -= 1
            if d.day == workday:
                return True
        for n in self.nearest:
            if n <= last and d.day == nearest_workday(d.year, d.month, n):
                return True
        return False

    def day_of_week_matches(self, d):
        if not self.weekday_field_restricted:
            return True
        cron_day = (d.weekday() + 1) % 7   # Sunday 0
        if self.weekdays is not None and (
                cron_day in self.weekdays
                or (cron_day == 0 and 7 in self.weekdays)):
            return True
        last = calendar.monthrange(d.year, d.month)[1]
        named = {cron_day, 7 if cron_day == 0 else cron_day}
        if named & set(self.last_weekdays) and d.day > last - 7:
            return True
        week = (d.day - 1) // 7 + 1
        return any((n, week) in self.nth_weekdays for n in named)

    def day_matches(self, d):
        if self.months is not None and d.month not in self.months:
            return False
        dom, dow = self.day_of_month_matches(d), self.day_of_week_matches(d)
        return (dom and dow) if self.days_and else (dom or dow)

    def walls(self, d):
        """Matching wall times on day `d`, in order."""
        for hour in sorted(self.hours) if self.hours else range(24):
            for minute in sorted(self.minutes) if self.minutes else range(60):
                seconds = self.seconds
                for second in range(60) if seconds is None else sorted(
                        seconds):
                    yield datetime(d.year, d.month, d.day, hour, minute,
                                   second)


def nearest_workday(year, month, n):
    last = calendar.monthrange(year, month)[1]
    weekday = date(year, month, n).weekday()
    if weekday == 5:
        return n - 1 if n > 1 else n + 2
    if weekday == 6:
        return n + 1 if n < last else n - 2
    return n


def instants_showing(wall, zone):
    """All instants at which a clock in `zone` shows `wall` (0, 1 or 2)."""
    found = []
    for fold in (0, 1):
        aware = wall.replace(tzinfo=zone, fold=fold)
        if aware.astimezone(UTC).astimezone(zone).replace(
                tzinfo=None) == wall:
            found.append(int(aware.timestamp()))
    return sorted(set(found))


def first_instant_showing(wall, zone):
    """The first instant the clock shows `wall`; for a wall time that is
    skipped, the first instant after the jump."""
    probe = wall
    while not instants_showing(probe, zone):
        probe = probe.replace(second=0) + timedelta(minutes=1)
    return instants_showing(probe, zone)[0]


def reference_next_times(spec, tz, now, count, fixed_time):
    zone = ZoneInfo(tz) if tz else UTC
    day = datetime.fromtimestamp(now, zone).date() - timedelta(days=1)
    found = set()
    days_after_enough = None
    for _ in range(366 * 50):
        if spec.day_matches(day):
            for wall in spec.walls(day):
                if tz is None:
                    times = [int(wall.replace(tzinfo=UTC).timestamp())]
                elif fixed_time:
                    times = [first_instant_showing(wall, zone)]
                else:
                    times = instants_showing(wall, zone)
                found.update(t for t in times if t > now)
                if tz is None and len(found) >= count:
                    break
        if days_after_enough is None and len(found) >= count:
            days_after_enough = 0
        if days_after_enough is not None:
            days_after_enough += 1
            if days_after_enough > 2:
                break
        day += timedelta(days=1)
    return sorted(found)[:count]


def never_matches(spec):
    """No day of 2000-2027 matches: these 28 years hold all 14 calendars."""
    day = date(2000, 1, 1)
    while day.year < 2028:
        if spec.day_matches(day):
            return False
        day += timedelta(days=1)
    return True


# -- strategies ---------------------------------------------------------------

def value_sets(low, high, max_size=4):
    return st.one_of(st.none(), st.sets(st.integers(low, high), min_size=1,
                                        max_size=max_size))


def render(values, extra=()):
    items = [str(v) for v in sorted(values or ())] + list(extra)
    return ','.join(items) if items else '*'


@st.composite
def cron_specs(draw, seconds=False):
    minutes = draw(value_sets(0, 59))
    hours = draw(value_sets(0, 23))
    months = draw(value_sets(1, 12))
    days = draw(value_sets(1, 31))
    extra_days = []
    last_day = draw(st.booleans()) and draw(st.booleans())
    last_workday = draw(st.booleans()) and draw(st.booleans())
    nearest = draw(st.sets(st.integers(1, 31), max_size=2)) \
        if draw(st.booleans()) else set()
    extra_days += ['L'] * last_day + ['LW'] * last_workday
    extra_days += [f'{n}W' for n in sorted(nearest)]
    weekdays = draw(value_sets(0, 7))
    last_weekdays = draw(st.sets(st.integers(0, 7), max_size=2)) \
        if draw(st.booleans()) else set()
    nth = draw(st.sets(st.tuples(st.integers(0, 7), st.integers(1, 5)),
                       max_size=2)) if draw(st.booleans()) else set()
    extra_weekdays = [f'{n}L' for n in sorted(last_weekdays)]
    extra_weekdays += [f'{n}#{k}' for n, k in sorted(nth)]
    second_values = draw(value_sets(0, 59)) if seconds else {0}
    spec = Spec(minutes, hours, days, months, weekdays, second_values,
                last_day, last_workday, nearest, last_weekdays, nth)
    day_field = render(days, extra_days)
    weekday_field = render(weekdays, extra_weekdays)
    if day_field == '*' and draw(st.booleans()):
        day_field = '?'
    if weekday_field == '*' and draw(st.booleans()):
        weekday_field = '?'
    fields = [render(minutes), render(hours), day_field, render(months),
              weekday_field]
    if seconds:
        fields.append(render(second_values))
    return spec, ' '.join(fields)


instants = st.integers(FIRST, LAST)


def _offset_changes(tz, years):
    zone = ZoneInfo(tz)
    changes = []
    for year in years:
        start = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
        for t in range(start, start + 365 * 86400, 3 * 3600):
            if (datetime.fromtimestamp(t, zone).utcoffset()
                    != datetime.fromtimestamp(t + 3 * 3600, zone).utcoffset()):
                changes.append(t)
    return changes


CHANGES = {tz: _offset_changes(tz, (1987, 2011, 2024, 2070)) for tz in ZONES}


@st.composite
def zoned_instants(draw):
    tz = draw(st.sampled_from(ZONES))
    changes = CHANGES[tz]
    near = draw(st.sampled_from([None, 2 * 86400, 7200]))
    if changes and near:
        now = draw(st.sampled_from(changes)) + draw(st.integers(-near, near))
    else:
        now = draw(instants)
    return tz, now


# -- properties ---------------------------------------------------------------

def check(spec, schedule, tz, now, count=3):
    expected = reference_next_times(spec, tz, now, count, schedule.fixed_time)
    assert next_times(schedule, now, count) == expected


@SETTINGS
@given(cron_specs(seconds=True), instants)
def test_cron_in_utc(spec_expression, now):
    spec, expression = spec_expression
    try:
        schedule = from_cron(expression)
    except ValueError:
        assert never_matches(spec)
        return
    check(spec, schedule, None, now)


@SETTINGS
@given(cron_specs(), zoned_instants())
def test_cron_in_zones(spec_expression, zoned):
    spec, expression = spec_expression
    tz, now = zoned
    try:
        schedule = from_cron(expression, tz)
    except ValueError:
        assert never_matches(spec)
        return
    assert schedule.fixed_time == (spec.minutes is not None
                                   and spec.hours is not None)
    check(spec, schedule, tz, now)


@st.composite
def field_tuples(draw):
    names = ['second', 'minute', 'hour', 'day_of_month', 'month',
             'day_of_week']
    ranges = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]
    return {name: tuple(sorted(draw(st.sets(st.integers(low, high),
                                            max_size=3))))
            for name, (low, high) in zip(names, ranges)
            if draw(st.integers(0, 2)) == 0}


def spec_from_tuples(fields):
    """The z3c.taskqueue rules, spelled out independently."""
    level = {'second': 0, 'minute': 1, 'hour': 2, 'day_of_month': 3,
             'day_of_week': 3, 'month': 4}
    given_fields = {k: set(v) for k, v in fields.items() if v}
    finest = min((level[k] for k in given_fields), default=None)

    def pick(name, smallest):
        if name in given_fields:
            return given_fields[name]
        if finest is None or level[name] > finest:
            return None               # unrestricted
        return {smallest}
    seconds = given_fields.get('second', {0})
    minutes, hours = pick('minute', 0), pick('hour', 0)
    months = pick('month', 1)
    if 'day_of_month' in given_fields or 'day_of_week' in given_fields:
        days = given_fields.get('day_of_month')
        weekdays = given_fields.get('day_of_week')
        if weekdays is not None:   # Monday 0 -> cron numbers
            weekdays = {(w + 1) % 7 for w in weekdays}
    else:
        days, weekdays = pick('day_of_month', 1), None
    return Spec(minutes, hours, days, months, weekdays, seconds,
                days_and=True)


@SETTINGS
@given(field_tuples(), st.one_of(st.none(), st.sampled_from(ZONES)),
       instants)
def test_fields(fields, tz, now):
    spec = spec_from_tuples(fields)
    try:
        schedule = from_fields(timezone=tz, **fields)
    except ValueError:
        assert never_matches(spec)
        return
    assert schedule.fixed_time == (spec.minutes is not None
                                   and spec.hours is not None)
    check(spec, schedule, tz, now)


@SETTINGS
@given(cron_specs(), st.one_of(st.none(), st.sampled_from(ZONES)), instants)
def test_each_fire_time_is_next_after_the_second_before(spec_expression, tz,
                                                        now):
    spec, expression = spec_expression
    try:
        schedule = from_cron(expression, tz)
    except ValueError:
        return
    times = next_times(schedule, now, 4)
    assert times and times[0] > now
    assert all(a < b for a, b in zip(times, times[1:]))
    for t in times:
        assert type(t) is int
        assert schedule.next_after(t - 1) == t
        assert schedule.next_after(t - 0.5) == t


@SETTINGS
@given(st.one_of(st.integers(1, 10 ** 6), st.floats(0.001, 1e6)),
       st.one_of(st.none(), st.integers(FIRST, LAST)),
       st.one_of(st.integers(FIRST, LAST), st.floats(FIRST, LAST)))
def test_every(seconds, anchor, now):
    t = every(seconds, anchor=anchor).next_after(now)
    assert t > now
    if anchor is None:
        assert t == now + seconds
    elif now < anchor:
        assert t == anchor
    else:
        k = round((t - anchor) / seconds)
        assert abs(anchor + k * seconds - t) <= 1e-6
        assert anchor + (k - 1) * seconds <= now + 1e-6


@SETTINGS
@given(cron_specs(), st.integers(FIRST, LAST), st.integers(0, 10 ** 7),
       st.integers(-10 ** 6, 10 ** 7))
def test_bounded(spec_expression, start, length, offset):
    _, expression = spec_expression
    try:
        inner = from_cron(expression)
    except ValueError:
        return
    end = start + length
    now = start + offset
    t = bounded(inner, start=start, end=end).next_after(now)
    unbounded = inner.next_after(max(now, start - 1))
    if unbounded <= end:
        assert t == unbounded and start <= t <= end and t > now
    else:
        assert t is None
