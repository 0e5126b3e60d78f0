"""What a process builds once: parsed specs and zone year tables.

A spec shared by many cron jobs is compiled once per process, also after
the jobs' volatile schedules are dropped (as a ZODB cache eviction does);
a zone's year table is built once; and the year tables built from the
zone's transitions are the ones that sampling the zone finds.
"""
import random

import pytest

from zodbtasks import _calendar
from zodbtasks import schedule
from zodbtasks.job import CronJob

ZONES = ['Europe/Berlin', 'America/New_York', 'Australia/Lord_Howe',
         'Pacific/Chatham', 'America/Sao_Paulo', 'Asia/Kolkata',
         'Europe/London', 'Africa/Casablanca', 'Pacific/Apia', 'UTC']
NOW = 1_767_225_600   # 2026-01-01 UTC


class Counter:
    def __init__(self, function):
        self.function = function
        self.calls = []

    def __call__(self, *args):
        self.calls.append(args)
        return self.function(*args)


@pytest.fixture
def counted(monkeypatch):
    """Counters around the uncached compile functions, caches emptied."""
    cron = Counter(schedule._compile_cron)
    fields = Counter(schedule._compile_fields)
    years = Counter(_calendar.ZoneTable._build_year)
    monkeypatch.setattr(schedule, '_compile_cron', cron)
    monkeypatch.setattr(schedule, '_compile_fields', fields)
    monkeypatch.setattr(_calendar.ZoneTable, '_build_year',
                        lambda table, year: years(table, year))
    schedule._forget_caches()
    yield cron, fields, years
    schedule._forget_caches()


def test_one_cron_spec_is_compiled_once_for_1000_jobs(counted):
    cron, fields, years = counted
    jobs = [CronJob(i, 'echo', None, cron='*/7 9-17 * * 1-5',
                    timezone='Europe/Berlin') for i in range(1000)]
    first = {job.timeOfNextCall(NOW) for job in jobs}
    assert len(first) == 1
    for job in jobs:            # what an eviction from the ZODB cache does
        job._v_schedule = None
    assert {job.timeOfNextCall(NOW) for job in jobs} == first
    for job in jobs:
        del job._v_schedule
    assert {job.schedule.next_after(NOW) for job in jobs} == first
    assert cron.calls == [('*/7 9-17 * * 1-5',)]
    assert fields.calls == []
    # one year of Berlin was needed, and built once
    assert [(table.key, year) for table, year in years.calls] == [
        ('Europe/Berlin', 2026)]


def test_one_field_spec_is_compiled_once_for_1000_jobs(counted):
    cron, fields, years = counted
    jobs = [CronJob(i, 'echo', None, minute=(0, 30), hour=(9, 17),
                    dayOfWeek=(0, 4)) for i in range(1000)]
    for job in jobs:
        job._v_schedule = None
    # 2026-01-01 is a Thursday: Friday 09:00
    assert {job.timeOfNextCall(NOW) for job in jobs} == {NOW + 86400
                                                         + 9 * 3600}
    assert len(fields.calls) == 1
    assert cron.calls == [] and years.calls == []


def test_distinct_specs_are_compiled_once_each(counted):
    cron, fields, years = counted
    specs = ['0 0 * * *', '0 0 * * *', '5 4 * * sun', '@daily', '5 4 * * SUN']
    for i in range(300):
        schedule.from_cron(specs[i % len(specs)]).next_after(NOW)
    assert sorted(call[0] for call in cron.calls) == sorted(set(specs))


def test_forgetting_caches_compiles_again(counted):
    cron, fields, years = counted
    schedule.from_cron('0 12 * * *', 'Asia/Kolkata').next_after(NOW)
    schedule._forget_caches()
    schedule.from_cron('0 12 * * *', 'Asia/Kolkata').next_after(NOW)
    assert len(cron.calls) == 2
    # the fixed-time rule looks back two days, into 2025: each year built
    # once per pass
    built = [year for table, year in years.calls]
    assert sorted(built) == [2025, 2025, 2026, 2026]


@pytest.mark.parametrize('key', ZONES)
def test_year_tables_from_transitions_match_sampling(key):
    table = _calendar.ZoneTable(key)
    rng = random.Random(key)
    years = {1970, 1971, 2037, 2038, 2098, 2099, 1850, 2500}
    years.update(rng.sample(range(1972, 2037), 4))
    years.update(rng.sample(range(2039, 2098), 3))
    for year in sorted(years):
        assert table._build_year(year) == table._sample_year(year), year
    assert table._changes, 'the transitions were not read'


def test_missing_transitions_fall_back_to_sampling():
    table = _calendar.ZoneTable('Europe/Berlin')
    # data that forgets the change back in autumn: the year's end, which
    # is not on summer time, gives it away
    spring = (1711846800,)       # 2024-03-31 01:00 UTC
    assert table._build_year_from_changes(2024, spring, None) is None
    table._changes = (spring, None)
    starts, ends, offsets = table._build_year(2024)
    assert offsets == (3600, 7200, 3600)
    assert starts[1] == 1711846800     # 2024-03-31 01:00 UTC
    assert ends[1] == 1729990800       # 2024-10-27 01:00 UTC


def test_without_zoneinfo_internals_years_are_sampled(monkeypatch):
    monkeypatch.setattr(_calendar, '_py_zoneinfo', None)
    table = _calendar.ZoneTable('Pacific/Chatham')
    assert table._build_year(2030) == table._sample_year(2030)
    assert table._changes == ()
