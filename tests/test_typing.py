"""The annotations of the public API, as a user's type checker sees them.

mypy (with the project's settings, pyproject.toml) checks
``tests/typing_usage.py``, written as a user would write code against
zodbtasks, and must find nothing there; and it must find each mistake of
``WRONG`` below, on its line: that is what shows the annotations are there.
The test skips without mypy, unless ZODBTASKS_REQUIRE_MYPY is set (as CI
does, where the checkers are installed).
"""
import importlib.util
import inspect
import os
import pathlib
import re
import subprocess
import sys

import pytest

from zodbtasks import connect
from zodbtasks import decorators
from zodbtasks import job

pytestmark = pytest.mark.timeout(600)

ROOT = pathlib.Path(__file__).resolve().parent.parent
USAGE = ROOT / 'tests' / 'typing_usage.py'

#: Mistakes a type checker must report: each line that ends in
#: ``# E: code`` must have an error of that code, and no other line any.
WRONG = '''\
from zodbtasks.decorators import delayed_task, task
from zodbtasks.job import CronJob
from zodbtasks.schedule import every, next_times
from zodbtasks.service import TaskService


@task()
def send(address: str) -> bool:
    return True


@delayed_task()
def later(count: int) -> int:
    return count


def use(service: TaskService) -> None:
    service.add('send', now='soon')  # E: arg-type
    service.add('send', retreis=3)  # E: call-arg
    service.add('send', ttl='1h')  # E: arg-type
    service.addCronJob('send', misfire='sometimes')  # E: arg-type
    service.addCronJob('send', minute=5)  # E: arg-type
    send(3)  # E: arg-type
    handle: int = later(3)  # E: assignment
    later.delay('three')  # E: arg-type
    jobs, cursor = service.listJobs()
    cursor.upper()  # E: union-attr
    first: str = service.claimJobs(count=2)[0]  # E: assignment
    service.heartbeat(1, token='abc')  # E: arg-type
    CronJob(0, 'send', None, cron=5)  # E: arg-type
    next_times(every(60), now=None)  # E: arg-type
    print(handle, jobs, first)
'''


def expected_errors(text):
    found = {}
    for number, line in enumerate(text.splitlines(), 1):
        marker = re.search(r'# E: ([\w-]+)$', line)
        if marker:
            found[number] = marker.group(1)
    return found


@pytest.fixture(scope='module')
def mypy_report(tmp_path_factory):
    """mypy's errors on the usage file and on WRONG: {file name: {line:
    [error code, ...]}}, from one run (with a cache of its own)."""
    if importlib.util.find_spec('mypy') is None:
        if os.environ.get('ZODBTASKS_REQUIRE_MYPY'):
            pytest.fail('ZODBTASKS_REQUIRE_MYPY is set but mypy is not '
                        'installed')
        pytest.skip('mypy is not installed')
    tmp = tmp_path_factory.mktemp('typing')
    wrong = tmp / 'typing_wrong.py'
    wrong.write_text(WRONG)
    done = subprocess.run(
        [sys.executable, '-m', 'mypy', '--config-file',
         str(ROOT / 'pyproject.toml'), '--cache-dir', str(tmp / 'cache'),
         '--show-error-codes', '--no-error-summary', str(USAGE), str(wrong)],
        cwd=str(ROOT), capture_output=True, text=True, timeout=540)
    report = {}
    for line in done.stdout.splitlines():
        error = re.match(r'(.+?):(\d+): error: .*\[([\w-]+)\]$', line)
        if error:
            name = pathlib.Path(error.group(1)).name
            report.setdefault(name, {}).setdefault(
                int(error.group(2)), []).append(error.group(3))
    # Anything but findings (a crash, a bad setting) fails the tests.
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert report or done.returncode == 0, done.stdout + done.stderr
    return report, done.stdout


def test_code_written_against_the_api_checks_clean(mypy_report):
    report, output = mypy_report
    assert 'typing_usage.py' not in report, output


def test_wrong_calls_are_reported_each_on_its_line(mypy_report):
    report, output = mypy_report
    expected = expected_errors(WRONG)
    assert len(expected) == 13
    found = report.get('typing_wrong.py', {})
    missing = {line: code for line, code in expected.items()
               if code not in found.get(line, [])}
    assert not missing, 'not reported: %s\n%s' % (missing, output)
    unexpected = sorted(set(found) - set(expected))
    assert not unexpected, output


# -- the typed keywords follow the options they describe ---------------------

def test_the_typed_job_options_are_the_options():
    assert set(job.JobOptions.__annotations__) == set(job.JOB_OPTIONS)
    assert set(job.CronOptions.__optional_keys__) == (
        set(job.JOB_OPTIONS) | set(job.CRON_OPTIONS))


def test_the_typed_schedule_keywords_are_those_a_cron_job_takes():
    explicit = set(inspect.signature(job.CronJob.update).parameters) - {
        'self', 'kw'}
    assert set(job.ScheduleArguments.__optional_keys__) == (
        set(job.CronJob.scheduleArguments) - explicit)
    assert set(job.CronJobArguments.__optional_keys__) == (
        set(job.ScheduleArguments.__optional_keys__)
        | set(job.CronOptions.__optional_keys__))


def test_the_typed_task_options_are_the_job_options_and_the_limit():
    limit = {'concurrency', 'rate'}
    assert set(decorators.TaskOptions.__optional_keys__) == (
        set(job.JOB_OPTIONS) | limit)
    assert set(decorators.RepeatingTaskOptions.__optional_keys__) == (
        set(job.JOB_OPTIONS) | set(job.CRON_OPTIONS) | limit)


def test_the_typed_open_options_are_the_keywords_of_open_database():
    keywords = set(inspect.signature(connect.open_database).parameters)
    assert set(connect.OpenOptions.__optional_keys__) == keywords - {'spec'}
