"""The kill -9 storm of test_faults.py, on RelStorage and PostgreSQL.

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust authentication) and
RelStorage with psycopg2. Without them the test is skipped -- unless the
environment variable ZODBTASKS_REQUIRE_POSTGRES is set, as CI does.
"""
import pytest

from zodbtasks._testing import openRelStorage

from test_workers_relstorage import postgres  # noqa: F401 (a fixture)


@pytest.fixture(autouse=True)
def tasks():
    import worker_tasks
    worker_tasks.register()
    return worker_tasks


def test_a_kill_storm_on_relstorage_loses_nothing_and_repeats_little(
        postgres, tmp_path):
    """SIGKILL a worker every 0.4 s, 6 times, on RelStorage; see
    `test_faults.killStorm`."""
    from test_faults import killStorm
    db = openRelStorage(postgres.uri)
    try:
        killStorm(db, postgres.uri, tmp_path, jobs=2500, drain=120)
    finally:
        db.close()
