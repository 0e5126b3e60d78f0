"""Start processing the services of an application when its database opens.

An application server tells its subscribers that the database is open with
`zope.processlifetime.IDatabaseOpenedWithRoot` (Zope and the zope.app
servers do); ``configure.zcml`` subscribes `databaseOpened` to it. The
subscriber keeps the database (see `getDatabase`) and starts a processor
thread for every service that the ``autostart`` setting names.

``autostart`` is a list of ``site@service`` separated by commas or white
space, as in z3c.taskqueue:

``site@service``
    the service ``service`` in the site ``site``, an item of the
    application root;
``@service``
    the service ``service`` in the application root itself;
``*@service``
    the service of that name in the application root and in every site;
``site@*``
    every service in that site.

A site's service ``service`` is, as in z3c.taskqueue, the task service
registered under that name in the site's component registry
(``queryUtility(ITaskService, name=service, context=site)``, which also sees
the registries the site's is based on). When no utility has that name, the
site's item ``service`` or the item of that name in the ``default`` folder of
its site manager is taken, if it is a task service: the registered utility
wins over an item of the same name. ``site@*`` takes both: every registered
task service and every item that is one. The application root is the
``root`` setting (a path of keys from the database root), else the database
root's ``Application`` item if there is one, else the database root.

The database of the event is kept: `getDatabase` gives it, and so does
``zodbtasks.GLOBALDB``, as z3c.taskqueue kept it (`storeDBReference`).

The settings come from `configure` if it was called (Pyramid and scripts
call it), else from the product configuration ``zodbtasks`` (``<product-config
zodbtasks>`` in zope.conf).

lovely.remotetask's names for the same, `getAutostartServiceNames` and the
subscriber `bootStrapSubscriber`, read the same settings and start services
by lovely.remotetask's narrower rules, with its log lines (see the end of
this module).

Only servers autostart: not Zope's scripts (``zconsole``, unless the
``autostart-scripts`` setting is on), not a process whose environment has
``ZODBTASKS_AUTOSTART=off``, not ``zodbtasks worker --zope-conf`` (see
`autostartRefused`).
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterable
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any

import transaction
import zope.component
from zope.component.interfaces import ISite

from zodbtasks import processor
from zodbtasks.interfaces import ITaskService

if TYPE_CHECKING:
    from ZODB.DB import DB
    from zope.processlifetime import IDatabaseOpened

    from zodbtasks.paths import ServicePath

#: A service's path: the keys from the database root to it.
Path = tuple[str, ...]

log = logging.getLogger('zodbtasks.startup')

PRODUCT = 'zodbtasks'
SITE_MANAGER = processor.SITE_MANAGER

_state: dict[str, Any] = {'database': None, 'configuration': None}


def parseAutostart(text: str | None) -> list[tuple[str, str]]:
    """The (site, service) pairs of an ``autostart`` setting.

    >>> parseAutostart('site1@tasks, *@mail\\n  @root-tasks site2@*')
    [('site1', 'tasks'), ('*', 'mail'), ('', 'root-tasks'), ('site2', '*')]
    """
    if not text:
        return []
    pairs = []
    for spec in text.replace(',', ' ').split():
        site, at, service = spec.partition('@')
        if not at or not service or '@' in service or '/' in spec:
            raise ValueError('autostart entries look like site@service, '
                             '@service, *@service or site@*; not %r' % spec)
        pairs.append((site, service))
    return pairs


def configure(autostart: str | None = None, root: str | None = None) -> None:
    """Set the configuration in code, instead of the product configuration.

    ``configure()`` with no arguments goes back to the product configuration.
    """
    if autostart is None and root is None:
        _state['configuration'] = None
    else:
        _state['configuration'] = {'autostart': autostart or '',
                                   'root': root}


def getConfiguration() -> dict[str, Any]:
    """The settings: from `configure`, else the product configuration.

    The product configuration is Zope's (``App.config``) when it has one for
    zodbtasks, else that of ``zope.app.appsetup``: a Zope instance may have
    both packages installed and only fills in its own.
    """
    if _state['configuration'] is not None:
        return dict(_state['configuration'])
    found = None
    try:
        from App.config import getConfiguration as zopeConfiguration
    except ImportError:
        pass
    else:
        found = (getattr(zopeConfiguration(), 'product_config', None)
                 or {}).get(PRODUCT)
    if found is None:
        try:
            from zope.app.appsetup.product import getProductConfiguration
        except ImportError:
            pass
        else:
            found = getProductConfiguration(PRODUCT)
    return dict(found or {})


#: The environment variable that turns autostart off in a process
#: (``ZODBTASKS_AUTOSTART=off``).
AUTOSTART_VARIABLE = 'ZODBTASKS_AUTOSTART'

# Modules that only scripts load: Zope's ``zconsole run`` and ``debug``.
_SCRIPT_MODULES = ('Zope2.utilities.zconsole',)


def _switch(value, name):
    """A boolean setting: on/off, true/false, yes/no, 1/0."""
    text = str(value).strip().lower()
    if text in ('on', 'true', 'yes', '1'):
        return True
    if text in ('off', 'false', 'no', '0'):
        return False
    raise ValueError('%s is on or off, not %r' % (name, value))


def disableAutostart(reason: str) -> None:
    """Turn autostart off in this process (``zodbtasks worker
    --zope-conf``: a worker process starts no processor threads)."""
    _state['refused'] = reason


def autostartRefused(configuration: Mapping[str, Any]) -> str | None:
    """Why this process must not autostart, or None if it may.

    Off when `disableAutostart` was called, when the environment variable
    ``ZODBTASKS_AUTOSTART`` is off, and in Zope's scripts (``zconsole``)
    unless the ``autostart-scripts`` setting is on.
    """
    if _state.get('refused'):
        return _state['refused']
    variable = os.environ.get(AUTOSTART_VARIABLE)
    if variable is not None and variable.strip():
        if not _switch(variable, AUTOSTART_VARIABLE):
            return '%s=%s' % (AUTOSTART_VARIABLE, variable)
    if any(name in sys.modules for name in _SCRIPT_MODULES):
        if not _switch(configuration.get('autostart-scripts', 'off'),
                       'autostart-scripts'):
            return 'a script (zconsole), and autostart-scripts is off'
    return None


def getDatabase() -> DB | None:
    """The database of the last database-opened event, or None."""
    return _state['database']


def storeDBReference(db: DB | None) -> None:
    """Keep ``db`` as the application's database: `getDatabase` and
    ``zodbtasks.GLOBALDB`` give it (z3c.taskqueue's name). None forgets it.
    """
    if db is not None and not callable(getattr(db, 'open', None)):
        raise TypeError('storeDBReference takes a ZODB database (with an '
                        'open() method) or None, not %r' % (db,))
    _state['database'] = db


def _toStart(event):
    """Keep the database of ``event``; the autostart specs and the ``root``
    setting, or None when there is nothing to start (a bad setting is
    logged). Both subscribers, `databaseOpened` and `bootStrapSubscriber`,
    begin here, so that they obey the same settings."""
    storeDBReference(event.database)
    configuration = getConfiguration()
    try:
        specs = parseAutostart(configuration.get('autostart', ''))
        refused = autostartRefused(configuration) if specs else None
    except ValueError as error:
        log.error('zodbtasks autostart: %s', error)
        return None
    if not specs:
        return None
    if refused:
        log.info('zodbtasks autostart: off in this process: %s', refused)
        return None
    return specs, configuration.get('root')


def databaseOpened(event: IDatabaseOpened) -> list[Path]:
    """Subscriber: keep the database, start the services to autostart."""
    settings = _toStart(event)
    if settings is None:
        return []
    return startServices(event.database, *settings)


def applicationRoot(root: Mapping[str, Any], path: ServicePath | None = None
                    ) -> tuple[Path, Any]:
    """The keys and object of the application root below the database root.
    """
    if path:
        keys = processor.splitPath(path)
        return keys, processor.traverse(root, keys)
    if 'Application' in root:
        return ('Application',), root['Application']
    return (), root


def _items(container):
    items = getattr(container, 'items', None)
    if not callable(items):
        return []
    try:
        return list(items())
    except Exception:
        return []


def _utilities(site, name):
    """The task services registered as utilities for ``site`` under
    ``name`` (all of them for ``*``), as (registered name, service)."""
    try:
        if name == '*':
            return list(zope.component.getUtilitiesFor(ITaskService,
                                                       context=site))
        service = zope.component.queryUtility(ITaskService, name=name,
                                              context=site)
    except zope.component.ComponentLookupError:
        return []       # not a site, and no registry found above it
    return [] if service is None else [(name, service)]


def _located(service, name):
    """The path of a registered service, found from its location; None
    (and a warning) when it cannot be found."""
    try:
        return processor.findServicePath(service)
    except ValueError as error:
        log.warning('zodbtasks autostart: the service %r registered as '
                    '%r: %s', service, name, error)
        return None


def _registered(site, name):
    """The task services registered as utilities for ``site`` under
    ``name`` (all of them for ``*``), as (path, service); the path is found
    from each service's location."""
    found = []
    for registered, service in _utilities(site, name):
        keys = _located(service, registered)
        if keys is not None:
            found.append((keys, service))
    return found


def _servicesIn(keys, site, name):
    """(path, service) for the services called ``name`` (or all) in a site.
    """
    registered = _registered(site, name)
    if registered and name != '*':
        return registered       # the named utility wins over an item
    places = [(keys, site)]
    getSiteManager = getattr(site, 'getSiteManager', None)
    if callable(getSiteManager):
        try:
            default = getSiteManager()['default']
        except Exception:
            default = None
        if default is not None:
            places.append((keys + (SITE_MANAGER, 'default'), default))
    found = list(registered)
    for where, container in places:
        if name == '*':
            candidates = _items(container)
        else:
            try:
                candidates = [(name, container[name])]
            except Exception:
                candidates = []
        for key, value in candidates:
            if isinstance(key, str) and ITaskService.providedBy(value):
                found.append((where + (key,), value))
    return found


def findServices(root: Mapping[str, Any], specs: Iterable[tuple[str, str]],
                 rootPath: ServicePath | None = None
                 ) -> list[tuple[Path, ITaskService]]:
    """(path, service) for every service that ``specs`` names, once each."""
    appKeys, app = applicationRoot(root, rootPath)
    found: dict[Path, ITaskService] = {}
    for site, name in specs:
        if site == '*':
            sites = [(appKeys, app)] + [
                (appKeys + (key,), value) for key, value in _items(app)
                if isinstance(key, str)]
        elif site == '':
            sites = [(appKeys, app)]
        else:
            try:
                sites = [(appKeys + (site,), app[site])]
            except Exception:
                sites = []
        matched = [item for keys, obj in sites
                   for item in _servicesIn(keys, obj, name)]
        if not matched:
            log.warning('zodbtasks autostart: no service matches %s@%s',
                        site, name)
        for keys, service in matched:
            found.setdefault(keys, service)
    return list(found.items())


def startServices(db: DB, specs: Iterable[tuple[str, str]],
                  rootPath: ServicePath | None = None) -> list[Path]:
    """Start processing the services that ``specs`` name; return their paths.
    """
    def start(root):
        started = []
        for keys, service in findServices(root, specs, rootPath):
            processor.startProcessing(service, keys)
            log.info('zodbtasks autostart: processing /%s', '/'.join(keys))
            started.append(keys)
        return started
    return _inConnection(db, start)


def _inConnection(db, func):
    """``func(root)`` in a connection and transaction of its own, which it
    leaves unchanged: the processors open their own connections."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        tm.begin()
        return func(conn.root())
    finally:
        tm.abort()
        conn.close()


# -- lovely.remotetask's autostart ---------------------------------------------
#
# lovely.remotetask 0.5.2 had the same setting under other names: its
# subscriber was ``bootStrapSubscriber`` and ``getAutostartServiceNames``
# listed the entries. Its rules were narrower than ours: a service is a task
# service registered as a utility (items that are services but registered
# nowhere are not started), ``*@`` goes through the application root and the
# items of it that are sites, and ``site@*`` leaves out the services that the
# site only inherits from the application root. It reported on the package
# logger, one line for each service it started.

#: The logger of lovely.remotetask's lines (its package logger, renamed).
lovelyLog = logging.getLogger('zodbtasks')

#: The site name of the application root in those lines.
ROOT_SITE = 'root'


def getAutostartServiceNames() -> list[str]:
    """The entries of the ``autostart`` setting, as strings, in order
    (lovely.remotetask's name): ``['site1@tasks', '@main']``.

    Raises ValueError, naming the entry, for a setting `parseAutostart`
    refuses.
    """
    specs = parseAutostart(getConfiguration().get('autostart', ''))
    return ['%s@%s' % spec for spec in specs]


def bootStrapSubscriber(event: IDatabaseOpened) -> None:
    """Subscriber, as lovely.remotetask's: keep the database of the
    database-opened ``event`` and start processing the services that the
    ``autostart`` setting names, by lovely.remotetask's rules (above).

    Logs ``handling event IStartRemoteTasksEvent``, then ``service S on site
    X started`` for every service started (X is ``root`` for the application
    root), an error for a named site or service that is not there, and a
    warning for an entry with ``*`` that started nothing. Services that are
    processing already are left as they are. Returns None.
    """
    lovelyLog.info('handling event IStartRemoteTasksEvent')
    settings = _toStart(event)
    if settings is None:
        return
    specs, rootPath = settings
    _inConnection(event.database,
                  lambda root: _bootStrap(root, specs, rootPath))


def _bootStrap(root, specs, rootPath):
    _, app = applicationRoot(root, rootPath)
    for siteName, name in specs:
        started = 0
        for label, site in _lovelySites(app, siteName):
            if site is None:
                lovelyLog.error('site %s not found', siteName)
            else:
                started += _bootStrapSite(app, siteName, label, site, name)
        if '*' in (siteName, name) and not started:
            lovelyLog.warning('no services started by directive %s@%s',
                              siteName, name)


def _bootStrapSite(app, siteName, label, site, name):
    """Start the services ``name`` (or all) registered for ``site``; how
    many were started."""
    services = _utilities(site, name)
    if name == '*' and siteName not in ('', '*'):
        inherited = _utilities(app, '*')
        services = [item for item in services if item not in inherited]
    if not services and '*' not in (siteName, name):
        lovelyLog.error('service %s on site %s not found', name, label)
    started = 0
    for registered, service in services:
        if processor.isProcessing(service):
            continue
        keys = _located(service, registered)
        if keys is None:
            continue
        with _WithoutStartLine():
            processor.startProcessing(service, keys)
        lovelyLog.info('service %s on site %s started', registered, label)
        started += 1
    return started


def _lovelySites(app, siteName):
    """(name for the log, site or None) for the site part of an entry."""
    if siteName == '':
        return [(ROOT_SITE, app)]
    if siteName == '*':
        return [(ROOT_SITE, app)] + [
            (key, value) for key, value in _items(app)
            if isinstance(key, str) and ISite.providedBy(value)]
    try:
        return [(siteName, app[siteName])]
    except Exception:
        return [(siteName, None)]


class _WithoutStartLine(logging.Filter):
    """While in effect, the processor's own ``starting service`` line, said
    on this thread, is left out: lovely.remotetask said only its ``service S
    on site X started``, and saying both would report every start twice.
    Other threads' lines, and warnings and errors, pass."""

    def __init__(self):
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record):
        return not (record.thread == self.thread
                    and record.levelno == logging.INFO)

    def __enter__(self):
        lovelyLog.addFilter(self)

    def __exit__(self, *exc_info):
        lovelyLog.removeFilter(self)
