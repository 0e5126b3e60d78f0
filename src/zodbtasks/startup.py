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
"""
import logging

import transaction
import zope.component

import zodbtasks
from zodbtasks import processor
from zodbtasks.interfaces import ITaskService

log = logging.getLogger('zodbtasks.startup')

PRODUCT = 'zodbtasks'
SITE_MANAGER = processor.SITE_MANAGER

_state = {'database': None, 'configuration': None}


def parseAutostart(text):
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


def configure(autostart=None, root=None):
    """Set the configuration in code, instead of the product configuration.

    ``configure()`` with no arguments goes back to the product configuration.
    """
    if autostart is None and root is None:
        _state['configuration'] = None
    else:
        _state['configuration'] = {'autostart': autostart or '',
                                   'root': root}


def getConfiguration():
    """The settings: from `configure`, else the product configuration."""
    if _state['configuration'] is not None:
        return dict(_state['configuration'])
    found = None
    try:
        from zope.app.appsetup.product import getProductConfiguration
    except ImportError:
        try:
            from App.config import getConfiguration as zopeConfiguration
        except ImportError:
            pass
        else:
            found = (getattr(zopeConfiguration(), 'product_config', None)
                     or {}).get(PRODUCT)
    else:
        found = getProductConfiguration(PRODUCT)
    return dict(found or {})


def getDatabase():
    """The database of the last database-opened event, or None."""
    return _state['database']


def storeDBReference(db):
    """Keep ``db`` as the application's database: `getDatabase` and
    ``zodbtasks.GLOBALDB`` give it (z3c.taskqueue's name). None forgets it.
    """
    if db is not None and not callable(getattr(db, 'open', None)):
        raise TypeError('storeDBReference takes a ZODB database (with an '
                        'open() method) or None, not %r' % (db,))
    _state['database'] = db
    zodbtasks.GLOBALDB = db


def databaseOpened(event):
    """Subscriber: keep the database, start the services to autostart."""
    db = event.database
    storeDBReference(db)
    configuration = getConfiguration()
    try:
        specs = parseAutostart(configuration.get('autostart', ''))
    except ValueError as error:
        log.error('zodbtasks autostart: %s', error)
        return []
    if not specs:
        return []
    return startServices(db, specs, configuration.get('root'))


def applicationRoot(root, path=None):
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


def _registered(site, name):
    """The task services registered as utilities for ``site`` under
    ``name`` (all of them for ``*``), as (path, service); the path is found
    from each service's location."""
    try:
        if name == '*':
            services = [service for _, service in zope.component
                        .getUtilitiesFor(ITaskService, context=site)]
        else:
            service = zope.component.queryUtility(ITaskService, name=name,
                                                  context=site)
            services = [] if service is None else [service]
    except zope.component.ComponentLookupError:
        return []       # not a site, and no registry found above it
    found = []
    for service in services:
        try:
            found.append((processor.findServicePath(service), service))
        except ValueError as error:
            log.warning('zodbtasks autostart: the service %r registered as '
                        '%r: %s', service, name, error)
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


def findServices(root, specs, rootPath=None):
    """(path, service) for every service that ``specs`` names, once each."""
    appKeys, app = applicationRoot(root, rootPath)
    found = {}
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


def startServices(db, specs, rootPath=None):
    """Start processing the services that ``specs`` name; return their paths.
    """
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        tm.begin()
        started = []
        for keys, service in findServices(conn.root(), specs, rootPath):
            processor.startProcessing(service, keys)
            log.info('zodbtasks autostart: processing /%s', '/'.join(keys))
            started.append(keys)
        return started
    finally:
        tm.abort()
        conn.close()
