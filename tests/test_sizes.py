"""No class or function of the package grows past what one can read at once.

``docs/design.rst`` keeps each part small; this guards it. A class of more
than about 300 lines or a function of more than about 60 is a sign that it
does two things. The one class allowed more is the service itself: the
seed's API, where each method hands its call to a part (see the design).
"""
import ast
import pathlib

import pytest

import zodbtasks

pytestmark = pytest.mark.timeout(60)

SOURCE = pathlib.Path(zodbtasks.__file__).parent

#: "About" 300 and 60 lines: a little above, so that a docstring more does
#: not break the build, not so far that a second concern fits in.
MAX_CLASS, MAX_FUNCTION = 330, 66

#: The facade of the seed's API, one short delegation per method.
FACADES = {('service.py', 'TaskService')}


def oversized(path, relative):
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        lines = getattr(node, 'end_lineno', 0) - getattr(node, 'lineno', 0) + 1
        if isinstance(node, ast.ClassDef) and lines > MAX_CLASS \
                and (relative, node.name) not in FACADES:
            found.append('class %s (%d lines)' % (node.name, lines))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                and lines > MAX_FUNCTION:
            found.append('function %s (%d lines)' % (node.name, lines))
    return found


def test_no_class_or_function_is_too_long_to_read():
    found = {}
    for path in sorted(SOURCE.rglob('*.py')):
        relative = str(path.relative_to(SOURCE))
        if oversized(path, relative):
            found[relative] = oversized(path, relative)
    assert found == {}


def test_the_facade_delegates():
    """The service's methods stay short: what one does belongs in a part."""
    tree = ast.parse((SOURCE / 'service.py').read_text(encoding='utf-8'))
    service, = [node for node in tree.body if isinstance(node, ast.ClassDef)
                and node.name == 'TaskService']
    long = {node.name: node.end_lineno - node.lineno + 1
            for node in service.body if isinstance(node, ast.FunctionDef)
            and node.end_lineno - node.lineno + 1 > 30}
    assert long == {}


def test_the_check_finds_a_long_function(tmp_path):
    path = tmp_path / 'long.py'
    path.write_text('def f():\n' + '    x = 1\n' * 80)
    assert oversized(path, 'long.py') == ['function f (81 lines)']
