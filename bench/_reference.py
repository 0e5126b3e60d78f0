"""Fetch z3c.taskqueue 0.2.1 and load it under Python 3, for bench_core.py.

z3c.taskqueue is the Python 2 package whose API zodbtasks keeps. It is not a
dependency of the project and nothing of it is committed: at bench time this
module

* downloads its sdist from PyPI with pip into a cache directory (checked
  against a known sha256) and unpacks it there,
* creates a throwaway virtualenv in the same cache directory holding the
  reference's runtime dependencies (zc.queue, zope.container, zope.schema,
  ...), so that the project's own virtualenv is left alone,
* and, inside that virtualenv, loads the reference modules from the unpacked
  sources after a few mechanical Python 2 -> 3 fixes made in memory.

The fixes keep every line where it was, so tracebacks and profiles point at
the right lines of the original files:

* ``except X, e:`` becomes ``except X as e:``;
* the class advice ``zope.interface.implements(I)`` (which Python 3 cannot
  run) becomes a class attribute, and ``classImplements`` is applied to the
  class once its module has been executed;
* print statements would become print calls (the loaded files have none);
* ``ComponentLookupError`` is imported from ``zope.interface.interfaces``,
  where zope.component 5+ moved it from ``zope.component.interfaces``.

Only the processor module (the worker thread, which needs zope.app.publication
and zope.publisher) is replaced by a stub; no benchmarked operation uses it.

Only the standard library is imported at module level: the orchestrator runs
this under the project's virtualenv, the loader runs under the reference one.
"""
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import types
import zipfile

NAME = 'z3c.taskqueue'
VERSION = '0.2.1'
ARCHIVE = 'z3c.taskqueue-0.2.1.zip'
SHA256 = '80796de3afd771bd330e9549833c01826348423cfe586ea5bb25a92b68c38767'

#: What the reference modules import, pinned so that runs compare. BTrees and
#: persistent are the versions the project's own virtualenv had when this was
#: written, so both sides use the same C trees.
REQUIREMENTS = (
    'BTrees==6.5',
    'persistent==6.9',
    'zc.queue==2.0.0',
    'zope.interface==8.7',
    'zope.component==7.1',
    'zope.schema==8.1',
    'zope.configuration==7.1',
    'zope.container==7.3',
    'zope.traversing==6.0',
)

#: The modules that are loaded, in dependency order.
MODULES = ('interfaces', 'task', 'job', 'baseservice', 'service')

#: What could not be loaded as it is, said in the benchmark's output.
STUBS = ('z3c.taskqueue.processor (the worker thread: it needs '
         'zope.app.publication; not used by any benchmarked operation)',)


def cache_dir():
    """Where downloads and the throwaway virtualenv are kept."""
    path = os.environ.get('ZODBTASKS_BENCH_CACHE')
    if not path:
        base = os.environ.get('XDG_CACHE_HOME') or os.path.join(
            os.path.expanduser('~'), '.cache')
        path = os.path.join(base, 'zodbtasks-bench')
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        path = os.path.join(tempfile.gettempdir(), 'zodbtasks-bench')
        os.makedirs(path, exist_ok=True)
    return path


def _log(message):
    print('[reference] ' + message, file=sys.stderr, flush=True)


def _pip(cache, args):
    """Run pip quietly; its output goes to a log that is shown on failure."""
    log = os.path.join(cache, 'pip.log')
    with open(log, 'w') as out:
        done = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        with open(log) as f:
            sys.stderr.write(f.read())
        raise RuntimeError('pip failed (%s); see %s' % (' '.join(args), log))


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 16), b''):
            digest.update(block)
    return digest.hexdigest()


def fetch_sources(cache):
    """Download and unpack the sdist once; return its package directory."""
    dist = os.path.join(cache, 'dist')
    archive = os.path.join(dist, ARCHIVE)
    if not os.path.exists(archive):
        _log('downloading %s==%s with pip' % (NAME, VERSION))
        _pip(cache, [sys.executable, '-m', 'pip', 'download', '--no-deps',
                     '--disable-pip-version-check', '--dest', dist,
                     '%s==%s' % (NAME, VERSION)])
    if _sha256(archive) != SHA256:
        raise RuntimeError('%s does not have the expected sha256 %s; delete '
                           'it to download it again' % (archive, SHA256))
    unpacked = os.path.join(cache, 'src')
    package = os.path.join(unpacked, 'z3c.taskqueue-%s' % VERSION, 'src',
                           'z3c', 'taskqueue')
    if not os.path.isdir(package):
        with zipfile.ZipFile(archive) as z:
            z.extractall(unpacked)
    return package


def ensure_venv(cache):
    """Create the reference's virtualenv once; return its python."""
    tag = 'py%d.%d' % sys.version_info[:2]
    venv = os.path.join(cache, 'venv-ref-' + tag)
    python = os.path.join(venv, 'bin', 'python')
    marker = os.path.join(venv, 'bench-requirements.json')
    wanted = sorted(REQUIREMENTS)
    try:
        with open(marker) as f:
            if json.load(f) == wanted and os.path.exists(python):
                return python
    except (OSError, ValueError):
        pass
    _log('creating the reference virtualenv %s' % venv)
    subprocess.run([sys.executable, '-m', 'venv', '--clear', venv],
                   check=True, stdout=sys.stderr)
    _pip(cache, [python, '-m', 'pip', 'install',
                 '--disable-pip-version-check'] + wanted)
    with open(marker, 'w') as f:
        json.dump(wanted, f)
    return python


def prepare():
    """Fetch the sources and the virtualenv; return (python, package dir)."""
    cache = cache_dir()
    return ensure_venv(cache), fetch_sources(cache)


# -- loading under Python 3 (runs in the reference virtualenv) --------------

_EXCEPT = re.compile(r'^(\s*except\s+[^,:\n]+?)\s*,\s*(\w+)\s*:', re.M)
_ADVICE = re.compile(r'^(\s+)zope\.interface\.implements\((.*)\)[ \t]*$',
                     re.M)
_PRINT = re.compile(r'^(\s*)print\s+(?![(=])(.+)$', re.M)
_MOVED = re.compile(r'^from zope\.component\.interfaces import '
                    r'ComponentLookupError$', re.M)


def to_python3(source):
    """Apply the mechanical fixes; return (source, {fix: count})."""
    counts = {}
    for name, pattern, replacement in (
            ('except X, e', _EXCEPT, r'\1 as \2:'),
            ('implements() advice', _ADVICE, r'\1__py3_implements__ = (\2,)'),
            ('print statement', _PRINT, r'\1print(\2)'),
            ('moved import', _MOVED,
             'from zope.interface.interfaces import ComponentLookupError')):
        source, n = pattern.subn(replacement, source)
        if n:
            counts[name] = n
    return source, counts


def _stub_processor():
    module = types.ModuleType('z3c.taskqueue.processor')

    class SimpleProcessor:
        """Stub: the reference's processor thread is not benchmarked."""

        def __init__(self, *args, **kw):
            raise NotImplementedError('the processor is stubbed out in the '
                                      'benchmark')

    module.SimpleProcessor = module.MultiProcessor = SimpleProcessor
    return module


def load(package_dir):
    """Load the reference modules; return (namespace, {file: fixes})."""
    import zope.interface
    import zope.interface.common.mapping  # noqa: interfaces.py uses it

    z3c = sys.modules.get('z3c') or types.ModuleType('z3c')
    z3c.__path__ = [os.path.dirname(package_dir)]
    package = types.ModuleType('z3c.taskqueue')
    package.__path__ = [package_dir]
    package.GLOBALDB = None       # all that its __init__.py holds
    z3c.taskqueue = package
    sys.modules['z3c'] = z3c
    sys.modules['z3c.taskqueue'] = package
    processor = _stub_processor()
    sys.modules[processor.__name__] = package.processor = processor

    fixes = {}
    for name in MODULES:
        path = os.path.join(package_dir, name + '.py')
        with open(path, encoding='utf-8') as f:
            source, counts = to_python3(f.read())
        fixes[name + '.py'] = counts
        module = types.ModuleType('z3c.taskqueue.' + name)
        module.__file__ = path
        sys.modules[module.__name__] = module
        setattr(package, name, module)
        exec(compile(source, path, 'exec'), module.__dict__)
        for value in list(vars(module).values()):
            declared = (isinstance(value, type)
                        and value.__dict__.get('__py3_implements__'))
            if declared:
                zope.interface.classImplements(value, *declared)
    return package, fixes
