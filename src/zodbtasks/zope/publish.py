"""How URLs reach a task service: only its declared methods, and only those
that read by GET.

Zope publishes any method with a docstring; without declarations anonymous
visitors could pause the service by following a link. The ZCML of this
package protects every method with a permission (the workers' methods are
private), and this traverser makes sure that (1) no attribute of the core
service other than the methods below is reached by URL, and (2) methods
that change something answer 405 to any request but POST, so that no link
or image on another page can call them.

(3) What a URL reaches is the method as `published` makes it: the service's
refusals of what the request asked for (an unknown task, a bad schedule, a
job that does not exist) become Zope's own client errors, 400 Bad Request
and 404 Not Found, with the reason in the page; the publisher aborts the
transaction as for any error.
"""
import functools
import html
import inspect
import types

from zExceptions import BadRequest
from zExceptions import MethodNotAllowed
from zExceptions import NotFound
from ZPublisher.BaseRequest import DefaultPublishTraverse

from zodbtasks.job import CronJobArguments
from zodbtasks.job import JobOptions
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

#: What a request may give these methods besides their named arguments:
#: the keywords their ``**options`` take (the job options, and for
#: addCronJob the schedule: ``cron``, ``interval``, ``timezone``, ...).
KEYWORDS = {
    'add': tuple(sorted(JobOptions.__optional_keys__)),
    'addCronJob': tuple(sorted(CronJobArguments.__optional_keys__)),
}

#: The service's refusals of its arguments.
REFUSALS = (LookupError, TypeError, ValueError)

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
            return published(method, name)
        return super().publishTraverse(request, name)


_UNSET = object()


def published(method, name):
    """The bound ``method`` of a service as a URL calls it.

    It is a method of the same service, with the same name and named
    arguments (so that the publisher fills them from the request and
    checks the same permission), plus the `KEYWORDS` of ``name``. A job id
    that is not an int is refused before the call, one that no job has
    gets 404 Not Found, and a LookupError, TypeError or ValueError of the
    call becomes 400 Bad Request with the same message.
    """
    func = method.__func__
    named = [p for p in inspect.signature(func).parameters.values()
             if p.kind is p.POSITIONAL_OR_KEYWORD]
    keywords = KEYWORDS.get(name, ())
    count = len(named) - 1                  # the named ones, without self
    names = [p.name for p in named[1:]] + list(keywords)

    def call(self, *args):
        values = dict(zip(names, args))
        jobid = values.get('jobid')
        if jobid is not None:
            checkJob(self, jobid)
        given = {k: v for k, v in zip(keywords, args[count:])
                 if v is not _UNSET}
        try:
            return func(self, *args[:count], **given)
        except REFUSALS as error:
            raise clientError(BadRequest, 'Invalid request', error) \
                from error

    functools.update_wrapper(call, func)
    call.__signature__ = inspect.Signature(
        named + [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                   default=_UNSET) for k in keywords])
    return types.MethodType(call, method.__self__)


def checkJob(service, jobid):
    """Refuse a job id that is not an int (400) or that no job of
    ``service`` has (404)."""
    if not isinstance(jobid, int) or isinstance(jobid, bool):
        raise clientError(
            BadRequest, 'Invalid request',
            'a job id is a whole number, not %r (send it as jobid:int)'
            % (jobid,))
    try:
        service.getStatus(jobid)
    except KeyError as error:
        raise clientError(NotFound, 'Resource not found', error) from None


def clientError(cls, title, error):
    """A ``cls`` of zExceptions whose page says ``error``, escaped, as
    Zope's own ``notFoundError`` does."""
    message = (str(error.args[0]) if isinstance(error, KeyError)
               and len(error.args) == 1 else str(error))
    made = cls(message)
    made.title = title
    made.detail = '<p>%s</p>' % html.escape(message, True)
    return made


def _stored(service):
    """The names of what a service holds in its own state (its jobs and
    settings) that URLs must not reach; its id and title are shown."""
    base = getattr(service, 'aq_base', service)
    return set(getattr(base, '__dict__', ())) - {'id', 'title'}
