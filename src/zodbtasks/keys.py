"""The integer keys of the service's trees.

Every index of jobs is an LLBTree whose keys carry a time or an order in
their high bits and random bits below, so that two connections filing jobs
at the same moment rarely choose the same key or the same bucket.
"""
import math
import random

#: Random low bits under the milliseconds of a time key.
LOW_BITS = 20
LOW_MASK = (1 << LOW_BITS) - 1
#: The largest key of an LLBTree.
MAX_KEY = 2 ** 63 - 1


def time_key(seconds):
    """The first key of the millisecond that holds ``seconds``."""
    return math.floor(seconds * 1000) << LOW_BITS


def time_bound(seconds):
    """The last key of the millisecond that holds ``seconds``."""
    return time_key(seconds) | LOW_MASK


def random_time_key(seconds):
    """A key in the millisecond of ``seconds``, with random low bits."""
    return time_key(seconds) | random.getrandbits(LOW_BITS)


def random_key():
    return random.getrandbits(63)


def same_millisecond(a, b):
    return time_key(a) >> LOW_BITS == time_key(b) >> LOW_BITS


# Where a job waits: the name of the index that holds it (``job._index``).
#: A lane of its queue: to run as soon as possible.
QUEUE = '_queue'
#: Its queue's due tree: waiting for a time.
SCHEDULED = '_scheduled'
#: The service's unplaced jobs: a first due time to be fixed by a tick.
UNPLACED = '_unplaced'
#: Its limit's waiting tree: held back (see `zodbtasks.limits`).
LIMITED = '_limited'

# Why a job waits in a due tree (``job._why``); only regular runs misfire.
REGULAR, RETRY, NOW = None, 'retry', 'now'
