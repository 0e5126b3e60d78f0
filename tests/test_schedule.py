"""Unit tests for zodbtasks.schedule: worked examples and error messages."""
import pickle
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from zodbtasks.schedule import Schedule
from zodbtasks.schedule import bounded
from zodbtasks.schedule import every
from zodbtasks.schedule import from_cron
from zodbtasks.schedule import from_fields
from zodbtasks.schedule import next_times

DAY = 86400


def ts(iso):
    """Seconds since the epoch of an ISO 8601 time with an offset."""
    return int(datetime.fromisoformat(iso).timestamp())


def iso(t, tz='UTC'):
    return datetime.fromtimestamp(t, ZoneInfo(tz)).isoformat()


def upcoming(schedule, start, count=5, tz='UTC'):
    """The next `count` fire times after the ISO time `start`, as ISO."""
    return [iso(t, tz) for t in next_times(schedule, ts(start), count)]


# -- the reference (z3c.taskqueue) tuple examples -----------------------------

def test_minutes():
    s = from_fields(minute=(0, 10))
    assert s.next_after(0) == 600
    assert s.next_after(600) == 3600


def test_hours():
    s = from_fields(hour=(2, 13))
    assert s.next_after(0) == 7200
    assert s.next_after(7200) == 46800


def test_months():
    s = from_fields(month=(1, 5, 12))
    assert iso(s.next_after(0)) == '1970-05-01T00:00:00+00:00'
    assert iso(s.next_after(s.next_after(0))) == '1970-12-01T00:00:00+00:00'


def test_days_of_week():
    s = from_fields(day_of_week=(0, 2, 4, 5))   # 0 = Monday
    assert iso(s.next_after(0)) == '1970-01-02T00:00:00+00:00'  # Fri
    assert iso(s.next_after(DAY)) == '1970-01-03T00:00:00+00:00'  # Sat
    assert iso(s.next_after(2 * DAY)) == '1970-01-05T00:00:00+00:00'  # Mon
    assert iso(s.next_after(4 * DAY)) == '1970-01-07T00:00:00+00:00'  # Wed


def test_days_of_month():
    s = from_fields(day_of_month=(1, 12, 21, 30))
    assert iso(s.next_after(0)) == '1970-01-12T00:00:00+00:00'
    assert iso(s.next_after(12 * DAY)) == '1970-01-21T00:00:00+00:00'


def test_minute_and_days_of_month():
    s = from_fields(minute=(10,), day_of_month=(1, 12, 21, 30))
    assert iso(s.next_after(0)) == '1970-01-01T00:10:00+00:00'
    assert iso(s.next_after(600)) == '1970-01-01T01:10:00+00:00'


def test_minute_hour_and_days_of_month():
    s = from_fields(minute=(10,), hour=(4,), day_of_month=(1, 12, 21, 30))
    assert iso(s.next_after(0)) == '1970-01-01T04:10:00+00:00'
    assert iso(s.next_after(600)) == '1970-01-01T04:10:00+00:00'


def test_no_fields_is_every_minute():
    s = from_fields()
    assert next_times(s, 0, 3) == [60, 120, 180]
    assert s.next_after(59.9) == 60


def test_seconds_field():
    assert next_times(from_fields(second=(0, 30)), 0, 3) == [30, 60, 90]
    # second is the finest field: with hour given, minutes are unrestricted
    s = from_fields(hour=(1,), second=(15,))
    assert next_times(s, 0, 3) == [3615, 3675, 3735]
    assert from_fields(hour=(1,)).next_after(0) == 3600


def test_both_day_fields_must_match():
    # the 13th that is a Friday (4)
    s = from_fields(day_of_month=(13,), day_of_week=(4,))
    assert upcoming(s, '2024-01-01T00:00+00:00', 3) == [
        '2024-09-13T00:00:00+00:00', '2024-12-13T00:00:00+00:00',
        '2025-06-13T00:00:00+00:00']


def test_results_are_aligned_whatever_the_seconds_of_now():
    s = from_fields(minute=(10,))
    assert s.next_after(605.5) == 3600 + 600
    assert s.next_after(599.999) == 600
    assert s.next_after(600.0) == 3600 + 600
    assert type(s.next_after(605.5)) is int
    assert from_cron('*/5 * * * *').next_after(301.25) == 600
    assert from_cron('* * * * * */10').next_after(25.5) == 30


def test_leap_day():
    s = from_fields(day_of_month=(29,), month=(2,))
    assert upcoming(s, '2001-01-01T00:00+00:00', 2) == [
        '2004-02-29T00:00:00+00:00', '2008-02-29T00:00:00+00:00']
    # 2100 is not a leap year
    assert upcoming(s, '2096-03-01T00:00+00:00', 1) == [
        '2104-02-29T00:00:00+00:00']
    assert upcoming(from_cron('0 0 29 2 *'), '2001-01-01T00:00+00:00', 1) == [
        '2004-02-29T00:00:00+00:00']


def test_far_away_leap_day_on_a_monday():
    s = from_fields(day_of_month=(29,), month=(2,), day_of_week=(0,))
    assert upcoming(s, '2001-01-01T00:00+00:00', 3) == [
        '2016-02-29T00:00:00+00:00', '2044-02-29T00:00:00+00:00',
        '2072-02-29T00:00:00+00:00']
    # forty years across 2100, which is not a leap year
    assert upcoming(s, '2073-01-01T00:00+00:00', 1) == [
        '2112-02-29T00:00:00+00:00']
    cron = from_cron('0 0 29 2 *', timezone='Europe/Berlin')
    assert upcoming(cron, '2096-03-01T00:00+01:00', 1, 'Europe/Berlin') == [
        '2104-02-29T00:00:00+01:00']


def test_before_1970():
    s = from_cron('30 12 * * *')
    assert upcoming(s, '1969-12-31T00:00+00:00', 2) == [
        '1969-12-31T12:30:00+00:00', '1970-01-01T12:30:00+00:00']


# -- from_fields errors -------------------------------------------------------

@pytest.mark.parametrize('kwargs, message', [
    (dict(minute=(60,)), 'minute value 60 is out of range; minutes are 0-59'),
    (dict(minute=(-1,)), 'minute value -1 is out of range'),
    (dict(hour=(24,)), 'hour value 24 is out of range; hours are 0-23'),
    (dict(day_of_month=(0,)), 'day_of_month value 0 is out of range;'
                              ' days of the month are 1-31'),
    (dict(day_of_month=(32,)), 'day_of_month value 32 is out of range'),
    (dict(month=(13,)), 'month value 13 is out of range; months are 1-12'),
    (dict(day_of_week=(7,)), 'day_of_week value 7 is out of range; days of'
                             ' the week are 0-6, 0 being Monday'),
    (dict(second=(60,)), 'second value 60 is out of range; seconds are 0-59'),
])
def test_from_fields_out_of_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        from_fields(**kwargs)


@pytest.mark.parametrize('kwargs, message', [
    (dict(minute=('5',)), "minute values must be ints, not '5'"),
    (dict(minute=(5.0,)), 'minute values must be ints, not 5.0'),
    (dict(hour=(True,)), 'hour values must be ints, not True'),
    (dict(hour=5), 'hour must be a tuple or list of ints, not 5'),
    (dict(month='1'), "month must be a tuple or list of ints, not '1'"),
    (dict(day_of_week=None), 'day_of_week must be a tuple or list'),
    (dict(timezone=1), 'timezone must be an IANA zone name'),
])
def test_from_fields_wrong_types(kwargs, message):
    with pytest.raises(TypeError, match=message):
        from_fields(**kwargs)


@pytest.mark.parametrize('kwargs', [
    dict(day_of_month=(31,), month=(2,)),
    dict(day_of_month=(30, 31), month=(2,)),
    dict(day_of_month=(31,), month=(2, 4, 6, 9, 11)),
    dict(day_of_month=(30,), month=(2,), day_of_week=(1,)),
])
def test_from_fields_never_fires(kwargs):
    with pytest.raises(ValueError, match=r'can never fire.*day_of_month'):
        from_fields(**kwargs)


def test_from_fields_can_fire_only_in_some_months():
    s = from_fields(day_of_month=(30, 31), month=(2, 4, 6, 9, 11))
    assert upcoming(s, '2024-01-01T00:00+00:00', 2) == [
        '2024-04-30T00:00:00+00:00', '2024-06-30T00:00:00+00:00']


def test_unknown_timezone():
    with pytest.raises(ValueError, match="unknown timezone 'Mars/Olympus'"):
        from_fields(hour=(1,), timezone='Mars/Olympus')
    with pytest.raises(ValueError, match="unknown timezone 'Europe'"):
        from_cron('0 0 * * *', timezone='Europe')
    with pytest.raises(ValueError, match="unknown timezone '../etc'"):
        from_cron('0 0 * * *', timezone='../etc')


def test_fields_accept_lists_sets_and_ranges():
    s = from_fields(minute=[10, 0], hour={1}, day_of_week=range(5))
    assert s == from_fields(minute=(0, 10), hour=(1,), day_of_week=(0, 1, 2,
                                                                    3, 4))


# -- from_cron syntax ---------------------------------------------------------

@pytest.mark.parametrize('expression, start, expected', [
    ('* * * * *', '2024-01-01T00:00:30+00:00',
     ['2024-01-01T00:01:00+00:00', '2024-01-01T00:02:00+00:00']),
    ('5,7,50-51 * * * *', '2024-01-01T00:06:00+00:00',
     ['2024-01-01T00:07:00+00:00', '2024-01-01T00:50:00+00:00',
      '2024-01-01T00:51:00+00:00', '2024-01-01T01:05:00+00:00']),
    ('*/20 * * * *', '2024-01-01T00:00:00+00:00',
     ['2024-01-01T00:20:00+00:00', '2024-01-01T00:40:00+00:00',
      '2024-01-01T01:00:00+00:00']),
    ('10-30/10 * * * *', '2024-01-01T00:00:00+00:00',
     ['2024-01-01T00:10:00+00:00', '2024-01-01T00:20:00+00:00',
      '2024-01-01T00:30:00+00:00', '2024-01-01T01:10:00+00:00']),
    # a/n runs from a to the end of the field
    ('0 20/2 * * *', '2024-01-01T00:00:00+00:00',
     ['2024-01-01T20:00:00+00:00', '2024-01-01T22:00:00+00:00',
      '2024-01-02T20:00:00+00:00']),
    # a-a/n is just a (cronsim reads it as a/n: see docs/schedules.rst)
    ('0 7-7/3 * * *', '2024-01-01T00:00:00+00:00',
     ['2024-01-01T07:00:00+00:00', '2024-01-02T07:00:00+00:00']),
    ('0 0 1 jan-Mar,DEC *', '2024-01-01T00:00:00+00:00',
     ['2024-02-01T00:00:00+00:00', '2024-03-01T00:00:00+00:00',
      '2024-12-01T00:00:00+00:00', '2025-01-01T00:00:00+00:00']),
    ('0 0 * * sat,Sun', '2024-06-01T00:00:00+00:00',  # a Saturday
     ['2024-06-02T00:00:00+00:00', '2024-06-08T00:00:00+00:00']),
    ('0 0 * * 0', '2024-06-01T00:00:00+00:00',
     ['2024-06-02T00:00:00+00:00', '2024-06-09T00:00:00+00:00']),
    ('0 0 * * 7', '2024-06-01T00:00:00+00:00',
     ['2024-06-02T00:00:00+00:00', '2024-06-09T00:00:00+00:00']),
    ('0 0 * * 5-7', '2024-06-01T00:00:00+00:00',
     ['2024-06-02T00:00:00+00:00', '2024-06-07T00:00:00+00:00',
      '2024-06-08T00:00:00+00:00']),
    # in day-of-week, a/n runs up to 7, which is Sunday again
    ('0 0 * * 5/2', '2024-06-01T00:00:00+00:00',
     ['2024-06-02T00:00:00+00:00', '2024-06-07T00:00:00+00:00',
      '2024-06-09T00:00:00+00:00']),
    ('0 0 L * *', '2024-01-15T00:00:00+00:00',
     ['2024-01-31T00:00:00+00:00', '2024-02-29T00:00:00+00:00',
      '2024-03-31T00:00:00+00:00', '2024-04-30T00:00:00+00:00']),
    ('0 0 1,L * *', '2024-01-15T00:00:00+00:00',
     ['2024-01-31T00:00:00+00:00', '2024-02-01T00:00:00+00:00',
      '2024-02-29T00:00:00+00:00']),
    ('0 0 LW * *', '2024-03-01T00:00:00+00:00',
     ['2024-03-29T00:00:00+00:00',   # 31st is a Sunday
      '2024-04-30T00:00:00+00:00', '2024-05-31T00:00:00+00:00',
      '2024-06-28T00:00:00+00:00']),  # 30th is a Sunday
    ('0 0 1W * *', '2024-05-15T00:00:00+00:00',
     ['2024-06-03T00:00:00+00:00',    # 1st is a Saturday: not back to May
      '2024-07-01T00:00:00+00:00']),
    ('0 0 15W * *', '2024-06-01T00:00:00+00:00',
     ['2024-06-14T00:00:00+00:00',    # 15th is a Saturday
      '2024-07-15T00:00:00+00:00']),
    ('0 0 16w * *', '2024-06-01T00:00:00+00:00',
     ['2024-06-17T00:00:00+00:00']),  # 16th is a Sunday
    ('0 0 30W * *', '2024-06-01T00:00:00+00:00',
     ['2024-06-28T00:00:00+00:00',    # 30th is a Sunday and the last day
      '2024-07-30T00:00:00+00:00']),
    ('0 0 31W * *', '2024-08-01T00:00:00+00:00',
     ['2024-08-30T00:00:00+00:00',    # 31st is a Saturday
      '2024-10-31T00:00:00+00:00']),  # no 31st in September: no fire
    ('0 0 * * 5L', '2024-01-01T00:00:00+00:00',
     ['2024-01-26T00:00:00+00:00', '2024-02-23T00:00:00+00:00']),
    ('0 0 * * friL', '2024-01-01T00:00:00+00:00',
     ['2024-01-26T00:00:00+00:00', '2024-02-23T00:00:00+00:00']),
    ('0 0 * * 7L', '2024-03-01T00:00:00+00:00',
     ['2024-03-31T00:00:00+00:00', '2024-04-28T00:00:00+00:00']),
    ('0 0 * * MON#2', '2024-01-01T00:00:00+00:00',
     ['2024-01-08T00:00:00+00:00', '2024-02-12T00:00:00+00:00']),
    ('0 0 * * 5#5', '2024-01-01T00:00:00+00:00',
     ['2024-03-29T00:00:00+00:00', '2024-05-31T00:00:00+00:00',
      '2024-08-30T00:00:00+00:00']),
    ('0 0 * * 1#1,5L', '2024-01-01T00:00:00+00:00',
     ['2024-01-26T00:00:00+00:00', '2024-02-05T00:00:00+00:00',
      '2024-02-23T00:00:00+00:00']),
    ('0 0 ? * MON', '2024-01-01T00:00:00+00:00',
     ['2024-01-08T00:00:00+00:00', '2024-01-15T00:00:00+00:00']),
    ('0 0 13 * ?', '2024-01-01T00:00:00+00:00',
     ['2024-01-13T00:00:00+00:00', '2024-02-13T00:00:00+00:00']),
])
def test_cron_syntax(expression, start, expected):
    assert upcoming(from_cron(expression), start, len(expected)) == expected


def test_day_of_month_without_a_day_in_some_month():
    # 30W never fires in February but fires in other months
    s = from_cron('0 0 30W 2,3 *')
    assert upcoming(s, '2024-01-01T00:00:00+00:00', 2) == [
        '2024-03-29T00:00:00+00:00',   # 30th is a Saturday
        '2025-03-31T00:00:00+00:00']   # 30th is a Sunday


def test_vixie_day_rule():
    start = '2024-01-01T00:00:00+00:00'    # a Monday
    # neither day field starts with '*': a day matches either
    assert upcoming(from_cron('0 0 1,15 * FRI'), start, 4) == [
        '2024-01-05T00:00:00+00:00', '2024-01-12T00:00:00+00:00',
        '2024-01-15T00:00:00+00:00', '2024-01-19T00:00:00+00:00']
    # a day field starting with '*' makes it "both": the first Sunday
    assert upcoming(from_cron('0 0 1-7 * */7'), start, 3) == [
        '2024-01-07T00:00:00+00:00', '2024-02-04T00:00:00+00:00',
        '2024-03-03T00:00:00+00:00']
    # odd days that are Mondays
    assert upcoming(from_cron('0 0 */2 * MON'), start, 3) == [
        '2024-01-15T00:00:00+00:00', '2024-01-29T00:00:00+00:00',
        '2024-02-05T00:00:00+00:00']
    # 'L' or a Monday
    assert upcoming(from_cron('0 0 L * MON'), '2024-01-25T00:00:00+00:00',
                    3) == ['2024-01-29T00:00:00+00:00',
                           '2024-01-31T00:00:00+00:00',
                           '2024-02-05T00:00:00+00:00']


@pytest.mark.parametrize('macro, expression', [
    ('@yearly', '0 0 1 1 *'), ('@annually', '0 0 1 1 *'),
    ('@monthly', '0 0 1 * *'), ('@weekly', '0 0 * * 0'),
    ('@daily', '0 0 * * *'), ('@midnight', '0 0 * * *'),
    ('@hourly', '0 * * * *'), ('@HOURLY', '0 * * * *'),
])
def test_macros(macro, expression):
    start = ts('2024-05-17T13:14:15+00:00')
    for tz in (None, 'America/New_York'):
        a, b = from_cron(macro, tz), from_cron(expression, tz)
        assert next_times(a, start, 3) == next_times(b, start, 3)
        assert a.fixed_time == b.fixed_time


def test_six_fields_have_seconds_last():
    s = from_cron('* * * * * */10')
    assert next_times(s, 0, 4) == [10, 20, 30, 40]
    s = from_cron('30 12 * * * 15')
    assert upcoming(s, '2024-01-01T00:00:00+00:00', 2) == [
        '2024-01-01T12:30:15+00:00', '2024-01-02T12:30:15+00:00']
    assert next_times(from_cron('0 0 1 1 * 5-6'), 0, 3) == [
        5, 6, ts('1971-01-01T00:00:05+00:00')]


def test_whitespace_and_case():
    assert next_times(from_cron('  0   12 * jan MON  '), 0, 2) == next_times(
        from_cron('0 12 * 1 1'), 0, 2)


# -- from_cron errors ---------------------------------------------------------

@pytest.mark.parametrize('expression, message', [
    ('60 * * * *', 'minute value 60 is out of range; minutes are 0-59'),
    ('* 24 * * *', 'hour value 24 is out of range; hours are 0-23'),
    ('* * 32 * *', 'day-of-month value 32 is out of range;'
                   ' days of the month are 1-31'),
    ('* * 0 * *', 'day-of-month value 0 is out of range'),
    ('* * * 13 *', 'month value 13 is out of range; months are 1-12'),
    ('* * * * 8', 'day-of-week value 8 is out of range; days of the week'
                  r' are 0-7 \(0 and 7 are Sunday\)'),
    ('* * * * * 60', 'second value 60 is out of range; seconds are 0-59'),
    ('* * * FOO *', "month value 'FOO' is not a number or a name;"
                    ' months are 1-12 or JAN-DEC'),
    ('* * * * JAN', "day-of-week value 'JAN' is not a number or a name"),
    ('* * * MON *', "month value 'MON' is not a number or a name"),
    ('*/0 * * * *', "minute step in '\\*/0' is zero"),
    ('0 5-2 * * *', "hour range '5-2' is reversed"),
    ('0 0 * * FRI-MON', "day-of-week range 'FRI-MON' is reversed"),
    ('1,,2 * * * *', "minute '1,,2' has an empty list item"),
    ('-5 * * * *', "minute '-5' is not understood"),
    ('a b c d e', "minute value 'A' is not a number"),
    ('*/x * * * *', "minute step 'X' in '\\*/X' is not a number"),
    ('? * * * *', "minute '\\?' is not allowed; '\\?' is only for"
                  ' day-of-month and day-of-week'),
    ('* L * * *', "hour value 'L' is not a number"),
    ('* * * * 1#6', "day-of-week '1#6' has an invalid week number '6'"),
    ('* * * * 1#', "day-of-week '1#' has an invalid week number ''"),
    ('* * 32W * *', 'day-of-month value 32 is out of range'),
    ('* * * * 9L', 'day-of-week value 9 is out of range'),
])
def test_cron_field_errors(expression, message):
    with pytest.raises(ValueError, match=message) as info:
        from_cron(expression)
    # every message quotes the expression
    assert repr(expression) in str(info.value)


@pytest.mark.parametrize('expression, message', [
    ('* * * *', "has 4 fields; expected 5 .* or 6"),
    ('* * * * * * *', "has 7 fields"),
    ('', "has 0 fields"),
    ('@fortnightly', "unknown cron macro '@fortnightly'; known macros are"
                     " @yearly"),
    ('0 0 30 2 *', "can never fire: no month has a day matching"
                   " day-of-month '30' and day-of-week '\\*' in month '2'"),
    ('0 0 31 4,6,9,11 *', "can never fire"),
    ('0 0 31 APR ?', "can never fire"),
    ('0 0 30W 2 *', "can never fire"),
])
def test_cron_expression_errors(expression, message):
    with pytest.raises(ValueError, match=message):
        from_cron(expression)


def test_cron_type_errors():
    with pytest.raises(TypeError, match='a cron expression must be a str'):
        from_cron(5)
    with pytest.raises(TypeError, match='timezone must be an IANA zone name'):
        from_cron('* * * * *', timezone=3)


def test_or_rule_makes_impossible_days_possible():
    # 30 February never happens, but "or Monday" does
    s = from_cron('0 0 30 2 MON')
    assert upcoming(s, '2024-01-01T00:00:00+00:00', 1) == [
        '2024-02-05T00:00:00+00:00']


# -- time zones and daylight saving -------------------------------------------

BERLIN, NEW_YORK, LORD_HOWE = (
    'Europe/Berlin', 'America/New_York', 'Australia/Lord_Howe')


def test_fixed_time_rule_spring_forward():
    # Berlin skips 02:00-02:59 on 2024-03-31; 02:30 runs at 03:00 instead.
    s = from_cron('30 2 * * *', BERLIN)
    assert s.fixed_time
    assert upcoming(s, '2024-03-30T12:00+01:00', 3, BERLIN) == [
        '2024-03-31T03:00:00+02:00', '2024-04-01T02:30:00+02:00',
        '2024-04-02T02:30:00+02:00']
    s = from_cron('30 2 * * *', NEW_YORK)
    assert upcoming(s, '2024-03-09T12:00-05:00', 2, NEW_YORK) == [
        '2024-03-10T03:00:00-04:00', '2024-03-11T02:30:00-04:00']
    # several skipped times run once, together, at the jump
    s = from_cron('0 1-5 * * *', BERLIN)
    assert upcoming(s, '2024-03-31T00:00+01:00', 5, BERLIN) == [
        '2024-03-31T01:00:00+01:00', '2024-03-31T03:00:00+02:00',
        '2024-03-31T04:00:00+02:00', '2024-03-31T05:00:00+02:00',
        '2024-04-01T01:00:00+02:00']


def test_fixed_time_rule_fall_back():
    # Berlin shows 02:00-02:59 twice on 2024-10-27; 02:30 runs once.
    s = from_cron('30 2 * * *', BERLIN)
    assert upcoming(s, '2024-10-26T12:00+02:00', 3, BERLIN) == [
        '2024-10-27T02:30:00+02:00', '2024-10-28T02:30:00+01:00',
        '2024-10-29T02:30:00+01:00']
    s = from_cron('0 1-5 * * *', BERLIN)
    assert upcoming(s, '2024-10-27T00:00+02:00', 5, BERLIN) == [
        '2024-10-27T01:00:00+02:00', '2024-10-27T02:00:00+02:00',
        '2024-10-27T03:00:00+01:00', '2024-10-27T04:00:00+01:00',
        '2024-10-27T05:00:00+01:00']
    s = from_cron('30 1 * * *', NEW_YORK)
    assert upcoming(s, '2024-11-02T12:00-04:00', 3, NEW_YORK) == [
        '2024-11-03T01:30:00-04:00', '2024-11-04T01:30:00-05:00',
        '2024-11-05T01:30:00-05:00']


def test_elapsed_time_rule_spring_forward():
    s = from_cron('30 * * * *', BERLIN)
    assert not s.fixed_time
    assert upcoming(s, '2024-03-31T00:00+01:00', 4, BERLIN) == [
        '2024-03-31T00:30:00+01:00', '2024-03-31T01:30:00+01:00',
        '2024-03-31T03:30:00+02:00', '2024-03-31T04:30:00+02:00']
    s = from_cron('*/30 * * * *', NEW_YORK)
    assert upcoming(s, '2024-03-10T01:00-05:00', 4, NEW_YORK) == [
        '2024-03-10T01:30:00-05:00', '2024-03-10T03:00:00-04:00',
        '2024-03-10T03:30:00-04:00', '2024-03-10T04:00:00-04:00']
    # a skipped midnight (Sao Paulo, 2018) never fires under this rule
    s = from_cron('0 * * * *', 'America/Sao_Paulo')
    assert upcoming(s, '2018-11-03T22:30-03:00', 3, 'America/Sao_Paulo') == [
        '2018-11-03T23:00:00-03:00', '2018-11-04T01:00:00-02:00',
        '2018-11-04T02:00:00-02:00']


def test_elapsed_time_rule_fall_back():
    s = from_cron('30 * * * *', BERLIN)
    assert upcoming(s, '2024-10-27T01:00+02:00', 4, BERLIN) == [
        '2024-10-27T01:30:00+02:00', '2024-10-27T02:30:00+02:00',
        '2024-10-27T02:30:00+01:00', '2024-10-27T03:30:00+01:00']
    s = from_cron('*/30 * * * *', NEW_YORK)
    assert upcoming(s, '2024-11-03T00:50-04:00', 6, NEW_YORK) == [
        '2024-11-03T01:00:00-04:00', '2024-11-03T01:30:00-04:00',
        '2024-11-03T01:00:00-05:00', '2024-11-03T01:30:00-05:00',
        '2024-11-03T02:00:00-05:00', '2024-11-03T02:30:00-05:00']


def test_lord_howe_half_hour_shift():
    # Lord Howe Island moves its clocks by 30 minutes: 02:00 -> 02:30 in
    # October, 02:00 -> 01:30 in April.
    s = from_cron('15 2 * * *', LORD_HOWE)
    assert upcoming(s, '2024-10-05T12:00+10:30', 2, LORD_HOWE) == [
        '2024-10-06T02:30:00+11:00', '2024-10-07T02:15:00+11:00']
    s = from_cron('45 1 * * *', LORD_HOWE)
    assert upcoming(s, '2024-04-06T12:00+11:00', 2, LORD_HOWE) == [
        '2024-04-07T01:45:00+11:00', '2024-04-08T01:45:00+10:30']
    s = from_cron('*/20 * * * *', LORD_HOWE)
    assert upcoming(s, '2024-04-07T00:50+11:00', 6, LORD_HOWE) == [
        '2024-04-07T01:00:00+11:00', '2024-04-07T01:20:00+11:00',
        '2024-04-07T01:40:00+11:00', '2024-04-07T01:40:00+10:30',
        '2024-04-07T02:00:00+10:30', '2024-04-07T02:20:00+10:30']
    assert upcoming(s, '2024-10-06T01:30+10:30', 3, LORD_HOWE) == [
        '2024-10-06T01:40:00+10:30', '2024-10-06T02:40:00+11:00',
        '2024-10-06T03:00:00+11:00']


def test_strictly_after_now_at_the_spring_jump():
    s = from_cron('30 2 * * *', BERLIN)
    jump = ts('2024-03-31T03:00+02:00')
    assert s.next_after(jump - 1) == jump
    assert s.next_after(jump - 0.5) == jump
    assert iso(s.next_after(jump), BERLIN) == '2024-04-01T02:30:00+02:00'
    assert iso(s.next_after(jump + 0.5), BERLIN) == '2024-04-01T02:30:00+02:00'
    s = from_cron('*/30 * * * *', BERLIN)
    assert iso(s.next_after(jump - 1), BERLIN) == '2024-03-31T03:00:00+02:00'
    assert iso(s.next_after(jump), BERLIN) == '2024-03-31T03:30:00+02:00'


def test_strictly_after_now_in_the_repeated_hour():
    # 01:15 EST is the second time New York's clocks show 01:15 that night;
    # 01:50 was already shown (and run) an hour ago, at 01:50 EDT.
    now = ts('2024-11-03T01:15-05:00')
    s = from_cron('50 1 * * *', NEW_YORK)
    assert iso(s.next_after(now), NEW_YORK) == '2024-11-04T01:50:00-05:00'
    # ... but the elapsed-time rule runs the repeated 01:50 again
    s = from_cron('50 * * * *', NEW_YORK)
    assert iso(s.next_after(now), NEW_YORK) == '2024-11-03T01:50:00-05:00'
    # 02:10 has not been shown yet
    s = from_cron('10 2 * * *', NEW_YORK)
    assert iso(s.next_after(now), NEW_YORK) == '2024-11-03T02:10:00-05:00'
    # elapsed time, with the next match on the wall clock a year away: the
    # repeated hour comes first
    s = from_cron('* 1 3 11 *', NEW_YORK)
    assert upcoming(s, '2024-11-03T01:59:30-04:00', 2, NEW_YORK) == [
        '2024-11-03T01:00:00-05:00', '2024-11-03T01:01:00-05:00']
    # Lord Howe: 01:40 +10:30 is the second 01:40 of the night
    s = from_cron('45 1 * * *', LORD_HOWE)
    now = ts('2024-04-07T01:40+10:30')
    assert iso(s.next_after(now), LORD_HOWE) == '2024-04-08T01:45:00+10:30'


def test_six_fields_in_a_zone_use_minute_and_hour():
    s = from_cron('30 2 * * * 15', BERLIN)
    assert s.fixed_time
    assert upcoming(s, '2024-03-31T01:00+01:00', 2, BERLIN) == [
        '2024-03-31T03:00:00+02:00', '2024-04-01T02:30:15+02:00']
    s = from_cron('* 2 * * * */20', BERLIN)
    assert not s.fixed_time
    assert upcoming(s, '2024-03-31T01:59:50+01:00', 2, BERLIN) == [
        '2024-04-01T02:00:00+02:00', '2024-04-01T02:00:20+02:00']


@pytest.mark.parametrize('kwargs, fixed_time', [
    (dict(hour=(2,)), True),
    (dict(minute=(30,), hour=(2,)), True),
    (dict(day_of_week=(0,)), True),
    (dict(month=(3,)), True),
    (dict(minute=(0, 30)), False),
    (dict(), False),
    (dict(second=(0,), hour=(2,)), False),
])
def test_fields_follow_the_cron_daylight_saving_rule(kwargs, fixed_time):
    s = from_fields(timezone=BERLIN, **kwargs)
    assert s.fixed_time is fixed_time


def test_fields_in_a_zone():
    s = from_fields(minute=(30,), hour=(2,), timezone=BERLIN)
    assert upcoming(s, '2024-03-30T12:00+01:00', 2, BERLIN) == [
        '2024-03-31T03:00:00+02:00', '2024-04-01T02:30:00+02:00']
    s = from_fields(minute=(30,), timezone=BERLIN)
    assert upcoming(s, '2024-10-27T01:00+02:00', 3, BERLIN) == [
        '2024-10-27T01:30:00+02:00', '2024-10-27T02:30:00+02:00',
        '2024-10-27T02:30:00+01:00']


def test_zones_without_daylight_saving():
    s = from_cron('0 9 * * *', 'Asia/Kolkata')
    assert upcoming(s, '2024-01-01T00:00+05:30', 2, 'Asia/Kolkata') == [
        '2024-01-01T09:00:00+05:30', '2024-01-02T09:00:00+05:30']
    s = from_cron('0 9 * * *', 'UTC')
    assert s.timezone is None
    assert s.next_after(0) == 9 * 3600
    s = from_cron('0 9 * * *', ZoneInfo('Pacific/Chatham'))
    assert s.timezone == 'Pacific/Chatham'
    assert upcoming(s, '2024-06-01T00:00+12:45', 1, 'Pacific/Chatham') == [
        '2024-06-01T09:00:00+12:45']


def test_samoa_skipped_a_whole_day():
    # Samoa skipped 2011-12-30 to move across the date line; a fixed time
    # of that day runs at the jump, like any skipped wall time.
    s = from_cron('0 12 * * *', 'Pacific/Apia')
    assert upcoming(s, '2011-12-29T00:00-10:00', 3, 'Pacific/Apia') == [
        '2011-12-29T12:00:00-10:00', '2011-12-31T00:00:00+14:00',
        '2011-12-31T12:00:00+14:00']
    s = from_cron('0 12 30 12 *', 'Pacific/Apia')
    assert upcoming(s, '2011-06-01T00:00-10:00', 2, 'Pacific/Apia') == [
        '2011-12-31T00:00:00+14:00', '2012-12-30T12:00:00+14:00']
    s = from_cron('0 * 30 12 *', 'Pacific/Apia')
    assert upcoming(s, '2011-06-01T00:00-10:00', 1, 'Pacific/Apia') == [
        '2012-12-30T00:00:00+14:00']


# -- every and bounded --------------------------------------------------------

def test_every_without_anchor():
    s = every(90)
    assert s.next_after(1000) == 1090
    assert s.next_after(1000.5) == 1090.5
    assert next_times(s, 0, 3) == [90, 180, 270]


def test_every_with_anchor():
    s = every(60, anchor=30)
    assert s.next_after(0) == 30
    assert s.next_after(29.9) == 30
    assert s.next_after(30) == 90
    assert s.next_after(100) == 150
    assert type(s.next_after(100.5)) is int
    s = every(0.1, anchor=0.0)
    t = s.next_after(0.35)
    assert t > 0.35 and abs(t - 0.4) < 1e-9
    assert s.next_after(0.3) > 0.3   # 3 * 0.1 is 0.30000000000000004
    times = next_times(s, 1e9, 50)
    assert all(a < b for a, b in zip(times, times[1:]))
    assert type(every(1.5, anchor=1.0).next_after(5)) is float


@pytest.mark.parametrize('args, error, message', [
    ((0,), ValueError, 'seconds must be positive, not 0'),
    ((-5,), ValueError, 'seconds must be positive'),
    ((float('inf'),), ValueError, 'seconds must be a finite number'),
    ((float('nan'),), ValueError, 'seconds must be a finite number'),
    ((True,), TypeError, 'seconds must be an int or a float, not True'),
    (('60',), TypeError, "seconds must be an int or a float, not '60'"),
    ((60, '0'), TypeError, "anchor must be an int or a float, not '0'"),
])
def test_every_errors(args, error, message):
    with pytest.raises(error, match=message):
        every(*args)


def test_bounded():
    s = bounded(from_cron('0 * * * *'), start=7200, end=4 * 3600)
    assert next_times(s, 0, 5) == [7200, 10800, 14400]
    assert s.next_after(14400) is None
    assert bounded(from_cron('0 * * * *'), start=7200.5).next_after(0) == 10800
    assert bounded(from_cron('0 * * * *'), end=3600).next_after(0) == 3600
    assert bounded(from_cron('0 * * * *'), end=3599).next_after(0) is None
    s = bounded(every(10, anchor=5), start=100)
    assert s.next_after(0) == 105
    s = bounded(every(0.5, anchor=0.25), start=1.25, end=2.25)
    assert next_times(s, 0, 5) == [1.25, 1.75, 2.25]
    assert bounded(every(10), start=100).next_after(0) == 109
    # nesting
    s = bounded(bounded(from_cron('0 * * * *'), start=3600), end=7200)
    assert next_times(s, 0, 5) == [3600, 7200]


def test_bounded_errors():
    with pytest.raises(ValueError, match='end 5 is before start 10'):
        bounded(every(1), start=10, end=5)
    with pytest.raises(TypeError, match='bounded\\(\\) needs a Schedule'):
        bounded('0 * * * *')
    with pytest.raises(TypeError, match="start must be an int or a float"):
        bounded(every(1), start='2024')


def test_next_times_stops_early():
    s = bounded(from_cron('0 * * * *'), end=3 * 3600)
    assert next_times(s, 0, 10) == [3600, 7200, 10800]
    assert next_times(s, 0, 0) == []


def test_now_must_be_a_number():
    with pytest.raises(TypeError, match='now must be a number'):
        from_cron('* * * * *').next_after('0')
    with pytest.raises(TypeError, match='now must be a number'):
        every(5).next_after(None)


# -- repr, equality, pickling -------------------------------------------------

SCHEDULES = [
    from_fields(minute=(0, 10)),
    from_fields(hour=(2,), day_of_week=(0, 4), timezone=BERLIN),
    from_cron('*/15 9-17 * * 1-5'),
    from_cron('30 2 * * *', timezone=BERLIN),
    every(60),
    every(60, anchor=30),
    bounded(from_cron('0 0 * * *'), start=0, end=10 ** 9),
    bounded(every(5), end=100),
]


@pytest.mark.parametrize('schedule', SCHEDULES, ids=repr)
def test_pickle_repr_and_equality(schedule):
    import zodbtasks.schedule as module
    assert isinstance(schedule, Schedule)
    copy = pickle.loads(pickle.dumps(schedule))
    assert copy == schedule and hash(copy) == hash(schedule)
    assert copy.next_after(123456789) == schedule.next_after(123456789)
    rebuilt = eval(repr(schedule), vars(module))
    assert rebuilt == schedule


def test_reprs():
    assert repr(from_fields(minute=(10, 0), timezone=BERLIN)) == (
        "from_fields(minute=(0, 10), timezone='Europe/Berlin')")
    assert repr(from_cron('0 0 * * *')) == "from_cron('0 0 * * *')"
    assert repr(from_cron('0 0 * * *', BERLIN)) == (
        "from_cron('0 0 * * *', 'Europe/Berlin')")
    assert repr(bounded(every(5, anchor=1), start=10)) == (
        'bounded(every(5, anchor=1), start=10)')


def test_inequality():
    assert from_cron('0 0 * * *') != from_cron('0 0 * * *', BERLIN)
    assert from_cron('0 0 * * *') != from_fields(hour=(0,))
    assert every(5) != every(5, anchor=0)


def test_zones_end_where_zoneinfo_ends():
    s = from_cron('0 0 * * *', BERLIN)
    with pytest.raises(ValueError, match="year 33658 is out of range for"
                                         " time zone 'Europe/Berlin'"):
        s.next_after(10 ** 12)
    # UTC has no such limit
    assert from_cron('0 0 * * *').next_after(10 ** 12) == 1000000080000
