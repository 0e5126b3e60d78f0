"""Running one task: find it, run it in the job's transaction, and say what
it came to (an `Outcome`).

The runner records nothing on the job but what the task told it through its
context (log lines, progress): recording the outcome is the service's, and
choosing the transaction and the thread is the caller's.
"""
from __future__ import annotations

import importlib
import pickle
import traceback
from typing import Any

import zope.component
from transaction.interfaces import TransientError
from zope.interface import implementer

from zodbtasks import interfaces
from zodbtasks.context import JobContext
from zodbtasks.context import appendLog
from zodbtasks.interfaces import TaskMissing
from zodbtasks.job import checkDuration
from zodbtasks.middleware import run_task
from zodbtasks.task import Retry
from zodbtasks.task import TaskError


@implementer(interfaces.IOutcome)
class Outcome:
    """What a run of a job came to, before it is recorded on the job."""

    #: The failure's message and traceback, or None after a success.
    error: str | None
    traceback: str | None

    def __init__(self, job: interfaces.IJob, completed: float,
                 output: Any = None,
                 failure: tuple[str, str | None] | None = None,
                 retryDelay: float | None = None,
                 started: float | None = None) -> None:
        self.jobid = job.id
        self.started = started
        self.completed = completed
        self.output = output
        self.failed = failure is not None
        self.error, self.traceback = failure or (None, None)
        self.retryDelay = retryDelay
        self.log = job.log
        self.progress = job.progress

    def __repr__(self) -> str:
        return '<Outcome of job %s: %s>' % (
            self.jobid, 'failed: %s' % self.error if self.failed else 'ok')


class InputTask:
    """Call a function or method with the job's input alone."""

    def __init__(self, func):
        self.func = func

    def __call__(self, service, jobid, input):
        return self.func(input)


def import_dotted(name):
    """The object a dotted name points to, or None if it cannot be found."""
    module, _, attr = name.rpartition('.')
    try:
        found = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None
    return found if callable(found) else None


def trusted(prefixes, module):
    """Whether ``module`` is one of ``prefixes`` or inside one of them."""
    return isinstance(module, str) and any(
        module == p or module.startswith(p + '.') for p in prefixes)


def untrusted(prefixes, module, what):
    """Why a task from ``module`` may not run, or None if it may."""
    if trusted(prefixes, module):
        return None
    return ('%s is not a registered task, and its module %r is not in '
            'the trustedModules setting of the service (%s); register '
            'the task, or add its module to trustedModules'
            % (what, module, ', '.join(map(repr, prefixes)) or 'empty'))


class Untrusted(Exception):
    """A job's task is one the service must not run."""


def find_task(job, interface, prefixes, available=None):
    """The callable that runs ``job``: its target's method, the task
    registered as ``interface`` under its name, or (from a module in
    ``prefixes``) the function its dotted name names.

    Raises `TaskMissing` if there is none, `Untrusted` if there is one
    the service must not run; both say why.
    """
    target = getattr(job, 'target', None)
    if target is not None:
        # Checked at run time too: the job may predate the setting.
        why = untrusted(prefixes, type(target).__module__,
                        'the method %r of %r' % (job.task, target))
        if why is not None:
            raise Untrusted(why)
        method = getattr(target, job.task, None)
        if method is None:
            raise TaskMissing('%r has no method %r any more'
                              % (target, job.task))
        return InputTask(method)
    task = zope.component.queryUtility(interface, job.task)
    if task is None and '.' in job.task:
        why = untrusted(prefixes, job.task.rpartition('.')[0],
                        repr(job.task))
        if why is not None:
            raise Untrusted(why)
        task = import_dotted(job.task)
        if task is not None and not interfaces.ITask.providedBy(task):
            task = InputTask(task)   # a plain function
    if task is None:
        names = sorted(available() if available is not None else (
            name for name, _ in zope.component.getUtilitiesFor(interface)))
        raise TaskMissing('no task is registered under the name %r; '
                          'registered tasks: %s' % (
                              job.task, ', '.join(map(repr, names))
                              or 'none'))
    return task


#: What `retry_delay_of` gives for a delay that is refused.
REFUSED = object()


def retry_delay_of(retry):
    """The delay a `Retry` asks for, None, or `REFUSED` (the reason is
    then ``retry.refused``)."""
    if retry.delay is None:
        return None
    try:
        checkDuration(retry.delay, 'delay')
    except (TypeError, ValueError) as error:
        retry.refused = str(error)
        return REFUSED
    return retry.delay


def execute(service, job, now, txn, heartbeat=None, completed=None,
            missing=False, middlewares=()):
    """Run the task of ``job`` at ``now`` in the transaction ``txn``, and
    return its `Outcome`.

    A task that fails has its changes rolled back (to a savepoint), but
    what it told its job stays, with the traceback added to the log.
    ``completed`` gives the outcome's end (default: ``now``). With
    ``missing``, a task that cannot be found raises `TaskMissing` instead
    of making a failed outcome.
    """
    failure = retryDelay = output = None
    try:
        task = find_task(job, service.taskInterface, service.trustedModules,
                         service.getAvailableTasks)
    except TaskMissing as error:
        if missing:
            raise
        task, failure = None, (str(error), None)
    except Untrusted as error:
        task, failure = None, (str(error), None)
    savepoint = txn.savepoint(optimistic=True)
    if task is not None:
        try:
            with JobContext(service, job, now, heartbeat):
                output = run_task(task, service, job, now, middlewares)
            pickle.dumps(output, 3)
        except TransientError:
            raise
        except Retry as error:
            failure = (str(error), traceback.format_exc())
            retryDelay = retry_delay_of(error)
            if retryDelay is REFUSED:
                retryDelay = None
                failure = ('%s (its Retry delay was refused: %s)'
                           % (error, error.refused), failure[1])
        except TaskError as error:
            failure = (str(error), traceback.format_exc())
        except Exception as error:
            failure = ('%s: %s' % (type(error).__name__, error),
                       traceback.format_exc())
    if failure is not None:
        # Undo what the task changed, but keep what it told its job.
        told = job.log, job.progress
        savepoint.rollback()
        job.log, job.progress = told
        appendLog(job, failure[1] or failure[0])
        output = None
    return Outcome(job, now if completed is None else completed(), output,
                   failure, retryDelay, started=now)
