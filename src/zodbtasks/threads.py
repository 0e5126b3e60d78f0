"""Processor threads, as a service starts and stops them.

`TaskService.startProcessing` runs a processor in a daemon thread of the
process it is called in; one per service and database. The threads are
stopped at exit, after the jobs in hand.
"""
import atexit
import logging
import threading

from zodbtasks.paths import findServicePath
from zodbtasks.paths import splitPath

log = logging.getLogger('zodbtasks.processor')


_registry = {}          # (db, path) -> (processor, thread)
_registryLock = threading.Lock()
_atexitRegistered = False


def _key(service, path=None):
    jar = service._p_jar
    if jar is None:
        raise ValueError('the service is not stored in a database: add it '
                         'and commit before starting to process its jobs')
    keys = splitPath(path) if path is not None else findServicePath(service)
    return jar.db(), keys


def startProcessing(service, path=None):
    """Start a processor thread for ``service`` unless one runs already.

    The processor is ``service.processorFactory`` (default
    `SimpleProcessor`) called with the database, the path and
    ``service.processorArguments``. Returns the processor.
    """
    global _atexitRegistered
    db, keys = _key(service, path)
    factory = service.processorFactory or _defaultFactory()
    arguments = dict(service.processorArguments or {})
    with _registryLock:
        running = _registry.get((db, keys))
        if running is not None and running[1].is_alive() \
                and not running[0]._stopRequested:
            return running[0]
        processor = factory(db, keys, **arguments)
        thread = threading.Thread(target=processor, daemon=True,
                                  name='zodbtasks %s' % '/'.join(keys))
        _registry[db, keys] = (processor, thread)
        if not _atexitRegistered:
            atexit.register(stopAll, 10)
            _atexitRegistered = True
        thread.start()
    log.info('started %r', processor)
    return processor


def stopProcessing(service, path=None, timeout=None):
    """Stop the processor thread of ``service`` after the job in hand.

    Waits up to ``timeout`` seconds (None: until the job in hand ends) and
    returns whether the thread ended. Python threads cannot be interrupted
    safely, so a second request waits again; a worker *process* (the
    ``zodbtasks worker`` command) is interrupted by a second signal.
    """
    db, keys = _key(service, path)
    with _registryLock:
        entry = _registry.get((db, keys))
    if entry is None:
        return True
    return _stop(entry, timeout, (db, keys))


def _stop(entry, timeout, key):
    processor, thread = entry
    processor.stop()
    if thread is not threading.current_thread():
        thread.join(timeout)
    stopped = not thread.is_alive()
    if stopped:
        with _registryLock:
            if _registry.get(key) is entry:
                del _registry[key]
    return stopped


def isProcessing(service, path=None):
    """Whether a processor thread runs for ``service`` and was not stopped."""
    db, keys = _key(service, path)
    with _registryLock:
        entry = _registry.get((db, keys))
    return (entry is not None and entry[1].is_alive()
            and not entry[0]._stopRequested)


def stopAll(timeout=None, db=None):
    """Stop every processor thread (of ``db`` only, if given)."""
    with _registryLock:
        entries = [(key, entry) for key, entry in _registry.items()
                   if db is None or key[0] is db]
    for _, (processor, _thread) in entries:
        processor.stop()
    return all([_stop(entry, timeout, key) for key, entry in entries])


def running():
    """The processors whose threads run, as ((db, path), processor) pairs."""
    with _registryLock:
        return [(key, entry[0]) for key, entry in _registry.items()
                if entry[1].is_alive()]


def _defaultFactory():
    from zodbtasks.processor import SimpleProcessor
    return SimpleProcessor
