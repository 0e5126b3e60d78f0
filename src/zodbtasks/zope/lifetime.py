"""Starting and stopping processors with a Zope 5 server.

Start: the core subscriber (`zodbtasks.startup.databaseOpened`) starts the
services that ``autostart`` names when Zope opens its database, in the
server only: ``zconsole run`` and ``zconsole debug`` open the database the
same way, and are no workers (see `zodbtasks.startup.autostartRefused`).

Stop: Zope 5 tells nobody that it closes its databases. ``runwsgi`` closes
them when the WSGI server returns, which it does on SIGINT (a
KeyboardInterrupt); on SIGTERM Python's default ends the process at once,
without atexit. So when the database opens in a server, this module adds a
handler for SIGTERM and SIGINT in front of the one there: it stops the
processors, waits up to ``stop-grace`` seconds (product configuration,
default 10) for each job in hand to finish and record its outcome, logs
that they stopped, and then calls the handler that was there (for SIGTERM
without one, the default: the process ends as it did before). A signal
that was ignored stays ignored.
"""
import logging
import os
import signal
import threading
from typing import Any

from zodbtasks import startup
from zodbtasks import threads

log = logging.getLogger('zodbtasks.zope')

#: Seconds a job in hand gets to finish when the server stops.
DEFAULT_GRACE = 10.0

SIGNALS = (signal.SIGTERM, signal.SIGINT)

# signal -> the handler we chained to (what signal.getsignal gave)
_previous: dict[int, Any] = {}


def grace(configuration=None):
    """The ``stop-grace`` setting in seconds; ValueError if it is bad."""
    if configuration is None:
        configuration = startup.getConfiguration()
    text = configuration.get('stop-grace')
    if text in (None, ''):
        return DEFAULT_GRACE
    try:
        seconds = float(text)
    except (TypeError, ValueError):
        seconds = -1
    if not 0 <= seconds <= 3600:
        raise ValueError('stop-grace in <product-config zodbtasks> is a '
                         'number of seconds from 0 to 3600, not %r' % (text,))
    return seconds


def databaseOpened(event):
    """Subscriber: in a server, stop the processors before it stops."""
    try:
        refused = startup.autostartRefused(startup.getConfiguration())
    except ValueError as error:
        log.error('zodbtasks: %s', error)
        return
    if refused is None:
        installSignalHandlers()


def installSignalHandlers():
    """Put `stopProcessors` in front of the SIGTERM and SIGINT handlers.

    Only in the main thread (Python's rule), and once. Returns the signals
    it handles.
    """
    if threading.current_thread() is not threading.main_thread():
        log.warning('zodbtasks: not in the main thread; processors will '
                    'not be stopped on SIGTERM or SIGINT')
        return []
    for signum in SIGNALS:
        if signum in _previous:
            continue
        current = signal.getsignal(signum)
        if current == signal.SIG_IGN:
            continue
        _previous[signum] = current
        signal.signal(signum, _handler)
    return sorted(_previous)


def uninstallSignalHandlers():
    """Put back the handlers that were there (for tests)."""
    for signum, previous in list(_previous.items()):
        if signal.getsignal(signum) is _handler:
            signal.signal(signum, previous)
        del _previous[signum]


def stopProcessors(seconds=None, why='the server stops'):
    """Stop every processor thread after the job in hand; wait up to
    ``seconds`` (default: ``stop-grace``) for all of them together (they
    finish their jobs at the same time). Returns whether all stopped."""
    running = threads.running()
    if not running:
        return True
    if seconds is None:
        try:
            seconds = grace()
        except ValueError as error:
            log.error('%s; using %s s', error, DEFAULT_GRACE)
            seconds = DEFAULT_GRACE
    names = ', '.join('/' + '/'.join(keys) for (_, keys), _ in running)
    log.info('zodbtasks: %s: stopping the processors of %s (up to %s s for '
             'the jobs in hand)', why, names, seconds)
    stopped = threads.stopAll(seconds)
    if stopped:
        log.info('zodbtasks: processors stopped: %s', names)
    else:
        log.warning('zodbtasks: processors still running after %s s: the '
                    'jobs in hand go back to their queue when their leases '
                    'run out', seconds)
    return stopped


def _handler(signum, frame):
    previous = _previous.get(signum, signal.SIG_DFL)
    # The stopping happens in a thread of its own: the main thread may have
    # been interrupted while it held a lock that stopping needs. It is
    # waited for, but not for ever.
    try:
        seconds = grace()
    except ValueError:
        seconds = DEFAULT_GRACE
    wait = seconds + 5
    stopper = threading.Thread(target=stopProcessors,
                               kwargs={'why': signal.Signals(signum).name},
                               name='zodbtasks stopping', daemon=True)
    stopper.start()
    stopper.join(wait)
    if callable(previous):
        return previous(signum, frame)
    if previous == signal.SIG_IGN:
        return None
    # The default action (SIGTERM: end the process), as if we were not here.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return None


def loadZopeConfiguration(path):
    """Read a Zope instance's ``zope.conf`` and load its ZCML, without
    opening its databases: what ``zodbtasks worker --zope-conf`` does, so
    that tasks registered in ZCML (and the product configuration) are
    known. The process does not autostart processors."""
    startup.disableAutostart('this process loaded %s as a worker' % path)
    from Zope2.App.zcml import load_site
    from Zope2.Startup.run import _set_wsgi_config
    if not os.path.isfile(path):
        raise ValueError('--zope-conf %s: no such file' % path)
    _set_wsgi_config(os.path.abspath(path))
    load_site()
