"""What a running task may ask about its job, and tell it.

A task keeps the reference signature ``task(service, jobid, input)``; when it
wants more, it asks for the context of the job it is running::

    from zodbtasks.context import current

    def import_feed(input):
        ctx = current()
        for n, item in enumerate(items):
            ...
            ctx.progress(n / len(items), 'imported %s' % item)
            ctx.heartbeat()

A job that runs more than once (a cron or interval job, or a job retried)
keeps what it needs from one run to the next in ``ctx.data``, a persistent
mapping stored on the job::

    def poll_feed(input):
        data = current().data
        items = fetch(since=data.get('last'))
        ...
        data['last'] = items[-1].id

The service sets the context up around each run, in the thread that runs it.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Any

from persistent.mapping import PersistentMapping

if TYPE_CHECKING:
    from zodbtasks.interfaces import IJob

_local = threading.local()

#: How much log a job keeps, in characters, before it drops its oldest lines.
LOG_LIMIT = 64 * 1024


def current() -> JobContext | None:
    """The context of the job running in this thread, or None."""
    return getattr(_local, 'context', None)


class JobContext:
    """The running job's view of itself; see the module docstring."""

    def __init__(self, service: Any, job: IJob, now: float,
                 heartbeat: Callable[[], float | None] | None = None) -> None:
        self.service = service
        self.job = job
        self.now = now
        self._heartbeat = heartbeat

    @property
    def jobid(self) -> int:
        return self.job.id

    @property
    def attempt(self) -> int:
        """Which attempt this run is: 1 for the first."""
        return self.job.attempts

    @property
    def data(self) -> PersistentMapping:
        """The job's mapping of state kept between its runs.

        It is made, and stored on the job, the first time a task asks for
        it: a job whose tasks never ask stores nothing. A run that writes to
        it writes to the database, so the run commits in a transaction of
        its own, with the rest of what the task wrote; a failed run's
        changes to it are rolled back with the rest (unlike its log and
        progress), so the next run sees what the last successful run left.
        As with any persistent mapping, a change inside a value (a list
        appended to) is not seen: store a new value, or a persistent one.
        """
        data = self.job.data
        if data is None:
            data = self.job.data = PersistentMapping()
        return data

    def log(self, message: object) -> None:
        """Append a line to the job's log, which keeps its last 64 KiB."""
        appendLog(self.job, str(message))

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Record how far the job has got, as a fraction from 0 to 1."""
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
                or not 0 <= fraction <= 1:
            raise ValueError('progress must be a number from 0 to 1, not %r'
                             % (fraction,))
        self.job.progress = (fraction, message)

    def heartbeat(self) -> float | None:
        """Extend the lease of a job claimed by a worker.

        Raises `zodbtasks.interfaces.LeaseLost` if the worker no longer holds
        the job; the task should stop. Returns the lease's new end, or None
        when the job runs without a lease (in the caller's transaction).
        """
        if self._heartbeat is not None:
            return self._heartbeat()
        return None

    def __enter__(self) -> JobContext:
        self._outer = current()
        _local.context = self
        return self

    def __exit__(self, *exc: object) -> None:
        _local.context = self._outer


def appendLog(job: IJob, text: str, limit: int = LOG_LIMIT) -> None:
    """Add ``text`` as lines at the end of ``job.log``, dropping old lines.

    The log is a tuple of lines. When it outgrows ``limit`` characters its
    oldest lines go, and a first line says how many went in all.
    """
    lines = list(job.log or ())
    dropped = 0
    if lines and lines[0].startswith(_MARKER[0]) \
            and lines[0].endswith(_MARKER[1]):
        dropped = int(lines.pop(0)[len(_MARKER[0]):-len(_MARKER[1])])
    # A line longer than the whole log is cut so that it fits, newline and all.
    lines.extend(line[:limit - 1] for line in (text.splitlines() or ['']))
    size = sum(len(line) + 1 for line in lines)
    while size > limit:
        size -= len(lines.pop(0)) + 1
        dropped += 1
    if dropped:
        lines.insert(0, '%s%d%s' % (_MARKER[0], dropped, _MARKER[1]))
    job.log = tuple(lines)


_MARKER = ('[', ' earlier lines dropped]')
