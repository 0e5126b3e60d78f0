import pytest
import transaction
import zope.component
import zope.component.testing
import ZODB
import ZODB.MappingStorage

import zodbtasks


@pytest.fixture(autouse=True)
def components():
    """A clean global component registry for every test."""
    zope.component.testing.setUp()
    yield
    transaction.abort()
    zope.component.testing.tearDown()


@pytest.fixture
def tasks():
    """Register a few tasks and return a log of what ran."""
    ran = []

    def echo(input):
        ran.append(('echo', input))
        return input

    def fail(input):
        ran.append(('fail', input))
        raise zodbtasks.TaskError('it failed: %s' % (input,))

    def crash(input):
        ran.append(('crash', input))
        return 1 / 0

    for name, func in [('echo', echo), ('fail', fail), ('crash', crash)]:
        zope.component.provideUtility(zodbtasks.SimpleTask(func), name=name)
    return ran


@pytest.fixture
def service(tasks):
    return zodbtasks.TaskService()


@pytest.fixture
def db():
    database = ZODB.DB(ZODB.MappingStorage.MappingStorage())
    yield database
    database.close()
