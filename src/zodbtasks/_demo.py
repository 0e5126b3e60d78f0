"""The tasks and jobs of ``zodbtasks demo``."""
import time

import zope.component

from zodbtasks import SimpleTask
from zodbtasks import TaskError
from zodbtasks.context import current
from zodbtasks.interfaces import ITask


def greet(input):
    return 'Hello, %s!' % input


def report(input):
    """A slow job that tells how far it got."""
    ctx = current()
    for step in range(1, 6):
        time.sleep(0.3)
        ctx.log('step %d of 5' % step)
        ctx.progress(step / 5, 'step %d' % step)
    return 'report ready'


def flaky(input):
    """Fails on its first two attempts."""
    if current().attempt < 3:
        raise TaskError('the printer is jammed (attempt %d)'
                        % current().attempt)
    return 'printed'


def tick(service, jobid, input):
    root = service._p_jar.root()
    root['ticks'] = root.get('ticks', 0) + 1
    return 'tick number %d' % root['ticks']


def register():
    for name, func in [('greet', greet), ('report', report),
                       ('flaky', flaky)]:
        zope.component.provideUtility(SimpleTask(func), name=name)
    zope.component.provideUtility(tick, ITask, name='tick')


def addJobs(service, fresh, now):
    for who in ('world', 'ZODB'):
        service.add('greet', who, now=now)
    service.add('report', now=now)
    service.add('flaky', retries=3, retryDelay=2, now=now)
    service.addCronJob('greet', 'the future', delay=6, now=now)
    if fresh:
        # Every five seconds, kept across runs of the demo.
        service.addCronJob('tick', cron='* * * * * */5', now=now)
