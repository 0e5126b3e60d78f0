"""Worker processes sharing a RelStorage database on PostgreSQL.

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust authentication) and
RelStorage with psycopg2. Without them the test is skipped -- unless the
environment variable ZODBTASKS_REQUIRE_POSTGRES is set, as CI does.
"""
import os

import pytest

from zodbtasks._testing import PostgresDatabase
from zodbtasks._testing import openRelStorage

REQUIRED = bool(os.environ.get('ZODBTASKS_REQUIRE_POSTGRES'))


def unavailable():
    """Why the test cannot run here, or None."""
    try:
        import psycopg2  # noqa: F401
        import relstorage  # noqa: F401
        import zodburi  # noqa: F401
    except ImportError as error:
        return 'RelStorage, psycopg2 or zodburi is not installed: %s' % error
    try:
        PostgresDatabase()._admin().close()
    except Exception as error:
        return 'PostgreSQL is not reachable at 127.0.0.1:5432: %s' % (
            str(error).strip(),)
    return None


@pytest.fixture
def postgres():
    reason = unavailable()
    if reason is not None:
        if REQUIRED:
            pytest.fail(reason + ' (and ZODBTASKS_REQUIRE_POSTGRES is set)')
        pytest.skip(reason)
    with PostgresDatabase() as database:
        yield database


def test_worker_processes_on_relstorage_run_every_job_exactly_once(
        postgres, tmp_path):
    from test_workers_zeo import check_exactly_once
    db = openRelStorage(postgres.uri)
    try:
        check_exactly_once(db, postgres.uri, tmp_path)
    finally:
        db.close()
