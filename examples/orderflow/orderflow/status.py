"""The CRM status consumer: MES status events → status history, in batched transactions.

Each event is acked only after the batch that holds it committed. A redelivered event increments
``duplicates`` on its history row (``crm.record_statuses``) instead of adding one.

One bad event is dead-lettered alone: a malformed field or an unknown stage is refused before it
joins a batch, an unknown order is left out of the batch by ``record_statuses``, and a batch
that PostgreSQL refuses for its data is written again one event at a time, so only the culprit
fails.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
import redis.asyncio as aioredis

import obskit
from orderflow import crm, db, events, messaging
from orderflow.batching import BatchWriter
from orderflow.config import Settings
from orderflow.statuses import STATUSES

_log = obskit.get_logger("orderflow.status")


async def main(settings: Settings, stop: asyncio.Event, *, concurrency: int = 64) -> None:
    await messaging.declare_topology(settings)
    pool = await db.open_pool(settings.database_url, max_size=4, name="status")
    redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=1.0)
    events.set_redis(redis, settings)
    events.load_plugins()
    channels: dict[str, str | None] = {}

    async def write(items: list[crm.StatusEvent]) -> list[BaseException | None]:
        rejected: list[crm.StatusEvent] = []
        async with pool.connection() as conn, conn.transaction():
            changes = await crm.record_statuses(conn, items, rejected=rejected)
        await events.status_changed([{**c, "channel": channels.pop(c["order_id"], None)}
                                     for c in changes])
        unknown = {id(e) for e in rejected}
        return [messaging.PermanentError(f"unknown order {e.order_id}") if id(e) in unknown
                else None for e in items]

    async def flush(items: list[crm.StatusEvent]) -> Sequence[BaseException | None]:
        try:
            return await write(items)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            if len(items) == 1:
                return [messaging.PermanentError(f"status event refused: {exc!r}")]
        # One at a time: the event PostgreSQL refuses fails alone.
        results: list[BaseException | None] = []
        for item in items:
            try:
                results.extend(await write([item]))
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                results.append(messaging.PermanentError(f"status event refused: {exc!r}"))
        return results

    writer: BatchWriter[crm.StatusEvent] = BatchWriter("status_history", flush)
    writer.start()

    async def handle(d: messaging.Delivery) -> None:
        event = parse_event(d.data)
        data = d.data
        if len(channels) > 50_000:  # entries of redelivered (unchanged) events are never popped
            channels.clear()
        channels[event.order_id] = data.get("channel")
        await writer.submit(event)

    consumer = messaging.consumer(settings, messaging.status_queue(settings), handle,
                                  prefetch=concurrency * 2, concurrency=concurrency)
    await consumer.start()
    _log.info("status consumer started", queue=messaging.STATUS_QUEUE)
    try:
        await stop.wait()
    finally:
        await consumer.stop()
        await writer.stop()
        await redis.aclose()
        await pool.close()


def parse_event(data: Any) -> crm.StatusEvent:
    """A status event, or ``PermanentError`` naming what is wrong: a bad event never reaches a
    batch, where it would fail the others."""
    try:
        order_id = str(uuid.UUID(str(data["order_id"])))
        status = data["status"]
        at = float(data["at"])
        worker, detail = data.get("worker"), data.get("detail")
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        if not math.isfinite(at):
            raise ValueError(f"at is not a time: {data['at']!r}")
        if worker is not None and not isinstance(worker, str):
            raise ValueError(f"worker is not a string: {worker!r}")
        if detail is not None and not isinstance(detail, dict):
            raise ValueError(f"detail is not an object: {detail!r}")
        return crm.StatusEvent(order_id=order_id, status=status,
                               at=datetime.fromtimestamp(at, UTC), worker=worker, detail=detail)
    except (KeyError, TypeError, ValueError, OverflowError, OSError) as exc:
        raise messaging.PermanentError(f"malformed status event: {exc!r}") from exc
