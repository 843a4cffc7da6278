"""psycopg2: contrib ``Psycopg2Instrumentor`` (CLIENT span per statement) plus
``db_client_operation_duration_seconds``. Connections opened before ``init()`` are not traced
(the instrumentor patches ``psycopg2.connect``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from obskit.integrations import _db
from obskit.integrations._contrib import Contrib

if TYPE_CHECKING:
    from obskit._init import Handle

LIBRARIES = ("psycopg2", "opentelemetry.instrumentation.psycopg2")

_contrib = Contrib()


def instrument(handle: Handle) -> None:
    _db.traced_drivers.add("psycopg2")
    if _contrib.active:
        return
    import psycopg2
    from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor

    _contrib.instrument(Psycopg2Instrumentor(), handle,
                        lambda: hasattr(psycopg2.connect, "__wrapped__"), "psycopg2.connect")
    _db.wrap_dbapi("psycopg2")


def uninstrument() -> None:
    _db.traced_drivers.discard("psycopg2")
    if _contrib.active:
        _db.unwrap_dbapi("psycopg2")
        _contrib.uninstrument()
