"""Named queues: the lanes of jobs to run now, and the jobs due later.

Each queue holds its own trees, so that a worker claiming from some queues
never reads past the jobs of the others:

``lanes``
    16 LLBTrees of lane key -> job id, the jobs to run as soon as possible.
    A lane key is, from the top bit down: the lane (4 bits), the rank (4
    bits: 9 minus the job's priority) and the order key (55 bits, growing
    with the time the job was queued). The smallest rank-and-order among
    the lane heads is the job to run next: the highest priority, and within
    it the oldest. Each lane keeps a placeholder as its smallest key (see
    `new_lane`).
``due``
    One LLBTree of due key -> job id: jobs waiting for a time.

Keys stored before priorities existed have a rank of 0: such jobs run
before the others, as priority 9 would.
"""
import re

import persistent
from BTrees.LLBTree import LLBTree

#: The queue of jobs that name none.
DEFAULT = 'default'
#: Priorities: higher runs first.
MIN_PRIORITY, MAX_PRIORITY, DEFAULT_PRIORITY = 0, 9, 5

LANE_BITS = 4
LANES = 1 << LANE_BITS
LANE_SHIFT = 59
RANK_SHIFT = 55
#: The bits of a lane key below the lane: rank, then order.
RANK_MASK = (1 << LANE_SHIFT) - 1
#: The order key: milliseconds, 4096 per millisecond (ORDER_SHIFT bits).
ORDER_SHIFT = 12
ORDER_MASK = (1 << RANK_SHIFT) - 1
#: The value of each lane's first key, never a job.
PLACEHOLDER = -1

_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z')


class Queue(persistent.Persistent):
    """The trees of one named queue. They are written, the queue never
    after it is made, so that jobs of one queue meet in no shared object."""

    def __init__(self, name, lanes=None, due=None):
        self.name = name
        self.lanes = (tuple(new_lane(n) for n in range(LANES))
                      if lanes is None else lanes)
        self.due = LLBTree() if due is None else due

    def __repr__(self):
        return '<Queue %r>' % (self.name,)


def check_name(value, name='queue'):
    """Return ``value`` if it can name a queue, else raise."""
    if not isinstance(value, str):
        raise TypeError('%s must be a queue name (a str), not %r'
                        % (name, value))
    if not _NAME.match(value):
        raise ValueError(
            '%s must be a queue name of 1 to 64 letters, digits and "_.:-", '
            'starting with a letter or digit, not %r' % (name, value))
    return value


def check_names(queues):
    """``queues`` (names, or one name) as a tuple of names; None: all."""
    if queues is None:
        return None
    if isinstance(queues, str):
        queues = (queues,)
    queues = tuple(queues)
    for name in queues:
        check_name(name, 'each of queues')
    return queues


def check_priority(value, name='priority'):
    """Return ``value`` if it is a priority, else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError('%s must be a whole number from %d to %d, not %r'
                        % (name, MIN_PRIORITY, MAX_PRIORITY, value))
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise ValueError('%s must be a whole number from %d (lowest) to %d '
                         '(highest), not %r'
                         % (name, MIN_PRIORITY, MAX_PRIORITY, value))
    return value


def lane_key(lane, priority, order):
    """The key of a job in ``lane`` at ``priority`` with ``order``."""
    return (lane << LANE_SHIFT | (MAX_PRIORITY - priority) << RANK_SHIFT
            | order)


def rank_of(key):
    """What lane keys are compared by: rank, then order."""
    return key & RANK_MASK


def priority_of(key):
    """The priority a lane key was filed at."""
    return MAX_PRIORITY - (key >> RANK_SHIFT & (LANES - 1))


def new_lane(n):
    """Lane ``n``, with its placeholder.

    BTrees cannot resolve a conflict in which one transaction removes the
    first key of a bucket: a worker taking the head of a short lane would
    conflict with every add to that lane at the same moment. So each lane
    keeps a placeholder as its smallest key, which is never removed.
    """
    lane = LLBTree()
    lane[n << LANE_SHIFT] = PLACEHOLDER
    return lane


def lane_items(lane, n):
    """(key, job id) of the jobs in lane ``n``, in the order of claims."""
    return lane.items(min=n << LANE_SHIFT, excludemin=True)


def lane_first(lane, n):
    """The key of the next job of lane ``n``, or None."""
    try:
        return lane.minKey((n << LANE_SHIFT) + 1)
    except ValueError:
        return None


def heads(queues):
    """(lane, n, key) of the first job of every non-empty lane of
    ``queues``."""
    found = []
    for queue in queues:
        for n, lane in enumerate(queue.lanes):
            key = lane_first(lane, n)
            if key is not None:
                found.append((lane, n, key))
    return found
