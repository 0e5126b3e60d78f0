"""The package as others get it: its version, its sdist, its extras, and what
importing it costs."""
import importlib.metadata
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import zodbtasks
from zodbtasks import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_the_version_comes_from_the_installed_metadata():
    assert zodbtasks.__version__ == importlib.metadata.version('zodbtasks')
    declared = re.search(r"\bversion='([^']+)'",
                         (ROOT / 'setup.py').read_text()).group(1)
    assert zodbtasks.__version__ == declared
    Version(zodbtasks.__version__)          # a valid version


def test_a_package_that_is_not_installed_has_a_version_older_than_any():
    version = zodbtasks._installedVersion('no-such-distribution-zodbtasks')
    assert version == '0+unknown'
    assert Version(version) < Version('0.0.1.dev0')


def test_the_command_shows_the_same_version(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(['--version'])
    assert exit.value.code == 0
    assert capsys.readouterr().out == 'zodbtasks %s\n' % zodbtasks.__version__


# -- the sdist ---------------------------------------------------------------

#: What the sdist must hold, below these folders: every file with one of
#: these endings (sources, documents, templates, test data).
SHIPPED = ('docs', 'tests', 'src', 'examples', 'bench')
ENDINGS = ('.py', '.rst', '.zcml', '.typed', '.png', '.pt', '.html', '.css',
           '.js', '.txt', '.json', '.fs', '.conf', '.ini', '.cfg')
TOP = ('setup.py', 'pyproject.toml', 'pytest.ini', 'MANIFEST.in',
       'README.rst', 'CHANGES.rst', 'LICENSE', 'buildout.cfg')


def sourceFiles():
    found = set(name for name in TOP if (ROOT / name).exists())
    for top in SHIPPED:
        for folder, dirs, files in os.walk(ROOT / top):
            dirs[:] = [d for d in dirs if not d.startswith(('.', '_'))
                       and not d.endswith('.egg-info')]
            for name in files:
                if name.endswith(ENDINGS):
                    path = pathlib.Path(folder, name).relative_to(ROOT)
                    found.add(path.as_posix())
    return found


@pytest.fixture(scope='module')
def manifest(tmp_path_factory):
    """The files that setuptools puts in the sdist, after MANIFEST.in."""
    pytest.importorskip('setuptools')
    base = tmp_path_factory.mktemp('egg-info')
    done = subprocess.run(
        [sys.executable, 'setup.py', '-q', 'egg_info', '--egg-base',
         str(base)], cwd=str(ROOT), capture_output=True, text=True,
        timeout=120)
    assert done.returncode == 0, done.stderr
    listing = base / 'zodbtasks.egg-info' / 'SOURCES.txt'
    return set(listing.read_text().split('\n')) - {''}


def test_the_sdist_holds_what_its_tests_and_documents_need(manifest):
    missing = sourceFiles() - manifest
    assert not missing, 'add these to MANIFEST.in: %s' % sorted(missing)
    for needed in ('docs/conftest.py', 'docs/queue.rst', 'tests/conftest.py',
                   'pytest.ini', 'src/zodbtasks/py.typed',
                   'src/zodbtasks/configure.zcml'):
        assert needed in manifest


def test_the_package_says_it_is_typed():
    marker = pathlib.Path(zodbtasks.__file__).with_name('py.typed')
    assert marker.is_file()


# -- the extras --------------------------------------------------------------

def _requirements(distribution, extra=None):
    """What ``distribution`` requires; with ``extra``, what that extra adds
    to it."""
    found = []
    for text in importlib.metadata.requires(distribution) or ():
        requirement = Requirement(text)
        marker = requirement.marker
        always = marker is None or marker.evaluate({'extra': ''})
        if extra is None and always or extra is not None and not always \
                and marker.evaluate({'extra': extra}):
            found.append(requirement)
    return found


def _closure(requirements):
    """The names of the installed distributions that ``requirements`` pull
    in, themselves included."""
    seen = set()
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            todo.extend(_requirements(requirement.name))
            for extra in requirement.extras:
                todo.extend(_requirements(requirement.name, extra))
        except importlib.metadata.PackageNotFoundError:
            pass
    return seen


def test_each_extra_adds_something_the_package_does_not_pull_in():
    base = _closure(_requirements('zodbtasks'))
    extras = importlib.metadata.metadata('zodbtasks').get_all(
        'Provides-Extra')
    assert 'dashboard' in extras and 'relstorage' in extras
    for extra in extras:
        added = {canonicalize_name(r.name)
                 for r in _requirements('zodbtasks', extra)} - base
        assert added, 'the %r extra adds nothing to %s' % (extra, sorted(base))


def test_the_requirements_name_what_the_package_imports_itself():
    # serve and connect import ZEO: it is a requirement of its own, not
    # something that comes with zodburi by chance.
    names = {canonicalize_name(r.name) for r in _requirements('zodbtasks')}
    assert {'zeo', 'zodb', 'zodburi', 'rich'} <= names


# -- imports -----------------------------------------------------------------

_IMPORT_ALL = '''
import argparse, importlib, json, pkgutil, sys
import zodbtasks
from zodbtasks import cli
# argparse keeps its subcommands in an action of a private class.
[commands] = [action for action in cli.buildParser(['status'])._actions
              if isinstance(action, argparse._SubParsersAction)]
for command in sorted(commands.choices):
    if command != 'dashboard':
        try:
            cli.main([command, '--help'])
        except SystemExit:
            pass
web = sorted(set(sys.modules) & {'webob', 'waitress', 'cgi'})
# Not the __main__ modules: importing one runs its command.
names = [m.name for m in pkgutil.walk_packages(zodbtasks.__path__, 'zodbtasks.')
         if not m.name.endswith('.__main__')]
try:
    import Zope2
except ImportError:
    names = [name for name in names if not name.startswith('zodbtasks.zope')]
for name in names:
    importlib.import_module(name)
print(json.dumps([web, names]))
'''


def test_commands_import_no_web_stack_and_modules_no_deprecations():
    """Every subcommand's --help but the dashboard's leaves WebOb and
    waitress alone; every module imports with DeprecationWarning an error
    (WebOb's own import of cgi, deprecated in 3.11 and 3.12, excepted)."""
    done = subprocess.run(
        [sys.executable, '-W', 'error::DeprecationWarning',
         '-W', "ignore:'cgi' is deprecated:DeprecationWarning:webob.compat",
         '-c', _IMPORT_ALL], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, COLUMNS='80'))
    assert done.returncode == 0, done.stderr
    web, names = json.loads(done.stdout.splitlines()[-1])
    assert web == []
    assert 'zodbtasks.dashboard' in names and 'zodbtasks.cli' in names


def _leftover_conflict_lines(text):
    """Line numbers of what a merge leaves behind: its markers, and a line
    of seven '=' that is neither over nor under a heading of its length."""
    lines = text.splitlines()
    found = []
    for n, line in enumerate(lines):
        if line.startswith(('<<<<<<< ', '>>>>>>> ')) or line == '|||||||':
            found.append(n + 1)
        elif line == '=' * 7:
            before = lines[n - 1] if n else ''
            after = lines[n + 1] if n + 1 < len(lines) else ''
            heading = any(0 < len(other.strip()) <= 7 and set(other) != {'='}
                          for other in (before, after))
            if not heading:
                found.append(n + 1)
    return found


def test_the_conflict_check_tells_a_leftover_from_a_heading():
    assert _leftover_conflict_lines('Retries\n=======\n\ntext\n') == []
    assert _leftover_conflict_lines('=======\nChanges\n=======\n') == []
    assert _leftover_conflict_lines('a sentence.\n=======\nA title\n'
                                    '=======\n') == []
    assert _leftover_conflict_lines('the end of a paragraph.\n=======\n'
                                    'A longer title\n==============\n') == [2]
    assert _leftover_conflict_lines('<<<<<<< HEAD\nx\n>>>>>>> other\n') \
        == [1, 3]


def test_no_text_file_holds_what_a_merge_left_behind():
    names = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    if names.returncode:
        pytest.skip('not a git checkout: %s' % names.stderr.strip())
    leftovers = {}
    for name in names.stdout.split():
        if name.endswith(('.rst', '.py', '.cfg', '.toml', '.sh', '.txt',
                          '.in', '.zcml', '.pt', '.html', '.css', '.js')):
            text = (ROOT / name).read_text(encoding='utf-8')
            if _leftover_conflict_lines(text):
                leftovers[name] = _leftover_conflict_lines(text)
    assert leftovers == {}
