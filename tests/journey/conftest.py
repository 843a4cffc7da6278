import os
import shutil
import socket
import subprocess
import tempfile
import time
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of the test's own, which the test may stop and start again on its port."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="obskit-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_redis():
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (scripts/system-deps.sh installs it)")
    r = PrivateRedis()
    r.start()
    yield r
    r.stop()
    shutil.rmtree(r.dir, ignore_errors=True)
