"""Wait for a condition instead of sleeping a fixed time: a test is as fast as the code under test
and fails with what it waited for, instead of passing or failing by the clock."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _describe(predicate: Callable[[], Any], what: str | None) -> str:
    return what or str(getattr(predicate, "__qualname__", predicate))


def _timed_out(predicate: Callable[[], Any], what: str | None, timeout: float,
               last: object) -> AssertionError:
    return AssertionError(f"timed out after {timeout} s waiting for "
                          f"{_describe(predicate, what)} (last value: {last!r})")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, *, interval: float = 0.05,
             what: str | None = None) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns a truthy value; return it.

    Raises ``AssertionError`` naming ``what`` (default: the predicate's name) and the last value
    when ``timeout`` seconds pass first. The predicate is always called at least once, and once
    more at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        expired = time.monotonic() >= deadline
        value = predicate()
        if value:
            return value
        if expired:
            raise _timed_out(predicate, what, timeout, value)
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


async def wait_for_async(predicate: Callable[[], T | Awaitable[T]], timeout: float = 10.0, *,
                         interval: float = 0.05, what: str | None = None) -> T:
    """``wait_for`` for a coroutine: the event loop runs between calls, and ``predicate`` may be
    a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        expired = time.monotonic() >= deadline
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if expired:
            raise _timed_out(predicate, what, timeout, value)
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
