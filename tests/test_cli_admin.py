"""The operator's subcommands, run as a user runs them: through ``main``."""
import json
import re
import os
import subprocess
import sys

import pytest
import ZODB
import ZODB.FileStorage

from persistent.mapping import PersistentMapping

import zodbtasks
from zodbtasks.cli import main

HERE = os.path.dirname(__file__)


@pytest.fixture
def dbpath(tmp_path, tasks):
    """A FileStorage with a service at app/tasks holding a few jobs."""
    path = str(tmp_path / 'Data.fs')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    ids = {}
    with db.transaction() as conn:
        root = conn.root()
        root['app'] = app = PersistentMapping()
        app['tasks'] = service = zodbtasks.TaskService()
        ids['done'] = service.add('echo', {'n': 1}, now=1000)
        ids['failed'] = service.add('crash', now=1000)
        service.process(now=1000)
        ids['cron'] = service.addCronJob('echo', minute=(0,), now=1000)
        service.processNext(now=1200)     # places the cron job at 3600
        ids['queued'] = service.add('echo', 'later', now=1250)
        ids['queued2'] = service.add('echo', now=1300)
    db.close()
    return path, ids


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def common(dbpath, now=5000):
    return ['--db', dbpath[0], '--service', 'app/tasks', '--now', str(now)]


def test_status_counts_and_lists_what_is_late(dbpath, capsys):
    code, out, err = run(capsys, 'status', *common(dbpath), '--json')
    assert code == 0, err
    report = json.loads(out)
    assert report['counts'] == {'queued': 2, 'completed': 1, 'error': 1,
                                'cronjob': 1}
    assert report['oldestQueued']['id'] == dbpath[1]['queued']
    assert report['oldestQueued']['waiting'] == 3750
    assert report['overdue'] == [{'id': dbpath[1]['cron'], 'task': 'echo',
                                  'due': 3600, 'late': 1400}]
    code, out, err = run(capsys, 'status', *common(dbpath))
    assert code == 0
    assert re.search(r'^queued +2$', out, re.M)
    assert 'late by' in out and '23 min 20 s' in out
    assert out.startswith('service at /app/tasks, 1970-01-01 01:23:20 UTC\n')


def test_jobs_filters_by_status_and_task(dbpath, capsys):
    code, out, _ = run(capsys, 'jobs', *common(dbpath), '--status', 'error',
                       '--json')
    rows = json.loads(out)
    assert [r['id'] for r in rows] == [dbpath[1]['failed']]
    assert rows[0]['error'] == 'ZeroDivisionError: division by zero'
    code, out, _ = run(capsys, 'jobs', *common(dbpath), '--task', 'echo',
                       '--limit', '2')
    assert code == 0
    assert len(out.strip().splitlines()) == 4     # header, rule, two rows
    assert out.splitlines()[1].startswith('─')
    code, out, _ = run(capsys, 'jobs', *common(dbpath), '--task', 'ech',
                       '--json')
    assert json.loads(out) == []                  # the exact name only
    code, out, _ = run(capsys, 'jobs', *common(dbpath), '--match', 'ch',
                       '--json')
    assert {r['task'] for r in json.loads(out)} == {'echo'}
    assert len(json.loads(out)) == sum(
        1 for name in dbpath[1] if name != 'failed')
    code, _, err = run(capsys, 'jobs', *common(dbpath), '--status', 'lost')
    assert code == 1 and "unknown status 'lost'" in err


def test_show_prints_every_field_and_the_traceback(dbpath, capsys):
    code, out, _ = run(capsys, 'show', *common(dbpath),
                       str(dbpath[1]['failed']))
    assert code == 0
    assert 'ZeroDivisionError: division by zero' in out
    assert 'traceback of the latest failure' in out
    # Once, and without the frames of zodbtasks itself: the task's frame.
    assert out.count('Traceback (most recent call last)') == 1
    assert 'conftest.py' in out and 'return 1 / 0' in out
    assert 'service.py' not in out and 'task.py' not in out
    assert 'failed: ZeroDivisionError: division by zero' in out   # the log
    assert re.search(r'^created +1970-01-01 00:16:40 UTC$', out, re.M)
    code, out, _ = run(capsys, 'show', *common(dbpath),
                       str(dbpath[1]['cron']), '--json')
    found = json.loads(out)
    assert found['minute'] == [0] and found['scheduledFor'] == 3600
    code, _, err = run(capsys, 'show', *common(dbpath), '12345')
    assert code == 1 and 'no job 12345' in err
    assert err.count('\n') == 1


def test_add_and_cron_write_jobs(dbpath, capsys):
    code, out, err = run(capsys, 'add', *common(dbpath), 'echo',
                         '--input', '{"to": "ops"}', '--tasks',
                         'zodbtasks_test_tasks', '--json')
    assert code == 0, err
    jobid = json.loads(out)['id']
    code, out, err = run(capsys, 'cron', *common(dbpath), 'echo',
                         '--cron', '*/10 * * * *', '--timezone',
                         'Europe/Berlin', '--tasks', 'zodbtasks_test_tasks')
    assert code == 0, err
    assert 'cronjob' in out
    db = ZODB.DB(ZODB.FileStorage.FileStorage(dbpath[0], read_only=True))
    with db.transaction() as conn:
        service = conn.root()['app']['tasks']
        assert service.jobs[jobid].input == {'to': 'ops'}
        assert any(getattr(j, 'cron', None) == '*/10 * * * *'
                   for j in service.jobs.values())
    db.close()


@pytest.mark.parametrize('argv, message', [
    (['add', 'nope', '--tasks', 'zodbtasks_test_tasks'],
     "no task is registered under the name 'nope'"),
    (['add', 'echo', '--input', '{bad', '--tasks', 'zodbtasks_test_tasks'],
     '--input is not JSON'),
    (['cron', 'echo', '--cron', '61 * * * *', '--tasks',
      'zodbtasks_test_tasks'], '61'),
    (['cron', 'echo', '--minute', 'five', '--tasks', 'zodbtasks_test_tasks'],
     "--minute takes numbers"),
    (['cron', 'echo', '--tasks', 'zodbtasks_test_tasks'], 'give --cron'),
    (['add', 'echo', '--tasks', 'no_such_module_here'],
     'cannot import task module no_such_module_here'),
])
def test_bad_input_ends_with_one_line_and_writes_nothing(dbpath, capsys, argv,
                                                         message):
    before = os.path.getsize(dbpath[0])
    code, _, err = run(capsys, argv[0], *common(dbpath), *argv[1:])
    assert code == 1
    assert message in err and err.count('\n') == 1
    assert os.path.getsize(dbpath[0]) == before


def test_cancel_retry_pause_resume_and_run_now(dbpath, capsys):
    ids = dbpath[1]
    assert run(capsys, 'cancel', *common(dbpath), str(ids['queued']))[0] == 0
    code, out, _ = run(capsys, 'retry', *common(dbpath), str(ids['failed']))
    assert 'now queued' in out
    assert run(capsys, 'pause', *common(dbpath), str(ids['cron']))[0] == 0
    code, _, err = run(capsys, 'run-now', *common(dbpath), str(ids['cron']))
    assert code == 1 and "'paused'" in err
    assert run(capsys, 'resume', *common(dbpath), str(ids['cron']))[0] == 0
    code, out, _ = run(capsys, 'run-now', *common(dbpath), str(ids['cron']),
                       '--json')
    assert json.loads(out) == {'id': ids['cron'], 'status': 'cronjob'}
    code, _, err = run(capsys, 'retry', *common(dbpath), str(ids['done']))
    assert code == 1 and "'completed'" in err
    db = ZODB.DB(ZODB.FileStorage.FileStorage(dbpath[0], read_only=True))
    with db.transaction() as conn:
        service = conn.root()['app']['tasks']
        assert service.getStatus(ids['queued']) == 'cancelled'
        assert service.getStatus(ids['failed']) == 'queued'
        assert service.jobs[ids['cron']].scheduledFor == 5000
    db.close()


def test_clean_removes_finished_jobs(dbpath, capsys):
    code, out, _ = run(capsys, 'clean', *common(dbpath), '--status', 'error',
                       '--json')
    assert json.loads(out) == {'removed': 1}
    code, out, _ = run(capsys, 'clean', *common(dbpath))
    assert 'removed 1 finished job(s)' in out


def test_next_fire_times_of_an_expression_and_of_a_job(dbpath, capsys):
    code, out, _ = run(capsys, 'next', '30 2 * * *', '-n', '2',
                       '--timezone', 'Europe/Berlin',
                       '--after', '2026-03-28T12:00')
    assert code == 0
    assert out.splitlines() == [
        '2026-03-29 01:00:00 UTC   2026-03-29 03:00:00 Europe/Berlin',
        '2026-03-30 00:30:00 UTC   2026-03-30 02:30:00 Europe/Berlin']
    code, out, _ = run(capsys, 'next', str(dbpath[1]['cron']), '-n', '2',
                       '--db', dbpath[0], '--service', 'app/tasks',
                       '--after', '0', '--json')
    assert json.loads(out) == [3600, 7200]
    code, _, err = run(capsys, 'next', '* * *', '--after', '0')
    assert code == 1 and 'field' in err


def test_a_missing_service_is_named(dbpath, capsys):
    code, _, err = run(capsys, 'status', '--db', dbpath[0], '--service',
                       'app/nothing')
    assert code == 1 and 'no service at /app/nothing' in err


def test_demo_runs_a_worker_and_its_jobs_persist(tmp_path):
    path = str(tmp_path / 'demo.fs')
    command = [sys.executable, '-m', 'zodbtasks.cli', 'demo', '--db', path,
               '--seconds', '6']
    first = subprocess.run(command, capture_output=True, text=True,
                           timeout=120)
    assert first.returncode == 0, first.stderr
    assert 'created %s' % path in first.stdout
    assert "-> 'Hello, world!'" in first.stdout
    assert 'retried' in first.stdout and 'tick number 1' in first.stdout
    second = subprocess.run(command, capture_output=True, text=True,
                            timeout=120)
    assert second.returncode == 0, second.stderr
    assert 'opened %s' % path in second.stdout
    # The cron job's counter lives in the database and goes on counting.
    assert 'tick number 1 ' not in second.stdout
    assert 'tick number' in second.stdout
