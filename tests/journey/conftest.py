import os
import uuid

import pytest

REDIS_URL = os.environ.get("OBSKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def prefix():
    """A key prefix of the test's own in the machine's Redis, removed afterwards."""
    from obskit.journey import JourneyStore

    p = f"obskit-test-{uuid.uuid4().hex[:10]}"
    yield p
    store = JourneyStore(REDIS_URL, p)
    store.delete_all()
    store.close()


@pytest.fixture
def store(prefix):
    from obskit.journey import JourneyStore

    s = JourneyStore(REDIS_URL, prefix)
    yield s
    s.close()


@pytest.fixture
def private_redis():
    """A redis-server of the test's own, stopped and started again by the test."""
    from obskit.testing import RedisServer

    with RedisServer() as r:
        yield r
