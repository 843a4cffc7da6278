"""psycopg 3: contrib ``PsycopgInstrumentor`` (CLIENT span per statement, sync and async) plus
``db_client_operation_duration_seconds``. Connections opened before ``init()`` are not traced
(the instrumentor patches ``connect``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from obskit.integrations import _db
from obskit.integrations._contrib import Contrib

if TYPE_CHECKING:
    from obskit._init import Handle

LIBRARIES = ("psycopg", "opentelemetry.instrumentation.psycopg")

_contrib = Contrib()


def instrument(handle: Handle) -> None:
    _db.traced_drivers.add("psycopg")
    if _contrib.active:
        return
    import psycopg
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    _contrib.instrument(
        PsycopgInstrumentor(), handle,
        lambda: hasattr(psycopg.Connection.__dict__.get("connect"), "__wrapped__"),
        "psycopg.Connection.connect")
    _db.wrap_dbapi("psycopg")


def uninstrument() -> None:
    _db.traced_drivers.discard("psycopg")
    if _contrib.active:
        _db.unwrap_dbapi("psycopg")
        _contrib.uninstrument()
