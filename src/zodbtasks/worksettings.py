"""The settings of a worker that the parts of its processor share.

A processor is given its settings as keyword options; the parts it is made
of (`zodbtasks.transactor`, `zodbtasks.steps`, `zodbtasks.runclaimed`, ...)
read them from one `WorkerSettings`, so that a setting changed on the
processor after it was made is seen by every part, as it was when the
processor was one class.
"""
import socket
import time

import transaction

#: This machine's name: worker names begin with it unless given one.
HOST = socket.gethostname()


class WorkerSettings:
    """What a worker's parts need to know of its options.

    ``clock``: the time function; ``attempts``: tries per transaction on
    conflicts; ``transaction_manager``: that of the loop's transactions;
    ``lease``: seconds a claim lasts (None: the job's, else the service's);
    ``name``: the worker name on leases and on its record (None: host, pid
    and thread); ``spread``: claim from the heads of random lanes;
    ``queues``: the names of the queues it claims from (None: every one);
    ``middlewares``: callables around every run; ``logJobs``: one line per
    finished job.
    """

    def __init__(self, clock=None, attempts=5, transaction_manager=None,
                 lease=None, name=None, spread=False, queues=None,
                 middlewares=(), logJobs=False):
        self.clock = clock or time.time
        self.attempts = attempts
        self.transaction_manager = transaction_manager or transaction.manager
        self.lease = lease
        self.name = name
        self.spread = spread
        self.queues = queues
        self.middlewares = middlewares
        self.logJobs = logJobs
