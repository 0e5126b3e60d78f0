"""The no-op task of ``bench_scaling.py``'s workers, and what they count.

Imported by ``zodbtasks worker --tasks _scaling_tasks``, before the worker
opens its database: it replaces, on the class, the methods through which a
ZEO ``ClientStorage`` talks to its server (``ZEO.asyncio.client.
ClientRunner``: ``call``, ``load_before``, ``tpc_finish`` wait for a reply;
``prefetch`` asks for one but does not wait; ``async_`` and ``async_iter``
send without a reply). A ``ClientStorage`` binds ``call`` and ``async_``
when it is made, so this has to happen first. Each wrapper counts its calls
by method name and, for those that wait, the wall time waited.

It also times the worker's steps (`zodbtasks.steps.Steps.step`): how many,
how many claimed (asked for jobs), their wall time, and the round trips made
while a step ran. The conflicts retried come from `_zeo_cost_tasks`.

On SIGUSR1 it writes all that to
``$ZODBTASKS_BENCH_PROBE.worker.<pid>.json`` (with ``seq``, the number of
signals so far).
"""
import collections
import json
import os
import signal
import threading
import time

from ZEO.asyncio import client as zeoclient

import _zeo_cost_tasks  # noqa: F401 (the 'noop' task, conflicts by step)
from zodbtasks import steps

CALLS = collections.Counter()   # requests to the server, by kind
WAITED = collections.Counter()  # seconds waited for replies, by kind
STEPS = collections.Counter()   # steps, claims, their seconds and trips
_local = threading.local()
_seq = [0]


def _count(kind, waits, original):
    def wrapper(self, *args, **kw):
        name = ('%s %s' % (kind, args[0]) if kind in ('call', 'async_')
                else kind)
        CALLS[name] += 1
        if getattr(_local, 'step', False):
            STEPS['round trips' if waits else 'one-way'] += 1
        if not waits:
            return original(self, *args, **kw)
        start = time.perf_counter()
        try:
            return original(self, *args, **kw)
        finally:
            WAITED[name] += time.perf_counter() - start
    return wrapper


def _step(self, count=0, *args, _original=steps.Steps.step, **kw):
    _local.step = True
    start = time.perf_counter()
    try:
        return _original(self, count, *args, **kw)
    finally:
        _local.step = False
        STEPS['steps'] += 1
        STEPS['step seconds'] += time.perf_counter() - start
        if count:
            STEPS['claims'] += 1


def _snapshot(signum=None, frame=None):
    path = os.environ.get('ZODBTASKS_BENCH_PROBE')
    if not path:
        return
    _seq[0] += 1
    data = {'seq': _seq[0], 'time': time.time(), 'calls': CALLS,
            'waited': WAITED, 'steps': STEPS,
            'conflicts': _zeo_cost_tasks.COUNTS}
    name = '%s.worker.%d' % (path, os.getpid())
    with open(name + '.tmp', 'w') as f:
        json.dump(data, f)
    os.replace(name + '.tmp', name + '.json')


for _kind, _waits in (('call', True), ('load_before', True),
                      ('tpc_finish', True), ('prefetch', False),
                      ('async_', False), ('async_iter', False)):
    setattr(zeoclient.ClientRunner, _kind,
            _count(_kind, _waits, getattr(zeoclient.ClientRunner, _kind)))
steps.Steps.step = _step
signal.signal(signal.SIGUSR1, _snapshot)
