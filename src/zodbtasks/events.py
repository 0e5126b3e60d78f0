"""Events sent when jobs change; see the interfaces in `interfaces`."""
from zope.interface import implementer

from zodbtasks import interfaces


class JobEvent:

    def __init__(self, service, job, now, **details):
        self.service = service
        self.job = job
        self.now = now
        self.__dict__.update(details)

    def __repr__(self):
        return '<%s %r at %r>' % (type(self).__name__, self.job, self.now)


@implementer(interfaces.IJobQueued)
class JobQueued(JobEvent):
    pass


@implementer(interfaces.IJobStarted)
class JobStarted(JobEvent):
    pass


@implementer(interfaces.IJobCompleted)
class JobCompleted(JobEvent):
    pass


@implementer(interfaces.IJobFailed)
class JobFailed(JobEvent):
    error: str


@implementer(interfaces.IJobRetried)
class JobRetried(JobEvent):
    error: str
    due: float


@implementer(interfaces.IJobCancelled)
class JobCancelled(JobEvent):
    pass


@implementer(interfaces.IJobMissed)
class JobMissed(JobEvent):
    count: int
    action: str
