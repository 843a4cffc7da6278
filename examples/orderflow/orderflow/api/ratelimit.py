"""Rate limits shared by every ingress instance, stored in Redis by the ``limits`` library.

Limits (``limits`` notation, several separated by ``;``):

* shop (B2C): per client IP — ``ORDERFLOW_RATE_LIMIT_B2C``;
* open API (B2B): per client IP — ``ORDERFLOW_RATE_LIMIT_B2B_IP`` (checked before the key, so
  guessing keys is limited too) — then per API key: the key's own ``rate_limit`` or
  ``ORDERFLOW_RATE_LIMIT_B2B``.

Moving-window algorithm: no burst of 2× the limit at a window edge.

Redis down: **fail open, to a local limiter**. Each check has a short timeout
(``ORDERFLOW_REDIS_TIMEOUT``) behind a circuit breaker (``orderflow.degradation``), and while Redis
cannot answer the same limits are enforced per process in memory — so an outage adds at most one
timeout to a few requests, never refuses an order for want of Redis, and still stops a flood
(each ingress instance allows the full limit on its own). Counted in
``orderflow_rate_limit_errors_total`` and ``orderflow_degraded_total{dependency="redis",
operation="rate_limit"}``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from prometheus_client import Counter

import obskit
from orderflow.degradation import Breaker, Unavailable

RATE_LIMITED = Counter("orderflow_rate_limited", "Requests refused with 429, by channel and "
                       "by what was over its limit (ip, api_key).", ["channel", "scope"])
RATE_LIMIT_ERRORS = Counter("orderflow_rate_limit_errors", "Rate-limit checks that failed "
                            "(Redis unreachable); the local in-memory limiter decided.",
                            ["channel"])
_log = obskit.get_logger("orderflow.ratelimit")


@lru_cache(maxsize=256)
def parse(text: str) -> tuple[RateLimitItem, ...]:
    return tuple(parse_many(text))


@dataclass
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    policy: str
    scope: str

    def headers(self) -> dict[str, str]:
        h = {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
             "RateLimit-Reset": str(self.reset_seconds), "RateLimit-Policy": self.policy}
        if not self.allowed:
            h["Retry-After"] = str(max(1, self.reset_seconds))
        return h


class RateLimiter:
    def __init__(self, redis_url: str, prefix: str, *, timeout: float = 0.1,
                 failures: int = 3, reset_seconds: float = 5.0) -> None:
        # implementation="redispy": the redis client obskit instruments (spans, latency).
        # No retries: the breaker decides when to try again, not redis-py's backoff.
        self.storage = RedisStorage(redis_url.replace("redis://", "async+redis://", 1),
                                    implementation="redispy", key_prefix=f"{prefix}:ratelimit",
                                    wrap_exceptions=True, socket_timeout=timeout,
                                    socket_connect_timeout=timeout,
                                    retry=None)  # type: ignore[arg-type]  # passed to redis-py
        self.strategy = MovingWindowRateLimiter(self.storage)
        self.local = MovingWindowRateLimiter(MemoryStorage())
        self.breaker = Breaker("redis", "rate_limit", timeout=timeout, failures=failures,
                               reset_seconds=reset_seconds)

    async def check(self, channel: str, scope: str, identity: str, limits_text: str
                    ) -> Verdict | None:
        """Consume one hit on every limit in ``limits_text``; the most restrictive decides.

        Redis unavailable: the local in-memory limiter decides (see the module docstring).
        """
        try:
            worst = await self.breaker.call(
                lambda: self._check(self.strategy, limits_text, channel, scope, identity))
        except Unavailable:
            RATE_LIMIT_ERRORS.labels(channel).inc()
            worst = await self._check(self.local, limits_text, channel, scope, identity)
        if worst is not None and not worst.allowed:
            RATE_LIMITED.labels(channel, scope).inc()
        return worst

    @staticmethod
    async def _check(strategy: MovingWindowRateLimiter, limits_text: str, channel: str,
                     scope: str, identity: str) -> Verdict | None:
        worst: Verdict | None = None
        for item in parse(limits_text):
            allowed = await strategy.hit(item, channel, scope, identity)
            stats = await strategy.get_window_stats(item, channel, scope, identity)
            reset = max(0, math.ceil(stats.reset_time - time.time()))
            v = Verdict(allowed, item.amount, stats.remaining, reset,
                        f"{item.amount};w={item.get_expiry()}", scope)
            if worst is None or (not v.allowed and worst.allowed) or (
                    v.allowed == worst.allowed and v.remaining < worst.remaining):
                worst = v
            if not allowed:
                break  # don't consume the longer windows for a refused request
        return worst
