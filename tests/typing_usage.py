"""Code written as a user of zodbtasks would write it, for the type
checker: tests/test_typing.py runs mypy on it and expects no error. It is
never run or collected as a test."""
from __future__ import annotations

from zodbtasks.context import current
from zodbtasks.decorators import JobHandle
from zodbtasks.decorators import cron_task
from zodbtasks.decorators import delayed_task
from zodbtasks.decorators import task
from zodbtasks.interfaces import IJob
from zodbtasks.job import CronJob
from zodbtasks.runner import Outcome
from zodbtasks.schedule import from_cron
from zodbtasks.schedule import next_times
from zodbtasks import TaskService
from zodbtasks.task import Retry


@task(retries=3, queue='mail', concurrency=2)
def send(address: str, subject: str = '') -> bool:
    context = current()
    if context is not None:
        context.progress(0.5, 'sending')
        context.log('to %s' % address)
    return bool(address)


@delayed_task(delay=1.5)
def later(count: int) -> int:
    if count < 0:
        raise Retry('not yet', delay=10)
    return count * 2


@cron_task('0 3 * * *', timezone='Europe/Berlin', misfire='skip')
def nightly() -> None:
    pass


def use(service: TaskService) -> None:
    jobid: int = service.add('send', {'args': ['a@example.com']},
                             now=1000.0, retries=2, ttl=60)
    cronid: int = service.addCronJob('nightly', minute=(0, 30), hour=[3],
                                     now=1000, timezone='UTC',
                                     misfire='all', catchUp=5)
    delayed: int = service.addCronJob('send', delay=30.5, priority=7)
    ok: bool = send('b@example.com', subject='hi')   # runs at once
    sent: bool = send.run('c@example.com')
    handle: JobHandle = send.delay('d@example.com', subject='later')
    queued: JobHandle = later(3)                     # a delayed task adds
    doubled: int = later.run(3)
    other: JobHandle = later.using(service, now=5.0, queue='slow')(4)
    jobs: list[IJob]
    cursor: str | None
    jobs, cursor = service.listJobs(status='queued', limit=10)
    while cursor is not None:
        more, cursor = service.listJobs(cursor=cursor)
        jobs.extend(more)
    status: str = service.getStatus(jobid)
    error: str | None = service.getError(cronid)
    claimed: list[int] = service.claimJobs(now=2000, count=5, worker='w1',
                                           queues=['mail', 'slow'])
    for claim in claimed:
        token = service.checkLease(claim, 0).token
        outcome: Outcome = service.runClaimed(claim, token, now=2000.5)
        service.recordOutcome(claim, token, outcome)
    ran: bool = service.processNext(now=2001)
    service.pause(delayed, now=2002)
    service.setLimit('mail', concurrency=3, rate='10/m')
    next_: float | None = CronJob(0, 'x', None, cron='*/5 * * * *'
                                  ).timeOfNextCall(2003)
    times: list[float] = next_times(from_cron('@daily'), 2004.0, count=3)
    print(ok, sent, handle.ready, queued.result, doubled, other.status,
          status, error, ran, next_, times, nightly)
