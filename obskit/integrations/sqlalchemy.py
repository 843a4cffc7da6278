"""SQLAlchemy: obskit's own engine-event listeners (not the contrib instrumentor).

Why not ``SQLAlchemyInstrumentor``: 0.66b1 declares ``sqlalchemy >= 1.0.0, < 2.1.0`` and on
SQLAlchemy 2.1 ``instrument()`` only logs a dependency conflict and does nothing; it also patches
``create_engine`` and so misses engines created before ``init()``. Listeners on the ``Engine``
*class* cover every engine, whenever it was created.

No double spans: when the engine's driver is traced by an active obskit driver integration
(psycopg, psycopg2, asyncpg), that integration already makes the span and the metric for each
statement, so these listeners do nothing. For other drivers (sqlite, pymysql, ...) they make a
CLIENT span per statement (``db.system.name``, ``db.query.text``, ``db.operation.name``) and
record ``db_client_operation_duration_seconds``.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Status, StatusCode

from obskit._internal import internal_error
from obskit._semconv import KIND_CLIENT
from obskit.integrations import _db

if TYPE_CHECKING:
    from obskit._init import Handle

LIBRARIES = ("sqlalchemy",)

#: SQLAlchemy driver name -> obskit integration that traces it at the driver level.
DRIVER_INTEGRATIONS = {"psycopg": "psycopg", "psycopg_async": "psycopg", "psycopg2": "psycopg2",
                       "asyncpg": "asyncpg"}
_SYSTEMS = {"postgresql": "postgresql", "sqlite": "sqlite", "mysql": "mysql",
            "mariadb": "mariadb", "mssql": "microsoft.sql_server", "oracle": "oracle"}

_tracer: Any = None
_active = False
_KEY = "_obskit_db"


def _driver_traced(dialect: Any) -> bool:
    name = DRIVER_INTEGRATIONS.get(getattr(dialect, "driver", ""))
    return name is not None and name in _db.traced_drivers


def _before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
            executemany: bool) -> None:
    try:
        dialect = conn.dialect
        if _driver_traced(dialect) or context is None:
            return
        op = _db.operation(statement)
        span = None
        if _tracer is not None:
            span = _tracer.start_span(op, kind=KIND_CLIENT)
            if span.is_recording():
                span.set_attributes({
                    "db.system.name": _SYSTEMS.get(dialect.name, dialect.name),
                    "db.operation.name": op,
                    "db.query.text": statement,
                })
        setattr(context, _KEY, (span, op, perf_counter()))
    except Exception as exc:
        internal_error("sqlalchemy.before", exc)


def _finish(context: Any, error: BaseException | None) -> None:
    state = getattr(context, _KEY, None)
    if state is None:
        return
    setattr(context, _KEY, None)
    span, op, start = state
    name = context.dialect.name
    _db.record_db(_SYSTEMS.get(name, name), op, perf_counter() - start)
    if span is not None:
        if error is not None and span.is_recording():
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()


def _after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
           executemany: bool) -> None:
    try:
        _finish(context, None)
    except Exception as exc:
        internal_error("sqlalchemy.after", exc)


def _error(exception_context: Any) -> None:
    try:
        ctx = exception_context.execution_context
        if ctx is not None:
            _finish(ctx, exception_context.original_exception)
    except Exception as exc:
        internal_error("sqlalchemy.error", exc)


def instrument(handle: Handle) -> None:
    global _tracer, _active
    _tracer = (None if handle.tracer_provider is None
               else handle.tracer_provider.get_tracer("obskit.sqlalchemy"))
    if _active:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    event.listen(Engine, "before_cursor_execute", _before)
    event.listen(Engine, "after_cursor_execute", _after)
    event.listen(Engine, "handle_error", _error)
    _active = True


def uninstrument() -> None:
    global _tracer, _active
    _tracer = None
    if not _active:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    for name, fn in (("before_cursor_execute", _before), ("after_cursor_execute", _after),
                     ("handle_error", _error)):
        if event.contains(Engine, name, fn):
            event.remove(Engine, name, fn)
    _active = False
