"""Dashboard cache: hit ratio, latency, invalidations by trigger, Redis errors."""

from __future__ import annotations

from obskit.bundle._params import Params

from ._common import (
    EMPTY_WHILE_HEALTHY,
    Board,
    Target,
    below,
    eq,
    label_vars,
    match,
    query_var,
    scoped,
    timeseries,
)

NAME = "cache"
REQUESTS = "cache_requests_total"


def build(p: Params) -> Board:
    cache = match("cache", "$cache")
    caches = f"{REQUESTS}{p.sel()}"
    b = Board(p, NAME, "obskit / Dashboard cache",
              "The MES dashboard's cache-aside in Redis: orders by status (TTL 60 s) and the "
              "new-orders view (invalidated on a new order and on a status update).",
              [*label_vars(p, channel=False),
               query_var("cache", "Cache", f"label_values({caches}, cache)")])

    b.row("Hits")
    b.add(timeseries(
        "Hit ratio",
        f"Share of lookups served from the cache (hit and stale count as served), by cache. "
        f"The dashed line is the floor ({p.cache_hit_ratio_min:.0%}, parameter "
        "cache_hit_ratio_min): below it the dashboard's reads go to PostgreSQL.",
        "percentunit",
        [Target(f"sum by (cache) (rate({REQUESTS}{scoped(p, cache, match('result', 'hit|stale'))}"
                f"[$__rate_interval])) / sum by (cache) (rate({REQUESTS}{scoped(p, cache)}"
                "[$__rate_interval]))", "{{cache}}")],
        thresholds=below(p.cache_hit_ratio_min)))
    b.add(timeseries(
        "Lookups by result",
        "Cache lookups per second by cache and result: hit, stale (served while one caller "
        "refreshes), miss (read from PostgreSQL), error (Redis failed; read from PostgreSQL).",
        "ops",
        [Target(f"sum by (cache, result) (rate({REQUESTS}{scoped(p, cache)}[$__rate_interval]))",
                "{{cache}} {{result}}")], stack=True))

    b.row("Latency and invalidation")
    b.add(timeseries(
        "Cache latency by operation",
        "p50/p95/p99 of the cache-aside operations (lookup, store, invalidate) and of the Redis "
        "commands under them.",
        "s",
        [Target(f"histogram_quantile({q}, sum by (le, operation) (rate("
                f"cache_operation_duration_seconds_bucket{scoped(p)}[$__rate_interval])))",
                f"p{round(q * 100)} {{{{operation}}}}", exemplar=q == 0.95)
         for q in (0.5, 0.95, 0.99)]))
    b.add(timeseries(
        "Invalidations by trigger",
        "Cache invalidations per second by cache and trigger: order_created and status_changed "
        "(the two triggers of the new-orders view), redis_recovered (everything dropped after "
        "Redis came back).",
        "ops",
        [Target(f"sum by (cache, trigger) (rate(cache_invalidations_total{scoped(p)}"
                "[$__rate_interval]))", "{{cache}} {{trigger}}")]))
    b.add(timeseries(
        "Redis errors",
        EMPTY_WHILE_HEALTHY + "cache lookups that failed because Redis did not answer, by "
        "cache. The dashboard still works (it reads PostgreSQL) but slower and with more "
        "load on the database.",
        "ops",
        [Target(f"sum by (cache) (rate({REQUESTS}{scoped(p, cache, eq('result', 'error'))}"
                "[$__rate_interval]))", "{{cache}}")],
        thresholds=[(None, "green"), (0.001, "red")]), expect="empty_while_healthy")
    b.add(timeseries(
        "Dashboard request duration",
        "p95 of the MES dashboard's HTTP routes as the managers feel it (cache hits and misses "
        "together).",
        "s",
        [Target(f"histogram_quantile(0.95, sum by (le, route) (rate("
                f"http_server_request_duration_seconds_bucket"
                f"{scoped(p, match('route', '.*dashboard.*'))}[$__rate_interval])))",
                "{{route}}", exemplar=True)]))
    return b
