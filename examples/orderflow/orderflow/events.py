"""In-process hooks for "an order was created" and "an order's status changed".

The dashboard cache subscribes here to invalidate. Callbacks run in the process that committed
the change (order created: the ingress; status changed: the status consumer and the relay), after
the commit, and a failing callback is logged, never raised: the order pipeline must not stop
because a cache is down. ``publish_redis()`` also fans the same events out on Redis pub/sub
channel ``orderflow:events`` for other processes, with a short timeout behind a circuit breaker
(``orderflow.degradation``): while Redis is down the fan-out is skipped at once and counted in
``orderflow_degraded_total{dependency="redis",operation="events"}``; other processes' dashboard
caches then expire by their TTL instead of being invalidated.

Event dicts: ``{"type": "order_created"|"status_changed", "order_id", "channel", "status", "at"}``.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable
from typing import Any

import obskit
from orderflow.config import Settings
from orderflow.degradation import Breaker, Unavailable

REDIS_CHANNEL = "orderflow:events"
PLUGINS = ("orderflow.api.dashboard",)

Callback = Callable[[dict[str, Any]], Any]
_created: list[Callback] = []
_changed: list[Callback] = []
_redis: Any = None
_breaker: Breaker | None = None
_plugins_loaded = False
_log = obskit.get_logger("orderflow.events")


def on_order_created(fn: Callback) -> Callback:
    """Register ``fn(event)`` (sync or async). Usable as a decorator."""
    _created.append(fn)
    return fn


def on_status_changed(fn: Callback) -> Callback:
    _changed.append(fn)
    return fn


def set_redis(client: Any, settings: Settings | None = None) -> None:
    """Give the module a ``redis.asyncio`` client to fan events out on ``orderflow:events``;
    ``settings`` gives the timeout and breaker options (``ORDERFLOW_REDIS_TIMEOUT``, ...)."""
    global _redis, _breaker
    settings = settings or Settings()
    _redis = client
    _breaker = Breaker("redis", "events", timeout=settings.redis_timeout,
                       failures=settings.breaker_failures, reset_seconds=settings.breaker_reset)


def load_plugins() -> None:
    """Import known plugins (the dashboard) and let them register hooks. Safe to call twice."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for name in PLUGINS:
        try:
            mod = importlib.import_module(name)
        except ImportError as exc:
            if exc.name != name:  # the plugin exists but is broken: say so
                _log.warning("plugin import failed", plugin=name, error=repr(exc))
            continue
        register = getattr(mod, "register_hooks", None)
        if callable(register):
            try:
                register()
            except Exception:
                _log.exception("plugin register_hooks failed", plugin=name)


async def _fire(callbacks: list[Callback], events: list[dict[str, Any]]) -> None:
    for event in events:
        for fn in list(callbacks):
            try:
                result = fn(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                _log.exception("event callback failed", callback=getattr(fn, "__name__", fn),
                               event_type=event.get("type"))
    if _redis is not None and _breaker is not None and events:
        async def publish() -> None:
            async with _redis.pipeline(transaction=False) as pipe:
                for event in events:
                    pipe.publish(REDIS_CHANNEL, json.dumps(event, default=str))
                await pipe.execute()

        try:
            await _breaker.call(publish)
        except Unavailable:  # Redis down: staler dashboards, not lost orders; counted, logged
            pass


async def order_created(events: list[dict[str, Any]]) -> None:
    await _fire(_created, [{"type": "order_created", **e} for e in events])


async def status_changed(events: list[dict[str, Any]]) -> None:
    await _fire(_changed, [{"type": "status_changed", **e} for e in events])
