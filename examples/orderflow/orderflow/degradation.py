"""Circuit breakers in front of optional dependencies (Redis), so their outage costs an order
nothing but a counter.

A ``Breaker`` runs each call with a short timeout. After ``failures`` failures in a row it
*opens*: calls are refused at once (no connect attempt, no timeout to wait out) for
``reset_seconds``; then one call is let through as a probe, and its success closes the breaker.
Every call refused or failed counts in ``orderflow_degraded_total{dependency,operation}``; the
state is ``orderflow_breaker_open`` and each transition is logged once (not once per request).

Why not ``purgatory`` or ``aiobreaker``: the state machine is the small part; what orderflow needs
around it (the metric per degraded call, one log line per transition, a timeout per call) would
be written either way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import Counter, Gauge

import obskit

T = TypeVar("T")

DEGRADED = Counter("orderflow_degraded", "Operations done in degraded mode because a dependency "
                   "failed, timed out or had its circuit breaker open.",
                   ["dependency", "operation"])
BREAKER_OPEN = Gauge("orderflow_breaker_open", "1 while the circuit breaker in front of a "
                     "dependency is open (calls skipped).", ["dependency", "operation"],
                     multiprocess_mode="max")
_log = obskit.get_logger("orderflow.degradation")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Unavailable(Exception):
    """The call was not made (breaker open) or failed; the caller takes its fallback."""


class Breaker:
    def __init__(self, dependency: str, operation: str, *, timeout: float,
                 failures: int = 3, reset_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.dependency, self.operation = dependency, operation
        self.timeout, self.failures, self.reset_seconds = timeout, failures, reset_seconds
        self.state = CLOSED
        self._clock = clock
        self._failed = 0
        self._opened_at = 0.0
        self._degraded = DEGRADED.labels(dependency, operation)
        self._gauge = BREAKER_OPEN.labels(dependency, operation)
        self._gauge.set(0)

    def _allow(self) -> bool:
        if self.state == CLOSED:
            return True
        if self.state == OPEN and self._clock() - self._opened_at >= self.reset_seconds:
            self.state = HALF_OPEN  # this caller is the probe; others wait for its result
            return True
        return False

    async def call(self, op: Callable[[], Awaitable[T]]) -> T:
        """``await op()`` within the timeout, or raise ``Unavailable`` (at once when open)."""
        if not self._allow():
            self._degraded.inc()
            raise Unavailable(f"{self.dependency} {self.operation}: circuit open")
        try:
            result = await asyncio.wait_for(op(), timeout=self.timeout)
        except asyncio.CancelledError:
            if self.state == HALF_OPEN:  # the probe's caller went away: probe again later
                self.state, self._opened_at = OPEN, self._clock()
            raise
        except Exception as exc:
            self._degraded.inc()
            self._failure(exc)
            raise Unavailable(f"{self.dependency} {self.operation}: {exc!r}") from exc
        if self.state != CLOSED or self._failed:
            self._success()
        return result

    def _failure(self, exc: BaseException) -> None:
        self._failed += 1
        if self.state == HALF_OPEN or (self.state == CLOSED and self._failed >= self.failures):
            was = self.state
            self.state, self._opened_at = OPEN, self._clock()
            self._gauge.set(1)
            if was == CLOSED:
                _log.warning("dependency unavailable: circuit opened, serving degraded",
                             dependency=self.dependency, operation=self.operation,
                             error=repr(exc), retry_in_s=self.reset_seconds)

    def _success(self) -> None:
        if self.state != CLOSED:
            _log.warning("dependency back: circuit closed", dependency=self.dependency,
                         operation=self.operation)
        self.state, self._failed = CLOSED, 0
        self._gauge.set(0)
