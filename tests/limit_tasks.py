"""Tasks that worker processes import in the limit tests
(``--tasks limit_tasks``).

Each run appends ``S <time_ns> <job id> <pid>`` to a ledger as it begins and
``E <time_ns> <job id> <pid>`` as it ends, each with one ``O_APPEND`` write.
"""
import os
import time

import zope.component
from worker_tasks import _append
from zope.interface import implementer

from zodbtasks.interfaces import ITask




@implementer(ITask)
class Span:
    """Note the start, sleep ``input['seconds']``, note the end."""

    def __init__(self, concurrency=None, rate=None):
        self.concurrency = concurrency
        self.rate = rate

    def __call__(self, service, jobid, input):
        _append(input['ledger'], 'S %d %d %d' % (time.time_ns(), jobid,
                                                 os.getpid()))
        time.sleep(input.get('seconds', 0))
        _append(input['ledger'], 'E %d %d %d' % (time.time_ns(), jobid,
                                                 os.getpid()))
        return os.getpid()


TASKS = {'two_at_a_time': Span(concurrency=2),
         'ten_a_second': Span(rate='10/s')}


def register():
    """Register the tasks (again: tests start with an empty registry)."""
    for name, task in TASKS.items():
        zope.component.provideUtility(task, ITask, name=name)


register()
