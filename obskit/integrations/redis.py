"""redis: contrib ``RedisInstrumentor`` (CLIENT span per command / pipeline) plus
``cache_operation_duration_seconds`` (operation = the command name, ``PIPELINE`` for a pipeline)
from wrapt wrappers outside the contrib ones, for the sync and asyncio clients."""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any

import wrapt
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap

from obskit.integrations import _db
from obskit.integrations._contrib import Contrib

if TYPE_CHECKING:
    from obskit._init import Handle

LIBRARIES = ("redis", "opentelemetry.instrumentation.redis")

_contrib = Contrib()
_wrapped: list[tuple[Any, str]] = []


def _command(args: Any) -> str:
    """The command name, upper case; bounded (alphabetic, at most 24 letters) else ``OTHER``."""
    try:
        name = args[0]
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        name = str(name).split(" ", 1)[0].upper()
    except Exception:
        return _db.OTHER
    return name if name.isalpha() and len(name) <= 24 else _db.OTHER


def _execute_command(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if not is_instrumentation_enabled():  # obskit's own traffic (the journey store)
        return wrapped(*args, **kwargs)
    start = perf_counter()
    try:
        return wrapped(*args, **kwargs)
    finally:
        _db.record_cache("redis", _command(args), perf_counter() - start)


async def _execute_command_async(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if not is_instrumentation_enabled():  # obskit's own traffic (the journey store)
        return await wrapped(*args, **kwargs)
    start = perf_counter()
    try:
        return await wrapped(*args, **kwargs)
    finally:
        _db.record_cache("redis", _command(args), perf_counter() - start)


def _pipeline(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if not is_instrumentation_enabled():  # obskit's own traffic (the journey store)
        return wrapped(*args, **kwargs)
    start = perf_counter()
    try:
        return wrapped(*args, **kwargs)
    finally:
        _db.record_cache("redis", "PIPELINE", perf_counter() - start)


async def _pipeline_async(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if not is_instrumentation_enabled():  # obskit's own traffic (the journey store)
        return await wrapped(*args, **kwargs)
    start = perf_counter()
    try:
        return await wrapped(*args, **kwargs)
    finally:
        _db.record_cache("redis", "PIPELINE", perf_counter() - start)


def instrument(handle: Handle) -> None:
    if _contrib.active:
        return
    import redis
    import redis.asyncio.client
    import redis.client
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    _contrib.instrument(
        RedisInstrumentor(), handle,
        lambda: hasattr(redis.Redis.__dict__.get("execute_command"), "__wrapped__"),
        "redis.Redis.execute_command")
    targets = [
        (redis.Redis, "execute_command", _execute_command),
        (redis.client.Pipeline, "execute", _pipeline),
        (redis.asyncio.client.Redis, "execute_command", _execute_command_async),
        (redis.asyncio.client.Pipeline, "execute", _pipeline_async),
    ]
    for owner, name, wrapper in targets:
        wrapt.wrap_function_wrapper(owner, name, wrapper)
        _wrapped.append((owner, name))


def uninstrument() -> None:
    if not _contrib.active:
        return
    while _wrapped:
        unwrap(*_wrapped.pop())
    _contrib.uninstrument()
