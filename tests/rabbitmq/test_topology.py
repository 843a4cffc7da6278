"""Topology: idempotent declare, the expected arguments, conflicts named precisely."""

from __future__ import annotations

import aio_pika
import pytest

from obskit.rabbitmq import QueueSpec, TopologyConflictError, declare, orders_topology


async def test_declare_is_idempotent_and_builds_quorum_queues_with_dlq(url, vhost, mgmt):
    topo = orders_topology(retry_delays=(0.25, 1, 5), max_attempts=4)
    await declare(topo, url)
    await declare(topo, url)  # no error the second time
    queues = {q["name"]: q for q in await mgmt.queues(vhost)}
    assert set(queues) == {
        "orders.b2c", "orders.b2c.dlq", "orders.b2c.retry.250ms", "orders.b2c.retry.1s",
        "orders.b2c.retry.5s", "orders.b2b", "orders.b2b.dlq", "orders.b2b.retry.250ms",
        "orders.b2b.retry.1s", "orders.b2b.retry.5s"}
    assert all(q["type"] == "quorum" and q["durable"] for q in queues.values())
    main = queues["orders.b2c"]["arguments"]
    assert main["x-dead-letter-exchange"] == "orders.dlx"
    assert main["x-dead-letter-strategy"] == "at-least-once"
    assert main["x-overflow"] == "reject-publish"
    retry = queues["orders.b2c.retry.1s"]["arguments"]
    assert retry["x-message-ttl"] == 1000
    assert retry["x-dead-letter-routing-key"] == "orders.b2c"


async def test_conflicting_existing_queue_names_the_argument(url):
    conn = await aio_pika.connect(url)
    async with conn:
        ch = await conn.channel()
        await ch.declare_queue("orders.b2c", durable=True,
                               arguments={"x-queue-type": "classic"})
    with pytest.raises(TopologyConflictError) as info:
        await declare(orders_topology(), url)
    err = info.value
    assert err.name == "orders.b2c"
    assert err.argument in {"x-queue-type", "x-dead-letter-exchange"}
    assert err.argument in str(err)


def test_retry_tiers_increase_and_repeat_the_last():
    spec = QueueSpec("orders.b2c", "orders", "b2c", retry_delays=(1, 10, 60), max_attempts=6)
    assert [spec.retry_queue_for(n) for n in range(1, 6)] == [
        "orders.b2c.retry.1s", "orders.b2c.retry.10s", "orders.b2c.retry.60s",
        "orders.b2c.retry.60s", "orders.b2c.retry.60s"]
    with pytest.raises(ValueError):
        QueueSpec("q", "x", "k", max_attempts=0)
