"""The modules import one another in one direction only.

``docs/design.rst`` gives the layers of the package; this test reads every
import of every module (those inside functions included) and fails on an
import from a lower layer into a higher one, on a circle of imports, and
on a module that has no layer yet (give it one, in the design and here).
"""
import ast
import pathlib

import pytest

import zodbtasks

pytestmark = pytest.mark.timeout(60)

SOURCE = pathlib.Path(zodbtasks.__file__).parent

#: Layer by layer, from the bottom: a module may import its own layer and
#: those below, never one above.
LAYERS = [
    # 0: foundations -- no knowledge of jobs' storage or of the service.
    ['interfaces', 'keys', '_calendar', 'schedule', '_trees', 'counts',
     'listing', 'queues', 'limits', 'events', 'task', 'writes', 'paths',
     'doorbell', 'records'],
    # 1: the job model and what runs with a job.
    ['job', 'context', 'middleware', 'settings', 'registry', 'decorators'],
    # 2: the persistent indexes.
    ['catalog', 'lease_index', 'indexes', 'prefetch'],
    # 3: policy and execution: pure decisions, running one task.
    ['lifecycle', 'runner', 'admission'],
    # 4: the service's parts, and the upgrades of older data.
    ['transitions', 'claims', 'control', 'views', 'migration'],
    # 5: workers: they are handed a service and use its interface.
    ['heartbeats', 'recorder', 'transactor', 'steps', 'runclaimed',
     'outcomes', 'renewals', 'presence', 'worksettings', 'threads',
     'processor'],
    # 6: the service, which composes the layers below.
    ['service'],
    # 7: integration: the package's names, autostart, test helpers,
    # opening databases, showing times and tables.
    ['zodbtasks', 'startup', 'testing', '_testing', 'connect', 'display'],
    # 8: front ends, and the metrics the dashboard serves.
    ['cli', 'admin', 'serve', '_demo', '__main__', 'dashboard', 'zope',
     'metrics'],
]

#: Imports that run against the layers on purpose, each with its reason.
ALLOWED = {
    # The default of `TaskService.processorFactory`, imported when it is
    # first asked for: the processor is handed a service and never
    # imports this module.
    ('service', 'processor'),
    # `startProcessing` and friends delegate to the registry of threads.
    ('service', 'threads'),
    # lovely.remotetask's names for the autostart functions, found on
    # first use (`service.__getattr__`).
    ('service', 'startup'),
}


def module_name(path):
    parts = path.relative_to(SOURCE.parent).with_suffix('').parts
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def imports_of(path, name):
    """The zodbtasks modules that the module ``name`` at ``path``
    imports, anywhere in its code."""
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                up = package.split('.')
                up = up[:len(up) - node.level + 1]
                base = '.'.join(up + ([base] if base else []))
            for alias in node.names:
                candidate = base + '.' + alias.name
                found.add(candidate if is_module(candidate) else base)
    return {m for m in found if m == 'zodbtasks'
            or m.startswith('zodbtasks.')} - {name}


def is_module(dotted):
    path = SOURCE.parent.joinpath(*dotted.split('.'))
    return path.with_suffix('.py').exists() or (path / '__init__.py').exists()


def graph():
    return {module_name(path): imports_of(path, module_name(path))
            for path in SOURCE.rglob('*.py')}


def layer_key(module):
    """The name a module has in LAYERS: its first part under zodbtasks
    (the sub-packages are one unit each)."""
    if module == 'zodbtasks':
        return 'zodbtasks'
    return module.split('.')[1]


LAYER_OF = {name: n for n, names in enumerate(LAYERS) for name in names}


def test_every_module_has_a_layer():
    missing = sorted({layer_key(m) for m in graph()} - set(LAYER_OF))
    assert not missing, ('give these modules a layer in docs/design.rst '
                         'and tests/test_imports.py: %s' % missing)


def test_no_import_runs_up_the_layers():
    wrong = []
    for module, imported in sorted(graph().items()):
        here = layer_key(module)
        for other in sorted(imported):
            there = layer_key(other)
            if here == there or (here, there) in ALLOWED:
                continue
            if LAYER_OF.get(there, -1) > LAYER_OF.get(here, -1):
                wrong.append('%s -> %s' % (module, other))
    assert not wrong, 'imports against the layers: %s' % wrong


def test_there_is_no_circle_of_imports():
    edges = graph()
    circles = []
    # Tarjan's strongly connected components, iteratively.
    index, low, on_stack, stack, counter = {}, {}, set(), [], [0]

    def visit(start):
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in edges:
                    continue
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        circles.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    assert not circles, 'circles of imports: %s' % circles


def test_the_checks_see_imports_inside_functions(tmp_path):
    # The reader must not miss an import that only runs when called.
    path = tmp_path / 'probe.py'
    path.write_text('def f():\n    from zodbtasks import cli\n')
    assert 'zodbtasks.cli' in imports_of(path, 'zodbtasks.probe')


def test_nothing_imports_the_command_line():
    users = sorted(module for module, imported in graph().items()
                   if 'zodbtasks.cli' in imported
                   and module not in ('zodbtasks.__main__',))
    assert users == []
