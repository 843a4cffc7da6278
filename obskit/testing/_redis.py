"""A redis-server of the test's own: a test can stop it and start it again on the same port,
to see what its code does while Redis is down, without touching the machine's shared Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

__all__ = ["RedisServer"]


class RedisServer:
    """``redis-server`` (Debian package ``redis-server``) on a free port with its own data dir.

    ``persistent=True`` keeps the data across ``stop()``/``start()`` (append-only file, synced on
    every write), as a production Redis restart would; ``False`` starts empty each time.

        with RedisServer() as r:
            ...  # r.url
            r.stop(); ...; r.start()
    """

    def __init__(self, *, persistent: bool = True) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install "
                               "redis-server)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.persistent = persistent
        self.dir = tempfile.mkdtemp(prefix="obskit-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent \
            else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             *aof, "--dir", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """Kill it (as a crash would); ``start()`` brings it back on the same port."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()
