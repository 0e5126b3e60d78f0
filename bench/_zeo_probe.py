"""The ZEO server of ``bench_scaling.py``: ``runzeo`` with counters.

Run as ``python bench/_zeo_probe.py -a HOST:PORT -f Data.fs`` (the
arguments of ``python -m ZEO.runzeo``). It counts, in the server process:

* the CPU time (``time.thread_time``; the server runs every connection on
  one event loop, in one thread) spent handling each kind of request, from
  its decoding to its reply, and spent sending each kind of asynchronous
  message (``invalidateTransaction`` to the other clients);
* how long the commit lock (``ZEO.StorageServer.LockManager``) is held:
  from the vote that takes it to the release after the reply to
  ``tpc_finish``, wall time and the server's CPU time meanwhile;
* the fsyncs of the FileStorage and their wall time;
* the commits, the objects they wrote, and, by oid, how many commits wrote
  each object (for the reload estimate of the model).

On SIGUSR1 it writes them to ``$ZODBTASKS_BENCH_PROBE.server.json`` (a
counter ``seq`` says how many times) and starts counting the writes by oid
afresh, so that the last file holds the writes since the signal before.
"""
import collections
import importlib
import json
import os
import signal
import threading
import time

import ZEO.asyncio.server as zeoserver
import ZEO.StorageServer as storageserver
from ZEO import runzeo

# The module, not the class of the same name that its package exports.
filestorage = importlib.import_module('ZODB.FileStorage.FileStorage')

STATS = collections.Counter()   # counts and seconds, by name
CPU = collections.Counter()     # CPU seconds by request or message name
CALLS = collections.Counter()   # requests or messages by name
WRITES = collections.Counter()  # commits that wrote each oid (hex)
_state = {'name': None, 'inside': False, 'seq': 0, 'held': None}


def _decoder(version, _original=zeoserver.server_decoder):
    decode = _original(version)

    def decoding(message):
        decoded = decode(message)
        _state['name'] = decoded[2]
        return decoded
    return decoding


def _message_received(self, message,
                      _original=zeoserver.ServerProtocol.message_received):
    start = time.thread_time()
    _state['inside'] = True
    try:
        return _original(self, message)
    finally:
        _state['inside'] = False
        name = _state['name'] or '?'
        CPU[name] += time.thread_time() - start
        CALLS[name] += 1


def _call_async(self, method, args,
                _original=zeoserver.ServerProtocol.call_async):
    if _state['inside']:        # counted with the request that sends it
        return _original(self, method, args)
    start = time.thread_time()
    try:
        return _original(self, method, args)
    finally:
        CPU['send ' + method] += time.thread_time() - start
        CALLS['send ' + method] += 1


def _locked(self, zs, _original=storageserver.LockManager._locked):
    _state['held'] = (time.perf_counter(), time.thread_time(),
                      threading.get_ident())
    return _original(self, zs)


def _unlocked(self, zs, _original=storageserver.LockManager._unlocked):
    held = _state['held']
    if held is not None:
        _state['held'] = None
        STATS['lock holds'] += 1
        STATS['lock wall'] += time.perf_counter() - held[0]
        if threading.get_ident() == held[2]:
            STATS['lock cpu'] += time.thread_time() - held[1]
    return _original(self, zs)


def _tpc_finish(self, id, _original=storageserver.ZEOStorage.tpc_finish):
    oids = set(self.invalidated) if self.transaction is not None else ()
    result = _original(self, id)
    if result is not None:
        STATS['commits'] += 1
        STATS['objects written'] += len(oids)
        for oid in oids:
            WRITES[oid.hex()] += 1
    return result


def _fsync(fd, _original=os.fsync):
    start = time.perf_counter()
    try:
        return _original(fd)
    finally:
        STATS['fsyncs'] += 1
        STATS['fsync wall'] += time.perf_counter() - start


def _snapshot(signum=None, frame=None):
    path = os.environ.get('ZODBTASKS_BENCH_PROBE')
    if not path:
        return
    _state['seq'] += 1
    data = {'seq': _state['seq'], 'time': time.time(), 'stats': STATS,
            'cpu': CPU, 'calls': CALLS, 'writes': WRITES}
    with open(path + '.server.tmp', 'w') as f:
        json.dump(data, f)
    os.replace(path + '.server.tmp', path + '.server.json')
    WRITES.clear()


def install():
    zeoserver.server_decoder = _decoder
    zeoserver.ServerProtocol.message_received = _message_received
    zeoserver.ServerProtocol.call_async = _call_async
    storageserver.LockManager._locked = _locked
    storageserver.LockManager._unlocked = _unlocked
    storageserver.ZEOStorage.tpc_finish = _tpc_finish
    filestorage.fsync = _fsync
    signal.signal(signal.SIGUSR1, _snapshot)


if __name__ == '__main__':
    install()
    runzeo.main()
