"""asyncpg: contrib ``AsyncPGInstrumentor`` (CLIENT span per query) plus
``db_client_operation_duration_seconds`` from wrapt wrappers around the same ``Connection`` and
``PreparedStatement`` methods (outside the contrib ones)."""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap

from obskit.integrations import _db
from obskit.integrations._contrib import Contrib

if TYPE_CHECKING:
    from obskit._init import Handle

LIBRARIES = ("asyncpg", "opentelemetry.instrumentation.asyncpg")

_CONNECTION_METHODS = ("execute", "executemany", "fetch", "fetchval", "fetchrow")
_PREPARED_METHODS = ("fetch", "fetchval", "fetchrow", "executemany", "fetchmany")

_contrib = Contrib()


async def _connection_call(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    start = perf_counter()
    try:
        return await wrapped(*args, **kwargs)
    finally:
        query = args[0] if args else kwargs.get("query")
        _db.record_db("postgresql", _db.operation(query), perf_counter() - start)


async def _prepared_call(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    start = perf_counter()
    try:
        return await wrapped(*args, **kwargs)
    finally:
        try:
            query = instance.get_query()
        except Exception:
            query = None
        _db.record_db("postgresql", _db.operation(query), perf_counter() - start)


def instrument(handle: Handle) -> None:
    _db.traced_drivers.add("asyncpg")
    if _contrib.active:
        return
    import asyncpg
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    conn_cls = asyncpg.connection.Connection
    _contrib.instrument(AsyncPGInstrumentor(), handle,
                        lambda: hasattr(conn_cls.__dict__.get("fetch"), "__wrapped__"),
                        "asyncpg.Connection")
    for name in _CONNECTION_METHODS:
        wrapt.wrap_function_wrapper(conn_cls, name, _connection_call)
    stmt_cls = asyncpg.prepared_stmt.PreparedStatement
    for name in _PREPARED_METHODS:
        if name in stmt_cls.__dict__:
            wrapt.wrap_function_wrapper(stmt_cls, name, _prepared_call)


def uninstrument() -> None:
    _db.traced_drivers.discard("asyncpg")
    if not _contrib.active:
        return
    import asyncpg

    for name in _CONNECTION_METHODS:
        unwrap(asyncpg.connection.Connection, name)
    for name in _PREPARED_METHODS:
        unwrap(asyncpg.prepared_stmt.PreparedStatement, name)
    _contrib.uninstrument()
