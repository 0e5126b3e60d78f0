"""The task service as a Zope object: addable, listed and managed in the ZMI.
"""
from AccessControl.class_init import InitializeClass
from AccessControl.SecurityInfo import ClassSecurityInfo
from OFS.SimpleItem import SimpleItem

from zodbtasks import service as core

_MANAGE = 'zodbtasks: Manage task services'

# Names of the core service that restricted code and URLs never reach:
# its settings and data are managed through its methods, not read or set.
_CORE_ATTRIBUTES = frozenset(
    name for cls in core.TaskService.__mro__
    if cls.__module__.startswith('zodbtasks')
    for name in vars(cls) if not name.startswith('_'))

#: What restricted code (DTML, page templates, Python Scripts) may read of
#: a service without a declaration: what the ZMI shows of any item.
_READABLE = {'id': 1, 'title': 1, 'meta_type': 1, 'zmi_icon': 1,
             'icon': 1}


# OFS's Item computes __name__ from the id, where the core service has
# __name__ None (ILocation's); the item's wins, as it comes first.
class TaskService(SimpleItem, core.TaskService):  # type: ignore[misc]
    """A zodbtasks service that lives in a Zope folder.

    Everything a `zodbtasks.service.TaskService` does, plus what Zope asks
    of an item: an id and title, the Security tab, a place in the Add menu.
    Its "Jobs" tab is zodbtasks' dashboard.
    """

    meta_type = 'zodbtasks Task Service'
    zmi_icon = 'fas fa-tasks'
    title = ''
    # Item's is 1 (everything); a mapping of names narrows it.
    __allow_access_to_unprotected_subobjects__ = _READABLE  # type: ignore[assignment]

    # One tab more than SimpleItem's tuple of two.
    manage_options = (  # type: ignore[assignment]
        {'label': 'Jobs', 'action': 'manage_jobs'},
    ) + SimpleItem.manage_options

    security = ClassSecurityInfo()
    # Reaching the service is as for any item; its methods have their own
    # permissions (see configure.zcml).
    security.declareObjectProtected('Access contents information')

    def __init__(self, id=None, title=''):
        core.TaskService.__init__(self)
        self.id = id
        self.title = title

    security.declareProtected(_MANAGE, 'manage_main')

    def manage_main(self, REQUEST=None):
        """The management screen: the dashboard's list of jobs."""
        if REQUEST is not None:
            REQUEST.RESPONSE.redirect(self.absolute_url() + '/manage_jobs')
        return ''

    index_html = None   # nothing to show without the management screen

    # Processor threads find a service by its keys from the database root:
    # in Zope, its physical path below the root's Application.

    def startProcessing(self, path=None):
        """Start a processor thread for this service."""
        core.TaskService.startProcessing(self, path or servicePath(self))

    def stopProcessing(self):
        """Stop this service's processor thread after the job in hand."""
        from zodbtasks import threads
        threads.stopProcessing(self, servicePath(self))

    def isProcessing(self):
        """Whether a processor thread runs for this service."""
        from zodbtasks import threads
        return threads.isProcessing(self, servicePath(self))


InitializeClass(TaskService)


def added(service, event):
    """Subscriber: a service stored with ``folder[name] = TaskService()``
    takes ``name`` as its id, as if it had been made with it."""
    name = getattr(event, 'newName', None)
    if name and isinstance(service, TaskService) and service.id != name:
        service._setId(name)


def servicePath(service):
    """The keys from the database root to a service stored in Zope: its
    physical path below the root's ``Application``."""
    getPhysicalPath = getattr(service, 'getPhysicalPath', None)
    if callable(getPhysicalPath) and getattr(service, 'aq_parent',
                                             None) is not None:
        keys = tuple(k for k in getPhysicalPath() if k)
        root = service._p_jar.root() if service._p_jar is not None else {}
        return (('Application',) + keys) if 'Application' in root else keys
    from zodbtasks.paths import findServicePath
    return findServicePath(service)


def manage_addTaskServiceForm(self, REQUEST=None):
    """A form to add a task service to a folder."""
    return _ADD_FORM % {'action': 'manage_addTaskService'}


def manage_addTaskService(self, id, title='', REQUEST=None):
    """Add a task service called ``id`` to this folder."""
    self._setObject(id, TaskService(id, title))
    if REQUEST is not None:
        REQUEST.RESPONSE.redirect(self.absolute_url() + '/manage_main')
    return id


_ADD_FORM = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Add zodbtasks Task Service</title></head>
<body><h2>Add zodbtasks Task Service</h2>
<form action="%(action)s" method="post">
<p><label>Id <input name="id" value="tasks" required></label></p>
<p><label>Title <input name="title"></label></p>
<p><button type="submit">Add</button></p>
</form></body></html>
"""
