"""The no-op task of ``bench_zeo_cost.py``'s workers, and a count of the
conflicts each worker retried, by step, written to
``$ZODBTASKS_BENCH_CONFLICTS.<pid>`` as they happen.

The worker counts each conflict it retries (`zodbtasks.transactor.
Transactor.count`), by step: ``claim`` (a claim, with the outcomes recorded
since the last one), ``run`` (a job's own transaction), or ``record`` (an
outcome recorded on its own); the count is copied from there.
"""
import collections
import json
import os

import zope.component

from zodbtasks import transactor
from zodbtasks.interfaces import ITask

COUNTS = collections.Counter()
_count = transactor.Transactor.count


def noop(service, jobid, input):
    return None


def _counting(self, step):
    COUNTS[step or 'record'] += 1
    path = os.environ.get('ZODBTASKS_BENCH_CONFLICTS')
    if path:
        with open('%s.%d' % (path, os.getpid()), 'w') as f:
            json.dump(COUNTS, f)
    return _count(self, step)


zope.component.provideUtility(noop, ITask, name='noop')
transactor.Transactor.count = _counting
