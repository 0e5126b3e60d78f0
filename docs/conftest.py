import pytest
import transaction
import zope.component.testing


@pytest.fixture(autouse=True)
def components():
    """Each document starts with an empty component registry."""
    zope.component.testing.setUp()
    yield
    transaction.abort()
    zope.component.testing.tearDown()
