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

A site's services are its items that are task services, and those in the
``default`` folder of its site manager, if it has one. The application root
is the ``root`` setting (a path of keys from the database root), else the
database root's ``Application`` item if there is one, else the database root.

The settings come from `configure` if it was called (Pyramid and scripts
call it), else from the product configuration ``zodbtasks`` (``<product-config
zodbtasks>`` in zope.conf).

Only servers autostart: not Zope's scripts (``zconsole``, unless the
``autostart-scripts`` setting is on), not a process whose environment has
``ZODBTASKS_AUTOSTART=off``, not ``zodbtasks worker --zope-conf`` (see
`autostartRefused`).
"""
import logging
import os
import sys

import transaction

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


def disableAutostart(reason):
    """Turn autostart off in this process (``zodbtasks worker
    --zope-conf``: a worker process starts no processor threads)."""
    _state['refused'] = reason


def autostartRefused(configuration):
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


def getDatabase():
    """The database of the last database-opened event, or None."""
    return _state['database']


def databaseOpened(event):
    """Subscriber: keep the database, start the services to autostart."""
    db = event.database
    _state['database'] = db
    configuration = getConfiguration()
    try:
        specs = parseAutostart(configuration.get('autostart', ''))
        refused = autostartRefused(configuration) if specs else None
    except ValueError as error:
        log.error('zodbtasks autostart: %s', error)
        return []
    if not specs:
        return []
    if refused:
        log.info('zodbtasks autostart: off in this process: %s', refused)
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


def _servicesIn(keys, site, name):
    """(path, service) for the services called ``name`` (or all) in a site.
    """
    places = [(keys, site)]
    getSiteManager = getattr(site, 'getSiteManager', None)
    if callable(getSiteManager):
        try:
            default = getSiteManager()['default']
        except Exception:
            default = None
        if default is not None:
            places.append((keys + (SITE_MANAGER, 'default'), default))
    found = []
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
