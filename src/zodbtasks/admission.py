"""Checking a new job before anything of it is written.

A refused job leaves no trace: every check here runs before the service
stores the job, upgrades old data or makes a limit.
"""
import pickle

from zodbtasks import limits
from zodbtasks.job import JOB_OPTIONS
from zodbtasks.job import checkOptions


def job_options(name, found, options, repeating):
    """The options of a new job of task ``name`` (the task object
    ``found``): those given, over the defaults that the task declares
    (its ``jobOptions``; see `zodbtasks.decorators`), all checked."""
    checkOptions(options, repeating)
    # The decorators check what they declare, but a task made by hand may
    # declare anything: what a job will hold is checked here either way.
    declared = {k: v for k, v in getattr(found, 'jobOptions', {}).items()
                if (repeating or k in JOB_OPTIONS)
                and options.get(k) is None}
    try:
        checkOptions(declared, repeating)
    except (TypeError, ValueError) as error:
        raise type(error)('task %r declares a bad default: %s'
                          % (name, error)) from None
    return dict(declared, **{k: v for k, v in options.items()
                             if v is not None})


def job_limit(name, found, options, known):
    """The limit that task ``name`` declares (its ``concurrency`` and
    ``rate`` attributes) as (limit name, concurrency, rate), or None; its
    jobs join it (``options['limit']`` is set). A job naming a limit that
    is not in ``known`` and that its task does not declare is refused."""
    concurrency = getattr(found, 'concurrency', None)
    rate = getattr(found, 'rate', None)
    if concurrency is None and rate is None:
        wanted = options.get('limit')
        if wanted is not None and (known is None or wanted not in known):
            raise ValueError(
                'no limit is named %r; make it with setLimit(%r, '
                'concurrency=..., rate=...), or declare concurrency or '
                'rate on the task' % (wanted, wanted))
        return None
    try:
        limits.check_concurrency(concurrency)
        if rate is not None:
            limits.rate_interval(rate)
        limit = options.setdefault('limit', name)
        limits.check_name(limit)
    except (TypeError, ValueError) as error:
        raise type(error)('task %r declares a bad limit: %s'
                          % (name, error)) from None
    return limit, concurrency, rate


def check_input(input):
    """Refuse an input that cannot be stored."""
    try:
        pickle.dumps(input, 3)
    except Exception as error:
        raise TypeError('the input of a job must be picklable, but %r '
                        'is not: %s' % (input, error)) from error
