"""PostgreSQL unreachable or restarting: answer ``503`` with ``Retry-After`` and the usual JSON
error body, never a ``500``. Orders are stored before ``202``, so without PostgreSQL an order
cannot be accepted; the client retries (with its ``Idempotency-Key``) and the pool reconnects by
itself when the database is back. Other database errors still propagate (a real bug is a 500).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg import Error as PsycopgError
from psycopg_pool import PoolTimeout

import obskit
from orderflow import db

#: Seconds a client is asked to wait (``Retry-After``): about a PostgreSQL restart.
RETRY_AFTER_SECONDS = 5
_log = obskit.get_logger("orderflow.api")


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    if not db.unavailable(exc):
        raise exc  # ServerErrorMiddleware turns it into the 500 it is
    state = request.scope.get("state", {})
    if "access" in state:
        state["access"]["outcome"] = "unavailable"
    _log.warning("database unavailable: 503", error=repr(exc))
    return JSONResponse(
        {"error": "unavailable", "message": "the order database is unavailable; retry in "
         f"{RETRY_AFTER_SECONDS}s with the same Idempotency-Key",
         "request_id": state.get("request_id")},
        status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def register(app: FastAPI) -> None:
    for exc_type in (PsycopgError, PoolTimeout):
        app.add_exception_handler(exc_type, database_unavailable)
