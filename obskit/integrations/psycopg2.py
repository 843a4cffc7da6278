"""psycopg2: contrib ``Psycopg2Instrumentor`` (CLIENT span per statement) plus
``db_client_operation_duration_seconds``. Connections opened before ``init()`` are not traced
(the instrumentor patches ``psycopg2.connect``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from obskit.integrations import _db

if TYPE_CHECKING:
    from obskit._init import Handle

LIBRARIES = ("psycopg2", "opentelemetry.instrumentation.psycopg2")

_instrumentor: Any = None
_owned = False


def instrument(handle: Handle) -> None:
    global _instrumentor, _owned
    _db.traced_drivers.add("psycopg2")
    if _instrumentor is not None:
        return
    import psycopg2
    from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor

    inst = Psycopg2Instrumentor()
    # Someone else's instrumentation stays theirs: we only undo what we did.
    _owned = not inst.is_instrumented_by_opentelemetry
    if _owned:
        inst.instrument(tracer_provider=handle.tracer_provider)
    if not hasattr(psycopg2.connect, "__wrapped__"):
        raise RuntimeError("Psycopg2Instrumentor did not patch psycopg2.connect")
    _db.wrap_dbapi("psycopg2")
    _instrumentor = inst


def uninstrument() -> None:
    global _instrumentor
    _db.traced_drivers.discard("psycopg2")
    if _instrumentor is None:
        return
    _db.unwrap_dbapi("psycopg2")
    if _owned:
        _instrumentor.uninstrument()
    _instrumentor = None
