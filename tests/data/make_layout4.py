"""Write ``layout4.fs``: a small database as zodbtasks 0.1.0 stored it.

The committed ``layout4.fs`` was made by this script with the code of layout
4 (before the service was split into modules), so that tests can show that
databases written then still open, and that their jobs still run, whatever
the modules look like now.  Do not regenerate it with newer code: that would
test nothing.  Run as ``python tests/data/make_layout4.py OUT.fs``.
"""
import sys

import transaction
import ZODB
import ZODB.FileStorage
import zope.component

import zodbtasks
from zodbtasks.service import TaskService

#: A fixed clock: 2026-12-01 00:00 UTC.
T0 = 1764547200.0


def echo(input):
    return input


def fail(input):
    raise zodbtasks.TaskError('failed on purpose: %r' % (input,))


def build(path):
    zope.component.provideUtility(zodbtasks.SimpleTask(echo), name='echo')
    zope.component.provideUtility(zodbtasks.SimpleTask(fail), name='fail')
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    conn = db.open()
    root = conn.root()
    service = root['tasks'] = TaskService()
    service.setLimit('mail', concurrency=2, rate='10/m', now=T0)
    ids = {
        'queued': service.add('echo', 'queued', now=T0),
        'urgent': service.add('echo', 'urgent', now=T0, queue='fast',
                              priority=0),
        'later': service.add('echo', 'later', startLater=True, now=T0),
        'limited': service.add('echo', 'limited', now=T0, limit='mail'),
        'delayed': service.addCronJob('echo', 'delayed', delay=3600, now=T0),
        'cron': service.addCronJob('echo', 'cron', minute=(0, 30),
                                   hour=(9,), now=T0, retries=2),
        'cronstring': service.addCronJob(
            'echo', 'cronstring', cron='15 6 * * 1-5',
            timezone='Europe/Berlin', now=T0),
        'every': service.addCronJob('echo', 'every', interval=90, now=T0,
                                    maxRuns=5),
        'done': service.add('echo', 'done', now=T0, ttl=86400),
        'failed': service.add('fail', 'failed', now=T0),
        'paused': service.add('echo', 'paused', now=T0),
        'leased': service.add('echo', 'leased', now=T0),
    }
    service.pause(ids['paused'], now=T0)
    transaction.commit()
    # Run the four at the head of the default queue ('queued', 'limited',
    # 'done', 'failed'), then lease the next one ('leased') to a worker.
    for _ in range(4):
        service.processNext(T0 + 1)
    service.registerWorker('old-worker', T0 + 2, 'host', 1234, 5.0,
                           tasks=('echo',), queues=('default',))
    claimed = service.claimNextJob(now=T0 + 2, worker='old-worker',
                                   lease=30)
    transaction.commit()
    root['ids'] = ids
    root['claimed'] = claimed
    transaction.commit()
    conn.close()
    db.pack()
    db.close()
    return ids


if __name__ == '__main__':
    print(build(sys.argv[1]))
