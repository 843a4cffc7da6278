"""Auto-instrumentation: one module per library, enabled by ``obskit.init()``.

Each module ``obskit.integrations.<name>`` provides:

* ``LIBRARIES``: top-level modules that must be importable for it to apply (checked with
  ``importlib.util.find_spec``, so a missing library costs nothing and is skipped silently);
  the first one is the library itself;
* ``instrument(handle) -> None``: enable tracing + the catalogue's metrics; idempotent;
* ``uninstrument() -> None``: undo it (tests, ``obskit.shutdown()``).

``handle`` is the ``obskit.Handle`` returned by ``init()``: ``handle.catalogue`` (metrics),
``handle.tracer_provider``, ``handle.settings``.

A failing integration is logged and counted (``obskit_internal_errors_total``), never raised:
the host application keeps running with less telemetry.

Libraries are instrumented when the application imports them, not by ``init()``: a library that
is already imported is instrumented at once; for one that is not, a post-import hook (wrapt)
instruments it right after its first import. So ``init()`` never imports a library the service
does not use — with every supported library installed, importing them all added ~680
modules, ~0.6 s of start-up and ~76,000 objects that every full garbage collection walks.
An integration waiting for its library is ``pending`` in the handle's ``integrations``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import wrapt

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
    state: str  # "active", "pending" (until its library is imported), "disabled",
    #             "missing" (library not installed), "failed"
    detail: str = ""


def _available(module: Any) -> bool:
    return all(importlib.util.find_spec(lib) is not None for lib in module.LIBRARIES)


_lock = threading.Lock()
#: library -> integrations of the current init() waiting for its first import.
_pending: dict[str, list[tuple[Any, IntegrationStatus, Handle]]] = {}
#: libraries with a post-import hook registered (one per library for the whole process).
_hooked: set[str] = set()


def _activate(module: Any, status: IntegrationStatus, handle: Handle) -> None:
    from obskit._internal import internal_error

    try:
        module.instrument(handle)
        status.state, status.detail = "active", ""
    except Exception as exc:  # never break the host because of telemetry
        internal_error("integration." + status.name, exc)
        status.state, status.detail = "failed", f"{type(exc).__name__}: {exc}"


def _on_import(library: Any) -> None:
    """wrapt post-import hook: instrument what waits for ``library`` (runs once per library)."""
    name = getattr(library, "__name__", "")
    with _lock:
        waiting = _pending.pop(name, [])
        _hooked.discard(name)  # wrapt fires a hook once; it is in sys.modules from now on
    for module, status, handle in waiting:
        _activate(module, status, handle)


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
            library = module.LIBRARIES[0]
            status = IntegrationStatus(name, "pending",
                                       f"instrumented when {library} is first imported")
            statuses.append(status)
            if library in sys.modules:
                _activate(module, status, handle)
                continue
            with _lock:
                _pending.setdefault(library, []).append((module, status, handle))
                register = library not in _hooked
                _hooked.add(library)
            if register:  # fires at once if another thread imported it meanwhile
                wrapt.register_post_import_hook(_on_import, library)
        except Exception as exc:  # never break the host because of telemetry
            internal_error("integration." + name, exc)
            statuses.append(IntegrationStatus(name, "failed", f"{type(exc).__name__}: {exc}"))
    return statuses


def uninstrument_all() -> None:
    from obskit._internal import internal_error

    with _lock:  # hooks still registered find nothing to do
        _pending.clear()

    for name in INTEGRATIONS:
        try:
            module = importlib.import_module(f"obskit.integrations.{name}")
            module.uninstrument()
        except ImportError:
            continue
        except Exception as exc:
            internal_error("integration." + name, exc)
