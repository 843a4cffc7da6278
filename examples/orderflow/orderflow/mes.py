"""The MES worker: stateless — run as many processes as the load needs.

Per order message (from ``orders.b2c`` / ``orders.b2b``)::

    received → priced (pricing.quote) → scheduled → printing → done
                    └─ unprintable → failed

Each step publishes a status event (``order-events.status``, confirmed by the broker) and records
the obskit stage. Per order the worker writes one row itself (its claim, below); the CRM's
status consumer writes the history in batches, and the "processed" marks at the end of an order
are batched too (``BatchWriter``).

Produced once: before working on an order, a worker claims it on the primary (``mes_claims``,
one row per order). A message whose order is ``done``/``failed`` or whose claim is finished is
acked without work (a twin, a republish); one whose order another worker holds right now is
retried later without spending an attempt (``InFlightElsewhere``), so twins never run at once.
A claim is a lease (``ORDERFLOW_MES_CLAIM_LEASE``) that the worker renews while it lives and
releases when the order fails: a worker killed mid-order blocks it for at most one lease, then
the redelivered message is processed again from the start (the repeated status events only bump
the history rows' ``duplicates`` count). ``dead_lettered`` is not final: a replayed message
(``obskit dlq replay``) is worked on and can bring its order to ``done``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from typing import Any, NamedTuple

from psycopg_pool import AsyncConnectionPool

import obskit
from orderflow import db, faults, messaging, pricing
from orderflow.batching import BatchWriter
from orderflow.config import Settings
from orderflow.statuses import FINAL

CONSUMER_NAME = "mes"
_log = obskit.get_logger("orderflow.mes")


class _Finished(NamedTuple):
    message_id: str | None
    token: str  # the claim that produced the order


class _ClaimLost(Exception):
    """This worker's claim on an order was taken over: another worker produces it."""


class Worker:
    def __init__(self, settings: Settings, read_pool: AsyncConnectionPool,
                 write_pool: AsyncConnectionPool, publisher: messaging.Publisher,
                 worker_id: str | None = None) -> None:
        self.settings = settings
        self.read_pool = read_pool
        self.write_pool = write_pool
        self.publisher = publisher
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.processed: BatchWriter[_Finished] = BatchWriter("mes_processed",
                                                             self._mark_processed)
        self.handled = 0
        # claim token → the task producing its order; renewed by _renew_claims
        self._held: dict[str, asyncio.Task[Any] | None] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._stalls: set[asyncio.Task[Any]] = set()
        self._stalls_ended = False

    async def _mark_processed(self, items: list[_Finished]) -> None:
        message_ids = [i.message_id for i in items if i.message_id]
        async with self.write_pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO processed_messages (message_id, consumer, worker)"
                " SELECT unnest(%s::text[]), %s, %s ON CONFLICT DO NOTHING",
                (message_ids, CONSUMER_NAME, self.worker_id))
            await conn.execute("UPDATE mes_claims SET finished_at = now()"
                               " WHERE token = ANY(%s::uuid[])", ([i.token for i in items],))

    async def _claim(self, order_id: str) -> str | None:
        """A claim token: this worker produces the order. None: produced already (skip it).
        Raises ``InFlightElsewhere`` while another live worker holds the order.

        On the primary, not the replica: the claim must see the other workers' claims."""
        token = str(uuid.uuid4())
        async with self.write_pool.connection() as conn:
            row = await (await conn.execute(
                "WITH o AS (SELECT status FROM orders WHERE order_id = %(oid)s),"
                " c AS (INSERT INTO mes_claims (order_id, token, worker, expires_at)"
                "  SELECT %(oid)s, %(token)s, %(worker)s, now() + make_interval(secs => %(lease)s)"
                "  WHERE NOT EXISTS (SELECT 1 FROM o WHERE status = ANY(%(final)s))"
                "  ON CONFLICT (order_id) DO UPDATE SET token = excluded.token,"
                "   worker = excluded.worker, claimed_at = now(), expires_at = excluded.expires_at"
                "  WHERE mes_claims.finished_at IS NULL AND mes_claims.expires_at < now()"
                "  RETURNING token)"
                " SELECT (SELECT status FROM o) AS status, EXISTS (SELECT 1 FROM c) AS claimed,"
                " (SELECT finished_at IS NOT NULL FROM mes_claims WHERE order_id = %(oid)s)"
                " AS finished",
                {"oid": order_id, "token": token, "worker": self.worker_id,
                 "lease": self.settings.mes_claim_lease, "final": sorted(FINAL)})).fetchone()
        assert row is not None
        if row["claimed"]:
            self._held[token] = asyncio.current_task()
            return token
        if row["status"] in FINAL or row["finished"]:
            return None
        raise messaging.InFlightElsewhere(f"order {order_id} is being produced elsewhere")

    async def _release(self, token: str) -> None:
        """Give the order up after a failure: its retry (or replay) may claim it at once."""
        self._held.pop(token, None)
        try:
            async with self.write_pool.connection() as conn:
                await conn.execute("DELETE FROM mes_claims WHERE token = %s"
                                   " AND finished_at IS NULL", (token,))
        except Exception as exc:  # the lease runs out instead
            _log.warning("cannot release the claim; it expires with its lease", error=repr(exc))

    async def _renew_claims(self) -> None:
        every = max(self.settings.mes_claim_lease / 3, 0.05)
        while True:
            await asyncio.sleep(every)
            if not self._held:
                continue
            tokens = list(self._held)
            try:
                async with self.write_pool.connection() as conn:
                    rows = await (await conn.execute(
                        "UPDATE mes_claims SET expires_at = now() + make_interval(secs => %s)"
                        " WHERE token = ANY(%s::uuid[]) RETURNING token::text",
                        (self.settings.mes_claim_lease, tokens))).fetchall()
            except Exception as exc:  # the database is down: the next round tries again
                _log.warning("cannot renew claims", error=repr(exc), claims=len(tokens))
                continue
            kept = {r["token"] for r in rows}
            for token in tokens:
                task = self._held.get(token)
                if token not in kept and task is not None and not task.done():
                    # The lease ran out (the database was away longer than it) and another
                    # worker took the order over: stop producing it; the message goes back.
                    _log.warning("claim lost to another worker; order given up")
                    self._held.pop(token, None)
                    task.cancel()

    def start(self) -> None:
        self.processed.start()
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_claims(), name="mes-claims")

    async def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None
        await self.processed.stop()

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
            try:
                uuid.UUID(order_id)
            except ValueError as exc:
                raise messaging.PermanentError(f"order_id is not a UUID: {order_id!r}") from exc
            token = await self._claim(order_id)
            if token is None:
                _log.info("order already produced; message acknowledged")
                return
            try:
                await self._produce(order, token)
            except _ClaimLost:
                # The lease ran out while we were cut off (a database outage longer than it)
                # and another worker holds the order now: it finishes it, we must not.
                _log.warning("claim lost to another worker before finishing; order left to it")
                self._held.pop(token, None)
                return
            except BaseException as exc:
                await self._release(token)
                if isinstance(exc, Exception) and self._last_attempt(d, exc, channel):
                    # The consumer dead-letters it next: tell the customer and the CRM.
                    try:
                        await self.emit(order, "dead_lettered", reason=type(exc).__name__)
                    except Exception:
                        _log.exception("cannot publish dead_lettered status")
                raise
            try:
                await self.processed.submit(_Finished(d.message_id, token))
            except Exception as exc:
                # The order's statuses are confirmed in the broker, so the CRM records it as
                # final; the claim's lease runs out. Retrying would produce it again.
                _log.warning("cannot mark the order finished", error=repr(exc))
            finally:
                self._held.pop(token, None)
            self.handled += 1

    def _last_attempt(self, d: messaging.Delivery, exc: Exception, channel: str | None) -> bool:
        if isinstance(exc, messaging.PermanentError):
            return True
        if db.unavailable(exc) or isinstance(
                exc, messaging.DependencyUnavailable | messaging.InFlightElsewhere):
            return False  # retried without spending an attempt
        return d.attempt >= messaging.order_queue(self.settings, channel or "b2c").max_attempts

    async def _check_claim(self, token: str) -> None:
        """Before a step that must happen once (the print, the end): is the order still ours?
        The renewer notices a lost lease only at its next round; this closes that gap."""
        async with self.write_pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT 1 FROM mes_claims WHERE token = %s AND finished_at IS NULL",
                (token,))).fetchone()
        if row is None:
            raise _ClaimLost(token)

    async def _produce(self, order: dict[str, Any], token: str) -> None:
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
        await self._check_claim(token)
        await self.emit(order, "printing")
        await asyncio.sleep(delay)  # the print itself, compressed
        await self._check_claim(token)
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
    # Autocommit: per order the worker runs single statements (its claim, two claim checks),
    # which would each cost BEGIN and COMMIT round trips besides; the one multi-statement write
    # (_mark_processed) opens its transaction explicitly.
    write_pool = await db.open_pool(settings.database_url, max_size=4, name="mes-write",
                                    autocommit=True)
    read_pool = (write_pool if settings.read_database_url == settings.database_url else
                 await db.open_pool(settings.read_database_url, max_size=4, name="mes-read",
                                    autocommit=True))
    publisher = messaging.publisher(settings)
    await publisher.connect()
    worker = Worker(settings, read_pool, write_pool, publisher, worker_id)
    worker.start()
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
        await worker.stop()
        await publisher.close()
        await db.close_pools(write_pool, read_pool)
