"""Schedules: when does a repeating job fire next?

Pure Python, independent of ZODB.  Every schedule answers one question,
``next_after(now)``: the first fire time strictly after ``now``, in whole
seconds since the Unix epoch, or None when it will never fire again.

Build schedules with :func:`from_fields` (the z3c.taskqueue tuple fields),
:func:`from_cron` (cron strings), :func:`every` (fixed intervals) and
:func:`bounded` (start and end limits).  See ``docs/schedules.rst``.
"""
from __future__ import annotations

import math
import re
from bisect import bisect_left
from bisect import bisect_right
from functools import lru_cache
from typing import Union
from zoneinfo import ZoneInfo
from zoneinfo import ZoneInfoNotFoundError

from zodbtasks._calendar import DAY
from zodbtasks._calendar import MONTH_LENGTHS
from zodbtasks._calendar import forget_zone_years
from zodbtasks._calendar import is_leap
from zodbtasks._calendar import weekday_of_day
from zodbtasks._calendar import year_of_day
from zodbtasks._calendar import year_start
from zodbtasks._calendar import zone_table

__all__ = [
    'Schedule', 'CalendarSchedule', 'IntervalSchedule', 'BoundedSchedule',
    'from_fields', 'from_cron', 'every', 'bounded', 'next_times',
]

_UTC_KEYS = frozenset(['UTC', 'Etc/UTC', 'Etc/Universal', 'Etc/Zulu',
                       'Universal', 'Zulu', 'Etc/GMT', 'GMT'])
_TWO_DAYS = 2 * DAY

#: The values of a field of `from_fields`, as it accepts them.
FieldValues = Union[tuple[int, ...], list[int], set[int], frozenset[int],
                    range]


class Schedule:
    """Base class: something that can tell the next fire time."""

    def next_after(self, now: float) -> float | None:
        """The first fire time strictly after `now` (seconds since the
        epoch), or None if the schedule never fires again."""
        raise NotImplementedError

    def _spec(self):
        raise NotImplementedError

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._spec() == other._spec()

    def __hash__(self):
        return hash((type(self).__name__, self._spec()))


def _whole_seconds(now):
    """`now` rounded down to a whole second (an int)."""
    if type(now) is int:
        return now
    if isinstance(now, bool) or not isinstance(now, (int, float)):
        raise TypeError(
            f'now must be a number of seconds since the epoch, not {now!r}')
    return math.floor(now)


# ---------------------------------------------------------------------------
# The calendar: which wall-clock seconds match, ignoring time zones
# ---------------------------------------------------------------------------

class _Calendar:
    """The parsed fields of a calendar schedule, in wall-clock terms.

    Times of day are searched field by field in sorted tuples.  Days are
    found through per-year lists: whether a day matches depends only on the
    length of its month, the weekday its month starts on and whether its
    month is wanted, so a year's list of matching days depends only on
    whether it is a leap year and on the weekday of January 1st.  There are
    14 such kinds of year; their lists are built when first needed.
    """

    def __init__(self, seconds, minutes, hours, months, days, weekdays,
                 last_day=False, last_workday=False, nearest_workday=(),
                 last_weekdays=(), nth_weekdays=(), days_and=True):
        self.seconds = tuple(sorted(seconds))
        self.minutes = tuple(sorted(minutes))
        self.hours = tuple(sorted(hours))
        self.months = frozenset(months)
        self.days = frozenset(days)                # day-of-month numbers
        self.weekdays = frozenset(weekdays)        # 0 = Monday
        self.last_day = last_day                   # L
        self.last_workday = last_workday           # LW
        self.nearest_workday = frozenset(nearest_workday)  # nW
        self.last_weekdays = frozenset(last_weekdays)      # nL (weekdays)
        self.nth_weekdays = frozenset(nth_weekdays)        # n#k as (wd, k)
        self.days_and = days_and
        self.all_weekdays = len(self.weekdays) == 7   # nL, n#k add nothing
        self.first_time = (self.hours[0] * 3600 + self.minutes[0] * 60
                           + self.seconds[0])
        self._month_cache = {}
        self._year_cache = [None] * 14
        self._last_year = (0, 0, ())    # first day, day after, matching days

    # -- days ---------------------------------------------------------------

    def month_days(self, length, first_weekday):
        """Sorted tuple of the matching days of a month."""
        key = (length, first_weekday)
        result = self._month_cache.get(key)
        if result is None:
            result = self._month_cache[key] = tuple(
                self._find_month_days(length, first_weekday))
        return result

    def _find_month_days(self, length, first_weekday):
        # Each rule as a set of days, combined with set operations.  Day n
        # of the month falls on weekday (first_weekday + n - 1) % 7.
        in_month = _MONTH_DAY_SETS[length]
        dom = self.days & in_month
        if self.last_day:                               # L
            dom = dom | {length}
        if self.last_workday:                           # LW
            dom = dom | {_nearest_workday(
                length, (first_weekday + length - 1) % 7, length)}
        for n in self.nearest_workday:                  # nW
            if n <= length:  # like a plain n, nW skips months without day n
                dom = dom | {_nearest_workday(
                    n, (first_weekday + n - 1) % 7, length)}
        if self.all_weekdays:
            dow = in_month
        else:
            dow = set()
            for weekday in self.weekdays:               # every such weekday
                dow.update(range((weekday - first_weekday) % 7 + 1,
                                 length + 1, 7))
            last_weekday = (first_weekday + length - 1) % 7
            for weekday in self.last_weekdays:          # nL: the last one
                dow.add(length - (last_weekday - weekday) % 7)
            for weekday, k in self.nth_weekdays:        # n#k: the k-th one
                day = (weekday - first_weekday) % 7 + 1 + 7 * (k - 1)
                if day <= length:
                    dow.add(day)
        return sorted(dom & dow if self.days_and else dom | dow)

    def year_days(self, leap, jan1_weekday):
        """Sorted tuple of matching days of a year, counted from 0 (Jan 1)."""
        index = leap * 7 + jan1_weekday
        result = self._year_cache[index]
        if result is None:
            result = []
            offset, weekday = 0, jan1_weekday
            for month, length in enumerate(MONTH_LENGTHS[leap], 1):
                if month in self.months:
                    result.extend(offset + day - 1
                                  for day in self.month_days(length, weekday))
                offset += length
                weekday = (weekday + length) % 7
            result = self._year_cache[index] = tuple(result)
        return result

    def can_fire(self):
        """Does any day of any of the 14 kinds of year match?"""
        for leap in (0, 1):
            for jan1_weekday in range(7):
                offset_weekday = jan1_weekday
                for month, length in enumerate(MONTH_LENGTHS[leap], 1):
                    if month in self.months and self.month_days(
                            length, offset_weekday):
                        return True
                    offset_weekday = (offset_weekday + length) % 7
        return False

    # -- times of day -------------------------------------------------------

    def time_at_or_after(self, second_of_day):
        """The first matching second of the day >= `second_of_day`, or None."""
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        hour, rest = divmod(second_of_day, 3600)
        minute, second = divmod(rest, 60)
        i = bisect_left(hours, hour)
        if i < len(hours) and hours[i] == hour:
            j = bisect_left(minutes, minute)
            if j < len(minutes) and minutes[j] == minute:
                k = bisect_left(seconds, second)
                if k < len(seconds):
                    return hour * 3600 + minute * 60 + seconds[k]
                j += 1
            if j < len(minutes):
                return hour * 3600 + minutes[j] * 60 + seconds[0]
            i += 1
        if i < len(hours):
            return hours[i] * 3600 + minutes[0] * 60 + seconds[0]
        return None

    # -- the search ---------------------------------------------------------

    def first_at_or_after(self, wall):
        """The first matching wall time >= `wall` (both in seconds)."""
        days, second_of_day = divmod(wall, DAY)
        time = self.time_at_or_after(second_of_day)
        if time is None:
            days += 1
            time = self.first_time
        # The year searched last, if `days` lies in it (the usual case when
        # a schedule is asked for one fire time after another).
        first_day, stop_day, year_days = self._last_year
        if first_day <= days < stop_day:
            i = bisect_left(year_days, days - first_day)
            if i < len(year_days):
                if year_days[i] != days - first_day:
                    time = self.first_time
                return (first_day + year_days[i]) * DAY + time
        year = year_of_day(days)
        first_day = year_start(year)
        day_of_year = days - first_day
        leap = is_leap(year)
        if self._year_cache[leap * 7 + weekday_of_day(first_day)] is None:
            # A year of this kind was never searched: try the rest of the
            # month first, which needs the days of that month only.
            found = self._rest_of_month(leap, first_day, day_of_year)
            if found is not None:
                if found != day_of_year:
                    time = self.first_time
                return (first_day + found) * DAY + time
        # can_fire() was checked when the schedule was built, and every kind
        # of year comes back within 400 years, so this loop ends.
        while True:
            leap = is_leap(year)
            year_days = self.year_days(leap, weekday_of_day(first_day))
            i = bisect_left(year_days, day_of_year)
            if i < len(year_days):
                self._last_year = (first_day, first_day + 365 + leap,
                                   year_days)
                if year_days[i] != day_of_year:
                    time = self.first_time
                return (first_day + year_days[i]) * DAY + time
            first_day += 366 if leap else 365
            year += 1
            day_of_year = 0
            time = self.first_time

    def _rest_of_month(self, leap, first_day, day_of_year):
        """The first matching day of the year >= `day_of_year` in the same
        month, or None."""
        starts = _MONTH_STARTS[leap]
        month = bisect_right(starts, day_of_year)     # 1-12, 13 past Dec 31
        if month > 12 or month not in self.months:
            return None
        month_start = starts[month - 1]
        days = self.month_days(MONTH_LENGTHS[leap][month - 1],
                               weekday_of_day(first_day + month_start))
        i = bisect_left(days, day_of_year - month_start + 1)
        if i < len(days):
            return month_start + days[i] - 1
        return None


_MONTH_STARTS = tuple(
    tuple(sum(lengths[:m]) for m in range(13)) for lengths in MONTH_LENGTHS)
_MONTH_DAY_SETS = {length: frozenset(range(1, length + 1))
                   for length in (28, 29, 30, 31)}


def _nearest_workday(n, weekday, length):
    """The weekday (Mon-Fri) nearest to day `n` of its month, which starts
    no earlier than the 1st and ends no later than the month's last day.
    `weekday` is the weekday of day `n`."""
    if weekday == 5:  # Saturday: the Friday before, or Monday the 3rd
        return n - 1 if n > 1 else n + 2
    if weekday == 6:  # Sunday: the Monday after, or the Friday before
        return n + 1 if n < length else n - 2
    return n


# ---------------------------------------------------------------------------
# Calendar schedules (from_fields and from_cron)
# ---------------------------------------------------------------------------

class CalendarSchedule(Schedule):
    """A schedule of wall-clock times, in UTC or in an IANA time zone.

    Daylight saving, when a zone is given, follows one of two rules:

    *fixed time* (``fixed_time`` true): each wanted wall time fires once, at
    the first instant the clock shows it; a wall time skipped when the clock
    jumps forward fires at the instant of the jump.

    *elapsed time*: every instant whose wall time matches fires; skipped wall
    times never fire and repeated ones fire twice.
    """

    __slots__ = ('_calendar', '_timezone', '_zone', 'fixed_time',
                 '_builder', '_args')

    def __init__(self, calendar, timezone, fixed_time, builder, args):
        self._calendar = calendar
        self._timezone = timezone
        self._zone = None if timezone is None else zone_table(timezone)
        self.fixed_time = fixed_time
        self._builder = builder
        self._args = args

    @property
    def timezone(self) -> str | None:
        """The IANA key of the zone, or None for UTC."""
        return self._timezone

    def next_after(self, now: float) -> int:
        if type(now) is not int:
            now = _whole_seconds(now)
        if self._zone is None:
            return self._calendar.first_at_or_after(now + 1)
        if self.fixed_time:
            return self._next_fixed_time(now)
        return self._next_elapsed_time(now + 1)

    def _next_fixed_time(self, now):
        # The first wanted wall time the clock has not shown yet, mapped to
        # the first instant the clock shows it.  This one rule covers daylight
        # saving: a wall time in the hour skipped in spring is "shown" at the
        # jump (so 02:30 fires at 03:00), and a wall time in the hour repeated
        # in autumn was already shown on the first pass (so it fires once).
        zone = self._zone
        wall = self._calendar.first_at_or_after(zone.latest_wall_shown(now))
        return zone.first_instant_showing(wall)

    def _next_elapsed_time(self, instant):
        # Walk the stretches of constant UTC offset from `instant` on.  Inside
        # a stretch, wall time and instant differ by a constant, so the first
        # match is a plain calendar search.  Wall times skipped in spring lie
        # in no stretch and never fire; those repeated in autumn lie in two
        # stretches and fire in both.
        zone, calendar = self._zone, self._calendar
        start, end, off = zone.segment(instant)
        base, low = instant, instant + off
        wall = calendar.first_at_or_after(low)
        while True:
            # Invariant: `wall` is the first match at or after `low`, and the
            # clock read `low` at `base`.
            if wall < end + off:
                return wall - off
            instant = end
            # Past the first two days the clock can no longer read earlier
            # than `low` (offsets differ by less than two days), and until two
            # days before `wall` it reads earlier than `wall`: no match can
            # lie there, so skip the stretches in between.
            if base + _TWO_DAYS <= instant < wall - _TWO_DAYS:
                instant = wall - _TWO_DAYS
            start, end, off = zone.segment(instant)
            shown = instant + off
            if not low <= shown <= wall:
                base, low = instant, shown
                wall = calendar.first_at_or_after(low)

    def _spec(self):
        return (self._builder.__name__, self._args)

    def __reduce__(self):
        args, kwargs = self._args
        if kwargs:
            return (_rebuild, (self._builder, args, kwargs))
        return (self._builder, args)

    def __repr__(self):
        args, kwargs = self._args
        parts = [repr(a) for a in args]
        parts += [f'{k}={v!r}' for k, v in kwargs]
        return f'{self._builder.__name__}({", ".join(parts)})'


def _rebuild(builder, args, kwargs):
    return builder(*args, **dict(kwargs))


def _timezone_key(timezone):
    """Validate `timezone`; return its IANA key, or None for UTC."""
    if timezone is None:
        return None
    if isinstance(timezone, ZoneInfo):
        key = timezone.key
        if key is None:
            raise ValueError(
                'timezone must be an IANA zone name such as "Europe/Berlin";'
                ' a ZoneInfo loaded from a file has no name')
    elif isinstance(timezone, str):
        key = timezone
    else:
        raise TypeError(
            f'timezone must be an IANA zone name such as "Europe/Berlin"'
            f' or None for UTC, not {timezone!r}')
    try:
        zone_table(key)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f'unknown timezone {key!r}; expected an IANA zone name such as'
            f' "Europe/Berlin" or "UTC"') from None
    return None if key in _UTC_KEYS else key


# -- from_fields --------------------------------------------------------------

_TUPLE_FIELDS = (
    # name, low, high, what the values are
    ('second', 0, 59, 'seconds are 0-59'),
    ('minute', 0, 59, 'minutes are 0-59'),
    ('hour', 0, 23, 'hours are 0-23'),
    ('day_of_month', 1, 31, 'days of the month are 1-31'),
    ('month', 1, 12, 'months are 1-12'),
    ('day_of_week', 0, 6, 'days of the week are 0-6, 0 being Monday'),
)


def _tuple_field(name, values, low, high, accepted):
    if isinstance(values, (str, bytes)) or not isinstance(
            values, (tuple, list, set, frozenset, range)):
        raise TypeError(
            f'{name} must be a tuple or list of ints, not {values!r}')
    for value in values:
        if type(value) is not int and (
                isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(
                f'{name} values must be ints, not {value!r}; {accepted}')
        if not low <= value <= high:
            raise ValueError(
                f'{name} value {value} is out of range; {accepted}')
    return tuple(sorted({int(v) for v in values}))


def from_fields(minute: FieldValues = (), hour: FieldValues = (),
                day_of_month: FieldValues = (), month: FieldValues = (),
                day_of_week: FieldValues = (), second: FieldValues = (),
                timezone: str | ZoneInfo | None = None) -> CalendarSchedule:
    """A schedule from z3c.taskqueue-style tuples of allowed values.

    Empty fields are "not given".  Fields finer than the finest one given
    fire only at their smallest value (``hour=(2,)`` is daily at 02:00:00);
    coarser ones not given are unrestricted.  ``day_of_week`` counts from
    0 = Monday; if both day fields are given, a day must match both.
    """
    arguments = dict(second=second, minute=minute, hour=hour,
                     day_of_month=day_of_month, month=month,
                     day_of_week=day_of_week)
    found = []
    for name, low, high, accepted in _TUPLE_FIELDS:
        values = _tuple_field(name, arguments[name], low, high, accepted)
        if values:
            found.append((name, values))
    given = tuple(found)
    key = _timezone_key(timezone)
    calendar, fixed_time = _fields_calendar(given)
    kwargs = given if key is None else given + (('timezone', key),)
    return CalendarSchedule(calendar, key, fixed_time, from_fields,
                            ((), kwargs))


# How fine each field is: 0 second, 1 minute, 2 hour, 3 day, 4 month.
_FIELD_LEVELS = dict(second=0, minute=1, hour=2, day_of_month=3,
                     day_of_week=3, month=4)


@lru_cache(maxsize=1024)
def _fields_calendar(given):
    return _compile_fields(given)


def _compile_fields(given):
    given = dict(given)
    finest = min((_FIELD_LEVELS[name] for name in given), default=None)

    def values(name, low, high):
        """The values of a field, and whether it is unrestricted."""
        if name in given:
            return given[name], False
        if finest is None or _FIELD_LEVELS[name] > finest:
            return range(low, high + 1), True   # coarser than the finest
        return (low,), False                    # finer: smallest value only

    seconds = given.get('second', (0,))   # second is the finest field
    minutes, minute_wild = values('minute', 0, 59)
    hours, hour_wild = values('hour', 0, 23)
    months, _ = values('month', 1, 12)
    if 'day_of_month' in given or 'day_of_week' in given:
        days = given.get('day_of_month', range(1, 32))
        weekdays = given.get('day_of_week', range(7))
    else:
        days, _ = values('day_of_month', 1, 31)
        weekdays = range(7)
    calendar = _Calendar(seconds, minutes, hours, months, days, weekdays)
    if not calendar.can_fire():
        raise ValueError(
            f'from_fields({_format_kwargs(given.items())}) can never fire:'
            f' no month of any year has a day matching day_of_month'
            f' {given.get("day_of_month", "(any)")}'
            f' and day_of_week {given.get("day_of_week", "(any)")}'
            f' in month {given.get("month", "(any)")}')
    # The daylight-saving rule of a cron string whose minute and hour fields
    # are written without '*': fixed times of day keep to the wall clock.
    return calendar, not minute_wild and not hour_wild


def _format_kwargs(kwargs):
    return ', '.join(f'{k}={v!r}' for k, v in kwargs)


# -- from_cron ----------------------------------------------------------------

class _CronField:
    def __init__(self, name, low, high, accepted, names=()):
        self.name = name
        self.low = low
        self.high = high
        self.accepted = accepted
        self.names = {n: i for i, n in enumerate(names, low)}


_MONTH_NAMES = 'JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC'.split()
_DAY_NAMES = 'SUN MON TUE WED THU FRI SAT'.split()
_SECOND = _CronField('second', 0, 59, 'seconds are 0-59')
_MINUTE = _CronField('minute', 0, 59, 'minutes are 0-59')
_HOUR = _CronField('hour', 0, 23, 'hours are 0-23')
_DOM = _CronField('day-of-month', 1, 31,
                  'days of the month are 1-31, L, LW or nW')
_MONTH = _CronField('month', 1, 12, 'months are 1-12 or JAN-DEC', _MONTH_NAMES)
_DOW = _CronField('day-of-week', 0, 7,
                  'days of the week are 0-7 (0 and 7 are Sunday) or SUN-SAT,'
                  ' optionally as nL or n#k', _DAY_NAMES)

_MACROS = {
    '@YEARLY': '0 0 1 1 *',
    '@ANNUALLY': '0 0 1 1 *',
    '@MONTHLY': '0 0 1 * *',
    '@WEEKLY': '0 0 * * 0',
    '@DAILY': '0 0 * * *',
    '@MIDNIGHT': '0 0 * * *',
    '@HOURLY': '0 * * * *',
}

_TERM = re.compile(r'^(\*|\?|[0-9A-Z]+)(?:-([0-9A-Z]+))?(?:/(.*))?$')


class _FieldParser:
    """Parses one field of a cron expression into sets of values."""

    def __init__(self, field, text, expression):
        self.field = field
        self.text = text
        self.expression = expression
        self.values = set()
        self.last_day = False
        self.last_workday = False
        self.nearest_workday = set()
        self.last_weekdays = set()
        self.nth_weekdays = set()

    def fail(self, problem, accepted=None):
        accepted = self.field.accepted if accepted is None else accepted
        raise ValueError(
            f'cron expression {self.expression!r}: {self.field.name}'
            f' {problem}; {accepted}')

    def number(self, token):
        field = self.field
        if token in field.names:
            return field.names[token]
        if not token.isdigit():
            self.fail(f'value {token!r} is not a number'
                      + (' or a name' if field.names else ''))
        value = int(token)
        if not field.low <= value <= field.high:
            self.fail(f'value {value} is out of range')
        return value

    def parse(self):
        if not self.text:
            self.fail('is empty')
        field = self.field
        for term in self.text.split(','):
            # The common terms first, without the regular expression.
            if term.isascii() and term.isdigit():
                value = int(term)
                if field.low <= value <= field.high:
                    self.values.add(value)
                    continue
            elif term == '*':
                self.values.update(range(field.low, field.high + 1))
                continue
            elif not term:
                self.fail(f'{self.text!r} has an empty list item')
            if not self.special(term):
                self.range_term(term)
        return self

    def special(self, term):
        """L, LW, nW in day-of-month; nL and n#k in day-of-week."""
        if self.field is _DOM:
            if term == 'L':
                self.last_day = True
            elif term == 'LW':
                self.last_workday = True
            elif term.endswith('W') and term[:-1].isdigit():
                self.nearest_workday.add(self.number(term[:-1]))
            else:
                return False
            return True
        if self.field is _DOW:
            if '#' in term:
                day, _, nth = term.partition('#')
                if not nth.isdigit() or not 1 <= int(nth) <= 5:
                    self.fail(f'{term!r} has an invalid week number {nth!r}',
                              'n#k means the k-th weekday n of the month,'
                              ' k being 1-5')
                self.nth_weekdays.add((self.number(day), int(nth)))
                return True
            if len(term) > 1 and term.endswith('L') and '/' not in term \
                    and '-' not in term:
                self.last_weekdays.add(self.number(term[:-1]))
                return True
        return False

    def range_term(self, term):
        field = self.field
        match = _TERM.match(term)
        if match is None:
            self.fail(f'{term!r} is not understood')
        start, stop, step = match.groups()
        if start in ('*', '?'):
            if stop is not None:
                self.fail(f'{term!r} is not understood')
            if start == '?' and field not in (_DOM, _DOW):
                self.fail("'?' is not allowed",
                          "'?' is only for day-of-month and day-of-week")
            low, high = field.low, field.high
        else:
            low = self.number(start)
            if stop is not None:
                high = self.number(stop)
                if high < low:
                    self.fail(f'range {term!r} is reversed'
                              f' ({start} is after {stop})')
            elif step is not None:
                high = field.high     # a/n means a, a+n, ... up to the max
            else:
                high = low
        if step is None:
            step = 1
        else:
            if not step.isdigit():
                self.fail(f'step {step!r} in {term!r} is not a number',
                          'a step is a whole number of at least 1')
            step = int(step)
            if step == 0:
                self.fail(f'step in {term!r} is zero',
                          'a step is a whole number of at least 1')
        self.values.update(range(low, high + 1, step))


class _PlainField:
    """A field written as '*' or as one number: values, and no L, W or #."""

    last_day = last_workday = False
    nearest_workday: frozenset = frozenset()
    last_weekdays: frozenset = frozenset()
    nth_weekdays: frozenset = frozenset()

    def __init__(self, values):
        self.values = values


_STARS = {field: _PlainField(frozenset(range(field.low, field.high + 1)))
          for field in (_SECOND, _MINUTE, _HOUR, _DOM, _MONTH, _DOW)}


def _parse_field(field, text, expression):
    # The most common fields are shared or built without the parser.
    if text == '*':
        return _STARS[field]
    if text.isascii() and text.isdigit():
        value = int(text)
        if field.low <= value <= field.high:
            return _PlainField((value,))
    return _FieldParser(field, text, expression).parse()


def from_cron(expression: str, timezone: str | ZoneInfo | None = None
              ) -> CalendarSchedule:
    """A schedule from a cron expression (5 fields, or 6 with seconds last).

    `timezone` (an IANA name such as "Europe/Berlin", or None for UTC) is
    the zone whose wall clock the expression describes.
    """
    if not isinstance(expression, str):
        raise TypeError(f'a cron expression must be a str, not {expression!r}')
    key = _timezone_key(timezone)
    calendar, fixed_time = _parse_cron(expression)
    args = (expression,) if key is None else (expression, key)
    return CalendarSchedule(calendar, key, fixed_time, from_cron,
                            (args, ()))


@lru_cache(maxsize=1024)
def _parse_cron(expression):
    # One parse per expression and process, whatever the number of jobs
    # or schedules sharing it (tests/test_schedule_cache.py counts them).
    return _compile_cron(expression)


def _compile_cron(expression):
    text = expression.strip().upper()
    if text.startswith('@'):
        if text not in _MACROS:
            raise ValueError(
                f'unknown cron macro {expression.strip()!r}; known macros are'
                f' {", ".join(m.lower() for m in _MACROS)}')
        text = _MACROS[text]
    parts = text.split()
    if len(parts) == 5:
        parts.append('0')
    elif len(parts) != 6:
        raise ValueError(
            f'cron expression {expression!r} has {len(parts)} fields;'
            f' expected 5 (minute hour day-of-month month day-of-week)'
            f' or 6 (the same followed by second)')
    minute, hour, dom, month, dow, second = parts
    seconds = _parse_field(_SECOND, second, expression)
    minutes = _parse_field(_MINUTE, minute, expression)
    hours = _parse_field(_HOUR, hour, expression)
    days = _parse_field(_DOM, dom, expression)
    months = _parse_field(_MONTH, month, expression)
    weekdays = _parse_field(_DOW, dow, expression)
    for parsed in (seconds, minutes, hours, months):
        if not parsed.values:  # only possible with odd steps such as 5-5/1
            parsed.fail('matches nothing')

    def python_weekday(cron_day):    # cron: 0 and 7 are Sunday
        return (cron_day + 6) % 7

    # Vixie cron (and Debian's, and cronsim): when both day fields are
    # restricted a day matches either; but a field starting with '*' counts
    # as unrestricted even with a step, and then a day must match both.
    days_and = dom.startswith(('*', '?')) or dow.startswith(('*', '?'))
    calendar = _Calendar(
        seconds.values, minutes.values, hours.values, months.values,
        days.values, {python_weekday(d) for d in weekdays.values},
        last_day=days.last_day, last_workday=days.last_workday,
        nearest_workday=days.nearest_workday,
        last_weekdays={python_weekday(d) for d in weekdays.last_weekdays},
        nth_weekdays={(python_weekday(d), k)
                      for d, k in weekdays.nth_weekdays},
        days_and=days_and)
    if not calendar.can_fire():
        raise ValueError(
            f'cron expression {expression!r} can never fire: no month has'
            f' a day matching day-of-month {dom!r}'
            f' {"and" if days_and else "or"} day-of-week {dow!r}'
            f' in month {month!r}')
    # Debian cron's daylight-saving rule: an expression whose minute and
    # hour fields do not start with '*' names fixed times of day, which keep
    # to the wall clock; any other follows elapsed time.
    fixed_time = not minute.startswith('*') and not hour.startswith('*')
    return calendar, fixed_time


# ---------------------------------------------------------------------------
# Intervals and bounds
# ---------------------------------------------------------------------------

def _check_number(name, value, positive=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'{name} must be an int or a float, not {value!r}')
    if not math.isfinite(value):
        raise ValueError(f'{name} must be a finite number, not {value!r}')
    if positive and value <= 0:
        raise ValueError(f'{name} must be positive, not {value!r}')


class IntervalSchedule(Schedule):
    """Fires every `seconds` seconds: at ``anchor + k * seconds`` (k >= 0)
    if an anchor is given, otherwise `seconds` after whatever `now` is."""

    __slots__ = ('seconds', 'anchor')

    def __init__(self, seconds, anchor=None):
        self.seconds = seconds
        self.anchor = anchor

    def next_after(self, now: float) -> float:
        if isinstance(now, bool) or not isinstance(now, (int, float)):
            raise TypeError(f'now must be a number of seconds since the'
                            f' epoch, not {now!r}')
        seconds, anchor = self.seconds, self.anchor
        if anchor is None:
            return now + seconds
        if now < anchor:
            return anchor
        k = (now - anchor) // seconds + 1
        result = anchor + k * seconds
        # Float rounding may leave the result at or before `now`.
        while result <= now:
            k += 1
            result = anchor + k * seconds
        if isinstance(result, float) and isinstance(anchor, int) \
                and result.is_integer():
            result = int(result)
        return result

    def _spec(self):
        return (self.seconds, self.anchor)

    def __reduce__(self):
        return (every, (self.seconds, self.anchor))

    def __repr__(self):
        if self.anchor is None:
            return f'every({self.seconds!r})'
        return f'every({self.seconds!r}, anchor={self.anchor!r})'


def every(seconds: float, anchor: float | None = None) -> IntervalSchedule:
    """Fire every `seconds` seconds (int or float, > 0).

    With an `anchor` (seconds since the epoch) the fire times are
    ``anchor + k * seconds`` for k = 0, 1, 2, ...; without one, the next
    fire time is always `seconds` after `now`.
    """
    _check_number('every: seconds', seconds, positive=True)
    if anchor is not None:
        _check_number('every: anchor', anchor)
    return IntervalSchedule(seconds, anchor)


class BoundedSchedule(Schedule):
    """Another schedule, limited to fire times in [start, end]."""

    __slots__ = ('schedule', 'start', 'end')

    def __init__(self, schedule, start, end):
        self.schedule = schedule
        self.start = start
        self.end = end

    def next_after(self, now: float) -> float | None:
        start, end = self.start, self.end
        if start is not None and now < start:
            # Search from just before `start`, so that `start` itself counts.
            if type(start) is int:
                now = start - 1
            else:
                now = math.nextafter(start, -math.inf)
        result = self.schedule.next_after(now)
        while result is not None and start is not None and result < start:
            result = self.schedule.next_after(result)
        if result is None or (end is not None and result > end):
            return None
        return result

    def _spec(self):
        return (self.schedule, self.start, self.end)

    def __reduce__(self):
        return (bounded, (self.schedule, self.start, self.end))

    def __repr__(self):
        parts = [repr(self.schedule)]
        if self.start is not None:
            parts.append(f'start={self.start!r}')
        if self.end is not None:
            parts.append(f'end={self.end!r}')
        return f'bounded({", ".join(parts)})'


def bounded(schedule: Schedule, start: float | None = None,
            end: float | None = None) -> BoundedSchedule:
    """`schedule`, but never firing before `start` or after `end`
    (inclusive bounds, seconds since the epoch; None for no bound)."""
    if not isinstance(schedule, Schedule):
        raise TypeError(f'bounded() needs a Schedule, not {schedule!r}')
    if start is not None:
        _check_number('bounded: start', start)
    if end is not None:
        _check_number('bounded: end', end)
    if start is not None and end is not None and end < start:
        raise ValueError(
            f'bounded: end {end!r} is before start {start!r}')
    return BoundedSchedule(schedule, start, end)


def next_times(schedule: Schedule, now: float, count: int = 5
               ) -> list[float]:
    """The next `count` fire times after `now` (fewer if the schedule ends)."""
    times: list[float] = []
    while len(times) < count:
        following = schedule.next_after(now)
        if following is None:
            break
        times.append(following)
        now = following
    return times


def _forget_caches():
    """Forget the parsed expressions and the zones' year tables (for
    benchmarks and tests that measure a process seeing them first)."""
    _parse_cron.cache_clear()
    _fields_calendar.cache_clear()
    forget_zone_years()
