"""Recovery and exactly-once effects: DLQ replay, twins, bad status events, final statuses,
batched writes that cannot hang, parked outbox rows (docs/orderflow.md "Recovery")."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from conftest import (
    AUTH,
    MGMT,
    Procs,
    _free_port,
    isolated_services,
    new_ip,
    order_body,
    sql,
    statuses,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families
from psycopg.types.json import Jsonb

from obskit.testing import wait_for_async
from orderflow import crm, db, messaging
from orderflow.batching import BatchWriter, WriterStopped
from orderflow.config import Settings
from orderflow.messaging import vhost_of


def _place(base: str) -> str:
    r = httpx.post(base + "/api/v1/shop/orders", json=order_body(),
                   headers={"X-Forwarded-For": new_ip()})
    assert r.status_code == 202, r.text
    return str(r.json()["order_id"])


def _published(dsn: str, ids: list[str]) -> None:
    wait_for(lambda: set(statuses(dsn, ids).values()) == {"published"}, timeout=30,
             what="the orders published")


def _peek(amqp_url: str, queue: str) -> list[dict[str, Any]]:
    """The ready messages of ``queue``, left in it."""
    r = httpx.post(f"{MGMT}/queues/{quote(vhost_of(amqp_url), safe='')}/{queue}/get", auth=AUTH,
                   json={"count": 200, "ackmode": "ack_requeue_true", "encoding": "auto"})
    r.raise_for_status()
    return list(r.json())


def _order_message(dsn: str, order_id: str) -> dict[str, Any]:
    [(model, quantity, created)] = sql(
        dsn, "SELECT model, quantity, created_at FROM orders WHERE order_id = %s", order_id)
    return {"order_id": order_id, "channel": "b2c", "model": model, "quantity": quantity,
            "accepted_at": created.timestamp()}


# --- 1. a dead-lettered order is brought to done by `obskit dlq replay` -------------------------


async def _dead_letter_while_a_dependency_is_down(env: dict[str, str], order_id: str) -> None:
    """Stand-in for an MES whose pricing service is down longer than the retries: it fails the
    order every attempt and, on the last, reports ``dead_lettered`` as the MES does."""
    settings = Settings()
    spec = messaging.order_queue(settings, "b2c")
    url = env["ORDERFLOW_RABBITMQ_URL"]
    async with messaging.Publisher(url) as pub:
        async def handle(d: messaging.Delivery) -> None:
            if d.attempt >= spec.max_attempts:
                await pub.publish(messaging.STATUS_EXCHANGE, messaging.STATUS_ROUTING_KEY, {
                    "order_id": d.data["order_id"], "channel": "b2c", "status": "dead_lettered",
                    "at": time.time(), "worker": "mes-down",
                    "detail": {"reason": "ConnectionError"}},
                    message_id=f"{d.data['order_id']}:dead_lettered")
            raise ConnectionError("pricing service unreachable")

        consumer = messaging.Consumer(spec, handle, url=url)
        await consumer.start()
        try:
            mid = f"order:{order_id}"
            await wait_for_async(lambda: any(m["properties"].get("message_id") == mid
                                             for m in _peek(url, spec.dlq)),
                                 timeout=30, interval=0.1, what="the order in the DLQ")
        finally:
            await consumer.stop()


def test_dead_lettered_order_reaches_done_after_dlq_replay(stack, mes_worker) -> None:
    base, dsn, env = stack["base"], stack["dsn"], stack["env"]
    oid = _place(base)
    _published(dsn, [oid])
    asyncio.run(_dead_letter_while_a_dependency_is_down(env, oid))
    wait_for(lambda: statuses(dsn, [oid]) == {oid: "dead_lettered"}, timeout=30,
             what="the order dead_lettered")

    mes_worker("mes-after-outage")  # the dependency is back
    out = subprocess.run([sys.executable, "-m", "obskit", "dlq", "replay", "orders.b2c.dlq",
                          "--no-progress"], env={**env, "OBSKIT_RABBITMQ_URL":
                                                 env["ORDERFLOW_RABBITMQ_URL"]},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: statuses(dsn, [oid]) == {oid: "done"}, timeout=30,
             what="the replayed order done")
    [(reason,)] = sql(dsn, "SELECT failure_reason FROM orders WHERE order_id = %s", oid)
    assert reason is None  # the dead-letter reason went with the dead_lettered status
    done_by = sql(dsn, "SELECT worker FROM order_status_history WHERE order_id = %s"
                       " AND status = 'done'", oid)
    assert done_by == [("mes-after-outage",)]


# --- 3. an order is produced once, even when its message arrives three times at once ------------


def test_twin_messages_produce_the_order_once(stack, mes_worker) -> None:
    base, dsn, env = stack["base"], stack["dsn"], stack["env"]
    oid = _place(base)
    _published(dsn, [oid])  # one copy waits in orders.b2c: no MES worker runs yet

    async def twins() -> None:
        async with messaging.Publisher(env["ORDERFLOW_RABBITMQ_URL"]) as pub:
            for _ in range(2):  # a relay crash between confirm and commit, then a replay
                await pub.publish(messaging.ORDERS_EXCHANGE, "b2c", _order_message(dsn, oid),
                                  message_id=f"order:{oid}", order_id=oid, channel="b2c")

    asyncio.run(twins())
    # Two workers, each free to take more than one copy at once; stages long enough to overlap.
    mes_worker("mes-t1", stage_delay=0.3)
    mes_worker("mes-t2", stage_delay=0.3)
    wait_for(lambda: statuses(dsn, [oid]) == {oid: "done"}, timeout=30, what="the order done")

    def all_acked() -> bool:
        r = httpx.get(f"{MGMT}/queues/{quote(vhost_of(env['ORDERFLOW_RABBITMQ_URL']), safe='')}"
                      "/orders.b2c", auth=AUTH).json()
        return r.get("messages", 1) == 0 and r.get("messages_unacknowledged", 1) == 0

    wait_for(all_acked, timeout=30, what="the twins acknowledged", interval=0.5)
    rows = sql(dsn, "SELECT status, worker, duplicates FROM order_status_history"
                    " WHERE order_id = %s AND status NOT IN ('accepted', 'published')", oid)
    assert sorted(s for s, _, _ in rows) == sorted(
        ["received", "priced", "scheduled", "printing", "done"])
    assert {d for _, _, d in rows} == {0}, rows  # no stage reported twice: produced once
    assert len({w for _, w, _ in rows}) == 1, rows
    # The twins waited for the claim without spending attempts: none was dead-lettered.
    assert not [m for m in _peek(env["ORDERFLOW_RABBITMQ_URL"], "orders.b2c.dlq")
                if m["properties"].get("message_id") == f"order:{oid}"]
    [(finished,)] = sql(dsn, "SELECT finished_at IS NOT NULL FROM mes_claims"
                             " WHERE order_id = %s", oid)
    assert finished


def test_a_claim_of_a_dead_worker_expires_and_the_order_is_taken_over(stack, mes_worker) -> None:
    base, dsn, env = stack["base"], stack["dsn"], stack["env"]
    oid = _place(base)
    _published(dsn, [oid])
    # A worker that claimed the order and died: nobody renews its lease any more.
    sql(dsn, "INSERT INTO mes_claims (order_id, token, worker, expires_at) VALUES"
             " (%s, %s, 'ghost', now() + interval '2 seconds') RETURNING order_id",
        oid, str(uuid.uuid4()))
    started = time.monotonic()
    mes_worker("mes-heir")
    wait_for(lambda: statuses(dsn, [oid]) == {oid: "done"}, timeout=30, what="the order done")
    assert time.monotonic() - started > 1.5  # it waited for the lease, not less
    assert sql(dsn, "SELECT worker, finished_at IS NOT NULL FROM mes_claims"
                    " WHERE order_id = %s", oid) == [("mes-heir", True)]
    assert not [m for m in _peek(env["ORDERFLOW_RABBITMQ_URL"], "orders.b2c.dlq")
                if m["properties"].get("message_id") == f"order:{oid}"]


# --- 4. one bad status event is dead-lettered alone ---------------------------------------------


def test_one_bad_status_event_is_dead_lettered_alone(stack) -> None:
    base, dsn, env = stack["base"], stack["dsn"], stack["env"]
    a, b = _place(base), _place(base)
    _published(dsn, [a, b])
    run = uuid.uuid4().hex[:8]
    now = time.time()
    events = {
        f"good-a-{run}": {"order_id": a, "status": "received", "at": now, "worker": "w"},
        f"good-b-{run}": {"order_id": b, "status": "received", "at": now, "worker": "w"},
        f"unknown-order-{run}": {"order_id": str(uuid.uuid4()), "status": "received",
                                 "at": now},
        f"unknown-stage-{run}": {"order_id": a, "status": "teleported", "at": now},
        f"malformed-{run}": {"order_id": b, "status": "priced", "at": "yesterday"},
        f"bad-worker-{run}": {"order_id": b, "status": "scheduled", "at": now, "worker": 42},
    }

    async def publish() -> None:
        async with messaging.Publisher(env["ORDERFLOW_RABBITMQ_URL"]) as pub:
            # All at once: they land in the same batches as the good ones.
            await asyncio.gather(*(pub.publish(
                messaging.STATUS_EXCHANGE, messaging.STATUS_ROUTING_KEY, body, message_id=mid)
                for mid, body in events.items()))

    asyncio.run(publish())
    wait_for(lambda: set(statuses(dsn, [a, b]).values()) == {"received"}, timeout=30,
             what="the good events stored")
    bad = {mid for mid in events if not mid.startswith("good")}

    def dead_lettered() -> set[str]:
        return {m["properties"].get("message_id")
                for m in _peek(env["ORDERFLOW_RABBITMQ_URL"], "order-events.status.dlq")} & bad

    assert wait_for(lambda: dead_lettered() == bad, timeout=30,
                    what="the bad events in the DLQ")
    history = sql(dsn, "SELECT order_id::text, status FROM order_status_history"
                       " WHERE order_id = ANY(%s::uuid[])", [a, b])
    assert sorted(history) == sorted([(a, "accepted"), (a, "published"), (a, "received"),
                                      (b, "accepted"), (b, "published"), (b, "received")])


# --- 5. status never goes backwards; done and failed are final ----------------------------------


async def test_status_never_goes_backwards_and_a_final_status_stays(env) -> None:
    dsn = env["ORDERFLOW_DATABASE_URL"]
    pool = await db.open_pool(dsn, max_size=2)
    try:
        ids = [(await crm.create_order(
            pool, channel="b2c", body=order_body(), partner_id=None, idempotency_key=None,
            request_id=None, trace_id=None)).order_id for _ in range(5)]
        t0 = datetime.now(UTC)

        async def record(*events: tuple[str, str]) -> None:
            async with pool.connection() as conn, conn.transaction():
                await crm.record_statuses(conn, [
                    crm.StatusEvent(oid, status, t0 + timedelta(seconds=i),
                                    detail={"reason": "boom"} if status != "done" else None)
                    for i, (oid, status) in enumerate(events)])

        a, b, c, d, e = ids
        await record((a, "done"))
        await record((a, "printing"))                      # late stage: no step back
        await record((b, "failed"))
        await record((b, "done"))                          # the first final status stays
        await record((c, "done"), (c, "failed"))           # a race in one batch: done wins
        await record((d, "failed"), (d, "done"))           # ... in any order
        await record((e, "dead_lettered"))
        await record((e, "received"), (e, "priced"))       # a replay in progress
        assert statuses(dsn, [e]) == {e: "dead_lettered"}
        await record((e, "done"))                          # replayed to done
        assert statuses(dsn, ids) == {a: "done", b: "failed", c: "done", d: "done", e: "done"}
        reasons = dict(sql(dsn, "SELECT order_id::text, failure_reason FROM orders"
                                " WHERE order_id = ANY(%s::uuid[])", ids))
        assert reasons[e] is None and reasons[b] == "boom"
        await record((b, "dead_lettered"))                 # a twin dead-lettered later
        assert statuses(dsn, [b]) == {b: "failed"}
    finally:
        await pool.close()


# --- 6. nothing waits forever on a batched write -------------------------------------------------


async def test_stop_during_a_flush_lets_it_finish_and_fails_nothing_silently() -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    written: list[list[int]] = []

    async def flush(items: list[int]) -> None:
        entered.set()
        await release.wait()
        written.append(items)

    writer: BatchWriter[int] = BatchWriter("t", flush, flush_timeout=5)
    writer.start()
    first = asyncio.create_task(writer.submit(1))
    await entered.wait()
    second = asyncio.create_task(writer.submit(2))  # queued behind the running flush
    await asyncio.sleep(0)
    stopping = asyncio.create_task(writer.stop())
    await wait_for_async(lambda: writer._stopping, timeout=2, interval=0, what="stop() to begin")
    release.set()
    await asyncio.wait_for(stopping, 2)
    await asyncio.wait_for(asyncio.gather(first, second), 2)
    assert written == [[1], [2]]
    with pytest.raises(WriterStopped):
        await asyncio.wait_for(writer.submit(3), 1)  # after stop: at once, not forever


async def test_a_hanging_flush_is_bounded_and_stop_does_not_hang() -> None:
    flushes: list[list[int]] = []

    async def flush(items: list[int]) -> None:
        flushes.append(items)
        await asyncio.sleep(3600)  # hangs

    writer: BatchWriter[int] = BatchWriter("t", flush, flush_timeout=0.2)
    writer.start()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(writer.submit(1), 2)
    pending = asyncio.create_task(writer.submit(2))
    await wait_for_async(lambda: len(flushes) == 2, timeout=2, interval=0,
                         what="item 2's flush to hang")
    await asyncio.wait_for(writer.stop(), 2)
    with pytest.raises((TimeoutError, WriterStopped)):
        await asyncio.wait_for(pending, 2)


async def test_a_dead_writer_task_fails_its_waiters() -> None:
    flushes: list[list[int]] = []

    async def flush(items: list[int]) -> None:
        flushes.append(items)
        await asyncio.sleep(3600)  # hangs

    writer: BatchWriter[int] = BatchWriter("t", flush)
    writer.start()
    waiting = asyncio.create_task(writer.submit(1))
    queued = asyncio.create_task(writer.submit(2))
    await wait_for_async(lambda: flushes, timeout=2, interval=0, what="a flush to hang")
    assert writer._task is not None
    writer._task.cancel()  # the task dies (a bug, a cancel from outside)
    for t in (waiting, queued):
        with pytest.raises(WriterStopped):
            await asyncio.wait_for(t, 1)
    with pytest.raises(WriterStopped):
        await asyncio.wait_for(writer.submit(3), 1)
    await writer.stop()


async def test_per_item_results_fail_only_the_bad_item() -> None:
    async def flush(items: list[int]) -> list[BaseException | None]:
        return [ValueError(i) if i == 2 else None for i in items]

    writer: BatchWriter[int] = BatchWriter("t", flush)
    writer.start()
    results = await asyncio.gather(*(writer.submit(i) for i in range(4)),
                                   return_exceptions=True)
    await writer.stop()
    assert [type(r).__name__ for r in results] == ["NoneType", "NoneType", "ValueError",
                                                   "NoneType"]


# --- 7. an unpublishable outbox row is parked and does not slow the others ----------------------


def _metric(port: int, name: str) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name)


def test_unpublishable_outbox_row_is_parked_and_the_others_flow(env) -> None:
    with isolated_services("orderflow_recovery") as own:
        e = {**env, "ORDERFLOW_DATABASE_URL": own.dsn, "ORDERFLOW_READ_DATABASE_URL": own.dsn,
             "ORDERFLOW_RABBITMQ_URL": own.amqp_url, "ORDERFLOW_OUTBOX_MAX_ATTEMPTS": "3"}
        port = _free_port()
        procs = Procs(e)
        try:
            procs.start("relay", OBSKIT_METRICS_PORT=str(port), OBSKIT_METRICS_ADDR="127.0.0.1")
            wait_for(lambda: sql(own.dsn, "SELECT count(*) FROM pg_stat_activity"
                                          " WHERE datname = current_database()"
                                          " AND query LIKE 'LISTEN%%'")[0][0] > 0,
                     timeout=30, what="the relay listening")

            async def orders(n: int) -> list[str]:
                pool = await db.open_pool(own.dsn, max_size=1)
                try:
                    return [(await crm.create_order(
                        pool, channel="b2c", body=order_body(), partner_id=None,
                        idempotency_key=None, request_id=None, trace_id=None)).order_id
                        for _ in range(n)]
                finally:
                    await pool.close()

            bad = str(uuid.uuid4())  # routed nowhere: the broker returns it (mandatory)
            sql(own.dsn, "INSERT INTO orders (order_id, channel, customer_email, model,"
                         " quantity, tracking_token, status) VALUES (%s, 'b2c', 'x@example.com',"
                         " %s, 1, 't', 'accepted') RETURNING order_id", bad, Jsonb({}))
            sql(own.dsn, "INSERT INTO outbox (order_id, exchange, routing_key, message_id,"
                         " payload) VALUES (%s, 'orders', 'nowhere', %s, %s) RETURNING id",
                bad, f"order:{bad}", Jsonb({"order_id": bad}))
            started = time.monotonic()
            good = asyncio.run(orders(5))
            wait_for(lambda: set(statuses(own.dsn, good).values()) == {"published"},
                     timeout=10, what="the good rows published")
            assert time.monotonic() - started < 5  # not held up by the failing row
            more = asyncio.run(orders(3))  # still flowing while the bad row is retried
            wait_for(lambda: set(statuses(own.dsn, more).values()) == {"published"},
                     timeout=10, what="later rows published")

            wait_for(lambda: sql(own.dsn, "SELECT parked_at IS NOT NULL, attempts FROM outbox"
                                          " WHERE order_id = %s", bad) == [(True, 3)],
                     timeout=40, what="the bad row parked after 3 attempts")
            assert wait_for(lambda: _metric(port, "orderflow_outbox_rows_parked_total") == 1,
                            timeout=10, what="the parked counter")
            assert wait_for(lambda: _metric(port, "orderflow_outbox_parked") == 1, timeout=15,
                            what="the parked gauge")
            cli = [sys.executable, "-P", "-m", "orderflow.cli", "outbox", "parked"]
            out = subprocess.run(cli, env=e, capture_output=True, text=True, timeout=30)
            assert out.returncode == 1 and bad in out.stdout and "Unroutable" in out.stdout, \
                out.stdout + out.stderr
            out = subprocess.run([*cli, "--retry"], env=e, capture_output=True, text=True,
                                 timeout=30)
            assert out.returncode == 0 and "1 parked" in out.stdout, out.stderr
            wait_for(lambda: sql(own.dsn, "SELECT parked_at IS NOT NULL, attempts FROM outbox"
                                          " WHERE order_id = %s", bad) == [(True, 3)],
                     timeout=40, what="the bad row parked again after its fresh attempts")
        finally:
            procs.stop_all()
