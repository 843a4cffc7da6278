"""Idempotency guards: a redelivered message id is acknowledged without running the handler.

* ``PostgresIdempotency`` inserts the message id in the *same transaction* the handler writes
  through (``delivery.db``): the effect and the mark commit together, so a crash at any point
  either applies both or neither. This is the guard that makes "applied exactly once" true.
* ``RedisIdempotency`` marks ids in Redis around the handler. The handler's effect and the mark
  are separate writes, so a crash after the effect and before the mark re-applies once. Use it
  when the effect is itself idempotent or not in PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import RetryableError

__all__ = ["Claim", "IdempotencyGuard", "InFlightElsewhere", "PostgresIdempotency",
           "RedisIdempotency"]


@dataclass
class Claim:
    #: The id was already processed: acknowledge without running the handler.
    duplicate: bool
    #: PostgreSQL guard: the connection inside the claim's transaction (handler writes here).
    connection: Any = None


class InFlightElsewhere(RetryableError):
    """Another consumer holds the id right now; try later (does not count as an attempt)."""


class IdempotencyGuard(Protocol):
    def claim(self, message_id: str, queue: str) -> Any:
        """Async context manager yielding a ``Claim``; commit on clean exit, release on error."""


class PostgresIdempotency:
    """Processed message ids in a PostgreSQL table, committed with the handler's writes.

    Give ``dsn`` (a pool is created on first use) or an ``asyncpg`` ``pool``.
    """

    def __init__(self, dsn: str | None = None, *, pool: Any = None,
                 table: str = "obskit_processed_messages", max_size: int = 10) -> None:
        if dsn is None and pool is None:
            raise ValueError("PostgresIdempotency needs dsn= or pool=")
        if not table.replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"table must be a plain identifier, got {table!r}")
        self.dsn = dsn
        self.table = table
        self._pool = pool
        self._own_pool = pool is None
        self._max_size = max_size
        self._ready = False

    async def setup(self) -> None:
        """Create the pool and the table (idempotent)."""
        if self._pool is None:
            import asyncpg

            self._pool = await asyncpg.create_pool(self.dsn, min_size=1,
                                                   max_size=self._max_size)
        if not self._ready:
            await self._pool.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                " message_id text PRIMARY KEY, queue text NOT NULL,"
                " processed_at timestamptz NOT NULL DEFAULT now())")
            self._ready = True

    async def close(self) -> None:
        if self._own_pool and self._pool is not None:
            await self._pool.close()
            self._pool = None
            self._ready = False

    @asynccontextmanager
    async def claim(self, message_id: str, queue: str) -> AsyncIterator[Claim]:
        if not self._ready:
            await self.setup()
        async with self._pool.acquire() as conn, conn.transaction():
            # A concurrent twin blocks on the primary key until we commit, then sees the row.
            status = await conn.execute(
                f"INSERT INTO {self.table} (message_id, queue) VALUES ($1, $2) "
                "ON CONFLICT (message_id) DO NOTHING", message_id, queue)
            yield Claim(duplicate=status.endswith(" 0"), connection=conn)


class RedisIdempotency:
    """Processed message ids as Redis keys ``<prefix><id>`` kept for ``ttl`` seconds.

    While a handler runs the key holds a lease of ``lease`` seconds, so a twin delivered to
    another consumer waits (``InFlightElsewhere``) instead of running concurrently.
    """

    def __init__(self, client: Any = None, *, url: str | None = None,
                 prefix: str = "obskit:processed:", ttl: float = 7 * 24 * 3600,
                 lease: float = 30.0) -> None:
        if client is None:
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(url or "redis://localhost:6379/0")
        self.client = client
        self.prefix = prefix
        self.ttl = int(ttl)
        self.lease = int(lease)

    async def close(self) -> None:
        await self.client.aclose()

    @asynccontextmanager
    async def claim(self, message_id: str, queue: str) -> AsyncIterator[Claim]:
        key = self.prefix + message_id
        token = "processing:" + uuid.uuid4().hex
        if not await self.client.set(key, token, nx=True, ex=self.lease):
            current = await self.client.get(key)
            if current in (b"done", "done"):
                yield Claim(duplicate=True)
                return
            raise InFlightElsewhere(f"message {message_id} is being processed elsewhere")
        try:
            yield Claim(duplicate=False)
        except BaseException:
            # Release only our own lease.
            if await self.client.get(key) in (token, token.encode()):
                await self.client.delete(key)
            raise
        await self.client.set(key, "done", ex=self.ttl)
