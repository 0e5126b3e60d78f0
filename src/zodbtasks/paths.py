"""Paths of services in a database: from the root to the object, and back.

A service is named by the keys that lead to it from the database root,
``'app/tasks'`` or ``('app', 'tasks')``. A processor also accepts a path from
the application root, the database root's ``Application`` item, as the
reference packages' processors did (``['tasks']`` for
``root['Application']['tasks']``); see `findService` for which one wins.
"""
from typing import Union


#: A service path as the functions that take one accept it: ``'a/b'``, or
#: its keys.
ServicePath = Union[str, tuple[str, ...], list[str]]


def splitPath(path: ServicePath) -> tuple[str, ...]:
    """The keys of a service path: ``'a/b'`` or ``('a', 'b')`` -> a tuple."""
    if isinstance(path, str):
        keys = tuple(part for part in path.split('/') if part)
    elif isinstance(path, (tuple, list)):
        keys = tuple(path)
        if not all(isinstance(key, str) and key for key in keys):
            raise TypeError('a service path must be made of non-empty '
                            'strings, not %r' % (path,))
    else:
        raise TypeError('a service path is a string like "app/tasks" or a '
                        'tuple of keys, not %r' % (path,))
    if not keys:
        raise ValueError('a service path needs at least one key, got %r'
                         % (path,))
    return keys


#: The path key that steps from a site to its site manager.
SITE_MANAGER = '++etc++site'

#: The database root's key of a Zope application root.
APPLICATION = 'Application'


def traverse(root, keys):
    """The object at ``keys`` below ``root``; KeyError names what is missing.

    Each key is an item (``obj[key]``) or else an attribute; the key
    ``++etc++site`` steps into a site's site manager.
    """
    obj = root
    for depth, key in enumerate(keys):
        try:
            if key == SITE_MANAGER and hasattr(obj, 'getSiteManager'):
                obj = obj.getSiteManager()
                continue
            obj = obj[key]
        except (KeyError, TypeError, AttributeError):
            try:
                obj = getattr(obj, key)
            except AttributeError:
                raise KeyError('no %r at /%s in the database' % (
                    key, '/'.join(keys[:depth]))) from None
    return obj


def findService(root, keys):
    """The object at the service path ``keys``: below the database root
    ``root``, or else below the application root ``root['Application']``.

    The database root wins: when both ``root['tasks']`` and
    ``root['Application']['tasks']`` exist, ``('tasks',)`` is the first,
    and the second is ``('Application', 'tasks')``. The application root is
    only tried for a path that leads nowhere from the database root, so a
    path that works today keeps meaning the same object when an item is
    added to either. Raises KeyError naming the path when neither has it.
    """
    try:
        return traverse(root, keys)
    except KeyError as error:
        missing = error
    if keys[:1] != (APPLICATION,):
        try:
            application = root[APPLICATION]
        except (KeyError, TypeError):
            pass
        else:
            try:
                return traverse(application, keys)
            except KeyError:
                pass
    raise KeyError('no service at %r: not below the database root (%s) '
                   'nor below its %r item'
                   % ('/'.join(keys), missing.args[0], APPLICATION)) from None


def findServicePath(service, depth=4, limit=10000):
    """The keys from the database root to ``service``, a stored service.

    Follows ``__parent__``/``__name__`` up as far as they go; the object
    where they end (the root, or a root folder without a name) is found by
    searching the root's mappings ``depth`` levels deep, looking at no more
    than ``limit`` entries. Without names the service itself is searched
    for. Raises ValueError when it is not found.
    """
    jar = service._p_jar
    if jar is None:
        raise ValueError('the service is not stored in a database: add it '
                         'and commit before starting to process its jobs')
    root = jar.root()
    names = []
    top = service
    while getattr(top, '__name__', None) and len(names) < 64:
        names.append(top.__name__)
        top = getattr(top, '__parent__', None)
    if names and top is not None:
        keys = tuple(reversed(names))
        above = () if top is root else _search(root, top, depth, limit)
        if above is not None:
            try:
                if traverse(root, above + keys) is service:
                    return above + keys
            except KeyError:
                pass
    found = _search(root, service, depth, limit)
    if found is None:
        raise ValueError('cannot find the service in its database (searched '
                         '%d levels from the root); give its path, e.g. '
                         'startProcessing("app/tasks")' % depth)
    return found


def _search(root, target, depth, limit):
    """The keys of ``target`` below ``root``, breadth first, or None."""
    seen = 0
    level = [((), root)]
    for _ in range(depth):
        following = []
        for keys, container in level:
            items = getattr(container, 'items', None)
            if not callable(items):
                continue
            try:
                entries = iter(items())
            except Exception:
                continue
            for key, value in entries:
                seen += 1
                if seen > limit:
                    return None
                if not isinstance(key, str):
                    continue
                if value is target:
                    return keys + (key,)
                following.append((keys + (key,), value))
        level = following
    return None


