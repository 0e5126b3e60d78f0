"""Tasks that worker processes import in the routing tests
(``--tasks routing_tasks``).

``note_start`` leaves one line per run in a ledger file, written with a
single ``O_APPEND`` write as the run begins: the order of the lines is the
order in which the runs began, across every worker process.
"""
import os
import time

import zope.component
from worker_tasks import _append

from zodbtasks.interfaces import ITask




def note_start(service, jobid, input):
    """Append ``<time_ns> <job id> <queue> <priority> <pid>`` to
    ``input['ledger']``, then sleep ``input['seconds']`` (if given).

    The queue and priority are read from the job as the worker sees it.
    Returns the worker's pid.
    """
    job = service.jobs[jobid]
    _append(input['ledger'], '%d %d %s %d %d' % (
        time.time_ns(), jobid, job.queue, job.priority, os.getpid()))
    seconds = input.get('seconds')
    if seconds:
        time.sleep(seconds)
    return os.getpid()


TASKS = {'note_start': note_start}


def register():
    """Register the tasks (again: tests start with an empty registry)."""
    for name, task in TASKS.items():
        zope.component.provideUtility(task, ITask, name=name)


register()
