"""Task utilities: the code that jobs run."""
from zope.interface import implementer

from zodbtasks.interfaces import ITask


class TaskError(Exception):
    """Raised by a task to fail its job with a readable message.

    The message becomes the job's error; no traceback is shown for it.
    """


@implementer(ITask)
class SimpleTask:
    """Adapt a plain function of one argument, the input, into a task."""

    def __init__(self, func):
        self.func = func

    def __call__(self, service, jobid, input):
        return self.func(input)

    def __repr__(self):
        return '<%s %r>' % (self.__class__.__name__, self.func)
