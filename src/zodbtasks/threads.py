"""Processor threads, as a service starts and stops them.

`TaskService.startProcessing` runs a processor in a daemon thread of the
process it is called in; one per service and database. The threads are
stopped at exit, after the jobs in hand.

A thread is known by the service's object id in its database, not by its
path, so that a service answers `isProcessing` without searching for itself,
however it was started. Threads are named as in the reference packages,
``remotetasks.`` and the service's path from the application root joined
with dots (``remotetasks.site1.++etc++site.default.tasks``), and the start
and stop log lines are theirs too (``starting service tasks``, on the
``zodbtasks`` logger): code and monitoring written for them keep working.
"""
import atexit
import logging
import threading
import time

from zodbtasks.paths import APPLICATION
from zodbtasks.paths import findServicePath
from zodbtasks.paths import splitPath

log = logging.getLogger('zodbtasks')

#: The prefix of the names of processor threads (the reference packages').
THREAD_PREFIX = 'remotetasks.'

_registry = {}          # (db, oid) -> _Entry
_registryLock = threading.Lock()
_atexitRegistered = False


class _Entry:
    __slots__ = ('processor', 'thread', 'keys')

    def __init__(self, processor, thread, keys):
        self.processor = processor
        self.thread = thread
        self.keys = keys

    def running(self):
        # A thread not started yet (ident None) is about to run.
        return ((self.thread.ident is None or self.thread.is_alive())
                and not self.processor._stopRequested)


def serviceName(keys):
    """How a service at ``keys`` is named in log lines and thread names:
    its path from the application root, joined with dots.

    >>> serviceName(('Application', 'site1', '++etc++site', 'default', 't'))
    'site1.++etc++site.default.t'
    >>> serviceName(('tasks',))
    'tasks'
    """
    keys = tuple(keys)
    if len(keys) > 1 and keys[0] == APPLICATION:
        keys = keys[1:]
    return '.'.join(keys)


def _database(service):
    jar = getattr(service, '_p_jar', None)
    return None if jar is None else jar.db()


def _find(service, path=None):
    """The registry key and entry of ``service``'s thread, or (None, None).

    Without ``path`` the thread is the one started for the service object;
    with it, the one started for that path.
    """
    db = _database(service)
    if db is None:
        return None, None
    keys = splitPath(path) if path is not None else None
    with _registryLock:
        for key, entry in _registry.items():
            if key[0] is not db:
                continue
            if (entry.keys == keys if keys is not None
                    else key[1] == service._p_oid):
                return key, entry
    return None, None


def startProcessing(service, path=None):
    """Start a processor thread for ``service`` unless one runs already.

    The processor is ``service.processorFactory`` (default
    `SimpleProcessor`) called with the database, the path and
    ``service.processorArguments``. Returns the processor. Raises
    ValueError for a service that is not stored in a database.
    """
    global _atexitRegistered
    db = _database(service)
    if db is None:
        raise ValueError('the service is not stored in a database: add it '
                         'and commit before starting to process its jobs')
    keys = splitPath(path) if path is not None else findServicePath(service)
    factory = service.processorFactory
    arguments = dict(service.processorArguments or {})
    key = (db, service._p_oid)
    name = serviceName(keys)
    with _registryLock:
        entry = _registry.get(key)
        if entry is not None and entry.running():
            return entry.processor
        processor = factory(db, keys, **arguments)
        thread = threading.Thread(target=processor, daemon=True,
                                  name=THREAD_PREFIX + name)
        _registry[key] = _Entry(processor, thread, keys)
        if not _atexitRegistered:
            atexit.register(stopAll, 10)
            _atexitRegistered = True
    # Said before the thread starts, so that it comes before what the
    # thread logs; outside the lock, as no I/O happens under it.
    try:
        log.info('starting service %s', name)
    finally:
        thread.start()
    return processor


def stopProcessing(service, path=None, timeout=None):
    """Stop the processor thread of ``service`` after the job in hand.

    Waits up to ``timeout`` seconds (None: until the job in hand ends) and
    returns whether the thread ended; True when there was none. Python
    threads cannot be interrupted safely, so a second request waits again;
    a worker *process* (the ``zodbtasks worker`` command) is interrupted by
    a second signal.
    """
    key, entry = _find(service, path)
    if entry is None:
        return True
    if not entry.processor._stopRequested:
        log.info('stopping service %s', serviceName(entry.keys))
    return _stop(entry, timeout, key)


def _stop(entry, timeout, key):
    entry.processor.stop()
    if entry.thread.ident is not None \
            and entry.thread is not threading.current_thread():
        entry.thread.join(timeout)
    stopped = not entry.thread.is_alive()
    if stopped:
        with _registryLock:
            if _registry.get(key) is entry:
                del _registry[key]
    return stopped


def isProcessing(service, path=None):
    """Whether a processor thread runs for ``service`` and was not stopped.

    False for a service that is not stored in a database.
    """
    _, entry = _find(service, path)
    return entry is not None and entry.running()


def stopAll(timeout=None, db=None):
    """Stop every processor thread (of ``db`` only, if given) after the
    jobs in hand; return whether all ended.

    All are asked to stop before any is waited for, and the waits share
    one deadline: each thread gets up to ``timeout`` seconds from the moment
    it was asked (None: until its jobs end), so that stopping N processors
    takes as long as the slowest of them, not the sum.
    """
    with _registryLock:
        entries = [(key, entry) for key, entry in _registry.items()
                   if db is None or key[0] is db]
    for _, entry in entries:
        entry.processor.stop()
    deadline = None if timeout is None else time.monotonic() + timeout
    stopped = []
    for key, entry in entries:
        left = None if deadline is None else max(
            0.0, deadline - time.monotonic())
        stopped.append(_stop(entry, left, key))
    return all(stopped)


def running():
    """The processors whose threads run, as ((db, path), processor) pairs."""
    with _registryLock:
        return [((key[0], entry.keys), entry.processor)
                for key, entry in _registry.items()
                if entry.thread.is_alive()]
