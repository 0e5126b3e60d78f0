"""zodbtasks: a transactional task queue and scheduler that lives in ZODB."""
import importlib.metadata

from zodbtasks.interfaces import CANCELLED
from zodbtasks.interfaces import COMPLETED
from zodbtasks.interfaces import CRONJOB
from zodbtasks.interfaces import DELAYED
from zodbtasks.interfaces import ERROR
from zodbtasks.interfaces import PAUSED
from zodbtasks.interfaces import PROCESSING
from zodbtasks.interfaces import QUEUED
from zodbtasks.interfaces import RETRYING
from zodbtasks.interfaces import STARTLATER
from zodbtasks.interfaces import ICronJob
from zodbtasks.interfaces import IJob
from zodbtasks.interfaces import ITask
from zodbtasks.interfaces import ITaskService
from zodbtasks.job import CronJob
from zodbtasks.job import Job
from zodbtasks.service import TaskService
from zodbtasks.task import SimpleTask
from zodbtasks.task import Retry
from zodbtasks.task import TaskError


def _installedVersion(name: str) -> str:
    """The version of the installed distribution ``name``; where it is not
    installed (``src/`` put on the path of a checkout by hand), ``0+unknown``:
    a valid version, older than every release."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return '0+unknown'


#: The version of zodbtasks, from the metadata of the installed package.
__version__: str = _installedVersion('zodbtasks')


def __getattr__(name: str) -> object:
    # ``GLOBALDB``: the application's database once it opened (or
    # `startup.storeDBReference` was called), as z3c.taskqueue kept it; see
    # `startup.getDatabase`. Found on use: the startup module is imported
    # only by those who use it.
    if name == 'GLOBALDB':
        from zodbtasks import startup
        return startup.getDatabase()
    raise AttributeError('module %r has no attribute %r' % (__name__, name))

__all__ = [
    'CANCELLED', 'COMPLETED', 'CRONJOB', 'DELAYED', 'ERROR', 'PROCESSING',
    'QUEUED', 'STARTLATER', 'ICronJob', 'IJob', 'ITask', 'ITaskService',
    'CronJob', 'Job', 'TaskService', 'SimpleTask', 'TaskError', 'Retry',
    'PAUSED', 'RETRYING', '__version__',
]
