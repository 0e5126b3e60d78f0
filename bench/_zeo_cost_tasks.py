"""The no-op task of ``bench_zeo_cost.py``'s workers, and a count of the
conflicts each worker retried, by step, written to
``$ZODBTASKS_BENCH_CONFLICTS.<pid>`` as they happen.

The worker (`zodbtasks.processor.SimpleProcessor`) backs off after each
conflict it retries; the count is taken there, from the step that called:
``claim`` (a claim, with the outcomes recorded since the last one), ``run``
(a job's own transaction), or the step ``_transact`` was given (or the
name of its function: ``record`` for an outcome recorded on its own).
"""
import collections
import json
import os
import sys

import zope.component

from zodbtasks import processor
from zodbtasks.interfaces import ITask

STEPS = {'_stepOnce': 'claim', '_runAttempts': 'run'}
COUNTS = collections.Counter()
_backoff = processor.SimpleProcessor._backoff


def noop(service, jobid, input):
    return None


def _counting(self, attempt):
    caller = sys._getframe(1)
    step = caller.f_code.co_name
    if step == '_transact':
        step = caller.f_locals.get('step') or getattr(
            caller.f_locals.get('func'), '__name__', '?')
    COUNTS[STEPS.get(step, step)] += 1
    path = os.environ.get('ZODBTASKS_BENCH_CONFLICTS')
    if path:
        with open('%s.%d' % (path, os.getpid()), 'w') as f:
            json.dump(COUNTS, f)
    return _backoff(self, attempt)


zope.component.provideUtility(noop, ITask, name='noop')
processor.SimpleProcessor._backoff = _counting
