"""Cache-aside for the MES dashboard, in Redis through cashews.

Two kinds of entries, as the company's plan asks:

* **per-status lists** live ``list_ttl`` seconds (60) and are never invalidated: managers accept a
  list that is up to a minute old, and the DB is spared the reads.
* **hot views** — the counts (summary) and the newest orders — are dropped on the two triggers, a
  new order and a status change. They are keyed under a *generation* number kept in Redis
  (``{prefix}:dash:gen``): invalidation is one ``INCR`` that every process sees at once, with no
  key scan, and a reader that loaded under an old generation stores its (maybe stale) result under
  a key nobody reads any more. Old generations expire by ``hot_ttl``.

Redis down means slower, not broken: every lookup that cannot reach Redis loads from the DB and is
counted as ``cache_requests_total{result="error"}``. After a failure Redis is skipped for
``retry_after`` seconds (no timeout per request while it is down), and the first successful call
after an outage bumps the generation, because invalidations sent meanwhile were lost.

cashews gives the Redis client, serialization and key handling; what it lacks is the metrics
(its decorators hide hit/miss/error, and ``suppress=True`` turns errors into silent misses) and
generation-based invalidation, which is the small part written here.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from cashews import Cache

import obskit
from obskit.metrics import catalogue, observe

T = TypeVar("T")
Result = Literal["hit", "miss", "error", "bypass"]

# Read here, not in orderflow.config, only until the lead moves them into ``Settings``.
ENV_LIST_TTL = "ORDERFLOW_DASHBOARD_LIST_TTL"
ENV_HOT_TTL = "ORDERFLOW_DASHBOARD_HOT_TTL"
ENV_ENABLED = "ORDERFLOW_DASHBOARD_CACHE"
ENV_INVALIDATE_INTERVAL = "ORDERFLOW_DASHBOARD_INVALIDATE_INTERVAL"

_log = obskit.get_logger("orderflow.cache")
_MISSING = object()
_SYSTEM = "redis"


class DashboardCache:
    """Cache-aside with hit/miss/error/latency/invalidation metrics from the obskit catalogue.

    ``enabled=False`` always loads from the DB (``result`` ``"bypass"``, not counted): the
    benchmark's uncached baseline.
    """

    def __init__(self, redis_url: str, *, prefix: str = "orderflow", list_ttl: float = 60.0,
                 hot_ttl: float = 60.0, enabled: bool = True, timeout: float = 0.5,
                 retry_after: float = 2.0, min_interval: float = 1.0) -> None:
        self.prefix = f"{prefix}:dash"
        self.list_ttl = list_ttl
        self.hot_ttl = hot_ttl
        self.enabled = enabled
        self.retry_after = retry_after
        self.min_interval = min_interval
        self._last_invalidation = -1e9
        self._trailing: asyncio.Task[None] | None = None
        self._cache = Cache(name=f"orderflow-dashboard-{id(self)}")
        # JSON, not pickle: whoever can write Redis must not be able to run code here.
        self._cache.setup(redis_url, suppress=False, pickle_type="json",
                          socket_connect_timeout=timeout, socket_timeout=timeout,
                          client_name="orderflow-dashboard")
        self._down_until = 0.0
        self._was_down = False
        self._last_warning = 0.0
        self._inflight: dict[str, asyncio.Future[Any]] = {}

    # --- public -----------------------------------------------------------------------------
    async def get_or_load(self, name: str, key: str, loader: Callable[[], Awaitable[T]], *,
                          hot: bool) -> tuple[T, Result]:
        """The cached value of ``key``, else ``loader()`` stored for next time.

        ``name`` is the ``cache`` label (bounded: one per view). Returns the value and how it was
        served, for the ``X-Cache`` header.
        """
        if not self.enabled:
            return await loader(), "bypass"
        cat = catalogue()
        started = time.perf_counter()
        full_key: str | None = None
        value: Any = _MISSING
        try:
            full_key = await self._key(key, hot)
            value = await self._call(self._cache.get(full_key, default=_MISSING))
        except Exception as exc:
            self._failed("lookup", exc)
        finally:
            observe(cat.cache_duration.labels(_SYSTEM, "lookup"), time.perf_counter() - started)
        if full_key is None:
            cat.cache_requests.labels(name, "error").inc()
            return await loader(), "error"
        if value is not _MISSING:
            cat.cache_requests.labels(name, "hit").inc()
            return value, "hit"
        cat.cache_requests.labels(name, "miss").inc()
        return await self._load_once(full_key, loader, self.hot_ttl if hot else self.list_ttl), \
            "miss"

    async def invalidate(self, trigger: str) -> None:
        """Drop every hot view (counts, newest orders) in all processes. Never raises.

        At most one invalidation per ``min_interval`` seconds: the first trigger after a quiet
        spell acts at once, the ones that follow within the interval are folded into one more
        at its end. Under load (hundreds of status changes a second) that keeps the hot views
        cached between invalidations instead of missing on every read.
        """
        if not self.enabled:
            return
        wait = self._last_invalidation + self.min_interval - time.monotonic()
        if wait <= 0:
            self._last_invalidation = time.monotonic()
            await self._incr_generation(trigger)
        elif self._trailing is None:
            self._trailing = asyncio.get_running_loop().create_task(self._later(wait, trigger))

    async def _later(self, wait: float, trigger: str) -> None:
        try:
            await asyncio.sleep(wait)
            self._last_invalidation = time.monotonic()
        finally:
            self._trailing = None
        await self._incr_generation(trigger)

    async def _incr_generation(self, trigger: str) -> None:
        started = time.perf_counter()
        try:
            await self._call(self._cache.incr(self._gen_key, expire=None))
            catalogue().cache_invalidations.labels("dashboard", trigger).inc()
        except Exception as exc:
            self._failed("invalidate", exc)
        finally:
            observe(catalogue().cache_duration.labels(_SYSTEM, "invalidate"),
                    time.perf_counter() - started)

    async def close(self) -> None:
        if self._trailing is not None:
            self._trailing.cancel()
        try:
            await self._cache.close()
        except Exception:  # closing a client whose server is gone
            pass

    # --- machinery --------------------------------------------------------------------------
    @property
    def _gen_key(self) -> str:
        return f"{self.prefix}:gen"

    async def _key(self, key: str, hot: bool) -> str:
        if not hot:
            return f"{self.prefix}:list:{key}"
        gen = await self._call(self._cache.get(self._gen_key, default=0))
        return f"{self.prefix}:hot:{gen}:{key}"

    async def _call(self, awaitable: Awaitable[T]) -> T:
        if time.monotonic() < self._down_until:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()  # never awaited: no "coroutine was never awaited" warning
            raise ConnectionError("redis marked down; retrying later")
        result = await awaitable
        if self._was_down:
            # Invalidations sent while Redis was unreachable are lost: drop all hot views now.
            self._was_down = False
            await self._cache.incr(self._gen_key, expire=None)
            catalogue().cache_invalidations.labels("dashboard", "redis_recovered").inc()
        return result

    def _failed(self, operation: str, exc: Exception) -> None:
        now = time.monotonic()
        if now >= self._down_until:  # a real failure, not the short-circuit
            self._down_until = now + self.retry_after
            self._was_down = True
        if now - self._last_warning > 30:  # one line per outage, not one per request
            self._last_warning = now
            _log.warning("dashboard cache unavailable, reading from the database",
                         operation=operation, error=repr(exc))

    async def _load_once(self, full_key: str, loader: Callable[[], Awaitable[T]],
                         ttl: float) -> T:
        # Single flight per process: N readers missing the same key run one query, not N.
        pending = self._inflight.get(full_key)
        if pending is not None:
            return await asyncio.shield(pending)  # type: ignore[no-any-return]
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[full_key] = fut
        try:
            value = await loader()
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters may be none
            raise
        else:
            fut.set_result(value)
        finally:
            self._inflight.pop(full_key, None)
        started = time.perf_counter()
        try:
            await self._call(self._cache.set(full_key, value, expire=ttl))
        except Exception as exc:
            self._failed("store", exc)
        finally:
            observe(catalogue().cache_duration.labels(_SYSTEM, "store"),
                    time.perf_counter() - started)
        return value


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def from_settings(redis_url: str, prefix: str = "orderflow") -> DashboardCache:
    """A cache configured from ``ORDERFLOW_DASHBOARD_*`` (TTLs in seconds, ``CACHE=0`` disables)."""
    enabled = os.environ.get(ENV_ENABLED, "1").strip().lower() not in {"0", "false", "off", "no"}
    return DashboardCache(redis_url, prefix=prefix, list_ttl=_env_float(ENV_LIST_TTL, 60.0),
                          hot_ttl=_env_float(ENV_HOT_TTL, 60.0), enabled=enabled,
                          min_interval=_env_float(ENV_INVALIDATE_INTERVAL, 1.0))


# --- the process-wide cache the event hooks invalidate ---------------------------------------
_default: DashboardCache | None = None


def default_cache() -> DashboardCache:
    """The cache shared by the dashboard routes and the event hooks of this process."""
    global _default
    if _default is None:
        from orderflow import config

        settings = config.load()
        _default = from_settings(settings.redis_url, settings.redis_prefix)
    return _default


def set_default(cache: DashboardCache | None) -> None:
    """Replace the process-wide cache (tests, benchmarks)."""
    global _default
    _default = cache


async def on_order_created(event: dict[str, Any]) -> None:
    await default_cache().invalidate("order_created")


async def on_status_changed(event: dict[str, Any]) -> None:
    await default_cache().invalidate("status_changed")
