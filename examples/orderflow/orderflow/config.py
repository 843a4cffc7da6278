"""Settings from the environment: the only module that reads ``ORDERFLOW_*`` variables.

Precedence: explicit argument (``Settings(...)``) > environment variable > default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

ENV_DATABASE_URL = "ORDERFLOW_DATABASE_URL"
ENV_READ_DATABASE_URL = "ORDERFLOW_READ_DATABASE_URL"
ENV_RABBITMQ_URL = "ORDERFLOW_RABBITMQ_URL"
ENV_REDIS_URL = "ORDERFLOW_REDIS_URL"
ENV_RATE_LIMIT_B2C = "ORDERFLOW_RATE_LIMIT_B2C"
ENV_RATE_LIMIT_B2B = "ORDERFLOW_RATE_LIMIT_B2B"
ENV_RATE_LIMIT_B2B_IP = "ORDERFLOW_RATE_LIMIT_B2B_IP"
ENV_RATE_LIMIT_STATUS = "ORDERFLOW_RATE_LIMIT_STATUS"
ENV_MES_STAGE_DELAY = "ORDERFLOW_MES_STAGE_DELAY"
ENV_RETRY_DELAYS = "ORDERFLOW_RETRY_DELAYS"
ENV_PUBLIC_URL = "ORDERFLOW_PUBLIC_URL"
ENV_TRUSTED_PROXIES = "ORDERFLOW_TRUSTED_PROXIES"
ENV_MAX_BODY_BYTES = "ORDERFLOW_MAX_BODY_BYTES"
ENV_DASHBOARD_TOKEN = "ORDERFLOW_DASHBOARD_TOKEN"
ENV_REDIS_PREFIX = "ORDERFLOW_REDIS_PREFIX"
ENV_DASHBOARD_CACHE = "ORDERFLOW_DASHBOARD_CACHE"
ENV_DASHBOARD_LIST_TTL = "ORDERFLOW_DASHBOARD_LIST_TTL"
ENV_DASHBOARD_HOT_TTL = "ORDERFLOW_DASHBOARD_HOT_TTL"
ENV_DASHBOARD_INVALIDATE_INTERVAL = "ORDERFLOW_DASHBOARD_INVALIDATE_INTERVAL"
ENV_DASHBOARD_GENERATION_POLL = "ORDERFLOW_DASHBOARD_GENERATION_POLL"
ENV_DASHBOARD_MAX_STALE = "ORDERFLOW_DASHBOARD_MAX_STALE"
ENV_QUEUE_POLL_INTERVAL = "ORDERFLOW_QUEUE_POLL_INTERVAL"
ENV_REDIS_TIMEOUT = "ORDERFLOW_REDIS_TIMEOUT"
ENV_DB_TIMEOUT = "ORDERFLOW_DB_TIMEOUT"
ENV_BREAKER_FAILURES = "ORDERFLOW_BREAKER_FAILURES"
ENV_BREAKER_RESET = "ORDERFLOW_BREAKER_RESET"
ENV_RETENTION_DAYS = "ORDERFLOW_RETENTION_DAYS"
ENV_FAULTS = "ORDERFLOW_FAULTS"
ENV_MES_CLAIM_LEASE = "ORDERFLOW_MES_CLAIM_LEASE"
ENV_OUTBOX_MAX_ATTEMPTS = "ORDERFLOW_OUTBOX_MAX_ATTEMPTS"
ENV_FAULT_STALL_SECONDS = "ORDERFLOW_FAULT_STALL_SECONDS"
ENV_FAULT_SLOW_SECONDS = "ORDERFLOW_FAULT_SLOW_SECONDS"
#: obskit's own variable, read here only to pass orderflow's Redis as its default.
ENV_JOURNEY_URL = "OBSKIT_JOURNEY_URL"

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/orderflow"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value else default


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value not in {"0", "false", "off", "no"}


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.replace(";", ",").split(",") if x.strip())


@dataclass(frozen=True)
class Settings:
    """Every orderflow option. Field docs name the env var and the default."""

    #: ``ORDERFLOW_DATABASE_URL``: the primary (all writes).
    database_url: str = field(default_factory=lambda: _env(ENV_DATABASE_URL, DEFAULT_DATABASE_URL))
    #: ``ORDERFLOW_READ_DATABASE_URL``: a read replica for status reads; falls back to primary.
    read_database_url: str = ""
    #: ``ORDERFLOW_RABBITMQ_URL`` (vhost in the path).
    rabbitmq_url: str = field(default_factory=lambda: _env(ENV_RABBITMQ_URL, DEFAULT_RABBITMQ_URL))
    #: ``ORDERFLOW_REDIS_URL``: rate-limit counters (shared by all ingress instances), events.
    redis_url: str = field(default_factory=lambda: _env(ENV_REDIS_URL, DEFAULT_REDIS_URL))
    #: ``ORDERFLOW_RATE_LIMIT_B2C``: per client IP on the shop API (``limits`` notation).
    rate_limit_b2c: str = field(
        default_factory=lambda: _env(ENV_RATE_LIMIT_B2C, "20/second;300/minute"))
    #: ``ORDERFLOW_RATE_LIMIT_B2B``: per API key unless the key has its own (``apikey create
    #: --rate-limit``).
    rate_limit_b2b: str = field(
        default_factory=lambda: _env(ENV_RATE_LIMIT_B2B, "50/second;2000/minute"))
    #: ``ORDERFLOW_RATE_LIMIT_B2B_IP``: per client IP on the open API, keys or not (stops key
    #: guessing and one client behind many keys).
    rate_limit_b2b_ip: str = field(
        default_factory=lambda: _env(ENV_RATE_LIMIT_B2B_IP, "200/second"))
    #: ``ORDERFLOW_RATE_LIMIT_STATUS``: per client IP on order-status reads (API and page), so
    #: tokens and order ids cannot be guessed at speed.
    rate_limit_status: str = field(
        default_factory=lambda: _env(ENV_RATE_LIMIT_STATUS, "20/second;600/minute"))
    #: ``ORDERFLOW_MES_STAGE_DELAY``: seconds each simulated production stage takes (tests: tiny).
    mes_stage_delay: float = field(
        default_factory=lambda: float(_env(ENV_MES_STAGE_DELAY, "0.2")))
    #: ``ORDERFLOW_RETRY_DELAYS``: MES retry tiers in seconds, comma separated.
    retry_delays: tuple[float, ...] = field(
        default_factory=lambda: _floats(_env(ENV_RETRY_DELAYS, "1,10,60")))
    #: ``ORDERFLOW_PUBLIC_URL``: base of ``status_url`` in responses; empty = relative URLs.
    public_url: str = field(default_factory=lambda: _env(ENV_PUBLIC_URL, "").rstrip("/"))

    #: ``ORDERFLOW_TRUSTED_PROXIES``: comma-separated proxy IPs or networks (``10.0.0.0/8``)
    #: whose ``X-Forwarded-For`` is believed for the client IP (rate limits, logs): the rightmost
    #: hop they did not write is the client. Default: none, the socket peer is the client.
    trusted_proxies: frozenset[str] = field(default_factory=lambda: frozenset(
        x.strip() for x in _env(ENV_TRUSTED_PROXIES, "").split(",") if x.strip()))
    #: ``ORDERFLOW_MAX_BODY_BYTES``: largest request body the ingress reads (65536); a larger one
    #: gets 413 before it is parsed, with or without ``Content-Length``.
    max_body_bytes: int = field(
        default_factory=lambda: int(_env(ENV_MAX_BODY_BYTES, "65536")))
    #: ``ORDERFLOW_DASHBOARD_TOKEN``: the managers' secret for the MES dashboard and its JSON API
    #: (``Authorization: Bearer``, HTTP basic password, or ``/dashboard?token=`` once, which sets
    #: a cookie). Default: empty, the dashboard is refused (403) on this ingress.
    dashboard_token: str = field(default_factory=lambda: _env(ENV_DASHBOARD_TOKEN, ""))
    #: ``ORDERFLOW_REDIS_PREFIX``: prefix of every Redis key orderflow writes (rate limits, ...).
    redis_prefix: str = field(default_factory=lambda: _env(ENV_REDIS_PREFIX, "orderflow"))

    #: ``ORDERFLOW_DASHBOARD_CACHE``: ``0`` turns the dashboard cache off (every read hits the
    #: database; the benchmark's uncached baseline). Default on.
    dashboard_cache: bool = field(default_factory=lambda: _flag(ENV_DASHBOARD_CACHE, True))
    #: ``ORDERFLOW_DASHBOARD_LIST_TTL``: seconds a per-status list lives (60); never invalidated.
    dashboard_list_ttl: float = field(
        default_factory=lambda: float(_env(ENV_DASHBOARD_LIST_TTL, "60")))
    #: ``ORDERFLOW_DASHBOARD_HOT_TTL``: upper bound in seconds on the life of the summary and the
    #: newest orders (60); they are dropped earlier by every new order or status change.
    dashboard_hot_ttl: float = field(
        default_factory=lambda: float(_env(ENV_DASHBOARD_HOT_TTL, "60")))
    #: ``ORDERFLOW_DASHBOARD_INVALIDATE_INTERVAL``: at most one invalidation per this many
    #: seconds per process (1.0); a burst of triggers is folded into one more at its end.
    dashboard_invalidate_interval: float = field(
        default_factory=lambda: float(_env(ENV_DASHBOARD_INVALIDATE_INTERVAL, "1.0")))
    #: ``ORDERFLOW_DASHBOARD_GENERATION_POLL``: seconds an ingress trusts its copy of the
    #: invalidation counter before asking Redis again (0.1); another process's invalidation shows
    #: here at most this much later. ``0`` asks on every request.
    dashboard_generation_poll: float = field(
        default_factory=lambda: float(_env(ENV_DASHBOARD_GENERATION_POLL, "0.1")))
    #: ``ORDERFLOW_DASHBOARD_MAX_STALE``: while one reader reloads an invalidated view, others
    #: get the previous copy if it was loaded at most this many seconds ago (5.0); ``0`` makes
    #: them wait for the reload.
    dashboard_max_stale: float = field(
        default_factory=lambda: float(_env(ENV_DASHBOARD_MAX_STALE, "5.0")))

    #: ``ORDERFLOW_QUEUE_POLL_INTERVAL``: seconds between the relay's reads of queue depths and
    #: consumers from the management API (``messaging_queue_messages``; 15).
    queue_poll_interval: float = field(
        default_factory=lambda: float(_env(ENV_QUEUE_POLL_INTERVAL, "15")))

    #: ``ORDERFLOW_REDIS_TIMEOUT``: seconds a rate-limit check or an event fan-out may take in
    #: Redis before the request goes on without it (0.1).
    redis_timeout: float = field(
        default_factory=lambda: float(_env(ENV_REDIS_TIMEOUT, "0.1")))
    #: ``ORDERFLOW_DB_TIMEOUT``: seconds an ingress request waits for a database connection
    #: before its 503 (5): while PostgreSQL is unreachable, clients get the 503 sooner than
    #: their own timeouts.
    db_timeout: float = field(default_factory=lambda: float(_env(ENV_DB_TIMEOUT, "5")))
    #: ``ORDERFLOW_BREAKER_FAILURES``: Redis failures in a row that open a circuit breaker (3).
    breaker_failures: int = field(
        default_factory=lambda: int(_env(ENV_BREAKER_FAILURES, "3")))
    #: ``ORDERFLOW_BREAKER_RESET``: seconds an open breaker skips Redis before one probe (5).
    breaker_reset: float = field(
        default_factory=lambda: float(_env(ENV_BREAKER_RESET, "5")))
    #: ``ORDERFLOW_RETENTION_DAYS``: days MES dedup marks (``processed_messages``) and orders'
    #: idempotency keys are kept (7); the relay deletes older ones about hourly. A retry with
    #: the same Idempotency-Key after that makes a new order.
    retention_days: float = field(
        default_factory=lambda: float(_env(ENV_RETENTION_DAYS, "7")))

    #: ``ORDERFLOW_MES_CLAIM_LEASE``: seconds an MES worker's claim on an order lasts unless
    #: renewed (30). A live worker renews it every third of that; a dead worker's orders are
    #: taken over this long after it died.
    mes_claim_lease: float = field(
        default_factory=lambda: float(_env(ENV_MES_CLAIM_LEASE, "30")))
    #: ``ORDERFLOW_OUTBOX_MAX_ATTEMPTS``: failed publishes of one outbox row before the relay
    #: parks it (10); ``orderflow outbox parked`` lists the parked rows, ``--retry`` unparks.
    outbox_max_attempts: int = field(
        default_factory=lambda: int(_env(ENV_OUTBOX_MAX_ATTEMPTS, "10")))

    #: ``ORDERFLOW_FAULTS``: faults injected on purpose, ``NAME[=RATE],...`` (``orderflow.faults``;
    #: docs/orderflow.md "Faults on purpose"). Default: none.
    faults: str = field(default_factory=lambda: _env(ENV_FAULTS, ""))
    #: ``ORDERFLOW_FAULT_STALL_SECONDS``: how long the ``mes-stall`` fault holds an order (3600).
    fault_stall_seconds: float = field(
        default_factory=lambda: float(_env(ENV_FAULT_STALL_SECONDS, "3600")))
    #: ``ORDERFLOW_FAULT_SLOW_SECONDS``: seconds the ``slow-mes`` fault adds to each MES stage (5).
    fault_slow_seconds: float = field(
        default_factory=lambda: float(_env(ENV_FAULT_SLOW_SECONDS, "5")))

    #: ``OBSKIT_JOURNEY_URL``: the Redis of obskit's order journey store; default: ``redis_url``.
    journey_url: str = ""

    def __post_init__(self) -> None:
        if not self.read_database_url:
            object.__setattr__(self, "read_database_url",
                               _env(ENV_READ_DATABASE_URL, self.database_url))
        if not self.journey_url:
            object.__setattr__(self, "journey_url", _env(ENV_JOURNEY_URL, self.redis_url))


def load() -> Settings:
    return Settings()
