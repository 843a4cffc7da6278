"""An OpenTelemetry contrib instrumentor that an obskit integration switches on and off.

The integrations built on a contrib instrumentor (requests, httpx, psycopg, psycopg2, asyncpg,
redis) add obskit's metric wrappers on top of it; this holds the part they share: whose
instrumentation it is, and whether it really patched what it should.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Contrib:
    """The contrib instrumentor of one integration, and whether obskit switched it on."""

    def __init__(self) -> None:
        self.instrumentor: Any = None
        self.owned = False

    @property
    def active(self) -> bool:
        return self.instrumentor is not None

    def instrument(self, instrumentor: Any, handle: Any, patched: Callable[[], bool],
                   target: str) -> None:
        """Switch ``instrumentor`` on; ``patched()`` checks that ``target`` is now wrapped."""
        # Someone else's instrumentation stays theirs: we only undo what we did.
        self.owned = not instrumentor.is_instrumented_by_opentelemetry
        if self.owned:
            instrumentor.instrument(tracer_provider=handle.tracer_provider)
        if not patched():
            # A contrib instrumentor logs and does nothing on a version conflict: say so.
            raise RuntimeError(f"{type(instrumentor).__name__} did not patch {target}")
        self.instrumentor = instrumentor

    def uninstrument(self) -> None:
        """Switch it off again if obskit switched it on (call after removing obskit's wraps)."""
        if self.instrumentor is not None and self.owned:
            self.instrumentor.uninstrument()
        self.instrumentor = None
