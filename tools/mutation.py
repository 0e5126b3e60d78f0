"""Mutation testing of the core modules with mutmut.

    .venv/bin/python tools/mutation.py [MODULE ...] [--jobs N] [--diffs]
        [--timeout-multiplier X] [--keep]

MODULE is a module of ``src/zodbtasks`` by its name (``lifecycle``,
``indexes``...), or a pattern of mutant names as mutmut shows them
(``'zodbtasks.indexes.*admit*'``); without one, every module that the
``[tool.mutmut]`` section of pyproject.toml names is run. The settings
(which modules, which tests, the process isolation) are in that section;
this script installs the pinned mutmut into the running interpreter's
environment if it is missing, runs it in a fresh copy of the project under
``build/mutation`` (so that the work tree never holds mutants), and prints
the score of each module: mutants killed out of those run, and every one
that was not killed.

It exits with 1 if a mutant of `ZERO_SURVIVORS` survived: for the queue,
the lifecycle and the lease code, every survivor is either killed by a test
or marked ``# pragma: no mutate`` with the reason it cannot change
behaviour.

mutmut gives a mutant's tests ``timeout_multiplier`` times their measured
time (its default 15) before it counts the mutant as timed out; a mutant of
a function that every test reaches (``Indexes.index``, ``order_key``) and
that loops then holds a worker for minutes. ``--timeout-multiplier`` sets
it in the copy's settings. ``--keep`` goes on from the results of the last
run in ``build/mutation`` instead of making a fresh copy (mutmut tests only
the mutants without a result, and those of functions whose code changed);
only mutants that timed out are tried again when the multiplier changes.
"""
import argparse
import collections
import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

#: The mutmut release the scores in docs/benchmarks.rst were made with.
MUTMUT = '3.8.1'
#: The modules whose survivors must stay at zero.
ZERO_SURVIVORS = ('lifecycle', 'lease_index', 'indexes')
#: What the copy holds: the code, the tests and documents the run selects,
#: and the settings of mutmut and pytest.
COPIED = ('src', 'tests', 'docs', 'pyproject.toml', 'pytest.ini')

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / 'build' / 'mutation'
PACKAGE = 'zodbtasks'
#: A line of ``mutmut results --all true``: "    name: status".
RESULT = re.compile(r'^\s+(\S+): (.+)$')
#: Statuses that count as killed: a test failed, or the mutant made the
#: tests run past mutmut's time limit (a hang that pytest-timeout would
#: also fail).
KILLED = ('killed', 'timeout')
#: The status of a mutant left out of the run (by a pattern).
NOT_RUN = 'not checked'


def ensure_mutmut():
    try:
        found = importlib.metadata.version('mutmut')
    except importlib.metadata.PackageNotFoundError:
        found = None
    if found != MUTMUT:
        print('installing mutmut %s (found: %s)' % (MUTMUT, found))
        subprocess.run([sys.executable, '-m', 'pip', 'install', '-q',
                        'mutmut == %s' % MUTMUT], check=True)


def configured_modules():
    """The module names that pyproject.toml's only_mutate lists."""
    try:
        import tomllib
    except ImportError:         # Python 3.10: mutmut brings toml
        import toml as tomllib
    with open(ROOT / 'pyproject.toml', 'rb') as f:
        settings = tomllib.loads(f.read().decode('utf-8'))['tool']['mutmut']
    return [Path(path).stem for path in settings['only_mutate']]


def fresh_copy():
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    ignored = shutil.ignore_patterns(
        '__pycache__', '*.pyc', '.hypothesis', '*.egg-info', '_build')
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, WORK / name, ignore=ignored)
        else:
            shutil.copy2(source, WORK / name)


def set_timeout_multiplier(value):
    """Write ``timeout_multiplier = value`` into the [tool.mutmut] section
    of the copy's pyproject.toml (in place of any the copy has)."""
    path = WORK / 'pyproject.toml'
    lines = [line for line in path.read_text().splitlines(keepends=True)
             if not line.startswith('timeout_multiplier =')]
    at = lines.index('[tool.mutmut]\n') + 1
    lines.insert(at, 'timeout_multiplier = %r\n' % float(value))
    path.write_text(''.join(lines))


def mutmut(*args, check=True, capture=False):
    return subprocess.run(
        [sys.executable, '-m', 'mutmut', *args], cwd=WORK, check=check,
        text=True, capture_output=capture)


def module_of(mutant):
    """'zodbtasks.indexes.xǁIndexesǁstore__mutmut_3' -> 'indexes'."""
    return mutant.split('.')[1]


def results():
    """{module: [(mutant, status)]} of the last run."""
    done = mutmut('results', '--all', 'true', capture=True)
    found = collections.defaultdict(list)
    for line in done.stdout.splitlines():
        match = RESULT.match(line)
        if match and match.group(1).startswith(PACKAGE + '.'):
            mutant, status = match.groups()
            found[module_of(mutant)].append((mutant, status))
    return found


def report(found, modules, diffs=False):
    """Print the score of each module; return the survivors of those in
    `ZERO_SURVIVORS`."""
    failing = []
    total_killed = total = 0
    print()
    print('%-12s %7s %7s %7s  not killed' % ('module', 'killed', 'total',
                                            'score'))
    for module in modules:
        entries = [(m, s) for m, s in found.get(module, [])
                   if s != NOT_RUN]
        skipped = len(found.get(module, [])) - len(entries)
        killed = sum(1 for _, status in entries if status in KILLED)
        others = [(m, s) for m, s in entries if s not in KILLED]
        total_killed += killed
        total += len(entries)
        score = 100.0 * killed / len(entries) if entries else 100.0
        print('%-12s %7d %7d %6.1f%%  %d%s' % (
            module, killed, len(entries), score, len(others),
            '  (%d mutants not run)' % skipped if skipped else ''))
        for mutant, status in others:
            print('    %s: %s' % (mutant, status))
            if diffs:
                print(mutmut('show', mutant, capture=True).stdout)
        if module in ZERO_SURVIVORS:
            failing.extend(others)
    if total:
        print('%-12s %7d %7d %6.1f%%' % ('all', total_killed, total,
                                        100.0 * total_killed / total))
    return failing


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('modules', nargs='*', metavar='MODULE',
                        help='modules of src/zodbtasks (default: every '
                        'module of [tool.mutmut] only_mutate)')
    parser.add_argument('--jobs', type=int, default=2,
                        help='mutants tested at once (default: 2)')
    parser.add_argument('--diffs', action='store_true',
                        help='show the change of every mutant not killed')
    parser.add_argument('--timeout-multiplier', type=float, metavar='X',
                        help="mutmut's timeout_multiplier (its default: 15)")
    parser.add_argument('--keep', action='store_true',
                        help='go on from the last run in build/mutation '
                        'instead of a fresh copy')
    args = parser.parse_args(argv)
    ensure_mutmut()
    configured = configured_modules()
    patterns = [m for m in args.modules if '.' in m]
    unknown = [m for m in args.modules if '.' not in m
               and m not in configured
               or '.' in m and (not m.startswith(PACKAGE + '.')
                                or module_of(m) not in configured)]
    if unknown:
        parser.error('not a module of [tool.mutmut] only_mutate in '
                     'pyproject.toml, nor a pattern of its mutants: %s '
                     '(modules: %s)' % (', '.join(unknown),
                                        ', '.join(configured)))
    names = ['%s.%s.*' % (PACKAGE, m) for m in args.modules
             if '.' not in m] + patterns
    modules = list(dict.fromkeys(
        [module_of(name) for name in names])) or configured
    names = names or ['%s.%s.*' % (PACKAGE, m) for m in modules]
    if not (args.keep and (WORK / 'mutants').exists()):
        fresh_copy()
    if args.timeout_multiplier is not None:
        set_timeout_multiplier(args.timeout_multiplier)
    mutmut('run', '--max-children', str(args.jobs), *names)
    failing = report(results(), modules, diffs=args.diffs)
    if failing:
        print('\n%d mutants of %s survived' % (len(failing),
                                               ', '.join(ZERO_SURVIVORS)))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
