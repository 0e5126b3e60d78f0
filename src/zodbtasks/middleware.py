"""Middlewares: code that wraps every run of a task.

A middleware is a callable ``middleware(run, call_next)``. It does what it
must before the task (set up a context, start a timer, open a resource),
calls ``call_next()`` to go on to the next middleware and at last to the task,
and returns what that returned, after its tear-down::

    def timed(run, call_next):
        began = time.monotonic()
        try:
            return call_next()
        finally:
            log.info('job %s took %.3f s', run.jobid,
                     time.monotonic() - began)

``run`` is a `Run`: the service, the job, the moment the run began, and the
task. A middleware may replace ``run.service`` or ``run.input`` before it
calls ``call_next``: the task receives the values in ``run`` (this is how the
Zope context hands tasks a service wrapped in its site and request).

Where they come from, in the order they run:

1. those given to the processor (``SimpleProcessor(..., middlewares=[...])``),
   in the order of the list;
2. those registered as utilities providing `IRunMiddleware`, in the order
   of their names.

Each wraps the ones after it, so the first to start is the last to end.

A middleware that raises before or after ``call_next`` fails the run: the
job's error says which middleware and what it raised. An error of the task
that a middleware lets through is the task's error, as without middlewares.
`Retry` and transient errors (conflicts) pass through unchanged.

A middleware runs in the run's transaction. One that writes to the database
makes every run commit on its own (the processor groups only the outcomes of
runs that wrote nothing): keep middlewares read-only unless the task writes.
"""
from collections.abc import Callable
from typing import Any

import zope.component
from transaction.interfaces import TransientError

from zodbtasks.interfaces import IRunMiddleware
from zodbtasks.task import Retry
from zodbtasks.task import TaskError


class MiddlewareError(TaskError):
    """A middleware failed; the run fails with this message."""

    def __init__(self, name, error):
        self.name = name
        self.error = error
        super().__init__('middleware %s failed: %s: %s'
                         % (name, type(error).__name__, error))


class Run:
    """One run of a task, as middlewares see it."""

    def __init__(self, service, job, now, task):
        self.service = service
        self.job = job
        self.now = now
        self.task = task
        self.input = job.input

    @property
    def jobid(self):
        return self.job.id

    def __repr__(self):
        return '<Run of job %s (%s)>' % (self.job.id, self.job.task)


#: The type of a middleware, for type checkers: ``middleware(run,
#: call_next)`` returns the task's output (or another one).
Middleware = Callable[[Run, Callable[[], Any]], Any]


def registered():
    """The middlewares registered as utilities: (name, middleware) pairs in
    the order of their names."""
    return sorted(zope.component.getUtilitiesFor(IRunMiddleware),
                  key=lambda item: item[0])


def middleware_name(middleware):
    """A readable name for a middleware given without one."""
    return getattr(middleware, '__name__', None) or repr(middleware)


def check_middlewares(middlewares):
    """``middlewares`` as a tuple of callables; TypeError names a bad one."""
    if middlewares is None:
        return ()
    if isinstance(middlewares, (str, bytes)) or callable(middlewares):
        raise TypeError('middlewares must be a list of callables '
                        'middleware(run, call_next), not %r' % (middlewares,))
    found = tuple(middlewares)
    for middleware in found:
        if not callable(middleware):
            raise TypeError('a middleware must be a callable '
                            'middleware(run, call_next), not %r'
                            % (middleware,))
    return found


def run_task(task, service, job, now, middlewares=()):
    """Call ``task(service, jobid, input)`` inside the middlewares.

    ``middlewares`` come first, then the registered ones.
    """
    chain = [(middleware_name(m), m) for m in middlewares] + registered()
    run = Run(service, job, now, task)
    if not chain:
        return task(service, job.id, job.input)
    return _call(chain, 0, run)


def _call(chain, index, run):
    if index == len(chain):
        return run.task(run.service, run.job.id, run.input)
    name, middleware = chain[index]
    passed = []

    def call_next():
        try:
            return _call(chain, index + 1, run)
        except BaseException as error:
            passed.append(error)
            raise

    try:
        return middleware(run, call_next)
    except (TransientError, Retry):
        raise
    except Exception as error:
        if passed and error is passed[-1]:
            raise          # from further in: not this middleware's failure
        raise MiddlewareError(name, error) from error
