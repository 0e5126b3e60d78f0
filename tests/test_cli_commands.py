"""The operator's commands: job options, bulk changes in batches, the
service-wide pause, start-later jobs, and output a person can read."""
import json
import os
import re
import subprocess
import sys

import pytest
import ZODB
import ZODB.FileStorage

import zodbtasks
from zodbtasks.cli import main

HERE = os.path.dirname(os.path.abspath(__file__))
DAY = 86400


@pytest.fixture
def fs(tmp_path, tasks):
    path = str(tmp_path / 'Data.fs')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    with db.transaction() as conn:
        conn.root()['tasks'] = zodbtasks.TaskService()
    db.close()
    return path


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as stop:      # argparse refused the arguments
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def on(fs, now=1000):
    return ['--db', fs, '--service', 'tasks', '--now', str(now)]


class Open:
    """The stored service, read-only."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.db = ZODB.DB(ZODB.FileStorage.FileStorage(self.path,
                                                       read_only=True))
        self.conn = self.db.open()
        return self.conn.root()['tasks']

    def __exit__(self, *exc):
        self.conn.close()
        self.db.close()


def commits(path):
    storage = ZODB.FileStorage.FileStorage(path, read_only=True)
    try:
        return sum(1 for _ in storage.iterator())
    finally:
        storage.close()


def added(out):
    return json.loads(out)['id']


def test_add_takes_the_job_options(fs, capsys):
    code, out, err = run(capsys, 'add', 'echo', *on(fs), '--retries', '3',
                         '--retry-delay', '5', '--ttl', '60', '--lease', '90',
                         '--timeout', '30', '--at-most-once', '--json')
    assert code == 0, err
    with Open(fs) as service:
        job = service.jobs[added(out)]
        assert (job.retries, job.retryDelay, job.ttl, job.leaseSeconds,
                job.timeout, job.atMostOnce) == (3, 5, 60, 90, 30, True)
        assert job.status == 'queued'


def test_start_later_and_start(fs, capsys):
    code, out, err = run(capsys, 'add', 'echo', *on(fs), '--start-later')
    assert code == 0, err
    jobid = int(re.search(r'added job (\d+) \(start later\): start it with '
                          r'"zodbtasks start \1"', out).group(1))
    code, out, err = run(capsys, 'start', str(jobid), *on(fs))
    assert code == 0, err
    assert out == 'job %d started: now queued\n' % jobid
    code, out, err = run(capsys, 'start', str(jobid), *on(fs))
    assert code == 1 and err.count('\n') == 1
    assert "is 'queued', not waiting to start; only jobs added with " \
        '--start-later are started' in err


def test_add_without_task_modules_stores_the_name_and_warns(tmp_path, capsys,
                                                            caplog):
    # No tasks are registered in this process (no ``tasks`` fixture).
    path = str(tmp_path / 'Data.fs')
    code, out, err = run(capsys, 'add', 'reports.nightly', '--db', path,
                         '--service', 'tasks', '--create', '--json')
    assert code == 0, err
    assert "no task modules are loaded (--tasks MODULE): the task name " \
        "'reports.nightly' is stored unchecked" in caplog.text
    with Open(path) as service:
        assert service.jobs[added(out)].task == 'reports.nightly'
    # The stand-in is gone: nothing is left registered.
    import zope.component
    from zodbtasks.interfaces import ITask
    assert list(zope.component.getUtilitiesFor(ITask)) == []


@pytest.mark.parametrize('argv, message', [
    (['add', 'nope', '--tasks', 'zodbtasks_test_tasks'],
     "no task is registered under the name 'nope'"),
    (['add', 'echo', '--queue', 'fast lane'],
     "queue must be a queue name of 1 to 64 letters"),
    (['add', 'echo', '--priority', '10'],
     'priority must be a whole number from 0 (lowest) to 9 (highest), '
     'not 10'),
    (['add', 'echo', '--retries', '-1'], 'argument --retries'),
    (['add', 'echo', '--ttl', 'soon'], 'argument --ttl'),
    (['cron', 'echo', '--interval', '60', '--cron', '* * * * *'],
     'give either cron or interval, not both'),
    (['cron', 'echo', '--day-of-week', '7'],
     'out of range; days of the week are 0-6, 0 being Monday'),
    (['cron', 'echo', '--cron', '* * * * *', '--misfire', 'never'],
     'argument --misfire'),
    (['cron', 'echo', '--start', 'tomorrow', '--interval', '60'], '--start'),
    (['cancel', '12345'], 'no job 12345'),
    (['clean', '--older-than', '7 days'], 'argument --older-than'),
    (['requeue', '--status', 'completed'], 'argument --status'),
])
def test_bad_input_is_one_line_and_writes_nothing(fs, capsys, argv, message):
    before = os.path.getsize(fs)
    code, out, err = run(capsys, argv[0], *on(fs), *argv[1:])
    assert code in (1, 2)       # 2: argparse refused it before anything ran
    assert message in err and err.count('\n') == 1, err
    assert os.path.getsize(fs) == before


def test_cron_takes_every_schedule_option(fs, capsys):
    code, out, err = run(capsys, 'cron', 'echo', *on(fs), '--interval', '90',
                         '--start', '2026-01-01T00:00', '--end', '2027-01-01',
                         '--misfire', 'skip', '--misfire-grace', '5',
                         '--overlap', 'skip', '--max-runs', '4',
                         '--catch-up', '2', '--retries', '1', '--json')
    assert code == 0, err
    with Open(fs) as service:
        job = service.jobs[added(out)]
        assert job.interval == 90 and job.start == 1767225600
        assert job.end == 1798761600
        assert (job.misfire, job.misfireGrace, job.overlap, job.maxRuns,
                job.catchUp, job.retries) == ('skip', 5, 'skip', 4, 2, 1)


def test_day_of_week_flags_old_and_new(fs, capsys):
    ids = []
    for flag in ('--day-of-week', '--dayOfWeek'):
        code, out, err = run(capsys, 'cron', 'echo', *on(fs), '--hour', '9',
                             '--minute', '0', flag, '0', '--json')
        assert code == 0, err
        ids.append(added(out))
    with Open(fs) as service:
        assert [service.jobs[i].dayOfWeek for i in ids] == [(0,), (0,)]
    help = subprocess.run([sys.executable, '-m', 'zodbtasks', 'cron',
                           '--help'], capture_output=True, text=True,
                          timeout=60).stdout
    assert re.search(r'--day-of-week.*0 = Monday \.\.\. 6 = Sunday', help,
                     re.S)
    assert "0 and 7 are Sunday and 1 is Monday (cron's convention)" in \
        ' '.join(help.split())
    assert '--dayOfWeek is the old spelling' in ' '.join(help.split())


def test_cancel_on_a_finished_job_exits_1(fs, capsys):
    code, out, _ = run(capsys, 'add', 'echo', *on(fs), '--json')
    jobid = added(out)
    assert run(capsys, 'cancel', str(jobid), *on(fs))[0] == 0
    code, out, err = run(capsys, 'cancel', str(jobid), *on(fs))
    assert code == 1
    assert err == ('zodbtasks cancel: error: job %d is cancelled already; '
                   'only unfinished jobs can be cancelled\n' % jobid)


def test_pause_and_resume_the_whole_service(fs, capsys):
    code, out, err = run(capsys, 'pause', *on(fs))
    assert code == 0, err
    assert out.startswith('service at /tasks paused: workers claim nothing')
    with Open(fs) as service:
        assert service.paused is True
    code, out, _ = run(capsys, 'status', *on(fs))
    assert '(PAUSED: workers claim nothing)' in out.splitlines()[0]
    code, out, _ = run(capsys, 'resume', *on(fs), '--json')
    assert json.loads(out) == {'service': 'tasks', 'paused': False}
    with Open(fs) as service:
        assert service.paused is False


def failedJobs(path, count, task='crash', now=1000):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    with db.transaction() as conn:
        service = conn.root()['tasks']
        ids = [service.add(task, i, now=now) for i in range(count)]
        service.process(now=now)
    db.close()
    return ids


def test_requeue_in_batches(fs, capsys):
    crashed = failedJobs(fs, 5)
    failed = failedJobs(fs, 2, task='fail')
    before = commits(fs)
    code, out, err = run(capsys, 'requeue', *on(fs), '--status', 'error',
                         '--task', 'crash', '--dry-run')
    assert code == 0 and out.startswith('would requeue 5 job(s)\n')
    assert commits(fs) == before
    code, out, err = run(capsys, 'requeue', *on(fs), '--status', 'error',
                         '--task', 'crash', '--batch', '2')
    assert code == 0, err
    assert out == 'requeued 5 job(s)\n'
    assert commits(fs) == before + 3          # 2 + 2 + 1
    with Open(fs) as service:
        assert {service.getStatus(i) for i in crashed} == {'queued'}
        assert {service.getStatus(i) for i in failed} == {'error'}


def test_clean_older_than_in_batches(fs, capsys):
    old = failedJobs(fs, 3, task='echo', now=1000)
    new = failedJobs(fs, 2, task='echo', now=1000 + 6 * DAY)
    now = 1000 + 7 * DAY + 1
    before = commits(fs)
    code, out, err = run(capsys, 'clean', *on(fs, now), '--older-than', '7d',
                         '--dry-run', '--json')
    assert code == 0, err
    assert sorted(json.loads(out)['ids']) == sorted(old)
    assert commits(fs) == before
    code, out, err = run(capsys, 'clean', *on(fs, now), '--older-than', '7d',
                         '--batch', '2')
    assert out == 'removed 3 finished job(s)\n'
    assert commits(fs) == before + 2
    with Open(fs) as service:
        assert sorted(service.jobs) == sorted(new)
        assert all(service.getStatus(i) == 'completed' for i in new)
    # What is gone is gone from the finished index too: clean finds nothing.
    code, out, err = run(capsys, 'clean', *on(fs, now), '--older-than', '1w')
    assert out == 'removed 0 finished job(s)\n'


def test_readable_output(fs, capsys):
    [jobid] = failedJobs(fs, 1)
    code, out, _ = run(capsys, 'add', 'echo', *on(fs), '--input',
                       json.dumps('x' * 300), '--json')
    long = added(out)
    code, out, _ = run(capsys, 'cron', 'echo', *on(fs), '--cron',
                       '0 9 * * *', '--timezone', 'Europe/Berlin', '--json')
    cron = added(out)
    code, out, _ = run(capsys, 'show', str(long), *on(fs))
    assert re.search(r'^input +x{97}\.\.\.$', out, re.M)
    code, out, _ = run(capsys, 'show', str(cron), *on(fs, 1790000000))
    # The next runs in the job's zone, with UTC beside.
    assert 'next runs     2026-09-22 09:00:00 CEST (2026-09-22 07:00:00 UTC)' \
        in out
    code, out, _ = run(capsys, 'show', str(jobid), *on(fs))
    assert re.search(r'^failures \(latest last\):\nwhen +error *\n─+\n'
                     r'1970-01-01 00:16:40 UTC +ZeroDivisionError: '
                     r'division by zero', out, re.M), out
    code, out, _ = run(capsys, 'status', *on(fs, 1000 + 3 * 3600 + 12 * 60))
    assert 'waiting 3 h 12 min' in out


def test_durations_and_times():
    from zodbtasks.display import cut, duration, moment
    assert [duration(s) for s in (0.002, 8, 75, 3 * 3600 + 12 * 60 + 5,
                                  2 * DAY + 4 * 3600)] == [
        '0.002 s', '8.0 s', '1 min 15 s', '3 h 12 min', '2 d 4 h']
    assert moment(0) == '1970-01-01 00:00:00 UTC'
    assert moment(0, 'America/New_York') == '1969-12-31 19:00:00 EST'
    assert cut('abcdef', 5) == 'ab...' and cut('abc', 5) == 'abc'


def cli(*args, env=None, **kw):
    # Keep the runner's PYTHONPATH: buildout's bin/test passes its eggs so.
    path = os.pathsep.join(filter(None, [HERE, os.environ.get('PYTHONPATH')]))
    return subprocess.run(
        [sys.executable, '-m', 'zodbtasks', *args], capture_output=True,
        text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=path, **(env or {})), **kw)


def test_version_module_and_environment_defaults(fs, capsys):
    from importlib.metadata import version
    done = cli('--version')
    assert done.returncode == 0
    assert done.stdout.strip() == 'zodbtasks %s' % version('zodbtasks')
    done = cli('status', '--json', env={'ZODBTASKS_DB': fs,
                                        'ZODBTASKS_SERVICE': 'tasks'})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)['counts'] == {}
    done = cli('status', '--json', env={'ZODBTASKS_SERVICE': 'tasks'})
    assert done.returncode == 2
    assert 'the following arguments are required: --db' in done.stderr


@pytest.mark.parametrize('json', ['', '--json'])
def test_piping_into_head_ends_quietly(fs, json):
    failedJobs(fs, 3000, task='echo')
    done = subprocess.run(
        '"%s" -m zodbtasks jobs --db "%s" --service tasks --limit 3000 %s | '
        'head -n 2' % (sys.executable, fs, json), shell=True,
        capture_output=True, text=True, timeout=120)
    assert len(done.stdout.splitlines()) == 2
    assert done.stderr == ''


def test_log_level_after_the_subcommand_and_the_start_at_debug(fs):
    args = ['add', 'elsewhere', '--db', fs, '--service', 'tasks']
    done = cli(*args)
    assert done.returncode == 0
    assert 'WARNING zodbtasks.admin no task modules are loaded' in done.stderr
    done = cli(*args, '--log-level', 'ERROR')
    assert done.returncode == 0
    assert done.stderr == ''         # the same WARNING, now off
    done = cli('cancel', done.stdout.split()[2], '--db', fs, '--service',
               'tasks')
    assert done.returncode == 0, done.stderr
    # A task by dotted name: its module must be trusted by the service.
    db = ZODB.DB(ZODB.FileStorage.FileStorage(fs))
    with db.transaction() as conn:
        conn.root()['tasks'].trustedModules = ['worker_tasks']
    db.close()
    done = cli('add', 'worker_tasks.append_id', '--db', fs, '--service',
               'tasks', '--input', json.dumps(os.devnull))
    assert done.returncode == 0, done.stderr
    done = cli('worker', '--db', fs, '--service', 'tasks', '--tasks',
               'worker_tasks', '--until-idle', '--poll', '0.05',
               '--log-level', 'DEBUG')
    assert done.returncode == 0, done.stderr
    assert re.search(r'DEBUG zodbtasks.jobs job \d+ worker_tasks.append_id '
                     r'started \(attempt 1\)', done.stderr)
    done = cli('worker', '--db', fs, '--service', 'tasks', '--until-idle',
               '--poll', '0.05', '--tasks', 'worker_tasks')
    assert 'DEBUG' not in done.stderr


def test_zeo_info_lines_only_when_verbose(tmp_path):
    from zodbtasks._testing import ZEOServer
    path = str(tmp_path / 'Data.fs')
    with ZEOServer(path) as server:
        args = ['status', '--db', server.uri, '--service', 'tasks']
        quiet = cli(*args)
        assert 'no service at /tasks' in quiet.stderr
        assert 'ZEO' not in quiet.stderr
        loud = cli(*args, '--verbose')
        assert 'INFO ZEO' in loud.stderr


@pytest.mark.parametrize('count', [0, 1, 30])
def test_long_tables_look_like_rich_ones(count):
    # Above RICH_ROWS rows a table is laid out without rich, which takes
    # about a millisecond a row; a script must not see the difference.
    import io
    from zodbtasks.display import table
    rows = [[i * 7919, 'task' * (i % 3), None, 'x' * (i % 5), i % 4]
            for i in range(count)]
    headers = ['id', 'task', 'status', 'error', 'attempts']
    drawn = []
    for fast in (False, True):
        out = io.StringIO()
        table(rows, headers, out, right=('id', 'attempts'), fast=fast)
        drawn.append([line.rstrip() for line in out.getvalue().split('\n')])
    assert drawn[0] == drawn[1]
    assert drawn[0][1].startswith('──')


def test_commands_other_than_dashboard_leave_its_web_stack_alone(fs):
    done = subprocess.run(
        [sys.executable, '-W', 'error::DeprecationWarning', '-c',
         'import sys; from zodbtasks.cli import main; '
         'code = main(["status", "--db", sys.argv[1], "--service", "tasks", '
         '"--json"]); print("webob" in sys.modules, code)', fs],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == 'False 0'


# -- upgrade ------------------------------------------------------------------

def test_upgrade_counts_an_older_service_in_batches(fs, capsys):
    from test_counts import fullCount
    from test_counts import oldLayout
    db = ZODB.DB(ZODB.FileStorage.FileStorage(fs))
    with db.transaction() as conn:
        service = conn.root()['tasks']
        ids = [service.add('echo', n, now=0) for n in range(120)]
        for jobid in ids[:20]:
            service.cancel(jobid, now=0)
        oldLayout(service)
    db.close()
    before = commits(fs)
    code, out, err = run(capsys, 'upgrade', *on(fs), '--batch', '50')
    assert code == 0, err
    assert 'layout upgraded; 120 job(s) counted in 3 batch(es)' in out
    # One commit for the layout, one per batch.
    assert commits(fs) - before == 4
    with Open(fs) as service:
        assert service.countsComplete()
        assert service.jobCounts() == fullCount(service) == {
            ('queued', 'echo'): 100, ('cancelled', 'echo'): 20}
    code, out, err = run(capsys, 'upgrade', *on(fs), '--json')
    assert code == 0, err
    assert json.loads(out) == {'upgraded': False, 'counted': 0,
                               'batches': 1, 'complete': True}


def test_clean_in_batches_keeps_the_counts_right(fs, capsys):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(fs))
    with db.transaction() as conn:
        service = conn.root()['tasks']
        for n in range(30):
            service.cancel(service.add('echo', n, now=0), now=0)
        service.add('echo', 'stays', now=0)
    db.close()
    code, out, err = run(capsys, 'clean', *on(fs), '--batch', '7')
    assert code == 0, err
    with Open(fs) as service:
        assert service.jobCounts() == {('queued', 'echo'): 1}
