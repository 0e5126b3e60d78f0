"""Stand-ins for tests of code that uses a task service.

As lovely.remotetask's ``testing`` module offered, for the tests written
against it:

`TaskServiceStub`
    a real `TaskService` (jobs are added, run, cancelled as usual) that
    runs only the tasks registered under `ITaskStub`, so that a test can put
    stand-ins in place of tasks that would convert videos or send mail. Its
    job ids are 1, 2, 3... in the order jobs are added, so that tests can
    print them.
`ITaskStub`
    the interface those stand-ins are registered under.
`ExceptionTask`
    a stand-in that always fails, for testing what happens then.

(The package's own test helpers -- servers on the loopback interface and
such -- are in ``zodbtasks._testing``.)
"""
from __future__ import annotations

from typing import NoReturn

from zope.interface import implementer

from zodbtasks import interfaces
from zodbtasks.interfaces import ITaskStub
from zodbtasks.service import TaskService

__all__ = ['ExceptionTask', 'ITaskStub', 'TaskServiceStub']


@implementer(interfaces.IScheduledTaskService)
class TaskServiceStub(TaskService):
    """A task service that runs the tasks registered as `ITaskStub`.

    Two behaviours differ from `TaskService`, as lovely.remotetask's stub
    had them: adding a job for a task that is not registered raises
    ``ValueError('Task does not exist')``, and cancelling an unknown job id
    does nothing.
    """

    taskInterface = ITaskStub
    #: The id of the latest job added.
    _lastId = 0

    def _newId(self):
        self._lastId += 1
        return self._lastId

    def _resolveNew(self, task):
        try:
            return super()._resolveNew(task)
        except ValueError:
            raise ValueError('Task does not exist') from None

    def cancel(self, jobid: int, now: float | None = None) -> None:
        try:
            self._job(jobid)
        except KeyError:
            self._now(now)      # a bad time is refused all the same
            return
        super().cancel(jobid, now)


@implementer(ITaskStub)
class ExceptionTask:
    """A task that raises ``exception(message)`` every time it runs.

    ``exception`` is an exception class, `Exception` by default: a task
    that fails with something other than `TaskError`.
    """

    def __init__(self, message: str = 'An error occurred.',
                 exception: type[Exception] = Exception) -> None:
        if not (isinstance(exception, type)
                and issubclass(exception, Exception)):
            raise TypeError('ExceptionTask raises an Exception subclass, not '
                            '%r' % (exception,))
        if not isinstance(message, str):
            raise TypeError('the message of an ExceptionTask is a str, not %r'
                            % (message,))
        self.message = message
        self.exception = exception

    def __call__(self, service: object, jobid: int, input: object) -> NoReturn:
        raise self.exception(self.message)

    def __repr__(self) -> str:
        return '<ExceptionTask raising %s(%r)>' % (
            self.exception.__name__, self.message)
