"""Retention: what only needs to be kept for a while is deleted, so no table grows forever.

* ``processed_messages``: the MES's dedup marks. A redelivery comes within minutes (hours at
  worst, from a DLQ replay); after ``ORDERFLOW_RETENTION_DAYS`` a mark is deleted.
* orders' idempotency keys (``idempotency_scope``, ``idempotency_key``, ``request_hash``): a
  client retries within minutes; after the retention the key is cleared and the same key makes a
  new order (the order itself is kept).

The relay runs ``purge()`` at start and then every ``INTERVAL_SECONDS``; with several relays, one
purges and the others skip (an advisory lock). Deletes go in batches so no lock is held long.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool

import obskit
from orderflow import db

INTERVAL_SECONDS = 3600.0
BATCH = 5000
_LOCK_ID = 0x0F1D_0005
PURGED = Counter("orderflow_retention_purged", "Rows past ORDERFLOW_RETENTION_DAYS deleted "
                 "(processed_messages) or cleared (orders' idempotency keys).", ["table"])
_log = obskit.get_logger("orderflow.retention")


@dataclass(frozen=True, slots=True)
class Purged:
    processed_messages: int = 0
    idempotency_keys: int = 0


_STEPS = (
    ("processed_messages",
     "DELETE FROM processed_messages WHERE (consumer, message_id) IN ("
     " SELECT consumer, message_id FROM processed_messages"
     " WHERE processed_at < now() - make_interval(secs => %s) LIMIT %s)"),
    ("idempotency_keys",
     "UPDATE orders SET idempotency_scope = NULL, idempotency_key = NULL, request_hash = NULL"
     " WHERE order_id IN (SELECT order_id FROM orders WHERE idempotency_key IS NOT NULL"
     " AND created_at < now() - make_interval(secs => %s) LIMIT %s)"),
)


async def purge(pool: AsyncConnectionPool, days: float) -> Purged | None:
    """Delete what is older than ``days``; ``None`` if another process holds the purge or
    ``days`` is 0 (retention off)."""
    if days <= 0:
        return None
    counts: dict[str, int] = {}
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT pg_try_advisory_lock(%s) AS ok",
                                        (_LOCK_ID,))).fetchone()
        if not (row and (row["ok"] if isinstance(row, dict) else row[0])):
            return None
        try:
            for name, query in _STEPS:
                total = 0
                while True:
                    async with conn.transaction():
                        cur = await conn.execute(query, (days * 86400.0, BATCH))
                    total += cur.rowcount
                    if cur.rowcount < BATCH:
                        break
                counts[name] = total
                if total:
                    PURGED.labels(name).inc(total)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    result = Purged(**counts)
    if result.processed_messages or result.idempotency_keys:
        _log.info("retention purge", retention_days=days, **counts)
    return result


async def purge_logged(pool: AsyncConnectionPool, days: float) -> None:
    """``purge()`` for a service's loop: a failure is logged, not raised (a purge bug must not
    stop the relay), except PostgreSQL being down, which the loop handles."""
    try:
        await purge(pool, days)
    except Exception as exc:
        if db.unavailable(exc):
            raise
        _log.exception("retention purge failed")
