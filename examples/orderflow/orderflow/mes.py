"""The MES worker: stateless — run as many processes as the load needs.

Per order message (from ``orders.b2c`` / ``orders.b2b``)::

    received → priced (pricing.quote) → scheduled → printing → done
                    └─ unprintable → failed

Each step publishes a status event (``order-events.status``, confirmed by the broker) and records
the obskit stage. The worker writes nothing to the database on the hot path: the CRM's status
consumer writes the history in batches, and the "processed" marks at the end of an order are
batched too (``BatchWriter``). Reads (the redelivery check) may go to the read replica.

Idempotent under redelivery: a message whose order is already terminal, or whose id is in
``processed_messages``, is acked without work; a message redelivered mid-order (its worker was
killed) is processed again from the start, and the repeated status events only bump the history
rows' ``duplicates`` count. The order reaches ``done`` exactly once in the history.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

from psycopg_pool import AsyncConnectionPool

import obskit
from orderflow import db, faults, messaging, pricing
from orderflow.batching import BatchWriter
from orderflow.config import Settings
from orderflow.statuses import TERMINAL

CONSUMER_NAME = "mes"
_log = obskit.get_logger("orderflow.mes")


class Worker:
    def __init__(self, settings: Settings, read_pool: AsyncConnectionPool,
                 write_pool: AsyncConnectionPool, publisher: messaging.Publisher,
                 worker_id: str | None = None) -> None:
        self.settings = settings
        self.read_pool = read_pool
        self.write_pool = write_pool
        self.publisher = publisher
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.processed: BatchWriter[str] = BatchWriter("mes_processed", self._mark_processed)
        self.handled = 0
        self._stalls: set[asyncio.Task[Any]] = set()
        self._stalls_ended = False

    async def _mark_processed(self, message_ids: list[str]) -> None:
        async with self.write_pool.connection() as conn:
            await conn.execute(
                "INSERT INTO processed_messages (message_id, consumer, worker)"
                " SELECT unnest(%s::text[]), %s, %s ON CONFLICT DO NOTHING",
                (message_ids, CONSUMER_NAME, self.worker_id))

    async def _already_done(self, message_id: str | None, order_id: str) -> bool:
        async with self.read_pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT (SELECT status FROM orders WHERE order_id = %s) AS status,"
                " EXISTS (SELECT 1 FROM processed_messages WHERE consumer = %s"
                " AND message_id = %s) AS processed",
                (order_id, CONSUMER_NAME, message_id or ""))).fetchone()
        return bool(row and (row["processed"] or row["status"] in TERMINAL))

    async def emit(self, order: dict[str, Any], status: str, **detail: Any) -> None:
        """Publish a status event (confirmed) and record the obskit stage."""
        order_id = order["order_id"]
        event = {"order_id": order_id, "channel": order.get("channel"), "status": status,
                 "at": time.time(), "worker": self.worker_id,
                 "detail": detail or None}
        await self.publisher.publish(
            messaging.STATUS_EXCHANGE, messaging.STATUS_ROUTING_KEY, event,
            message_id=f"{order_id}:{status}", order_id=order_id, channel=order.get("channel"))
        obskit.record_stage(status, accepted_at=order.get("accepted_at"), **detail)

    async def handle(self, d: messaging.Delivery) -> None:
        order = d.data
        if not isinstance(order, dict) or "order_id" not in order:
            raise messaging.PermanentError("an order message needs order_id")
        order_id = str(order["order_id"])
        channel = order.get("channel") or d.channel
        with obskit.order_context(order_id, channel, worker=self.worker_id):
            if await self._already_done(d.message_id, order_id):
                _log.info("order already processed; redelivery acknowledged")
                return
            try:
                await self._produce(order)
            except Exception as exc:
                spec = messaging.order_queue(self.settings, channel or "b2c")
                last = (isinstance(exc, messaging.PermanentError)
                        or d.attempt >= spec.max_attempts)
                if last:  # the consumer dead-letters it next: tell the customer and the CRM
                    try:
                        await self.emit(order, "dead_lettered", reason=type(exc).__name__)
                    except Exception:
                        _log.exception("cannot publish dead_lettered status")
                raise
            if d.message_id:
                await self.processed.submit(d.message_id)
            self.handled += 1

    async def _produce(self, order: dict[str, Any]) -> None:
        order_id = str(order["order_id"])
        delay = self.settings.mes_stage_delay
        if faults.hit("slow-mes", order_id):
            delay += self.settings.fault_slow_seconds
        await self.emit(order, "received")
        if faults.hit("mes-ack-drop", order_id):
            return  # acknowledged by the caller, never worked on
        model = order["model"]
        try:
            q = pricing.quote(float(model["volume_cm3"]), model["material"], model["quality"],
                              int(order["quantity"]))
        except pricing.Unprintable as exc:
            await self.emit(order, "failed", reason=str(exc))
            return
        except (KeyError, TypeError, ValueError) as exc:
            raise messaging.PermanentError(f"order cannot be priced: {exc!r}") from exc
        await self.emit(order, "priced", price=str(q.price), currency=q.currency,
                        print_minutes=q.print_minutes)
        if faults.hit("mes-stall", order_id):
            await self._stall()
        await asyncio.sleep(delay)
        await self.emit(order, "scheduled")
        await asyncio.sleep(delay)
        await self.emit(order, "printing")
        await asyncio.sleep(delay)  # the print itself, compressed
        await self.emit(order, "done")

    async def _stall(self) -> None:
        """The mes-stall fault: hang like a call without a timeout, holding the message.
        ``end_stalls`` cuts it short at shutdown, as a kill would: the message goes back."""
        task = asyncio.current_task()
        assert task is not None
        self._stalls.add(task)
        try:
            if self._stalls_ended:
                task.cancel()
            await asyncio.sleep(self.settings.fault_stall_seconds)
        finally:
            self._stalls.discard(task)

    def end_stalls(self) -> None:
        self._stalls_ended = True
        for task in self._stalls:
            task.cancel()  # the consumer nacks its message back to the queue


async def main(settings: Settings, stop: asyncio.Event, *, concurrency: int = 8,
               worker_id: str | None = None) -> None:
    await messaging.declare_topology(settings)
    write_pool = await db.open_pool(settings.database_url, max_size=2, name="mes-write")
    read_pool = (write_pool if settings.read_database_url == settings.database_url else
                 await db.open_pool(settings.read_database_url, max_size=4, name="mes-read"))
    publisher = messaging.publisher(settings)
    await publisher.connect()
    worker = Worker(settings, read_pool, write_pool, publisher, worker_id)
    worker.processed.start()
    consumers = [messaging.consumer(settings, messaging.order_queue(settings, ch), worker.handle,
                                    prefetch=concurrency, concurrency=concurrency)
                 for ch in messaging.CHANNELS]
    for c in consumers:
        await c.start()
    _log.info("mes worker started", worker=worker.worker_id, concurrency=concurrency)
    faults.announce("mes")
    try:
        await stop.wait()
    finally:
        stopping = asyncio.gather(*(c.stop() for c in consumers))
        # One turn of the loop: each consumer's stop() has begun and refuses new deliveries
        # (obskit sets that before its first await), so a stalled order cancelled now goes
        # back to the queue and is not taken again here.
        await asyncio.sleep(0)
        worker.end_stalls()
        await stopping
        await worker.processed.stop()
        await publisher.close()
        await db.close_pools(write_pool, read_pool)
