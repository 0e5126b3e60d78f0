"""Tasks run in a Zope context: a middleware (see `zodbtasks.middleware`).

For a service that lives in the Zope application (below the database root's
``Application``), every run gets:

* the application wrapped in a request (``REQUEST`` can be acquired, and
  ``zope.globalrequest.getRequest()`` answers), whose URL is the
  ``server-url`` of the product configuration (default ``http://localhost``),
  so that ``absolute_url()`` gives the site's real addresses;
* the task's ``service`` argument acquisition-wrapped in that application;
* a security manager for the user the job runs as: the ``run-as`` user of
  the product configuration if there is one (looked up in the user folders
  above the service, the nearest first), else the user who added the job
  (`rememberUser` notes who that was), else Anonymous;
* the nearest site above the service as the current site (``setSite``), so
  that local utilities are found.

Everything is undone when the run ends. The context only reads: it writes
nothing to the database, so runs keep having their outcomes recorded
together.
"""
import urllib.parse

from AccessControl.SecurityManagement import getSecurityManager
from AccessControl.SecurityManagement import newSecurityManager
from AccessControl.SecurityManagement import setSecurityManager
from AccessControl.users import nobody
from AccessControl.users import system
from Acquisition import aq_base
from Acquisition import aq_chain
from Acquisition import aq_inner
from Acquisition import aq_parent
from Testing.makerequest import makerequest
from zope.component.hooks import getSite
from zope.component.hooks import setSite
from zope.component.interfaces import ISite
from zope.globalrequest import clearRequest
from zope.globalrequest import getRequest
from zope.globalrequest import setRequest

from zodbtasks import startup
from zodbtasks.zope.service import servicePath

#: The attribute of a job that says who added it: (path of the user
#: folder, user id); the path is None for Zope's own special users.
ADDED_BY = 'addedBy'


def rememberUser(event):
    """Subscriber of `IJobQueued`: note on a new job who added it."""
    job = event.job
    if getattr(job, ADDED_BY, None) is not None:
        return
    user = getSecurityManager().getUser()
    if user is None or aq_base(user) is aq_base(nobody):
        return        # runs as Anonymous, as a job without a note does
    folder = aq_parent(aq_inner(user))
    if folder is not None and hasattr(aq_base(folder), 'getPhysicalPath'):
        setattr(job, ADDED_BY, ('/'.join(folder.getPhysicalPath()),
                                user.getId()))
    elif aq_base(user) is aq_base(system):
        # Zope's scripts (zconsole) run as this user, which no folder has.
        setattr(job, ADDED_BY, (None, system.getUserName()))


def checkServerURL(url):
    """``url`` if it is ``http(s)://host[:port]``; ValueError otherwise."""
    parts = urllib.parse.urlsplit(url or '')
    if parts.scheme not in ('http', 'https') or not parts.hostname \
            or parts.path not in ('', '/') or parts.query or parts.fragment \
            or parts.username or parts.password:
        raise ValueError('server-url in <product-config zodbtasks> must look '
                         'like https://www.example.com or '
                         'http://host:8080, not %r' % (url,))
    try:
        parts.port
    except ValueError:
        raise ValueError('server-url %r has a bad port' % (url,)) from None
    return url.rstrip('/')


def zopeContext(run, call_next):
    """The middleware: see the module docstring."""
    service = run.service
    jar = getattr(service, '_p_jar', None)
    if jar is None:
        return call_next()
    keys = _keys(service)
    if not keys or keys[0] != 'Application':
        return call_next()      # not a service of the Zope application
    configuration = startup.getConfiguration()
    url = checkServerURL(configuration.get('server-url')
                         or 'http://localhost')
    app = makerequest(jar.root()['Application'],
                      environ={'SERVER_URL': url})
    request = app.REQUEST
    here = app.unrestrictedTraverse(list(keys[1:]))
    user = _runAs(here, run.job, configuration.get('run-as'))
    savedManager = getSecurityManager()
    savedSite = getSite()
    savedRequest = getRequest()
    site = _siteOf(here)
    try:
        setRequest(request)
        newSecurityManager(request, user)
        if site is not None:
            setSite(site)
        run.service = here
        return call_next()
    finally:
        run.service = service
        setSite(savedSite)
        setSecurityManager(savedManager)
        if savedRequest is None:
            clearRequest()
        else:
            setRequest(savedRequest)
        request.close()


def _keys(service):
    """The keys from the database root to ``service``, or None."""
    try:
        return servicePath(service)
    except ValueError:
        return None


def _runAs(here, job, name):
    """The user a run has: ``run-as``, else the job's, else Anonymous."""
    if name:
        for place in aq_chain(aq_inner(here)):
            folder = getattr(aq_base(place), 'acl_users', None)
            if folder is None:
                continue
            folder = place.acl_users
            user = folder.getUserById(name) or folder.getUser(name)
            if user is not None:
                return user.__of__(folder)
        raise LookupError('the run-as user %r of <product-config zodbtasks> '
                          'is in no user folder above %s'
                          % (name, '/'.join(here.getPhysicalPath())
                             if hasattr(here, 'getPhysicalPath') else here))
    added = getattr(job, ADDED_BY, None)
    if added is None:
        return nobody
    path, userid = added
    if path is None:
        return system if userid == system.getUserName() else nobody
    folder = here.unrestrictedTraverse(path or '/')
    user = folder.getUserById(userid)
    if user is None:
        raise LookupError('user %r, who added job %s, is no longer in %s'
                          % (userid, job.id, path or '/'))
    return user.__of__(folder)


def _siteOf(here):
    """The nearest site above (or at) ``here``, or None."""
    for place in aq_chain(here):
        if ISite.providedBy(place):
            return place
    return None
