"""How the commands open ``--db``: read-only beside a worker, never creating
a database by mistake, never touching a damaged file."""
import hashlib
import json
import os

import pytest
import ZODB
import ZODB.FileStorage
from persistent.mapping import PersistentMapping

import zodbtasks
from zodbtasks import connect
from zodbtasks.cli import main


@pytest.fixture
def fs(tmp_path, tasks):
    path = str(tmp_path / 'Data.fs')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    with db.transaction() as conn:
        conn.root()['tasks'] = service = zodbtasks.TaskService()
        service.add('echo', 1, now=1000)
    db.close()
    return path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def fingerprint(folder):
    """The names and contents of every file in ``folder``."""
    found = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), 'rb') as f:
            found[name] = hashlib.sha256(f.read()).hexdigest()
    return found


def test_readers_work_beside_a_process_that_holds_the_file(fs, capsys):
    # A worker's FileStorage: it holds the lock and goes on committing.
    db = ZODB.DB(ZODB.FileStorage.FileStorage(fs))
    try:
        for command in ('status', 'jobs'):
            code, out, err = run(capsys, command, '--db', fs, '--service',
                                 'tasks', '--json')
            assert code == 0, err
        assert json.loads(out)[0]['status'] == 'queued'
        with db.transaction() as conn:
            conn.root()['tasks'].add('echo', 2, now=1000)
        # A new command sees the new commit: each opens afresh.
        code, out, err = run(capsys, 'status', '--db', fs, '--service',
                             'tasks', '--json')
        assert json.loads(out)['counts'] == {'queued': 2}
    finally:
        db.close()


def test_a_writer_beside_a_holder_is_told_about_serve(fs, capsys):
    db = ZODB.DB(ZODB.FileStorage.FileStorage(fs))
    try:
        before = os.path.getsize(fs)
        code, out, err = run(capsys, 'add', 'echo', '--db', fs, '--service',
                             'tasks', '--tasks', 'zodbtasks_test_tasks')
        assert code == 1 and err.count('\n') == 1
        assert 'Data.fs is in use by another process' in err
        assert 'zodbtasks serve --db %s --service PATH' % fs in err
        assert os.path.getsize(fs) == before
    finally:
        db.close()


@pytest.mark.parametrize('command', [
    ['status'], ['jobs'], ['show', '1'], ['add', 'echo'], ['cancel', '1'],
    ['clean'], ['requeue', '--status', 'error'], ['pause']])
def test_a_mistyped_db_is_never_created(tmp_path, capsys, command):
    path = str(tmp_path / 'Dtaa.fs')
    code, out, err = run(capsys, *command, '--db', path, '--service', 'tasks')
    assert code == 1 and err.count('\n') == 1
    assert '--db %s: no such file' % path in err
    assert 'zodbtasks add --create' in err
    assert os.listdir(tmp_path) == []


def test_add_create_makes_the_database_and_the_service(tmp_path, capsys):
    path = str(tmp_path / 'New.fs')
    code, out, err = run(capsys, 'add', 'echo', '--db', path, '--service',
                         'tasks', '--create', '--tasks',
                         'zodbtasks_test_tasks', '--json')
    assert code == 0, err
    jobid = json.loads(out)['id']
    code, out, err = run(capsys, 'show', str(jobid), '--db', path,
                         '--service', 'tasks', '--json')
    assert json.loads(out)['status'] == 'queued'


def damage(path, how):
    if how == 'garbage':
        with open(path, 'ab') as f:
            f.write(b'\x00garbage at the end' * 10)
    else:
        open(path, 'wb').close()


@pytest.mark.parametrize('how, message', [
    ('garbage', "after its last complete transaction"),
    ('empty', 'is empty (no header)')])
@pytest.mark.parametrize('command', ['status', 'jobs', 'show'])
def test_a_damaged_file_is_refused_and_left_alone(fs, tmp_path, capsys, how,
                                                 message, command):
    damage(fs, how)
    before = fingerprint(tmp_path)
    argv = [command, '--db', fs, '--service', 'tasks']
    if command == 'show':
        argv.append('1')
    code, out, err = run(capsys, *argv)
    assert code == 1 and err.count('\n') == 1
    assert 'error: damaged FileStorage: %s' % fs in err and message in err
    assert fingerprint(tmp_path) == before


def test_a_commit_under_way_is_not_damage(fs, tmp_path, capsys):
    # A worker's commit, voted but not finished, is bytes after the last
    # complete transaction, as damage is; but the writer holds the lock, and
    # the reader shows what was committed before.
    from ZODB.Connection import TransactionMetaData
    from ZODB.utils import z64
    storage = ZODB.FileStorage.FileStorage(fs)
    try:
        data, tid = storage.load(z64)
        meta = TransactionMetaData()
        storage.tpc_begin(meta)
        storage.store(z64, tid, data, '', meta)
        storage.tpc_vote(meta)
        assert os.path.getsize(fs) > storage.getSize()
        before = fingerprint(tmp_path)
        code, out, err = run(capsys, 'status', '--db', fs, '--service',
                             'tasks', '--json')
        assert code == 0, err
        assert json.loads(out)['counts'] == {'queued': 1}
        assert fingerprint(tmp_path) == before
        storage.tpc_abort(meta)
    finally:
        storage.close()


def test_a_file_without_a_root_is_refused_read_only(tmp_path, capsys):
    path = str(tmp_path / 'Fresh.fs')
    ZODB.FileStorage.FileStorage(path).close()      # a header, nothing more
    code, out, err = run(capsys, 'status', '--db', path, '--service', 'x')
    assert code == 1 and 'holds no database yet' in err


def test_open_database_names_what_it_accepts(tmp_path):
    with pytest.raises(connect.UsageError, match=r'--db nonsense: give a URI'):
        connect.open_database('nonsense')
    with pytest.raises(connect.UsageError, match='no such file'):
        connect.open_database('file://' + str(tmp_path / 'x.fs'))
    assert os.listdir(tmp_path) == []
    db = connect.open_database('file://' + str(tmp_path / 'x.fs'),
                               create=True)
    db.close()
    assert os.path.exists(tmp_path / 'x.fs')


def test_find_service_and_the_old_names_in_cli(tmp_path):
    from zodbtasks import cli
    assert cli.UsageError is connect.UsageError
    assert cli.findService is connect.find_service
    db = cli.openDatabase('memory://')
    try:
        with db.transaction() as conn:
            conn.root()['app'] = PersistentMapping()
        with pytest.raises(connect.UsageError, match='no service at /app/t'):
            connect.find_service(db, 'app/t')
        assert connect.find_service(db, 'app/t', create=True) == ('app', 't')
        with pytest.raises(connect.UsageError, match='is a PersistentMapping'):
            connect.find_service(db, 'app')
    finally:
        db.close()


def test_nothing_imports_cli():
    import ast
    import zodbtasks as package
    folder = os.path.dirname(package.__file__)
    for name in os.listdir(folder):
        if not name.endswith('.py') or name in ('cli.py', '__main__.py'):
            continue
        with open(os.path.join(folder, name)) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ''] + [
                    '%s.%s' % (node.module, a.name) for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert 'zodbtasks.cli' not in names, name


def test_a_plain_path_keeps_as_many_objects_as_its_uri_would(tmp_path):
    import zodburi
    path = str(tmp_path / 'x.fs')
    from_uri = zodburi.resolve_uri('file://%s?create=1' % path)[1]
    for spec in (path, 'file://' + path):
        db = connect.open_database(spec, create=True)
        try:
            assert db.getCacheSize() == from_uri['cache_size'] \
                == connect.PATH_CACHE_SIZE
        finally:
            db.close()
