"""obskit.testing.wait_for / wait_for_async: poll until true, return the value, or say what."""

from __future__ import annotations

import itertools
import time

import pytest

from obskit.testing import wait_for, wait_for_async


def test_returns_the_first_truthy_value() -> None:
    calls = itertools.count()
    assert wait_for(lambda: next(calls) >= 3 and "ready", timeout=5, interval=0.001) == "ready"


def test_times_out_naming_what_it_waited_for_and_the_last_value() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"after 0.2 s waiting for the queue to drain "
                                             r"\(last value: 0\)"):
        wait_for(lambda: 0, timeout=0.2, interval=0.05, what="the queue to drain")
    assert 0.2 <= time.monotonic() - started < 1


def test_without_what_the_predicate_is_named() -> None:
    def orders_done() -> bool:
        return False

    with pytest.raises(AssertionError, match="waiting for .*orders_done"):
        wait_for(orders_done, timeout=0)


async def test_async_accepts_a_coroutine_function() -> None:
    calls = itertools.count()

    async def depth() -> int:
        return next(calls)

    assert await wait_for_async(depth, timeout=5, interval=0.001) == 1
    with pytest.raises(AssertionError, match="waiting for nothing"):
        await wait_for_async(lambda: None, timeout=0.05, what="nothing")
