"""Auto-instrumentation: one module per library, enabled by ``obskit.init()``.

Each module ``obskit.integrations.<name>`` provides:

* ``LIBRARIES``: top-level modules that must be importable for it to apply (checked with
  ``importlib.util.find_spec``, so a missing library costs nothing and is skipped silently);
* ``instrument(handle) -> None``: enable tracing + the catalogue's metrics; idempotent;
* ``uninstrument() -> None``: undo it (tests, ``obskit.shutdown()``).

``handle`` is the ``obskit.Handle`` returned by ``init()``: ``handle.catalogue`` (metrics),
``handle.tracer_provider``, ``handle.settings``.

A failing integration is logged and counted (``obskit_internal_errors_total``), never raised:
the host application keeps running with less telemetry.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from obskit._init import Handle

#: Name (as in OBSKIT_DISABLED_INSTRUMENTATIONS and `obskit doctor`) -> module.
#: Order matters: server frameworks first so their middleware wraps everything else.
INTEGRATIONS: tuple[str, ...] = (
    "fastapi",
    "starlette",
    "flask",
    "requests",
    "httpx",
    "psycopg",
    "psycopg2",
    "asyncpg",
    "sqlalchemy",
    "redis",
    "pika",
    "aio_pika",
)


@dataclass
class IntegrationStatus:
    name: str
    state: str  # "active", "disabled", "missing" (library not installed), "failed"
    detail: str = ""


def _available(module: Any) -> bool:
    return all(importlib.util.find_spec(lib) is not None for lib in module.LIBRARIES)


def instrument_all(handle: Handle, disabled: tuple[str, ...]) -> list[IntegrationStatus]:
    from obskit._internal import internal_error

    statuses: list[IntegrationStatus] = []
    for name in INTEGRATIONS:
        if name in disabled or "all" in disabled:
            statuses.append(IntegrationStatus(name, "disabled", "OBSKIT_DISABLED_INSTRUMENTATIONS"))
            continue
        try:
            module = importlib.import_module(f"obskit.integrations.{name}")
            if not _available(module):
                statuses.append(IntegrationStatus(name, "missing", "library not installed"))
                continue
            module.instrument(handle)
            statuses.append(IntegrationStatus(name, "active"))
        except Exception as exc:  # never break the host because of telemetry
            internal_error("integration." + name, exc)
            statuses.append(IntegrationStatus(name, "failed", f"{type(exc).__name__}: {exc}"))
    return statuses


def uninstrument_all() -> None:
    from obskit._internal import internal_error

    for name in INTEGRATIONS:
        try:
            module = importlib.import_module(f"obskit.integrations.{name}")
            module.uninstrument()
        except ImportError:
            continue
        except Exception as exc:
            internal_error("integration." + name, exc)
