"""The CRM status consumer: MES status events → status history, in batched transactions.

Each event is acked only after the batch that holds it committed. A redelivered event increments
``duplicates`` on its history row (``crm.record_statuses``) instead of adding one.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import redis.asyncio as aioredis

import obskit
from orderflow import crm, db, events, messaging
from orderflow.batching import BatchWriter
from orderflow.config import Settings

_log = obskit.get_logger("orderflow.status")


async def main(settings: Settings, stop: asyncio.Event, *, concurrency: int = 64) -> None:
    await messaging.declare_topology(settings)
    pool = await db.open_pool(settings.database_url, max_size=4, name="status")
    redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=1.0)
    events.set_redis(redis)
    events.load_plugins()
    channels: dict[str, str | None] = {}

    async def flush(items: list[crm.StatusEvent]) -> None:
        async with pool.connection() as conn, conn.transaction():
            changes = await crm.record_statuses(conn, items)
        await events.status_changed([{**c, "channel": channels.pop(c["order_id"], None)}
                                     for c in changes])

    writer: BatchWriter[crm.StatusEvent] = BatchWriter("status_history", flush)
    writer.start()

    async def handle(d: messaging.Delivery) -> None:
        data = d.data
        try:
            event = crm.StatusEvent(
                order_id=str(data["order_id"]), status=str(data["status"]),
                at=datetime.fromtimestamp(float(data["at"]), UTC),
                worker=data.get("worker"), detail=data.get("detail"))
        except (KeyError, TypeError, ValueError) as exc:
            raise messaging.PermanentError(f"malformed status event: {exc!r}") from exc
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
