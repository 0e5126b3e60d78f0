"""Task utilities: the code that jobs run."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zope.interface import implementer

from zodbtasks.interfaces import ITask


class TaskError(Exception):
    """Raised by a task to fail its job with a readable message.

    The message becomes the job's error; no traceback is shown for it.
    """


@implementer(ITask)
class SimpleTask:
    """Adapt a plain function of one argument, the input, into a task."""

    def __init__(self, func: Callable[[Any], object]) -> None:
        self.func = func

    def __call__(self, service: object, jobid: int, input: Any) -> object:
        return self.func(input)

    def __repr__(self) -> str:
        return '<%s %r>' % (self.__class__.__name__, self.func)


class Retry(Exception):
    """Raised by a task to have its job tried again.

    ``delay`` is the number of seconds to wait (default: the job's backoff).
    A retry counts against the job's ``retries``; with none left, the job
    fails with ``message``.
    """

    def __init__(self, message: str = 'the task asked to be retried',
                 delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay
