"""psycopg 3: contrib ``PsycopgInstrumentor`` (CLIENT span per statement, sync and async) plus
``db_client_operation_duration_seconds``. Connections opened before ``init()`` are not traced
(the instrumentor patches ``connect``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from obskit.integrations import _db

if TYPE_CHECKING:
    from obskit._init import Handle

LIBRARIES = ("psycopg", "opentelemetry.instrumentation.psycopg")

_instrumentor: Any = None
_owned = False


def instrument(handle: Handle) -> None:
    global _instrumentor, _owned
    _db.traced_drivers.add("psycopg")
    if _instrumentor is not None:
        return
    import psycopg
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    inst = PsycopgInstrumentor()
    # Someone else's instrumentation stays theirs: we only undo what we did.
    _owned = not inst.is_instrumented_by_opentelemetry
    if _owned:
        inst.instrument(tracer_provider=handle.tracer_provider)
    if not hasattr(psycopg.Connection.__dict__.get("connect"), "__wrapped__"):
        raise RuntimeError("PsycopgInstrumentor did not patch psycopg.Connection.connect")
    _db.wrap_dbapi("psycopg")
    _instrumentor = inst


def uninstrument() -> None:
    global _instrumentor
    _db.traced_drivers.discard("psycopg")
    if _instrumentor is None:
        return
    _db.unwrap_dbapi("psycopg")
    if _owned:
        _instrumentor.uninstrument()
    _instrumentor = None
