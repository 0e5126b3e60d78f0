"""How URLs reach a task service: only its declared methods, and only those
that read by GET.

Zope publishes any method with a docstring; without declarations anonymous
visitors could pause the service by following a link. The ZCML of this
package protects every method with a permission (the workers' methods are
private), and this traverser makes sure that (1) no attribute of the core
service other than the methods below is reached by URL, and (2) methods that change something answer 405 to any
request but POST, so that no link or image on another page can call them.
"""
from zExceptions import MethodNotAllowed
from zExceptions import NotFound
from ZPublisher.BaseRequest import DefaultPublishTraverse

from zodbtasks.zope.service import _CORE_ATTRIBUTES

#: Methods that only read: callable by GET (with their permission).
READING = frozenset([
    'getAvailableTasks', 'getStatus', 'getResult', 'getError',
    'hasJobsWaiting', 'isIdle', 'isPaused', 'isProcessing',
    'countJobs', 'countsComplete', 'jobCounts', 'oldestQueued',
    'overdueJobs', 'upcomingJobs', 'expiredLeases',
])

#: Methods that change the service or run code: POST only.
CHANGING = frozenset([
    'add', 'addCronJob', 'buildCounts', 'cancel', 'clean', 'pause',
    'process', 'processNext', 'purgeExpired', 'remove', 'reschedule',
    'resume', 'retry', 'runNow', 'startJob', 'startProcessing',
    'stopProcessing', 'upgrade',
])

# Everything else of the core service -- the methods that workers call in
# their own transactions (declared private in ZCML), its settings and
# data, and any method added later without a declaration -- is not found.


class ServiceTraverser(DefaultPublishTraverse):
    """Traverse a task service: see the module docstring."""

    def publishTraverse(self, request, name):
        if name in CHANGING:
            if request.get('REQUEST_METHOD', 'GET').upper() != 'POST':
                raise MethodNotAllowed(
                    '%s changes the task service: use POST' % name)
        elif name not in READING and (
                name in _CORE_ATTRIBUTES or name in _stored(self.context)):
            # A setting, the job data, or a method nobody declared yet.
            raise NotFound(name)
        if name in CHANGING or name in READING:
            # Declared in ZCML: published whether or not it has a docstring
            # (Zope's rule for undeclared methods); the publisher checks
            # the permission.
            method = getattr(self.context, name, None)
            if method is None:
                raise NotFound(name)
            return method
        return super().publishTraverse(request, name)


def _stored(service):
    """The names of what a service holds in its own state (its jobs and
    settings) that URLs must not reach; its id and title are shown."""
    base = getattr(service, 'aq_base', service)
    return set(getattr(base, '__dict__', ())) - {'id', 'title'}
