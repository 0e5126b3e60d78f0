"""Tasks that worker processes import in the tests (``--tasks worker_tasks``).

They leave traces in files, so that the tests can count what ran where.
"""
import os
import time

import zope.component

from zodbtasks.context import current
from zodbtasks.interfaces import ITask


def _append(path, text):
    """Append one line with a single write, so that lines never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (text + '\n').encode())
    finally:
        os.close(fd)


def append_id(service, jobid, input):
    """Append the job's id to the file ``input``."""
    _append(input, str(jobid))
    return jobid


def hang_first(service, jobid, input):
    """On its first attempt, say so in ``input['started']`` and hang.

    Later attempts append the job id to ``input['done']`` and return.
    """
    attempt = current().attempt
    if attempt == 1:
        _append(input['started'], str(jobid))
        time.sleep(input.get('seconds', 120))
        return 'woke up'
    _append(input['done'], str(jobid))
    return 'attempt %d' % attempt


def wait_for_file(service, jobid, input):
    """Say so in ``input['started']``, then wait for ``input['release']``."""
    _append(input['started'], str(jobid))
    deadline = time.monotonic() + input.get('seconds', 60)
    while not os.path.exists(input['release']):
        if time.monotonic() > deadline:
            raise RuntimeError('nobody released me')
        time.sleep(0.01)
    return 'released'


def noop(service, jobid, input):
    return None


TASKS = {'append_id': append_id, 'hang_first': hang_first,
         'wait_for_file': wait_for_file, 'noop': noop}


def register():
    """Register the tasks (again: tests start with an empty registry)."""
    for name, task in TASKS.items():
        zope.component.provideUtility(task, ITask, name=name)


register()


# -- Tasks of the fault tests (test_faults.py) --------------------------------

def append_run(service, jobid, input):
    """Append ``<job id> <worker pid>`` to the file ``input``: the tests can
    tell which worker ran each copy of a job that ran twice."""
    _append(input, '%d %d' % (jobid, os.getpid()))
    return jobid


def overrun(service, jobid, input):
    """Sleep ``input['seconds']`` without a heartbeat.

    Appends ``<job id> <worker pid> <attempt>`` to ``input['started']`` when
    it starts and to ``input['ended']`` when it wakes up.
    """
    line = '%d %d %d' % (jobid, os.getpid(), current().attempt)
    _append(input['started'], line)
    time.sleep(input['seconds'])
    _append(input['ended'], line)
    return 'woke up'


def append_slowly(service, jobid, input):
    """Append the job's id to ``input['ledger']``, then sleep
    ``input['seconds']``: a job that writes nothing and takes a while."""
    _append(input['ledger'], str(jobid))
    time.sleep(input['seconds'])
    return jobid


TASKS.update(append_run=append_run, overrun=overrun,
             append_slowly=append_slowly)
register()
