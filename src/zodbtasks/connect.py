"""Opening a database from ``--db`` and finding a service in it.

This is what every ``zodbtasks`` command (and the dashboard) does first, in
one place, so that they all agree on three rules about FileStorage files:

* A command that only reads opens the file read-only. That takes no lock,
  so it works beside a running worker, and it never repairs, truncates or
  writes the file: a damaged file is refused instead. A read-only view sees
  the transactions committed before it opened. (When ``zodbtasks serve``
  owns the file, readers ask its server, read-only, which knows the latest
  commits and has the file's index in memory.)
* A command that writes needs the file's lock. When ``zodbtasks serve``
  holds it, the command connects through the server's Unix socket instead;
  when another process holds it, the error says how to share the file.
* A path that does not exist is an error, unless the caller asks to
  create the database (``serve --create``, ``add --create``): a mistyped
  ``--db`` never leaves an empty database behind.

``zodbtasks serve`` records where it listens in a small JSON file beside the
database (``Data.fs.serve``); `served_by` reads it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
import urllib.parse
from typing import TYPE_CHECKING
from typing import Any
from typing import TypedDict

import transaction

if TYPE_CHECKING:
    from typing_extensions import Unpack
    from ZODB.DB import DB
    from ZODB.FileStorage import FileStorage

    from zodbtasks.paths import ServicePath

log = logging.getLogger('zodbtasks.connect')

#: What ``--db`` accepts, for error messages.
ACCEPTED = ('a URI (file://, zeo://, memory://, zconfig://, postgres://, '
            '...), a .conf or a .fs path')

#: Objects kept per connection for a database named by a plain ``.fs``
#: path: what zodburi gives a URI that does not say (its default
#: ``connection_cache_size``), where ``ZODB.DB`` alone would keep 400. A
#: worker's claims keep the 256 shards of the job mapping, the lanes, the
#: lease trees and the jobs in flight in use, some 400 objects: with a
#: cache of 400 it reloads about one shard for every two jobs it claims.
PATH_CACHE_SIZE = 10000

# The longest path an AF_UNIX socket can have on Linux, less a margin.
_MAX_SOCKET_PATH = 100


class UsageError(Exception):
    """Bad input: the command ends with a one-line message and exit 1."""


# -- FileStorage files and their server ------------------------------------

def served_file(path: str) -> str:
    """The file in which ``zodbtasks serve`` says where it serves ``path``."""
    return os.path.abspath(path) + '.serve'


def socket_path(path: str) -> str:
    """Where ``zodbtasks serve`` puts the Unix socket for the file ``path``.

    Beside the file (``Data.fs.sock``) when that path is short enough for a
    socket; else in a folder of the user's own under the temporary folder.
    """
    path = os.path.abspath(path)
    beside = path + '.sock'
    if len(beside.encode()) <= _MAX_SOCKET_PATH:
        return beside
    folder = os.path.join(tempfile.gettempdir(),
                          'zodbtasks-%d' % os.getuid())
    name = hashlib.sha256(path.encode()).hexdigest()[:20] + '.sock'
    return os.path.join(folder, name)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True     # someone else's process: alive
    return True


def served_by(path: str) -> dict[str, Any] | None:
    """What ``zodbtasks serve`` wrote about ``path``, if it runs: a dict
    with ``pid`` and ``socket`` (and ``port``, ``dashboard``), or None."""
    try:
        with open(served_file(path), encoding='utf-8') as f:
            info = json.load(f)
        pid = int(info['pid'])
        sock = info['socket']
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(pid) or not os.path.exists(sock):
        return None         # left behind by a server that was killed
    return info


def _lock_held(path):
    """Whether another process holds the FileStorage lock of ``path``.

    Asks without creating the lock file; a shared lock that succeeds is
    dropped at once (FileStorage takes its lock with ``flock``).
    """
    try:
        fd = os.open(path + '.lock', os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def open_read_only(path: str, spec: str | None = None) -> FileStorage:
    """A read-only FileStorage on ``path``; refuses a damaged file.

    The file is not written, locked or repaired. Bytes after the last
    complete transaction mean damage (a commit cut short, garbage) unless
    another process holds the lock: then they are its commit under way,
    and the view shows what was committed before it.
    """
    import ZODB.FileStorage
    spec = spec or path
    size = os.path.getsize(path)
    if size == 0:
        raise UsageError('damaged FileStorage: %s is empty (no header); '
                         'nothing was changed' % spec)
    try:
        storage = ZODB.FileStorage.FileStorage(path, read_only=True)
    except Exception as error:
        raise UsageError('damaged FileStorage: %s: %s: %s; nothing was '
                         'changed' % (spec, type(error).__name__, error))
    end = storage.getSize()
    if end < size and not _lock_held(path):
        storage.close()
        raise UsageError(
            'damaged FileStorage: %s has %d byte(s) after its last complete '
            'transaction (at byte %d); nothing was changed (fsrecover.py '
            'repairs a copy)' % (spec, size - end, end))
    return storage


def _writable(path, spec, create, connect_timeout):
    """A writable storage for the FileStorage ``path``: the file itself, or
    the socket of the ``zodbtasks serve`` that owns it."""
    import ZODB.FileStorage
    import zc.lockfile
    if not os.path.exists(path) and not create:
        raise _no_such_file(spec)
    try:
        return ZODB.FileStorage.FileStorage(path)
    except zc.lockfile.LockError:
        served = served_by(path)
        if served is None:
            raise UsageError(
                '%s is in use by another process (it holds %s.lock); to '
                'share one FileStorage between workers, the dashboard and '
                'commands that write, run it under "zodbtasks serve --db '
                '%s --service PATH"' % (spec, os.path.basename(path), spec))
    log.info('%s is served by zodbtasks serve (pid %s); connecting through '
             'its socket', spec, served['pid'])
    return _client(served['socket'], connect_timeout)


def _client(address, connect_timeout=None, read_only=False):
    import ZEO.ClientStorage
    return ZEO.ClientStorage.ClientStorage(
        address, wait_timeout=connect_timeout or 30, read_only=read_only)


def _no_such_file(spec):
    return UsageError('--db %s: no such file (to make a new database, '
                      'use "zodbtasks serve --create" or "zodbtasks add '
                      '--create")' % spec)


def _file_uri_path(spec):
    """The path of a ``file://`` URI without options, else None."""
    parts = urllib.parse.urlsplit(spec)
    if parts.query or parts.fragment:
        return None
    return urllib.parse.unquote(parts.netloc + parts.path)


class OpenOptions(TypedDict, total=False):
    """The keyword arguments of `open_database`, for `open_or_explain`."""

    pool_size: int | None
    connect_timeout: float | None
    read_only: bool
    create: bool


def open_database(spec: str, pool_size: int | None = None,
                  connect_timeout: float | None = None,
                  read_only: bool = False, create: bool = False) -> DB:
    """Open the database that ``--db`` names; return a ``ZODB.DB``.

    ``spec`` is a zodburi URI, a ZConfig file (``.conf``) or a FileStorage
    path (``.fs``). ``read_only`` opens FileStorage files read-only (see
    the module's docstring); ``create`` allows a new FileStorage file.
    ``connect_timeout`` is how long a ZEO client waits for its server
    before an operation fails (ZEO's own default: 30 s). A plain path keeps
    as many objects per connection as its ``file://`` URI would
    (`PATH_CACHE_SIZE`).
    """
    import ZODB
    dbkw = {}
    path = None
    if spec.startswith('file://'):
        path = _file_uri_path(spec)
    elif spec.endswith('.fs') and '://' not in spec:
        path = spec
    if path is not None:
        dbkw['cache_size'] = PATH_CACHE_SIZE
        path = os.path.abspath(os.path.expanduser(path))
        if not os.path.exists(path) and (read_only or not create):
            raise _no_such_file(spec)
        served = served_by(path) if read_only else None
        if served is not None:
            # Its server has the index in memory and the latest commits;
            # the file's own index is stale while it serves.
            storage = _client(served['socket'], connect_timeout,
                              read_only=True)
        elif read_only:
            storage = open_read_only(path, spec)
        else:
            storage = _writable(path, spec, create, connect_timeout)
    elif '://' in spec:
        storage, dbkw = _from_uri(spec, connect_timeout, read_only, create)
    elif spec.endswith('.conf'):
        import ZODB.config
        try:
            return ZODB.config.databaseFromURL(spec)
        except OSError as error:
            raise UsageError('--db %s: %s' % (spec, error))
    else:
        raise UsageError('--db %s: give %s' % (spec, ACCEPTED))
    if pool_size and dbkw.get('pool_size', 7) < pool_size:
        dbkw['pool_size'] = pool_size
    try:
        return ZODB.DB(storage, **dbkw)
    except Exception as error:
        storage.close()
        if read_only and type(error).__name__ == 'ReadOnlyError':
            raise UsageError('--db %s holds no database yet (nothing was '
                             'ever committed to it)' % spec)
        raise


def _from_uri(spec, connect_timeout, read_only, create):
    try:
        import zodburi
    except ImportError:
        raise UsageError('--db %s needs the zodburi package' % spec)
    if connect_timeout is not None and spec.startswith('zeo://') \
            and 'wait_timeout=' not in spec:
        spec += ('&' if '?' in spec else '?') + 'wait_timeout=%s' % (
            connect_timeout,)
    if spec.startswith('file://'):
        # A file:// URI with options: the same rules as a plain path.
        path = urllib.parse.urlsplit(spec).path
        if path and not os.path.exists(path) and (read_only or not create):
            raise _no_such_file(spec)
        if read_only and 'read_only=' not in spec:
            spec += '&read_only=1'
    try:
        factory, dbkw = zodburi.resolve_uri(spec)
    except KeyError as error:
        raise UsageError('--db %s: unknown kind of URI (%s)' % (
            spec, error.args[0] if error.args else error))
    return factory(), dbkw


def open_or_explain(spec: str, **options: Unpack[OpenOptions]) -> DB:
    """`open_database`, with any failure as a one-line `UsageError`."""
    try:
        return open_database(spec, **options)
    except UsageError:
        raise
    except Exception as error:
        raise UsageError('cannot open --db %s: %s: %s' % (
            spec, type(error).__name__, error))


# -- services ----------------------------------------------------------------

def find_service(db: DB, path: ServicePath, create: bool = False
                 ) -> tuple[str, ...]:
    """The keys of the service at ``path``; create one there if asked.

    Raises `UsageError` when there is no service there (naming ``--create``)
    or when the object there is something else.
    """
    from zodbtasks.interfaces import ITaskService
    from zodbtasks.paths import splitPath
    from zodbtasks.paths import traverse
    try:
        keys = splitPath(path)
    except (TypeError, ValueError) as error:
        raise UsageError('--service: %s' % error)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    created = False
    try:
        tm.begin()
        try:
            service = traverse(conn.root(), keys)
        except KeyError as error:
            if not create:
                raise UsageError('no service at /%s (%s); add --create to '
                                 'create one' % ('/'.join(keys),
                                                 error.args[0]))
            try:
                parent = traverse(conn.root(), keys[:-1])
            except KeyError as error:
                raise UsageError('cannot create /%s: %s' % (
                    '/'.join(keys), error.args[0]))
            from zodbtasks.service import TaskService
            parent[keys[-1]] = service = TaskService()
            tm.commit()
            created = True
        if not ITaskService.providedBy(service):
            raise UsageError('/%s is a %s, not a task service' % (
                '/'.join(keys), type(service).__name__))
    finally:
        tm.abort()
        conn.close()
    if created:
        log.info('created a task service at /%s', '/'.join(keys))
    return keys
