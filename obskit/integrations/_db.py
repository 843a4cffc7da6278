"""Shared by the database and cache integrations: operation names and the duration metrics.

Spans come from the OpenTelemetry contrib instrumentors where they work (psycopg, psycopg2,
asyncpg, redis); obskit adds ``db_client_operation_duration_seconds`` /
``cache_operation_duration_seconds`` with thin wrapt wrappers *outside* theirs, so the metric is
recorded for every call, sampled or not.
"""

from __future__ import annotations

import re
from typing import Any

from obskit._internal import internal_error
from obskit.metrics import catalogue, observe

#: Operation label when the statement does not start with a plain keyword.
OTHER = "OTHER"

_KEYWORD = re.compile(r"\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*\(?\s*([A-Za-z]{1,20})\b", re.S)
_cache: dict[str, str] = {}



def operation(statement: Any) -> str:
    """First SQL keyword, upper-case (``SELECT``, ``INSERT``, ``WITH``...), else ``OTHER``.

    Bounded by construction: only a leading alphabetic word of at most 20 letters is used.
    """
    if isinstance(statement, bytes | bytearray | memoryview):
        statement = bytes(statement[:200]).decode("utf-8", "replace")
    elif not isinstance(statement, str):
        return OTHER
    head = statement[:200]
    op = _cache.get(head)
    if op is None:
        m = _KEYWORD.match(head)
        op = m.group(1).upper() if m else OTHER
        if len(_cache) < 2000:
            _cache[head] = op
    return op


#: Drivers whose statements an obskit integration traces itself (psycopg, psycopg2, asyncpg):
#: SQLAlchemy then leaves the span to the driver instead of making a second one.
traced_drivers: set[str] = set()


# The wrappers below exist only between instrument() and uninstrument(), i.e. while init() is
# active, so they record into the active catalogue (the registry init() was given).
def record_db(system: str, op: str, seconds: float) -> None:
    try:
        observe(catalogue().db_duration.labels(system, op), seconds)
    except Exception as exc:
        internal_error("db.metrics", exc)


def record_cache(system: str, op: str, seconds: float) -> None:
    try:
        observe(catalogue().cache_duration.labels(system, op), seconds)
    except Exception as exc:
        internal_error("cache.metrics", exc)


# --- DB-API (psycopg, psycopg2): one wrapper around contrib's CursorTracer ------------------------
_dbapi_users: set[str] = set()


def _db_system(tracer: Any) -> str:
    integration = getattr(tracer, "_db_api_integration", None)
    return str(getattr(integration, "database_system", None) or "other_sql")


def _traced_execution(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    from time import perf_counter

    start = perf_counter()
    try:
        return wrapped(*args, **kwargs)
    finally:
        _record_dbapi(instance, args, perf_counter() - start)


async def _traced_execution_async(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    from time import perf_counter

    start = perf_counter()
    try:
        return await wrapped(*args, **kwargs)
    finally:
        _record_dbapi(instance, args, perf_counter() - start)


def _record_dbapi(tracer: Any, args: Any, seconds: float) -> None:
    # args = (cursor, query_method, statement, ...)
    try:
        statement = args[2] if len(args) > 2 else None
        if statement is not None and not isinstance(statement, str | bytes):
            statement = tracer.get_operation_name(args[0], args[2:])  # psycopg Composable
        record_db(_db_system(tracer), operation(statement), seconds)
    except Exception as exc:
        internal_error("db.metrics", exc)


def wrap_dbapi(user: str) -> None:
    """Time every statement that contrib's DB-API ``CursorTracer`` runs (psycopg, psycopg2)."""
    import wrapt
    from opentelemetry.instrumentation.dbapi import CursorTracer

    if not _dbapi_users:
        wrapt.wrap_function_wrapper(CursorTracer, "traced_execution", _traced_execution)
        wrapt.wrap_function_wrapper(CursorTracer, "traced_execution_async",
                                    _traced_execution_async)
    _dbapi_users.add(user)


def unwrap_dbapi(user: str) -> None:
    from opentelemetry.instrumentation.dbapi import CursorTracer
    from opentelemetry.instrumentation.utils import unwrap

    if user not in _dbapi_users:
        return
    _dbapi_users.discard(user)
    if not _dbapi_users:
        unwrap(CursorTracer, "traced_execution")
        unwrap(CursorTracer, "traced_execution_async")
