"""Integer calendar arithmetic and time-zone offset tables.

Private helpers for :mod:`zodbtasks.schedule`.  Instants are whole seconds
since the Unix epoch; "wall times" are the same kind of number read off a
clock in some zone (an instant plus that zone's UTC offset at the instant).
Nothing here builds ``datetime`` objects on the hot path: days are converted
to years with closed-form arithmetic, and a zone's offsets are sampled once
per year through :mod:`zoneinfo` and kept in sorted tuples.
"""
from bisect import bisect_left
from bisect import bisect_right
from datetime import datetime
from datetime import timedelta
from zoneinfo import ZoneInfo

try:    # CPython's pure-Python zoneinfo, which exposes a zone's transitions
    from zoneinfo import _zoneinfo as _py_zoneinfo  # type: ignore[attr-defined]
except ImportError:     # pragma: no cover
    _py_zoneinfo = None

DAY = 86400
_ONE_SECOND = timedelta(seconds=1)

MONTH_LENGTHS = (
    (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31),
    (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31),
)


def is_leap(year):
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def year_start(year):
    """Days from 1970-01-01 to January 1st of `year` (proleptic Gregorian)."""
    y = year - 1
    return 365 * y + y // 4 - y // 100 + y // 400 - 719162


def year_of_day(days):
    """The year containing the day `days` days after 1970-01-01."""
    # 146097 days make 400 Gregorian years; the linear estimate is never off
    # by more than one year, so one correction step is enough.
    year = 1970 + days * 400 // 146097
    if days < year_start(year):
        return year - 1
    if days >= year_start(year + 1):
        return year + 1
    return year


def weekday_of_day(days):
    """Python weekday (0 = Monday) of a day counted from 1970-01-01."""
    return (days + 3) % 7  # 1970-01-01 was a Thursday


class ZoneTable:
    """The UTC offsets of one IANA zone, as stretches of constant offset.

    Stretches are cut at UTC year boundaries, so a year's table never
    depends on its neighbours, and a year is built when first asked about.
    The instants at which the offset may change in a year come from the
    zone's own data: the transitions listed in its TZif file and, past
    them, the yearly rule of its POSIX TZ string, both as read by the
    pure-Python half of :mod:`zoneinfo`.  Each candidate is then checked
    against the offsets that :class:`zoneinfo.ZoneInfo` itself gives, so the
    table only ever holds offsets that zoneinfo reports.  Where that data is
    not available (another Python), or a year does not end on the offset
    the candidates lead to, the year is sampled instead: once a day, each
    change then pinned down to the second by bisection.
    """

    def __init__(self, key):
        self.key = key
        self.tz = ZoneInfo(key)
        self._years = {}
        self._changes = None      # loaded with the first year
        self._last_segment = (0, 0, 0)

    def offset(self, instant):
        dt = datetime.fromtimestamp(instant, self.tz)
        return dt.utcoffset() // _ONE_SECOND

    def _build_year(self, year):
        if self._changes is None:
            self._changes = _zone_changes(self.key)
        if self._changes:
            table = self._build_year_from_changes(year, *self._changes)
            if table is not None:
                return table
        return self._sample_year(year)

    def _build_year_from_changes(self, year, changes, rule):
        offset = self.offset
        start = year_start(year) * DAY
        stop = year_start(year + 1) * DAY
        candidates = set(changes[bisect_right(changes, start):
                                 bisect_left(changes, stop)])
        if rule is not None and (not changes or stop > changes[-1] + 1):
            # Past the last listed transition the zone follows its rule,
            # evaluated for the UTC year; it switches to daylight saving at
            # `begin` (local standard time) and back at `end` (local
            # daylight time).
            transitions, standard, daylight = rule
            begin, end = transitions(year)
            after = changes[-1] if changes else start - 1
            for instant in (int(begin - standard), int(end - daylight),
                            after + 1):
                if start < instant < stop and instant > after:
                    candidates.add(instant)
        starts = [start]
        offsets = [offset(start)]
        for instant in sorted(candidates):
            off = offset(instant)
            if off != offsets[-1]:
                starts.append(instant)
                offsets.append(off)
        if offset(stop - 1) != offsets[-1]:
            return None     # the data missed a change: sample instead
        ends = starts[1:] + [stop]
        return tuple(starts), tuple(ends), tuple(offsets)

    def _sample_year(self, year):
        offset = self.offset
        start = year_start(year) * DAY
        stop = year_start(year + 1) * DAY
        starts = [start]
        offsets = [offset(start)]
        t, off_t = start, offsets[0]
        while t < stop:
            t_next = min(t + DAY, stop)
            off_next = offset(t_next)
            low, off_low = t, off_t
            while off_low != off_next:
                # Find the first second after `low` whose offset differs.
                a, b = low, t_next
                while b - a > 1:
                    mid = (a + b) // 2
                    if offset(mid) == off_low:
                        a = mid
                    else:
                        b = mid
                low, off_low = b, offset(b)
                if b < stop:
                    starts.append(b)
                    offsets.append(off_low)
            t, off_t = t_next, off_next
        ends = starts[1:] + [stop]
        return tuple(starts), tuple(ends), tuple(offsets)

    def year_table(self, year):
        table = self._years.get(year)
        if table is None:
            if not 2 <= year <= 9998:
                raise ValueError(
                    f'year {year} is out of range for time zone {self.key!r};'
                    f' zoneinfo knows the years 1-9999')
            table = self._years[year] = self._build_year(year)
        return table

    def segment(self, instant):
        """(start, end, offset) of the stretch of constant offset that
        holds `instant`."""
        last = self._last_segment       # asked again, most of the time
        if last[0] <= instant < last[1]:
            return last
        starts, ends, offsets = self.year_table(year_of_day(instant // DAY))
        i = bisect_right(starts, instant) - 1
        last = self._last_segment = starts[i], ends[i], offsets[i]
        return last

    def first_instant_showing(self, wall):
        """The first instant at which the clock shows `wall` or later.

        That is the first occurrence of a wall time that exists (once or
        twice), and the moment of the jump for one skipped by a transition.
        """
        instant = wall - DAY  # offsets are always less than a day
        while True:
            start, end, off = self.segment(instant)
            candidate = max(wall - off, instant)
            if candidate < end:
                return candidate
            instant = end

    def latest_wall_shown(self, instant):
        """One past the latest wall time the clock has shown up to `instant`.

        Usually ``instant + offset + 1``; after the clock was turned back it
        is the wall time at which the clock was turned back, because the
        repeated wall times were all shown already.
        """
        start, end, off = self.segment(instant)
        shown = instant + off + 1
        while start > instant - 2 * DAY:
            start, end, off = self.segment(start - 1)
            shown = max(shown, end + off)
        return shown


def _zone_changes(key):
    """(UTC instants of the listed transitions, yearly rule or None) of a
    zone, or () when zoneinfo does not expose them."""
    try:
        zone = _py_zoneinfo.ZoneInfo.no_cache(key)
        changes = tuple(int(t) for t in zone._trans_utc)
        after = zone._tz_after
        rule = None
        if hasattr(after, 'transitions'):
            rule = (after.transitions, after.std.utcoff // _ONE_SECOND,
                    after.dst.utcoff // _ONE_SECOND)
    except (AttributeError, TypeError, ValueError, OSError):
        return ()
    return changes, rule


_zone_tables: dict[str, ZoneTable] = {}


def zone_table(key):
    table = _zone_tables.get(key)
    if table is None:
        table = _zone_tables[key] = ZoneTable(key)
    return table


def forget_zone_years():
    """Drop every zone's year tables; they are rebuilt when next asked."""
    for table in _zone_tables.values():
        table._years.clear()
        table._last_segment = (0, 0, 0)
