"""zodbtasks in a Zope 5 application server (the ``zope`` extra).

Include this package's ZCML (a file in ``etc/package-includes``, see
docs/zope.rst) and it:

* declares the permissions "zodbtasks: Add jobs" and "zodbtasks: Manage task
  services" and protects every method of the service with one of them;
  methods that change anything can only be called by POST (`publish`);
* makes `TaskService` (this package's) a Zope object that the ZMI can add,
  list and manage: its "Jobs" tab is the dashboard of zodbtasks.dashboard;
* runs every job in a Zope context: the application wrapped in a request,
  as the user who added the job or the ``run-as`` user, in the job's site
  (`context`);
* starts processors when the server opens its database, never in scripts
  (``zconsole run``), and stops them, after the job in hand, before the
  server closes its databases (`lifetime`).

The core of zodbtasks never imports this package nor AccessControl.
"""
from zodbtasks.zope.service import TaskService  # noqa: F401

#: The permissions this package declares (titles, as Zope shows them).
ADD_JOBS = 'zodbtasks: Add jobs'
MANAGE = 'zodbtasks: Manage task services'


def initialize(context):
    """Register the service with Zope's Add menu (`five:registerPackage`)."""
    from zodbtasks.zope import service
    context.registerClass(
        service.TaskService,
        meta_type=service.TaskService.meta_type,
        permission=MANAGE,
        constructors=(service.manage_addTaskServiceForm,
                      service.manage_addTaskService))
