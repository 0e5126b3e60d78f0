"""Compact stored states for persistent records with many attributes.

A job has some forty attributes, most of them empty (None, 0, False, an
empty tuple) most of the time. `CompactRecord` leaves out those that are
empty where their class's default is the same empty value, and stores the
others under a small number instead of their name: the attribute names
were most of the bytes of a job in Data.fs. (Only empty defaults are left
out, so that a later version changing a default that means something
cannot change what a stored job says.) Loading accepts both that form
and the plain one (a dict of names), so that records stored by earlier
versions load as they are.

The numbers are given by `FIELDS`, the same for every record class: a
number is never reused or moved, and a new attribute is added at the end.
An attribute that is not in the table (one an application set, say) is
stored under its name.
"""
import persistent

#: Attribute names by their stored number. Append only.
FIELDS = (
    # 0: what every job has
    'id', 'task', 'input', 'status', 'created', 'claimed', 'started',
    'completed', 'output', 'error', 'traceback', 'attempts', 'lostLeases',
    'waitingForTask', 'missingSince', 'retried', 'failures', 'ranOn',
    'history', 'log', 'progress', 'data', 'lease', 'runDue', 'paused',
    'pausedFrom', 'expires', 'target', 'scheduledFor',
    # 29: where it is filed
    '_why', '_counted', '_listed', '_listKey', '_listShard', '_index',
    '_indexKey', '_replayFrom',
    # 37: options
    'leaseSeconds', 'atMostOnce', 'retries', 'retryDelay', 'retryBackoff',
    'retryMaxDelay', 'ttl', 'timeout', 'maxLostLeases', 'queue', 'priority',
    'limit',
    # 49: repeating jobs
    'runs', 'missedRuns', 'lastMissed', 'waitingRun', 'misfire',
    'misfireGrace', 'catchUp', 'overlap', 'maxRuns', 'minute', 'hour',
    'dayOfMonth', 'month', 'dayOfWeek', 'second', 'delay', 'cron', 'timezone',
    'interval', 'start', 'end',
    # 70: leases
    'token', 'worker', 'key', 'place', 'revoked',
)
NUMBER = {name: n for n, name in enumerate(FIELDS)}

_MISSING = object()
_EMPTY = (None, 0, False, (), '')
_EMPTY_TYPES = frozenset(map(type, _EMPTY))


def compact(cls, state):
    """``state`` (by attribute name) as a record of ``cls`` stores it."""
    table = _TABLES.get(cls) or _table(cls)
    stored = {}
    for name, value in state.items():
        number, default = table.get(name) or (name, _MISSING)
        if value is default or (default is not _MISSING
                                and type(default) is type(value)
                                and default == value):
            continue        # the class gives it back when loaded
        stored[number] = value
    return stored


_TABLES: 'dict[type, dict[str, tuple[int, object]]]' = {}


def _table(cls):
    """{name: (number, default)} for the attributes of `FIELDS`, and
    (name, default) for other attributes with an empty class default; the
    default is the class's if it is empty (None, 0, False, an empty tuple or
    string), else `_MISSING`. Kept per class in `_TABLES`."""
    empty = _empty_defaults(cls)
    table = {name: (number, empty.get(name, _MISSING))
             for name, number in NUMBER.items()}
    for name, default in empty.items():
        table.setdefault(name, (name, default))
    _TABLES[cls] = table
    return table


def _empty_defaults(cls):
    """{name: default} of the attributes whose default on ``cls`` is empty
    (None, 0, False, an empty tuple or string). `_table` keeps the result."""
    found = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if type(value) in _EMPTY_TYPES and value in _EMPTY:
                found[name] = value
            else:
                found.pop(name, None)
    return found


def expand(state):
    """A stored state, compact or plain, by attribute name."""
    if isinstance(state, dict) and any(isinstance(key, int) for key in state):
        return {FIELDS[key] if isinstance(key, int) else key: value
                for key, value in state.items()}
    return state


class CompactRecord(persistent.Persistent):
    """A persistent object stored compactly (see the module). A class that
    resolves conflicts gets the states by name (`expand`) and returns one
    the same way."""

    def __getstate__(self):
        return compact(type(self), super().__getstate__())

    def __setstate__(self, state):
        super().__setstate__(expand(state))

    def namedState(self):
        """The state as it is stored, by attribute name: two objects that
        would store the same state have the same named state."""
        return expand(self.__getstate__())
