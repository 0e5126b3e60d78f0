"""The task of ``bench_latency.py``: note when each job starts.

``stamp`` appends "<input> <time.time()>" to the file named by
``$ZODBTASKS_BENCH_STAMPS``, from whichever process runs it (a zodbtasks
worker thread or process, or huey's consumer: ``_latency_tasks.huey``).
"""
import os
import time

import zope.component

from zodbtasks.interfaces import ITask


def _note(label):
    fd = os.open(os.environ['ZODBTASKS_BENCH_STAMPS'],
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, ('%s %.6f\n' % (label, time.time())).encode())
    finally:
        os.close(fd)


def stamp(service, jobid, input):
    _note(input)


zope.component.provideUtility(stamp, ITask, name='stamp')


def _makeHuey():
    path = os.environ.get('ZODBTASKS_BENCH_HUEY')
    if not path:
        return None
    from huey import SqliteHuey
    instance = SqliteHuey('latency', filename=path)

    @instance.task()
    def hueyStamp(label):
        _note(label)
    instance.stamp = hueyStamp
    return instance


huey = _makeHuey()
