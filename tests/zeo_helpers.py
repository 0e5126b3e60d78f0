"""What the tests with a real ZEO server and real worker processes share:
the server and a client of it, the workers' environment, and stopping them.
"""
import os
import signal

import pytest
import transaction
import ZEO

from zodbtasks._testing import ZEOServer

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def zeo(tmp_path):
    with ZEOServer(str(tmp_path / 'Data.fs')) as server:
        yield server


def openClient(zeo):
    """(db, transaction manager, connection) of a client of ``zeo``."""
    db = ZEO.DB(zeo.address)
    tm = transaction.TransactionManager()
    return db, tm, db.open(transaction_manager=tm)


def closeClient(db, tm, conn):
    tm.abort()
    conn.close()
    db.close()


def workerEnv():
    path = os.environ.get('PYTHONPATH')
    return {'PYTHONPATH': HERE + (os.pathsep + path if path else '')}


def stopWorkers(workers, timeout=60):
    """SIGTERM every worker, then wait for them all; their exit codes."""
    for process in workers.processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    return workers.wait(timeout)
