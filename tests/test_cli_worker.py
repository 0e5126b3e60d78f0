"""The ``zodbtasks worker`` command."""
import os
import re
import signal
import subprocess
import sys

import pytest
import transaction
import ZODB
import ZODB.FileStorage

import zodbtasks
from zodbtasks import cli
from zodbtasks._testing import Workers
from zodbtasks._testing import consoleScript
from zodbtasks._testing import waitFor

HERE = os.path.dirname(os.path.abspath(__file__))
WAIT = 60


def env():
    path = os.environ.get('PYTHONPATH')
    return {'PYTHONPATH': HERE + (os.pathsep + path if path else '')}


@pytest.fixture
def tasks():
    import worker_tasks
    worker_tasks.register()
    return worker_tasks


@pytest.fixture
def fs(tmp_path):
    return str(tmp_path / 'Data.fs')


class Stored:
    """Open the FileStorage briefly, as the worker holds its lock."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.db = ZODB.DB(ZODB.FileStorage.FileStorage(self.path))
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(transaction_manager=self.tm)
        self.tm.begin()
        return self.conn.root()

    def __exit__(self, *exc):
        if exc[0] is None:
            self.tm.commit()
        self.tm.abort()
        self.conn.close()
        self.db.close()


def addJobs(path, task, inputs, key='tasks'):
    with Stored(path) as root:
        service = root.get(key)
        if service is None:
            root[key] = service = zodbtasks.TaskService()
        return [service.add(task, i) for i in inputs]


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().split()


def run(*args, timeout=WAIT):
    return subprocess.run([sys.executable, '-m', 'zodbtasks.cli'] + list(args),
                          env=dict(os.environ, **env()), capture_output=True,
                          text=True, timeout=timeout)


def test_a_worker_runs_the_jobs_and_logs_each(fs, tmp_path, tasks):
    ledger = str(tmp_path / 'ledger')
    ids = addJobs(fs, 'append_id', [ledger] * 3)
    done = run('worker', '--db', fs, '--service', 'tasks', '--tasks',
               'worker_tasks', '--until-idle', '--poll', '0.05')
    assert done.returncode == 0, done.stderr
    assert sorted(lines(ledger)) == sorted(str(i) for i in ids)
    for jobid in ids:
        assert re.search(r'INFO zodbtasks.jobs job %d append_id completed in '
                         r'[\d.]+ s \(attempt 1\)' % jobid, done.stderr)
    assert re.search(r'worker stopped after [\d.]+s: 3 job\(s\) '
                     r'\(completed: 3\)', done.stderr)
    with Stored(fs) as root:
        assert {root['tasks'].getStatus(i) for i in ids} == {'completed'}


def test_a_worker_with_threads_on_a_file_uri(fs, tmp_path, tasks):
    ledger = str(tmp_path / 'ledger')
    ids = addJobs(fs, 'append_id', [ledger] * 20)
    done = run('worker', '--db', 'file://' + fs, '--service', '/tasks/',
               '--tasks', 'worker_tasks', '--threads', '3', '--until-idle',
               '--poll', '0.05')
    assert done.returncode == 0, done.stderr
    assert sorted(lines(ledger)) == sorted(str(i) for i in ids)
    assert 'completed: 20' in done.stderr


def commitsSince(path, tid):
    """The transactions after ``tid`` that wrote a job: claims and runs,
    not the worker's record of itself, which it renews on a clock."""
    from ZODB.utils import get_pickle_metadata
    storage = ZODB.FileStorage.FileStorage(path, read_only=True)
    try:
        return len([t for t in storage.iterator() if t.tid > tid and any(
            get_pickle_metadata(r.data) == ('zodbtasks.job', 'Job')
            for r in t if r.data)])
    finally:
        storage.close()


# Claims take 1, then 2, then 2 jobs (fewer if a job ran slowly): 3 to 5
# claims. Grouped, the runs commit with the claims, and one commit more
# records the last; with --no-group each run commits too.
@pytest.mark.parametrize('flags, commits', [
    ((), range(4, 7)),
    (('--no-group',), range(3 + 5, 5 + 5 + 1)),
])
def test_no_group_commits_every_run_on_its_own(fs, tmp_path, tasks, flags,
                                               commits):
    ledger = str(tmp_path / 'ledger')
    ids = addJobs(fs, 'append_id', [ledger] * 5)
    with Stored(fs) as root:
        before = root._p_jar.db().lastTransaction()
    done = run('worker', '--db', fs, '--service', 'tasks', '--tasks',
               'worker_tasks', '--until-idle', '--poll', '0.05', *flags)
    assert done.returncode == 0, done.stderr
    assert sorted(lines(ledger)) == sorted(str(i) for i in ids)
    assert commitsSince(fs, before) in commits
    assert 'completed: 5' in done.stderr


def test_create_makes_a_service_where_there_was_none(fs, tasks):
    done = run('worker', '--db', fs, '--service', 'tasks', '--until-idle',
               '--create')
    assert done.returncode == 0, done.stderr
    assert 'created a task service at /tasks' in done.stderr
    assert 'worker stopped after' in done.stderr
    with Stored(fs) as root:
        assert isinstance(root['tasks'], zodbtasks.TaskService)


def test_a_zconfig_file_names_the_database(fs, tmp_path, tasks):
    ledger = str(tmp_path / 'ledger')
    ids = addJobs(fs, 'append_id', [ledger])
    conf = tmp_path / 'db.conf'
    conf.write_text('<zodb>\n  <filestorage>\n    path %s\n  </filestorage>\n'
                    '</zodb>\n' % fs)
    done = run('worker', '--db', str(conf), '--service', 'tasks', '--tasks',
               'worker_tasks', '--until-idle', '--poll', '0.05')
    assert done.returncode == 0, done.stderr
    assert lines(ledger) == [str(ids[0])]


def test_sigterm_lets_the_job_in_hand_finish(fs, tmp_path, tasks):
    started, release = str(tmp_path / 'started'), str(tmp_path / 'release')
    jobid, = addJobs(fs, 'wait_for_file', [{'started': started,
                                            'release': release}])
    with Workers(str(tmp_path), env=env()) as workers:
        worker = workers.start('worker', '--db', fs, '--service', 'tasks',
                               '--tasks', 'worker_tasks', '--poll', '0.05')
        waitFor(lambda: lines(started), WAIT, 'the job starting')
        worker.send_signal(signal.SIGTERM)
        waitFor(lambda: 'stopping after the job(s) in hand'
                in workers.log(worker), WAIT, 'the worker hearing SIGTERM')
        assert worker.poll() is None          # still busy with its job
        open(release, 'w').close()
        assert worker.wait(WAIT) == 0
        log = workers.log(worker)
    assert 'job %d wait_for_file completed' % jobid in log
    assert 'completed: 1' in log
    with Stored(fs) as root:
        assert root['tasks'].getResult(jobid) == 'released'


def test_a_second_signal_interrupts(fs, tmp_path, tasks):
    started, release = str(tmp_path / 'started'), str(tmp_path / 'release')
    jobid, = addJobs(fs, 'wait_for_file', [{'started': started,
                                            'release': release}])
    with Workers(str(tmp_path), env=env()) as workers:
        worker = workers.start('worker', '--db', fs, '--service', 'tasks',
                               '--tasks', 'worker_tasks', '--threads', '2',
                               '--poll', '0.05')
        waitFor(lambda: lines(started), WAIT, 'the job starting')
        worker.send_signal(signal.SIGTERM)
        waitFor(lambda: 'stopping after' in workers.log(worker), WAIT,
                'the worker hearing SIGTERM')
        worker.send_signal(signal.SIGINT)
        assert worker.wait(WAIT) == 130
        assert 'interrupted' in workers.log(worker)
    with Stored(fs) as root:
        # Its lease will expire and the job will be given back.
        assert root['tasks'].getStatus(jobid) == 'processing'


# -- bad input: a non-zero exit and one line that says why -------------------

def errorOf(capsys, *args):
    with pytest.raises(SystemExit) as exit:
        sys.exit(cli.main(list(args)))
    err = capsys.readouterr().err.strip().splitlines()
    return exit.value.code, [line for line in err if 'error' in line]


def test_a_missing_service_is_refused(fs, capsys):
    addJobs(fs, 'append_id', [])    # creates 'tasks', not 'other'
    code, err = errorOf(capsys, 'worker', '--db', fs, '--service', 'other')
    assert code == 1
    assert err == ["zodbtasks worker: error: no service at /other (no "
                   "'other' at / in the database); add --create to create "
                   "one"]


def test_something_else_at_the_path_is_refused(fs, capsys):
    with Stored(fs) as root:
        root['x'] = 1
    code, err = errorOf(capsys, 'worker', '--db', fs, '--service', 'x')
    assert (code, err) == (1, ['zodbtasks worker: error: /x is a int, not a '
                               'task service'])


def test_a_task_module_that_cannot_be_imported_is_refused(fs, capsys):
    code, err = errorOf(capsys, 'worker', '--db', fs, '--service', 'x',
                        '--tasks', 'no_such_module_here')
    assert code == 1
    assert err == ["zodbtasks worker: error: cannot import task module "
                   "no_such_module_here: ModuleNotFoundError: No module "
                   "named 'no_such_module_here'"]


@pytest.mark.parametrize('db, message', [
    ('nosuch://x', "--db nosuch://x: unknown kind of URI"),
    ('Data.txt', '--db Data.txt: give a URI'),
])
def test_a_database_that_cannot_be_named_is_refused(capsys, db, message):
    code, err = errorOf(capsys, 'worker', '--db', db, '--service', 'x')
    assert code == 1 and len(err) == 1
    assert err[0].startswith('zodbtasks worker: error: ' + message)


def test_a_database_that_cannot_be_opened_is_refused(capsys, tmp_path):
    code, err = errorOf(capsys, 'worker', '--db',
                        str(tmp_path / 'no' / 'dir' / 'Data.fs'),
                        '--service', 'x', '--create')
    assert code == 1 and len(err) == 1
    assert err[0].startswith('zodbtasks worker: error: cannot open --db ')


def test_a_mistyped_database_is_not_created(capsys, tmp_path):
    code, err = errorOf(capsys, 'worker', '--db', str(tmp_path / 'Dta.fs'),
                        '--service', 'x')
    assert code == 1 and len(err) == 1
    assert 'Dta.fs: no such file' in err[0]
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('args, message', [
    (['worker', '--service', 'x'], 'the following arguments are required: '
     '--db'),
    (['worker', '--db', 'x.fs', '--service', 'x', '--threads', '0'],
     "argument --threads: must be a finite number above 0: '0'"),
    (['worker', '--db', 'x.fs', '--service', 'x', '--poll', 'soon'],
     "argument --poll: not a number: 'soon'"),
    (['worker', '--db', 'x.fs', '--service', 'x', '--poll', 'nan'],
     "argument --poll: must be a finite number above 0: 'nan'"),
    (['worker', '--db', 'x.fs', '--service', 'x', '--linger', '-0.5'],
     "argument --linger: must be a finite number 0 or more: '-0.5'"),
    (['worker', '--db', 'x.fs', '--service', 'x', '--linger', 'inf'],
     "argument --linger: must be a finite number 0 or more: 'inf'"),
    ([], 'the following arguments are required: COMMAND'),
    (['fly'], "argument COMMAND: invalid choice: 'fly'"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as exit:
        cli.main(args)
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_a_memory_uri_opens_an_empty_database():
    db = cli.openDatabase('memory://', pool_size=20)
    try:
        assert db.getPoolSize() == 20
        assert db.open().root() == {}
    finally:
        db.close()


def test_the_console_script_when_installed():
    script = consoleScript('zodbtasks')
    if script is None:
        pytest.skip('the zodbtasks console script is not installed (its '
                    'entry point is declared in setup.py)')
    done = subprocess.run([script, 'worker', '--help'], capture_output=True,
                          text=True, timeout=WAIT)
    assert done.returncode == 0
    assert '--until-idle' in done.stdout


def test_connect_timeout_bounds_the_wait_for_a_zeo_server(tmp_path):
    """Nothing listens on the port: the worker gives up after the time
    given, not ZEO's 30 s, with one line that says why."""
    import time
    from zodbtasks._testing import freePort
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, '-m', 'zodbtasks.cli', 'worker', '--db',
         'zeo://127.0.0.1:%d' % freePort(), '--service', 'tasks',
         '--connect-timeout', '1'],
        env=dict(os.environ, **env()), capture_output=True, text=True,
        timeout=WAIT, cwd=str(tmp_path))
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - began < 20
    assert 'cannot open --db zeo://127.0.0.1:' in result.stderr


def test_task_modules_are_imported_from_the_working_directory(tmp_path, fs):
    (tmp_path / 'mytasks_here.py').write_text(
        'import zope.component\n'
        'from zodbtasks.interfaces import ITask\n'
        'def shout(service, jobid, input):\n'
        '    return input.upper()\n'
        'zope.component.provideUtility(shout, ITask, name="shout")\n')
    import zope.component
    from zodbtasks.interfaces import ITask
    zope.component.provideUtility(lambda service, jobid, input: None, ITask,
                                  name='shout')    # known here, to add it
    with Stored(fs) as root:
        root['tasks'] = service = zodbtasks.TaskService()
        jobid = service.add('shout', 'hi')
    # The console script, as users run it: unlike ``python -m``, it does
    # not put the working directory on the path by itself.
    script = consoleScript('zodbtasks')
    if script is None:
        pytest.skip('the zodbtasks console script is not installed')
    result = subprocess.run(
        [script, 'worker', '--db', fs,
         '--service', 'tasks', '--tasks', 'mytasks_here', '--until-idle',
         '--poll', '0.05'],
        env=dict(os.environ, PYTHONPATH=os.environ.get('PYTHONPATH', '')),
        capture_output=True, text=True, timeout=WAIT, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    with Stored(fs) as root:
        assert root['tasks'].getResult(jobid) == 'HI'


def test_a_worker_that_knows_no_tasks_says_so_and_gives_jobs_back(fs,
                                                                  tmp_path):
    import zope.component
    from zodbtasks.interfaces import ITask
    zope.component.provideUtility(lambda service, jobid, input: None, ITask,
                                  name='elsewhere')
    with Stored(fs) as root:
        root['tasks'] = service = zodbtasks.TaskService()
        jobid = service.add('elsewhere', None)
    result = subprocess.run(
        [sys.executable, '-m', 'zodbtasks.cli', 'worker', '--db', fs,
         '--service', 'tasks', '--until-idle', '--poll', '0.05'],
        env=dict(os.environ, **env()), capture_output=True, text=True,
        timeout=WAIT, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert 'this worker knows no tasks' in result.stderr
    assert 'WARNING zodbtasks.processor gave back job %d' % jobid \
        in result.stderr
    with Stored(fs) as root:
        job = root['tasks'].jobs[jobid]
        assert (job.status, job.waitingForTask, job.attempts) == (
            'queued', 'elsewhere', 0)
