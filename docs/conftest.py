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


# zope.rst needs Zope 5 (the zope extra); CI installs it and sets
# ZODBTASKS_REQUIRE_ZOPE, which makes a missing Zope an error.
try:
    import Zope2  # noqa: F401
except ImportError:
    import os
    if not os.environ.get('ZODBTASKS_REQUIRE_ZOPE'):
        collect_ignore = ['zope.rst']
