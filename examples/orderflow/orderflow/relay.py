"""The CRM outbox relay: publish committed orders to RabbitMQ, so none is lost in between.

Loop: claim a batch of outbox rows (``FOR UPDATE SKIP LOCKED``: any number of relays share the
work without double-sending), publish each with a broker confirm, delete the confirmed rows and
record ``published`` in the same transaction. When the outbox is empty, sleep on PostgreSQL
``LISTEN orderflow_outbox`` — the insert trigger NOTIFYs at commit — with a long timeout as a
safety net, so there is no busy polling and no added latency.

A crash after the broker confirmed and before the commit publishes the row again with the same
message id; the MES deduplicates.

A row that fails to publish waits for its own next attempt (``next_attempt_at``, doubling from
0.5 s up to 60 s) while the others go on; after ``ORDERFLOW_OUTBOX_MAX_ATTEMPTS`` failures it is
parked (``parked_at``): counted in ``orderflow_outbox_parked``, listed by ``orderflow outbox
parked``, sent again by ``orderflow outbox parked --retry``. Only when every row of a batch fails
(the broker refuses everything) does the whole relay back off.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
from prometheus_client import Counter, Gauge
from psycopg_pool import AsyncConnectionPool

import obskit
from obskit import propagation
from orderflow import crm, db, events, faults, messaging, retention
from orderflow.config import Settings
from orderflow.migrations import OUTBOX_CHANNEL

BATCH = 200
PUBLISHED, FAILED, DROPPED = "published", "failed", "dropped"  # outcomes of one outbox row
SAFETY_NET_SECONDS = 5.0
_log = obskit.get_logger("orderflow.relay")
OUTBOX_PENDING = Gauge("orderflow_outbox_pending", "Outbox rows not yet published (sampled by "
                       "the relay); growing = the broker is unreachable.", multiprocess_mode="max")
OUTBOX_PARKED = Gauge("orderflow_outbox_parked", "Outbox rows the relay gave up on after "
                      "ORDERFLOW_OUTBOX_MAX_ATTEMPTS failed publishes (sampled); > 0 = orders "
                      "that will not reach the MES until `orderflow outbox parked --retry`.",
                      multiprocess_mode="max")
OUTBOX_PARKED_TOTAL = Counter("orderflow_outbox_rows_parked", "Outbox rows parked by this relay.")


class Relay:
    def __init__(self, settings: Settings, pool: AsyncConnectionPool,
                 publisher: messaging.Publisher) -> None:
        self.settings = settings
        self.pool = pool
        self.publisher = publisher
        self.published = 0
        self.next_purge = 0.0

    async def _publish(self, row: dict[str, Any]) -> str:
        """``PUBLISHED``, ``FAILED`` (kept for a retry) or ``DROPPED`` (the relay-drop fault)."""
        payload = row["payload"]
        order_id = str(row["order_id"])
        # Continue the HTTP request's trace: its context was stored with the row.
        with propagation.attached(row["headers"] or {}), \
                obskit.order_context(order_id, row["routing_key"]):
            if faults.hit("relay-drop", order_id):
                return DROPPED  # deleted as if confirmed; nothing sent, nothing recorded
            body = faults.poisoned(payload) if faults.hit("poison", order_id) else payload
            try:
                await self.publisher.publish(row["exchange"], row["routing_key"], body,
                                             message_id=row["message_id"],
                                             content_type="application/json")
                if faults.hit("duplicate", order_id):
                    await self.publisher.publish(row["exchange"], row["routing_key"], body,
                                                 message_id=row["message_id"],
                                                 content_type="application/json")
            except Exception as exc:
                _log.error("outbox publish failed; will retry", error=repr(exc),
                           attempts=row["attempts"] + 1)
                row["error"] = repr(exc)[:500]
                return FAILED
            row["confirmed_at"] = datetime.now(UTC)
            obskit.record_stage("published", accepted_at=payload.get("accepted_at"))
            return PUBLISHED

    async def drain_once(self) -> tuple[int, int]:
        """Publish one batch; returns ``(claimed, done)``: rows published (or dropped by the
        relay-drop fault) and deleted."""
        async with self.pool.connection() as conn, conn.transaction():
            rows = await (await conn.execute(
                "SELECT id, order_id, exchange, routing_key, message_id, payload, headers,"
                " attempts FROM outbox WHERE parked_at IS NULL AND next_attempt_at <= now()"
                " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (BATCH,))).fetchall()
            if not rows:
                return 0, 0
            results = await asyncio.gather(*(self._publish(r) for r in rows))
            ok = [r for r, res in zip(rows, results, strict=True) if res == PUBLISHED]
            bad = [r for r, res in zip(rows, results, strict=True) if res == FAILED]
            gone = [r["id"] for r, res in zip(rows, results, strict=True) if res != FAILED]
            if gone:
                await conn.execute("DELETE FROM outbox WHERE id = ANY(%s)", (gone,))
            if ok:
                changes = await crm.record_statuses(conn, [
                    crm.StatusEvent(str(r["order_id"]), "published", r["confirmed_at"])
                    for r in ok])
            parked = []
            for r in bad:
                row = await (await conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = %s,"
                    " next_attempt_at = now() + make_interval(secs => least(0.5 * 2 ^ attempts,"
                    " 60)), parked_at = CASE WHEN attempts + 1 >= %s THEN now() END"
                    " WHERE id = %s RETURNING parked_at IS NOT NULL AS parked",
                    (r.get("error"), self.settings.outbox_max_attempts, r["id"]))).fetchone()
                if row and row["parked"]:
                    parked.append(r)
        for r in parked:
            OUTBOX_PARKED_TOTAL.inc()
            with obskit.order_context(str(r["order_id"]), r["routing_key"]):
                _log.error("outbox row parked after repeated publish failures; "
                           "`orderflow outbox parked` lists it", outbox_id=r["id"],
                           attempts=r["attempts"] + 1, error=r.get("error"))
        if ok:
            self.published += len(ok)
            channel_of = {str(r["order_id"]): r["routing_key"] for r in ok}
            await events.status_changed([{**c, "channel": channel_of.get(c["order_id"])}
                                         for c in changes])
        return len(rows), len(gone)

    async def pending(self) -> int:
        """Rows still to publish; also samples the parked gauge."""
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT count(*) FILTER (WHERE parked_at IS NULL) AS n,"
                " count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked FROM outbox"
            )).fetchone()
        OUTBOX_PARKED.set(int(row["parked"]) if row else 0)
        return int(row["n"]) if row else 0

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop``. PostgreSQL restarting does not end it: it reconnects with
        backoff and goes on from the outbox, where unpublished rows stay (its place)."""
        backoff = 0.5
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self._run(stop)
                return
            except Exception as exc:
                if not db.unavailable(exc):
                    raise
                if time.monotonic() - started > 60:
                    backoff = 0.5
                _log.warning("postgresql unavailable; relay reconnects", error=repr(exc),
                             retry_in_s=backoff)
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, 10.0)

    async def _run(self, stop: asyncio.Event) -> None:
        listener = await psycopg.AsyncConnection.connect(self.settings.database_url,
                                                         autocommit=True)
        await listener.execute(f"LISTEN {OUTBOX_CHANNEL}")
        _log.info("relay started", listen=OUTBOX_CHANNEL)
        backoff = 0.0
        last_gauge = 0.0
        try:
            while not stop.is_set():
                claimed, done = await self.drain_once()
                if time.monotonic() - last_gauge > 5:
                    OUTBOX_PENDING.set(await self.pending())
                    last_gauge = time.monotonic()
                if time.monotonic() >= self.next_purge:  # the relay runs retention too
                    self.next_purge = time.monotonic() + retention.INTERVAL_SECONDS
                    await retention.purge_logged(self.pool, self.settings.retention_days)
                if claimed and done == claimed:
                    backoff = 0.0
                    if claimed == BATCH:
                        continue  # more waiting: don't sleep
                elif claimed and not done:  # the broker refuses all: back off, don't spin
                    backoff = min(max(backoff * 2, 0.5), 10.0)
                    await _sleep_or_stop(stop, backoff)
                    continue
                elif claimed:  # the failed rows wait for their own next attempt
                    backoff = 0.0
                    continue
                # Empty: sleep until a commit NOTIFYs us (or the safety net / stop).
                await _notified_or_stop(listener, stop)
        finally:
            await listener.close()


async def parked(pool: AsyncConnectionPool) -> list[dict[str, Any]]:
    """The parked outbox rows, oldest first: what on-call looks at (``orderflow outbox parked``)."""
    async with pool.connection() as conn:
        return list(await (await conn.execute(
            "SELECT id, order_id::text, exchange, routing_key, attempts, last_error, created_at,"
            " parked_at FROM outbox WHERE parked_at IS NOT NULL ORDER BY id")).fetchall())


async def unpark(pool: AsyncConnectionPool) -> int:
    """Give every parked row a fresh set of attempts (after the cause is fixed); how many."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "UPDATE outbox SET parked_at = NULL, attempts = 0, next_attempt_at = now()"
            " WHERE parked_at IS NOT NULL")
        await conn.execute(f"NOTIFY {OUTBOX_CHANNEL}")
        return int(cur.rowcount or 0)


async def _notified_or_stop(listener: psycopg.AsyncConnection[Any],
                            stop: asyncio.Event) -> None:
    async def notified() -> None:
        async for _ in listener.notifies(timeout=SAFETY_NET_SECONDS, stop_after=1):
            pass

    waiting = asyncio.ensure_future(notified())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((waiting, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()  # on stop: the listener is closed next
        stopped.cancel()
        await asyncio.gather(waiting, stopped, return_exceptions=True)
    if not waiting.cancelled():
        waiting.result()  # a lost connection raises here, as before


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def main(settings: Settings, stop: asyncio.Event) -> None:
    await messaging.declare_topology(settings)
    pool = await db.open_pool(settings.database_url, max_size=4, name="relay")
    publisher = messaging.publisher(settings)
    await publisher.connect()
    events.load_plugins()
    poller = messaging.depth_poller(settings)  # one poller per group: the relay hosts it
    poller.start()
    faults.announce("relay")
    try:
        await Relay(settings, pool, publisher).run(stop)
    finally:
        await poller.stop()
        await publisher.close()
        await pool.close()
