"""Fixtures for the HTTP/DB/cache integration tests: real PostgreSQL and Redis on this machine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import Request  # module level: the endpoint's string annotation must resolve

from obskit.testing import Captured, init_for_tests, wait_for

# The messaging integrations have their own tests (tests/integrations/test_pika*.py).
OTHERS = "pika,aio_pika"


@pytest.fixture
def obs() -> Iterator[Captured]:
    with init_for_tests("svc", disabled_instrumentations=OTHERS) as captured:
        yield captured


@pytest.fixture
def http_server(obs: Captured) -> Iterator[str]:
    """A real uvicorn serving an instrumented FastAPI app in a thread; yields its base URL.

    ``GET /echo/{n}`` answers with the ``traceparent`` and ``baggage`` headers it received.
    """
    import socket
    import threading

    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/echo/{n}")
    async def echo(n: int, request: Request) -> dict[str, str | None]:
        return {"traceparent": request.headers.get("traceparent"),
                "baggage": request.headers.get("baggage")}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=10, interval=0.01, what="uvicorn to start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)
